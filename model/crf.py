"""A linear-chain CRF output for token heads (``heads.<name>.decoder: crf``; Lafferty et al. 2001, Lample et al. 2016).

A softmax token head scores each word's label on its own; a CRF head also learns a score for every pair of
consecutive labels (``transitions`` [C, C]) and for each label starting a sentence (``start_scores`` [C]), and
is trained on the whole sequence: the loss is the negative log-likelihood of the gold label sequence, whose
normalizer sums over every label sequence with the forward algorithm (``crf_log_likelihood``, a ``tf.scan``).

Serving decodes with the constrained Viterbi of ``model/decoding.py`` over the emission scores plus the learned
transitions (the IOB2 constraints added on top for an ``iob2`` head); the loss is training-only, so the served
graph holds only the Dense layer, two variables and the Viterbi's core ops.

TensorFlow Addons had ``crf_log_likelihood``; it is unmaintained, not in the locked environment, and its ops
would not be core TF ops. Neither keras-hub nor TF Text has a CRF loss (TF Text has only the Viterbi decoders).
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mtnlp")
class CrfDense(keras.layers.Dense):
    """A token head's output layer with a CRF's transition scores: emissions as a ``Dense`` layer computes them,
    plus the variables ``transitions`` [C, C] (``transitions[previous, next]``) and ``start_scores`` [C], read by
    ``CrfLoss`` in training and by the served Viterbi.

    Args:
        units: the number of labels C.
        **kwargs: ``Dense``'s.

    Call args: inputs [B, T, D]. Returns the emission scores (logits) [B, T, C].
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.transitions = self.add_weight(shape=(self.units, self.units), initializer="zeros", name="transitions")
        self.start_scores = self.add_weight(shape=(self.units,), initializer="zeros", name="start_scores")


def crf_log_likelihood(
    emissions: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor, transitions: tf.Tensor, start_scores: tf.Tensor
) -> tf.Tensor:
    """The log-probability of each row's label sequence under a linear-chain CRF.

    ``score(y) = start_scores[y_0] + sum_t emissions[t, y_t] + sum_{t>0} transitions[y_{t-1}, y_t]`` over the
    row's real words, and ``log p(y) = score(y) - log sum_{y'} exp(score(y'))``; the sum runs over every label
    sequence of the row's length (the forward algorithm: a ``tf.scan`` over time with log-sum-exp).

    Args:
        emissions: float [B, T, C].
        labels: int [B, T] (any value on padding).
        mask: bool [B, T], True on real words; they must be a prefix of each row. A row without any gets 0.
        transitions: float [C, C], ``transitions[previous, next]``.
        start_scores: float [C].

    Returns:
        float32 [B].
    """
    emissions = tf.cast(emissions, tf.float32)
    transitions, start_scores = tf.cast(transitions, tf.float32), tf.cast(start_scores, tf.float32)
    labels = tf.cast(labels, tf.int32)
    mask = tf.cast(mask, tf.bool)
    real = tf.cast(mask, tf.float32)
    has_words = tf.reduce_any(mask, axis=1)

    # the gold sequence's score
    gold_emissions = tf.reduce_sum(tf.gather(emissions, labels[:, :, None], batch_dims=2)[:, :, 0] * real, axis=1)
    pairs = tf.stack([labels[:, :-1], labels[:, 1:]], axis=-1)  # [B, T - 1, 2]
    gold_transitions = tf.reduce_sum(tf.gather_nd(transitions, pairs) * real[:, 1:], axis=1)
    gold = tf.gather(start_scores, labels[:, 0]) + gold_emissions + gold_transitions

    # the normalizer: alpha[b, c] = log sum over the sequences of the words so far that end in label c
    def forward(alpha, step):
        step_emissions, step_mask = step  # [B, C], [B]
        extended = tf.reduce_logsumexp(alpha[:, :, None] + transitions[None, :, :], axis=1) + step_emissions
        return tf.where(step_mask[:, None], extended, alpha)  # padding keeps the last real word's alpha

    # one padded step after the last, so that the scan has a step even for one-word batches (an empty scan
    # cannot stack its output in graph mode when the batch size is unknown; constrained_viterbi does the same)
    later_emissions = tf.pad(emissions[:, 1:], [[0, 0], [0, 1], [0, 0]])
    later_mask = tf.pad(mask[:, 1:], [[0, 0], [0, 1]])
    alphas = tf.scan(
        forward,
        (tf.transpose(later_emissions, [1, 0, 2]), tf.transpose(later_mask)),
        initializer=start_scores[None, :] + emissions[:, 0, :],
    )  # [T, B, C]
    normalizer = tf.reduce_logsumexp(alphas[-1], axis=-1)
    return tf.where(has_words, gold - normalizer, 0.0)


class CrfLoss(keras.losses.Loss):
    """The negative log-likelihood of the gold label sequences under the head's CRF (``CrfDense``), divided by
    the number of labelled words: per word, as the softmax heads' cross-entropy is, so ``loss_weight`` means
    the same with either decoder.

    y_true int [B, T]; y_pred emissions [B, T, C]; sample_weight [B, T]: 1 on the words that carry the head's
    label (0 on padding and on rows of other tasks), which also gives each row's length.

    Training-only (it holds a reference to the model's ``CrfDense`` layer, as ``UncertaintyWeightedLoss``
    holds one to its layer), so it is not registered for serialization.
    """

    def __init__(self, crf_layer: CrfDense, name: str = "crf_negative_log_likelihood"):
        if not isinstance(crf_layer, CrfDense):
            raise ValueError(
                f"decoder 'crf' needs the head's output layer to be a CrfDense, got a {type(crf_layer).__name__} "
                f"({crf_layer.name}): pass the same head_configs to build_model and compile_for_heads"
            )
        super().__init__(name=name, reduction="sum")
        self.crf_layer = crf_layer

    def __call__(self, y_true, y_pred, sample_weight=None):
        weights = tf.ones(tf.shape(y_true), tf.float32) if sample_weight is None else tf.cast(sample_weight, tf.float32)
        log_likelihood = crf_log_likelihood(
            y_pred, y_true, weights > 0, self.crf_layer.transitions, self.crf_layer.start_scores
        )
        words = tf.maximum(tf.reduce_sum(weights), 1.0)
        # divided by the replicas as keras.losses.Loss divides its own (Keras sums the replicas' losses)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return -tf.reduce_sum(log_likelihood) / words / replicas

    def call(self, y_true, y_pred):  # __call__ does the work
        raise NotImplementedError
