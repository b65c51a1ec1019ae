"""Small Keras layers used by the task heads (serializable, shapes in docstrings)."""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf
from keras import ops

from mtnlp.model import decoding


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
class EntityBoundaryPooling(keras.layers.Layer):
    """Hidden states of the first and the last word of each marked entity, concatenated.

    Both ends of both entities (rather than only their first words) let a multi-word entity's head
    word, usually its last ("the plastic *chairs*"), reach the relation classifier.

    Args:
        markers: the entity marker ids to pool, in output order (1 marks entity 1's words, 2 entity 2's).

    Call args: hidden [B, T, D], entity_ids [B, T]. Returns [B, 2 * len(markers) * D]: for each
    marker its first word's state then its last word's; an absent entity contributes zeros.
    """

    def __init__(self, markers: tuple[int, ...] = (1, 2), **kwargs):
        super().__init__(**kwargs)
        self.markers = tuple(markers)

    def call(self, hidden, entity_ids):
        pooled = []
        for marker in self.markers:
            is_marker = ops.cast(ops.equal(entity_ids, marker), hidden.dtype)  # [B, T]
            seen = ops.cumsum(is_marker, axis=1)
            # one-hot of the first and of the last marked position (all zeros when the entity is absent)
            first = is_marker * ops.cast(ops.equal(seen, 1.0), hidden.dtype)
            last = is_marker * ops.cast(ops.equal(seen, ops.max(seen, axis=1, keepdims=True)), hidden.dtype)
            pooled += [ops.einsum("bt,btd->bd", first, hidden), ops.einsum("bt,btd->bd", last, hidden)]
        return ops.concatenate(pooled, axis=-1)

    def compute_output_shape(self, hidden_shape, entity_ids_shape=None):
        return (hidden_shape[0], hidden_shape[2] * 2 * len(self.markers))

    def get_config(self):
        return {**super().get_config(), "markers": self.markers}


@keras.saving.register_keras_serializable(package="mtnlp")
class Maxout(keras.layers.Layer):
    """A maxout layer (Goodfellow et al. 2013): ``pieces`` affine maps of the input, the largest per unit.

    spaCy's tok2vec mixes its concatenated word-feature embeddings, and each window of its convolution,
    with one; keras-hub has none.

    Args:
        units: output width U.
        pieces: affine maps per unit P (spaCy's 3).

    Call args: inputs [..., D]. Returns [..., U]: for each unit the largest of its P pieces.
    """

    def __init__(self, units: int, pieces: int = 3, **kwargs):
        super().__init__(**kwargs)
        if units < 1 or pieces < 1:
            raise ValueError(f"Maxout: units ({units}) and pieces ({pieces}) must be at least 1")
        self.units, self.pieces = units, pieces

    def build(self, input_shape):
        self.projection = keras.layers.Dense(self.units * self.pieces, name="projection")
        self.projection.build(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        projected = self.projection(inputs)
        return ops.max(ops.reshape(projected, (*ops.shape(projected)[:-1], self.units, self.pieces)), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "pieces": self.pieces}


@keras.saving.register_keras_serializable(package="mtnlp")
class MaxoutWindowBlock(keras.layers.Layer):
    """One layer of spaCy's ``MaxoutWindowEncoder``: each word's state plus a maxout of itself and its
    ``window`` neighbours on either side (concatenated), layer-normalized: local context (affixes of the
    next word, the previous word's shape) before attention has to find it.

    Padding words are zeroed before the window is read, so a sentence's last word sees zeros past its
    end whatever the batch's padding holds, and a word's state does not depend on its batch.

    Args:
        window: neighbours on each side W (spaCy's 1: three words in all).
        pieces: maxout pieces P.
        dropout: dropout on the block's output before the residual sum.

    Call args: hidden [B, T, D], padding_mask [B, T] (bool, True for real words). Returns [B, T, D].
    """

    def __init__(self, window: int = 1, pieces: int = 3, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if window < 1:
            raise ValueError(f"MaxoutWindowBlock: window {window} must be at least 1 (a neighbour on each side)")
        self.window, self.pieces, self.dropout = window, pieces, dropout

    def build(self, hidden_shape, padding_mask_shape=None):
        dim = hidden_shape[-1]
        self.maxout = Maxout(dim, self.pieces, name="maxout")
        self.maxout.build((None, None, dim * (2 * self.window + 1)))
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
        self.norm.build((None, None, dim))
        self.drop = keras.layers.Dropout(self.dropout)
        super().build(hidden_shape)

    def call(self, hidden, padding_mask, training=None):
        hidden = hidden * ops.expand_dims(ops.cast(padding_mask, hidden.dtype), -1)
        padded = ops.pad(hidden, [[0, 0], [self.window, self.window], [0, 0]])
        length = ops.shape(hidden)[1]
        # offset k of the padded sequence is the word k - window positions away
        neighbours = [padded[:, k : k + length, :] for k in range(2 * self.window + 1)]
        mixed = self.norm(self.maxout(ops.concatenate(neighbours, axis=-1)))
        return hidden + self.drop(mixed, training=training)

    def compute_output_shape(self, hidden_shape, padding_mask_shape=None):
        return hidden_shape

    def get_config(self):
        return {**super().get_config(), "window": self.window, "pieces": self.pieces, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="mtnlp")
class CharacterCNN(keras.layers.Layer):
    """A word's vector from its characters (Ma & Hovy 2016): each character embedded, a convolution over the
    word's characters, the largest response per filter: spelling (affixes, capitals, digits, hyphens) for every
    word, seen in training or not, with no vocabulary.

    A character's embedding row is its code point modulo ``buckets``, plus 1 (every character below ``buckets``,
    ASCII and the Latin letters with accents among them, has a row of its own). Padding characters are zeroed
    before the convolution and left out of the max, so a word's vector depends on its own characters only
    (not on how many characters are padding); a word without characters ("" padding) gets zeros.

    Args:
        filters: the convolution's filters F, the output width.
        kernel_size: characters per convolution window K ("same" padding: the word's ends see zeros beyond).
        char_dim: width of a character embedding E (Ma & Hovy's 30).
        buckets: embedding rows for characters (beyond padding's row 0); code points above share rows.
        dropout: dropout on the character embeddings (Ma & Hovy's 0.5).

    Call args: char_codes int [B, T, C], each word's characters as code points + 1, 0 padding
    (``model.preprocessing.char_codes``). Returns float [B, T, F]: per filter, its largest ReLU response over
    the word's characters.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        char_dim: int = 32,
        buckets: int = 1024,
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if filters < 1 or kernel_size < 1 or char_dim < 1 or buckets < 1:
            raise ValueError(
                f"CharacterCNN: filters ({filters}), kernel_size ({kernel_size}), char_dim ({char_dim}) and "
                f"buckets ({buckets}) must be at least 1"
            )
        self.filters, self.kernel_size, self.char_dim = filters, kernel_size, char_dim
        self.buckets, self.dropout = buckets, dropout

    def build(self, char_codes_shape):
        self.embedding = keras.layers.Embedding(self.buckets + 1, self.char_dim, name="char_embedding")
        self.embedding.build((None, None))
        self.conv = keras.layers.Conv1D(
            self.filters, self.kernel_size, padding="same", activation="relu", name="char_conv"
        )
        self.conv.build((None, None, self.char_dim))
        self.drop = keras.layers.Dropout(self.dropout)
        super().build(char_codes_shape)

    def call(self, char_codes, training=None):
        codes = ops.cast(char_codes, "int32")
        is_char = ops.cast(ops.greater(codes, 0), self.compute_dtype)  # [B, T, C]
        rows = ops.where(codes > 0, (codes - 1) % self.buckets + 1, 0)
        embedded = self.drop(self.embedding(rows), training=training) * ops.expand_dims(is_char, -1)
        batch, words, characters = ops.shape(codes)[0], ops.shape(codes)[1], ops.shape(codes)[2]
        # one row per word: the convolution runs along its characters
        responses = self.conv(ops.reshape(embedded, (-1, characters, self.char_dim)))
        # ReLU responses are >= 0, so zeroing the padding's leaves them out of the max (and "" gets 0)
        responses = responses * ops.reshape(is_char, (-1, characters, 1))
        return ops.reshape(ops.max(responses, axis=1), (batch, words, self.filters))

    def compute_output_shape(self, char_codes_shape):
        return (char_codes_shape[0], char_codes_shape[1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "char_dim": self.char_dim,
            "buckets": self.buckets,
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="mtnlp")
class SequenceDecoder(keras.layers.Layer):
    """The decoder of a sequence head: target-word embeddings, keras-hub ``TransformerDecoder`` layers
    (causal self-attention, cross-attention to the encoder) and a projection onto the target vocabulary.

    Target ids: 0 padding, ``bos_id``, ``eos_id``, then words (see ``model/preprocessing.py``).

    Args:
        vocabulary_size: target ids V (special ids and OOV buckets included).
        max_length: longest target sequence L (positions of the target embedding).
        num_layers, num_heads, intermediate_dim, dropout: the ``TransformerDecoder`` layers' sizes.
        bos_id, eos_id: the special target ids.
        tie_embeddings: project onto the vocabulary with the target embedding matrix (transposed)
            instead of a separate output matrix (Press & Wolf 2017): fewer parameters, and rare
            target words learn from both their uses.

    Call args: encoder_hidden [B, T, D], encoder_mask [B, T] (bool, True for real words), target_ids
    [B, L] int (the label ids: words then EOS, 0 padding; an all-zero row has no target).
    Returns teacher-forced logits [B, L, V]. Only the rows that have a target run through the
    decoder: they are gathered, decoded and scattered back, and the other rows get zero logits (so
    a batch of other tasks' examples costs the decoder nothing and gives it no gradient).
    """

    def __init__(
        self,
        vocabulary_size: int,
        max_length: int,
        num_layers: int,
        num_heads: int,
        intermediate_dim: int,
        dropout: float = 0.0,
        bos_id: int = 1,
        eos_id: int = 2,
        tie_embeddings: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tie_embeddings = tie_embeddings
        self.vocabulary_size, self.max_length, self.num_layers = vocabulary_size, max_length, num_layers
        self.num_heads, self.intermediate_dim, self.dropout = num_heads, intermediate_dim, dropout
        self.bos_id, self.eos_id = bos_id, eos_id

    def build(self, encoder_hidden_shape, encoder_mask_shape=None, target_ids_shape=None):
        dim = encoder_hidden_shape[-1]
        self.embedding = keras_hub.layers.TokenAndPositionEmbedding(
            self.vocabulary_size, self.max_length, dim, tie_weights=self.tie_embeddings, name="target_embedding"
        )
        self.embedding.build((None, None))
        self.decoders = []
        for i in range(self.num_layers):
            decoder = keras_hub.layers.TransformerDecoder(
                self.intermediate_dim, self.num_heads, dropout=self.dropout, name=f"decoder_{i}"
            )
            decoder.build((None, None, dim), (None, None, dim))
            self.decoders.append(decoder)
        super().build(encoder_hidden_shape)

    def decode(self, encoder_hidden, encoder_mask, decoder_input_ids, training=None):
        """Logits [N, L, V] for decoder inputs [N, L] (BOS first) over encoder states [N, T, D]."""
        x = self.embedding(decoder_input_ids)
        for decoder in self.decoders:
            x = decoder(x, encoder_hidden, encoder_padding_mask=encoder_mask, use_causal_mask=True, training=training)
        # the embedding's reverse projection: its own output matrix, or the embedding itself when tied
        return self.embedding.token_embedding(x, reverse=True)

    def next_logits(self, encoder_hidden, encoder_mask, ids, t):
        """Logits [N, V] of the token at position ``t``, given the id buffer ``ids`` [N, L] that holds the
        tokens before it (decoding). Only positions 0..t run through the decoder, since the causal mask makes
        later ones irrelevant to position t, and only position t is projected onto the vocabulary: a step costs
        O(t) instead of O(L) layer positions and one [D, V] product instead of L."""
        x = self.embedding(self.shift_right(ids)[:, : t + 1])
        for decoder in self.decoders:
            x = decoder(x, encoder_hidden, encoder_padding_mask=encoder_mask, use_causal_mask=True, training=False)
        return self.embedding.token_embedding(x[:, -1, :], reverse=True)

    def shift_right(self, target_ids):
        """Teacher forcing: the decoder reads BOS and the target up to the previous position. [N, L]"""
        bos = ops.full((ops.shape(target_ids)[0], 1), self.bos_id, dtype=target_ids.dtype)
        return ops.concatenate([bos, target_ids[:, :-1]], axis=1)

    def call(self, encoder_hidden, encoder_mask, target_ids, training=None):
        rows = ops.where(ops.greater(target_ids[:, 0], 0))[0]  # examples with a target
        # Never decode zero rows: an empty gather/scatter segfaults the 2-replica MirroredStrategy step
        # on CPU. Row 0 is decoded instead; it has no target, so its zero sample weight keeps loss and
        # gradient at 0 (and it costs one row).
        rows = tf.cond(tf.size(rows) > 0, lambda: rows, lambda: tf.zeros([1], rows.dtype))
        logits = self.decode(
            ops.take(encoder_hidden, rows, axis=0),
            ops.take(encoder_mask, rows, axis=0),
            self.shift_right(ops.take(target_ids, rows, axis=0)),
            training=training,
        )
        shape = (ops.shape(target_ids)[0], ops.shape(target_ids)[1], self.vocabulary_size)
        return ops.scatter(ops.expand_dims(rows, -1), logits, shape)

    def greedy_decode(self, encoder_hidden, encoder_mask, max_length: int, never_emit: tuple[int, ...] = ()):
        """Greedy decoding in a ``tf.while_loop`` (core TF ops only, for the serving graph).

        encoder_hidden [N, T, D], encoder_mask [N, T] -> target ids int64 [N, max_length]: words,
        then EOS, then 0. Padding, BOS and the ids in ``never_emit`` (an unknown-piece id) are never chosen.
        The loop keeps a fixed-size id buffer; step t runs the decoder over its first t + 1 positions
        (``next_logits``; no key/value cache); rows are independent.
        """
        n = tf.shape(encoder_hidden)[0]
        ids = tf.zeros([n, max_length], tf.int64)
        finished = tf.zeros([n], tf.bool)

        def step(t, ids, finished):
            logits = self.next_logits(encoder_hidden, encoder_mask, ids, t)
            special = tf.one_hot(
                list(range(self.eos_id)) + list(never_emit), self.vocabulary_size, on_value=-1e9, off_value=0.0
            )
            step_logits = logits + tf.cast(tf.reduce_sum(special, axis=0), logits.dtype)
            best = tf.argmax(step_logits, axis=-1, output_type=tf.int64)
            best = tf.where(finished, tf.zeros_like(best), best)  # nothing after EOS
            ids = ids + best[:, None] * tf.one_hot(t, max_length, dtype=tf.int64)[None, :]
            return t + 1, ids, finished | tf.equal(best, self.eos_id)

        _, ids, _ = tf.while_loop(
            lambda t, ids, finished: tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished))),
            step,
            (tf.constant(0), ids, finished),
            maximum_iterations=max_length,
        )
        return ids

    def beam_decode(
        self,
        encoder_hidden,
        encoder_mask,
        max_length: int,
        beam_width: int,
        length_penalty: float,
        never_emit: tuple[int, ...] = (),
    ):
        """Beam search (``model.decoding.beam_search``, core TF ops only): like ``greedy_decode``, but
        keeps the ``beam_width`` most likely hypotheses per row and returns the best finished one
        under the GNMT length penalty ``length_penalty``. Width 1 is greedy decoding.

        encoder_hidden [N, T, D], encoder_mask [N, T] -> target ids int64 [N, max_length].
        """
        hidden = decoding.tile_for_beams(encoder_hidden, beam_width)
        mask = decoding.tile_for_beams(encoder_mask, beam_width)
        suppressed = (
            tf.reduce_sum(tf.one_hot(list(never_emit), self.vocabulary_size, on_value=-1e9), axis=0)
            if never_emit
            else 0.0
        )

        def next_logits(ids, t):
            logits = self.next_logits(hidden, mask, ids, t)
            return logits + tf.cast(suppressed, logits.dtype)

        return decoding.beam_search(
            next_logits,
            tf.shape(encoder_hidden)[0],
            max_length,
            beam_width,
            length_penalty,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            vocabulary_size=self.vocabulary_size,
        )

    def compute_output_shape(self, encoder_hidden_shape, encoder_mask_shape=None, target_ids_shape=None):
        return (target_ids_shape[0], target_ids_shape[1], self.vocabulary_size)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "max_length": self.max_length,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "tie_embeddings": self.tie_embeddings,
        }


@keras.saving.register_keras_serializable(package="mtnlp")
class MaskedWordLoss(keras.layers.Layer):
    """The masked-word (masked language model) objective: predicts the original word at the masked
    positions from the encoder's states and returns each example's mean cross-entropy.

    Only the masked positions are projected onto the word vocabulary (gathered first), so the
    objective costs a few dozen [D, V] products per batch instead of one per word. Training-only:
    the serving model is built without it (``model.network.inference_model``).

    Args:
        vocabulary_size: the word ids V it predicts (the encoder's word vocabulary).

    Call args: hidden [B, T, D]; word_labels [B, T] int (the original word id at a masked position,
    0 elsewhere). Returns float [B]: the mean cross-entropy over the row's masked positions (0 for a
    row without any).
    """

    def __init__(self, vocabulary_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size

    def build(self, hidden_shape, word_labels_shape=None):
        self.projection = keras.layers.Dense(self.vocabulary_size, name="word_projection")
        self.projection.build((None, hidden_shape[-1]))
        super().build(hidden_shape)

    def call(self, hidden, word_labels):
        word_labels = tf.cast(word_labels, tf.int64)
        positions = tf.where(word_labels > 0)  # [M, 2]
        # An empty gather crashes multi-replica CPU steps (see SequenceDecoder.call): without masked
        # words, position (0, 0) is scored with weight 0 instead.
        positions = tf.cond(tf.size(positions) > 0, lambda: positions, lambda: tf.zeros([1, 2], tf.int64))
        targets = tf.gather_nd(word_labels, positions)
        logits = self.projection(tf.gather_nd(hidden, positions))
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))
        counted = tf.cast(targets > 0, tf.float32)
        rows, batch = positions[:, 0], tf.shape(hidden, out_type=tf.int64)[0]
        total = tf.math.unsorted_segment_sum(losses * counted, rows, batch)
        return total / tf.maximum(tf.math.unsorted_segment_sum(counted, rows, batch), 1.0)

    def compute_output_shape(self, hidden_shape, word_labels_shape=None):
        return (hidden_shape[0],)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size}


@keras.saving.register_keras_serializable(package="mtnlp")
class PrecomputedLoss(keras.losses.Loss):
    """The loss of an output that already is a per-example loss (``MaskedWordLoss``): y_pred [B] as it
    is (y_true is ignored); Keras applies the sample weights and the reduction."""

    def __init__(self, reduction="mean_with_sample_weight", name="precomputed_loss"):
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true, y_pred):
        return y_pred


@keras.saving.register_keras_serializable(package="mtnlp")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy from logits with label smoothing (which Keras' sparse loss lacks).

    y_true int [..., ], y_pred logits [..., V]: ``(1 - s) * CE(y_true) + s * mean over classes of -log p``,
    i.e. the target distribution puts ``s`` uniformly on every class. Per-position values; Keras
    applies the sample weights and the reduction.
    """

    def __init__(self, label_smoothing: float = 0.1, reduction="mean_with_sample_weight", name="smoothed_crossentropy"):
        super().__init__(reduction=reduction, name=name)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        log_probabilities = ops.log_softmax(y_pred, axis=-1)
        y_true = ops.cast(y_true, "int32")
        gold = ops.take_along_axis(log_probabilities, ops.expand_dims(y_true, -1), axis=-1)[..., 0]
        uniform = ops.mean(log_probabilities, axis=-1)
        return -((1.0 - self.label_smoothing) * gold + self.label_smoothing * uniform)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="mtnlp")
class NoneClassDense(keras.layers.Dense):
    """A classifier's output layer whose logit for its "none" class (relation's ``Other``) is the constant 0.

    CR-CNN's prediction rule (dos Santos, Xiang and Zhou 2015): the none class is not a class of its own
    to score but what is left when no other class scores above 0. With its logit fixed at 0 in the graph,
    the served argmax is that rule and the served probabilities stay a softmax over every label. Trained
    with ``PairwiseRankingLoss``, which never scores the none class.

    It is a ``Dense`` layer with ``Dense``'s weights (kernel [D, C], bias [C]; the none class's column is
    computed, then replaced, and gets no gradient), so it warm-starts from, and into, a model trained
    without the ranking loss.

    Args:
        units: the number of classes C.
        none_index: the none class, in 0..C-1.
        **kwargs: ``Dense``'s.

    Call args: inputs [..., D]. Returns logits [..., C], 0 at [..., none_index].
    """

    def __init__(self, units: int, none_index: int, **kwargs):
        super().__init__(units, **kwargs)
        if not 0 <= none_index < units:
            raise ValueError(f"none_index {none_index} is not one of the {units} classes")
        self.none_index = none_index

    def call(self, inputs, training=None):
        logits = super().call(inputs, training=training)
        is_none = ops.equal(ops.arange(self.units), self.none_index)  # [C], broadcast over the leading axes
        return ops.where(is_none, ops.zeros_like(logits), logits)

    def get_config(self):
        return {**super().get_config(), "none_index": self.none_index}


@keras.saving.register_keras_serializable(package="mtnlp")
class PairwiseRankingLoss(keras.losses.Loss):
    """CR-CNN's pairwise ranking loss (dos Santos, Xiang and Zhou 2015, "Classifying Relations by Ranking
    with Convolutional Neural Networks"): push the gold class's score above ``margin_positive`` and the
    best wrong class's score below ``-margin_negative``, for a classifier with a "none" class.

    For an example with logits s and gold class y+ other than the none class::

        log(1 + exp(gamma * (margin_positive - s[y+]))) + log(1 + exp(gamma * (margin_negative + s[c-])))

    where c- is the highest-scoring class other than y+ and other than the none class; for a none-class
    example only the second term, c- the highest-scoring class other than the none class. The none class
    is never scored (its logit is the constant 0: ``NoneClassDense``), so the model learns to predict it by
    scoring every other class below 0. Only the best wrong class is penalized, as in the paper.

    Args:
        none_index: the none class (None: every class is a real one and every example has both terms).
        gamma: the scaling factor that magnifies the error (the paper's 2).
        margin_positive, margin_negative: the margins m+ and m- (the paper's 2.5 and 0.5).
        reduction, name: ``keras.losses.Loss``'s; the default averages over the sample weights (0 for
            examples of other tasks), as the heads' cross-entropy does.

    y_true int [...], y_pred logits [..., C]. Returns the per-example values [...]; Keras applies the
    sample weights and the reduction.
    """

    def __init__(
        self,
        none_index: int | None,
        gamma: float = 2.0,
        margin_positive: float = 2.5,
        margin_negative: float = 0.5,
        reduction="mean_with_sample_weight",
        name="pairwise_ranking",
    ):
        super().__init__(reduction=reduction, name=name)
        self.none_index, self.gamma = none_index, gamma
        self.margin_positive, self.margin_negative = margin_positive, margin_negative

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "int32")
        classes = ops.arange(ops.shape(y_pred)[-1], dtype="int32")
        is_gold = ops.equal(ops.expand_dims(y_true, -1), classes)  # [..., C]
        is_none = ops.equal(classes, -1 if self.none_index is None else self.none_index)  # [C]
        gold_score = ops.sum(ops.where(is_gold, y_pred, 0.0), axis=-1)
        # a large finite score rather than -inf for the excluded classes: with no class left (two classes,
        # one of them none) the term is softplus(-2e9) = 0 with a zero gradient, not a NaN
        best_wrong = ops.max(ops.where(ops.logical_or(is_gold, is_none), -1e9, y_pred), axis=-1)
        positive = ops.softplus(self.gamma * (self.margin_positive - gold_score))
        if self.none_index is not None:  # a none-class example has no score to push up
            positive = ops.where(ops.equal(y_true, self.none_index), 0.0, positive)
        return positive + ops.softplus(self.gamma * (self.margin_negative + best_wrong))

    def get_config(self):
        return {
            **super().get_config(),
            "none_index": self.none_index,
            "gamma": self.gamma,
            "margin_positive": self.margin_positive,
            "margin_negative": self.margin_negative,
        }


@keras.saving.register_keras_serializable(package="mtnlp")
class TaskUncertainty(keras.layers.Layer):
    """Learned homoscedastic task uncertainty (Kendall, Gal and Cipolla, 2018): one log-variance
    ``s = log sigma^2`` per head, used by ``UncertaintyWeightedLoss``.

    It sits in the graph as an identity (inputs [...] -> the same tensor) only so that its variables
    belong to the model and are trained with it; it computes nothing at serving time.
    """

    def __init__(self, head_names: tuple[str, ...] | list[str], **kwargs):
        super().__init__(**kwargs)
        self.head_names = tuple(head_names)

    def build(self, input_shape):
        self.log_variance = self.add_weight(
            shape=(len(self.head_names),), initializer="zeros", name="log_variance", trainable=True
        )

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def log_variance_of(self, head_name: str):
        return self.log_variance[self.head_names.index(head_name)]

    def get_config(self):
        return {**super().get_config(), "head_names": self.head_names}


class UncertaintyWeightedLoss(keras.losses.Loss):
    """A head's loss weighted by its learned uncertainty: ``exp(-s) * L + s / 2`` (Kendall et al. 2018's
    classification form with ``s = log sigma^2``), so that noisy or hard heads get smaller weights
    without a hand-set weight per head. ``L`` is the wrapped loss with its own sample weighting.

    Training-only (the compiled loss holds a reference to the model's ``TaskUncertainty`` layer), so it
    is not registered for serialization.
    """

    def __init__(self, loss: keras.losses.Loss, uncertainty: TaskUncertainty, head_name: str):
        super().__init__(name=f"{head_name}_uncertainty_weighted", reduction=loss.reduction)
        self.loss, self.uncertainty, self.head_name = loss, uncertainty, head_name

    def __call__(self, y_true, y_pred, sample_weight=None):
        s = self.uncertainty.log_variance_of(self.head_name)
        # the wrapped loss is already divided by the number of replicas (Keras sums them); so is the prior
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return ops.exp(-s) * self.loss(y_true, y_pred, sample_weight) + 0.5 * s / replicas

    def call(self, y_true, y_pred):  # __call__ does the work
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="mtnlp")
class FirstPieceGather(keras.layers.Layer):
    """Each word's state from a subword encoder: the state of the word's first piece.

    A pretrained backbone (``model/backbone.py``) reads WordPiece pieces; the heads read words. Word
    heads (tags, entity pooling) take the first piece of each word, as BERT's NER fine-tuning does.

    Call args: pieces [B, P, H], the backbone's output per piece; first_piece int [B, T], the position
    of each word's first piece in ``pieces`` (0, the start piece, on padding words).
    Returns [B, T, H].
    """

    def call(self, pieces, first_piece):
        return ops.take_along_axis(pieces, ops.expand_dims(ops.cast(first_piece, "int32"), -1), axis=1)

    def compute_output_shape(self, pieces_shape, first_piece_shape=None):
        return (pieces_shape[0], first_piece_shape[1] if first_piece_shape else None, pieces_shape[2])


@keras.saving.register_keras_serializable(package="mtnlp")
class ExactGeluBertBackbone(keras_hub.models.BertBackbone):
    """keras-hub's ``BertBackbone`` with the exact (erf) GELU in its feed-forward layers, for checkpoints whose
    config says ``hidden_act: gelu`` (the original BERTs, MiniLM). keras-hub's own has the tanh approximation,
    which moves such a checkpoint's outputs by up to ~1e-3 (``model/checkpoints.py`` picks the class).

    Args and config: those of ``BertBackbone``; inputs and outputs too (token_ids, segment_ids, padding_mask
    [B, P] -> sequence_output [B, P, H], pooled_output [B, H]).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for index in range(self.num_layers):  # the layers are built: their Dense layers read the activation when called
            encoder = self.get_layer(f"transformer_layer_{index}")
            encoder.activation = encoder._feedforward_intermediate_dense.activation = keras.activations.gelu


@keras.saving.register_keras_serializable(package="mtnlp")  # keras-hub looks for tokenizers among registered classes
class ExactGeluBertTokenizer(keras_hub.models.BertTokenizer):
    """``BertTokenizer``, declared the tokenizer of ``ExactGeluBertBackbone`` so that keras-hub's
    ``Tokenizer.from_preset`` finds one for a preset saved from it."""

    backbone_cls = ExactGeluBertBackbone
