"""Small Keras layers used by the task heads (serializable, shapes in docstrings)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mtnlp")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of the hidden states of the real (non-padding) words.

    Call args: hidden [B, T, D], padding_mask [B, T] (bool, True for real words). Returns [B, D].
    """

    def call(self, hidden, padding_mask):
        weights = ops.expand_dims(ops.cast(padding_mask, hidden.dtype), -1)
        return ops.sum(hidden * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, hidden_shape, padding_mask_shape=None):
        return (hidden_shape[0], hidden_shape[2])


@keras.saving.register_keras_serializable(package="mtnlp")
class EntityStartPooling(keras.layers.Layer):
    """Hidden states of the first word of each marked entity, concatenated ("entity-start pooling").

    Call args: hidden [B, T, D], entity_ids [B, T] (1 marks entity 1's words, 2 entity 2's).
    Returns [B, 2 * D]; an entity that is absent contributes zeros.
    """

    def __init__(self, markers: tuple[int, ...] = (1, 2), **kwargs):
        super().__init__(**kwargs)
        self.markers = tuple(markers)

    def call(self, hidden, entity_ids):
        pooled = []
        for marker in self.markers:
            is_marker = ops.cast(ops.equal(entity_ids, marker), hidden.dtype)  # [B, T]
            # one-hot of the first marked position (all zeros when the entity is absent)
            first = is_marker * ops.cast(ops.equal(ops.cumsum(is_marker, axis=1), 1.0), hidden.dtype)
            pooled.append(ops.einsum("bt,btd->bd", first, hidden))
        return ops.concatenate(pooled, axis=-1)

    def compute_output_shape(self, hidden_shape, entity_ids_shape=None):
        return (hidden_shape[0], hidden_shape[2] * len(self.markers))

    def get_config(self):
        return {**super().get_config(), "markers": self.markers}
