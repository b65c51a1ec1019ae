"""The multi-task network: one shared transformer encoder (keras-nlp layers) and one head per task head."""

from __future__ import annotations

from typing import Sequence

import keras
import keras_nlp

from model import text
from model.layers import EntityStartPooling, MaskedMeanPooling
from model.tasks import Head, HeadKind


def build_model(
    heads: Sequence[Head],
    vocabulary_size: int,
    max_length: int,
    embedding_dim: int,
    num_layers: int,
    num_heads: int,
    intermediate_dim: int,
    dropout: float,
) -> keras.Model:
    """Inputs (int64 [B, T], T <= max_length): token_ids, shape_ids, entity_ids (see preprocessing).

    Outputs: a dict of logits per head, [B, num_labels] for sentence and entity-pair heads and
    [B, T, num_labels] for token heads.
    """
    inputs = {name: keras.Input(shape=(None,), dtype="int64", name=name)
              for name in ("token_ids", "shape_ids", "entity_ids")}  # fmt: skip
    padding_mask = keras.ops.not_equal(inputs["token_ids"], 0)

    x = keras_nlp.layers.TokenAndPositionEmbedding(
        vocabulary_size, max_length, embedding_dim, name="word_and_position_embedding"
    )(inputs["token_ids"])
    x = x + keras.layers.Embedding(text.NUM_SHAPES, embedding_dim, name="shape_embedding")(inputs["shape_ids"])
    x = x + keras.layers.Embedding(text.NUM_ENTITY_MARKERS, embedding_dim, name="entity_marker_embedding")(
        inputs["entity_ids"]
    )
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="embedding_norm")(x)
    x = keras.layers.Dropout(dropout)(x)
    for i in range(num_layers):
        x = keras_nlp.layers.TransformerEncoder(
            intermediate_dim, num_heads, dropout=dropout, name=f"shared_encoder_{i}"
        )(x, padding_mask=padding_mask)

    sentence = MaskedMeanPooling(name="mean_pooling")(x, padding_mask)
    outputs = {}
    for head in heads:
        if head.kind is HeadKind.TOKEN:
            features = x
        elif head.kind is HeadKind.SENTENCE:
            features = sentence
        else:
            entities = EntityStartPooling(name=f"{head.name}_entity_start")(x, inputs["entity_ids"])
            features = keras.layers.Concatenate(name=f"{head.name}_features")([entities, sentence])
        features = keras.layers.Dropout(dropout, name=f"{head.name}_dropout")(features)
        outputs[head.name] = keras.layers.Dense(head.num_labels, name=head.name)(features)
    return keras.Model(inputs=inputs, outputs=outputs, name="multitask_encoder")


def compile_for_heads(model: keras.Model, heads: Sequence[Head], optimizer: keras.optimizers.Optimizer) -> None:
    """Per-head sparse cross-entropy, each averaged over the examples (or words) that carry its label.

    The sample weights (``<head>_weight`` from Transform) are 0 for examples of other tasks and for
    padding, so a head learns only from its own labels; ``mean_with_sample_weight`` divides by the
    weights' sum rather than the batch size, so a head's loss scale does not depend on the task mix.
    """
    model.compile(
        optimizer=optimizer,
        loss={h.name: keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
              for h in heads},  # fmt: skip
        weighted_metrics={h.name: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for h in heads},
    )
