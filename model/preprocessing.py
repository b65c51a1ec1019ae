"""The tf.Transform ``preprocessing_fn``: raw task features in, fixed-length model features out.

The same graph runs in Transform (analyzers on Beam: the word vocabulary), in the Trainer (which
reads its output) and inside every serving signature (through ``transform_features_layer``), so
serving takes raw text.

Raw features (all optional except ``task``; see ``model/tasks.py``): ``text``, ``tokens``, spans
``e1``/``e2`` and each head's label field. Outputs, with L = ``max_length``:

- ``words``       string [B, L]: the words the model reads ("" padding);
- ``token_ids``   int64 [B, L]: word vocabulary ids, 0 padding, 1.. words, then OOV buckets;
- ``shape_ids``   int64 [B, L]: word shape classes (``model/text.py``);
- ``entity_ids``  int64 [B, L]: 1 for words of span e1, 2 for e2, else 0;
- ``prefix_ids``, ``suffix_ids``, ``pattern_ids`` int64 [B, L]: hashed subword features of each word
  (its first and last ``affix_length`` characters, normalized, and its ``text.shape_patterns``
  shape) in 1..``subword_buckets``, 0 padding. They give every word, however rare, a representation
  from its spelling, like spaCy's MultiHashEmbed; hashing needs no vocabulary, so words never seen in
  training still get them;
- with a pretrained backbone (``backbone_preset``, see ``model/backbone.py``): ``piece_ids`` int64 [B, P]
  (the preset's WordPiece ids + 1, its start and end pieces around the words' pieces, 0 padding; P its
  ``max_sequence_length``) and ``first_piece`` int64 [B, L] (each word's first piece in ``piece_ids``,
  0 padding). Words whose pieces do not fit are dropped (with their per-word labels), as words beyond
  ``max_length`` are;
- not a Transform output, but computed from ``words`` per batch by the datasets (``model/dataset.py``) and per
  request by the serving signatures (``model/signatures.py``), both with ``char_codes``: ``char_codes`` int64
  [B, L, ``WORD_CHARACTERS``], each word's first characters as Unicode code points + 1 (0 padding), what the
  character CNN reads (``model.char_cnn_dim``). Stored per example it would cost ``WORD_CHARACTERS`` ints per
  word of the whole dataset;
- ``task_id``     int64 [B]: index of the example's task in the registry (``model.tasks.registered_tasks()``);
- each head's features, as its kind makes them (``Head.transform_features`` in ``model/heads.py``):
  ``<head>_label`` int64 [B] or [B, L] and ``<head>_weight`` float32, same shape: 1 where the
  example has that label (and the position is a real word), else 0. Sequence heads (translation)
  spell their target in WordPiece pieces of a vocabulary learned on Beam (``<head>_words``; see
  ``model/subwords.py``): ``<head>_label`` int64 [B, Lt] (Lt = ``max_target_length``; piece ids then
  EOS, 0 padding), ``<head>_weight``, ``<head>_reference`` string [B] (what BLEU compares with) and
  ``<head>_example_weight`` float32 [B].

Which record fields make the words is the input kinds' business (``model/inputs.py``): their text
fields are split in the graph (words of a span field pair are marked 1 and 2), their tokens fields
are taken as they are. Each example has exactly one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from mtnlp.model import backbone, text
from mtnlp.model.backbone import FIRST_PIECE, PIECE_IDS
from mtnlp.model.tasks import all_heads, registered_tasks
from mtnlp.sections import TransformConfig, section_from_json

WORDS_VOCABULARY = "words"
SUBWORD_INPUTS = ("prefix_ids", "suffix_ids", "pattern_ids")
# Each word's shape class (model/text.py): read by the from-scratch encoder, and beside a pretrained backbone
# with model.shape_features_beside_backbone.
SHAPE_IDS = "shape_ids"
MODEL_INPUTS = ("token_ids", SHAPE_IDS, "entity_ids") + SUBWORD_INPUTS
# Each word's characters (``char_codes``), for the character CNN: computed from ``words``, not stored by Transform.
CHAR_CODES = "char_codes"
# Characters of a word the character CNN reads (the first ones; 99.8 % of the bundled tagging words have at most 16):
# part of the model's input shape, so the datasets, the serving signatures and the model agree on it.
WORD_CHARACTERS = 16
# The inputs of a model whose encoder is a pretrained backbone (model/backbone.py).
BACKBONE_INPUTS = (PIECE_IDS, FIRST_PIECE, "entity_ids")
# Per-word features [B, L, ...], cut to a batch's longest sentence; per-piece ones [B, P], to its longest pieces.
WORD_FEATURES = ("words",) + MODEL_INPUTS + (CHAR_CODES, FIRST_PIECE)
PIECE_FEATURES = (PIECE_IDS,)

# Target-side ids of sequence heads: 0 padding, then BOS and EOS, then the vocabulary and its OOV buckets.
TARGET_PAD, TARGET_BOS, TARGET_EOS = 0, 1, 2
FIRST_TARGET_WORD = 3


def _feature(inputs: dict[str, Any], name: str, dtype: tf.DType) -> tf.RaggedTensor:
    """A raw [B, (n)] feature as a ragged tensor; no values for every row when it is absent."""
    x = inputs.get(name)
    if x is None:
        return tf.RaggedTensor.from_tensor(tf.zeros([tf.shape(inputs["task"])[0], 0], dtype))
    return tf.RaggedTensor.from_sparse(x) if isinstance(x, tf.SparseTensor) else tf.RaggedTensor.from_tensor(x)


def first_value(x: tf.RaggedTensor, default: Any) -> tf.Tensor:
    """The first value of each row of a [B, (n)] feature, ``default`` where the row is empty: [B]."""
    return x[:, :1].to_tensor(default_value=default, shape=[None, 1])[:, 0]


def label_ids(labels: tf.Tensor, label_set: tuple[str, ...]) -> tf.Tensor:
    """Index of each label in ``label_set`` (0 when absent; ingest guarantees known labels)."""
    matches = tf.equal(tf.expand_dims(labels, -1), tf.constant(label_set))
    return tf.argmax(tf.cast(matches, tf.int64), axis=-1)


def _longest_row(ids: tf.Tensor) -> tf.Tensor:
    """The most non-padding ids (> 0) in a row of ``ids`` [B, T], at least 1 (int32 [])."""
    return tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(ids > 0, tf.int32), axis=1)), 1)


def batch_length(features: dict[str, tf.Tensor], length_buckets: Sequence[int] = ()) -> tf.Tensor:
    """The words a batch is cut to (int32 []): its longest sentence (``token_ids`` > 0; at least 1), or with
    ``length_buckets`` (increasing) the smallest bucket that holds it (the padded width beyond the largest), so
    that batches take a few static shapes, which XLA compiles once each (``training.length_buckets``)."""
    longest = _longest_row(features["token_ids"])
    if not length_buckets:
        return longest
    width = tf.shape(features["token_ids"])[1]
    buckets = tf.concat([tf.constant(list(length_buckets), tf.int32), [width]], axis=0)
    return tf.minimum(tf.reduce_min(tf.boolean_mask(buckets, buckets >= longest)), width)


def trim_to_longest(
    features: dict[str, tf.Tensor], word_features: tuple[str, ...] = WORD_FEATURES, length_buckets: Sequence[int] = ()
) -> dict[str, tf.Tensor]:
    """A batch cut to its longest sentence (``batch_length``, rounded up to ``length_buckets``): ``word_features``
    [B, L] and, with a backbone, ``piece_ids`` [B, P] to the most pieces. Other features are kept."""
    longest = batch_length(features, length_buckets)
    trimmed = {k: (v[:, :longest] if k in word_features else v) for k, v in features.items()}
    if PIECE_IDS in features:
        pieces = _longest_row(features[PIECE_IDS])
        trimmed.update({k: features[k][:, :pieces] for k in PIECE_FEATURES})
    return trimmed


def char_codes(words: tf.Tensor) -> tf.Tensor:
    """Each word's first ``WORD_CHARACTERS`` characters as Unicode code points + 1, 0 padding (and for "" words):
    words string [B, L] -> int64 [B, L, WORD_CHARACTERS]. Invalid UTF-8 reads as U+FFFD. Core TF ops only
    (``UnicodeDecode``), so the serving signatures run it as they are."""
    codes = tf.strings.unicode_decode(words, "UTF-8", errors="replace")
    return tf.cast(codes + 1, tf.int64).to_tensor(default_value=0, shape=[None, None, WORD_CHARACTERS])


def _subword_features(affix_length: int) -> dict[str, Any]:
    """Each subword input's string feature of a word (see the module docstring)."""
    return {
        "prefix_ids": lambda words: tf.ragged.map_flat_values(text.affix, words, affix_length, from_end=False),
        "suffix_ids": lambda words: tf.ragged.map_flat_values(text.affix, words, affix_length, from_end=True),
        "pattern_ids": lambda words: tf.ragged.map_flat_values(text.shape_patterns, words),
    }


def _hashed(strings: tf.Tensor, buckets: int) -> tf.Tensor:
    """Hash bucket of each string in 1..buckets (0 stays padding). FarmHash: a core op, stable across runs."""
    return tf.strings.to_hash_bucket_fast(strings, buckets) + 1


def _span(inputs: dict[str, Any], name: str) -> tf.Tensor:
    """A [B, 2] span feature, [0, 0] for examples without it."""
    return _feature(inputs, name, tf.int64)[:, :2].to_tensor(default_value=0, shape=[None, 2])


def _encoder_fields() -> tuple[list[str], list[str], tuple[str, ...]]:
    """The registered input kinds' text fields, tokens fields and (at most one) span field pair."""
    inputs = [t.encoder_input for t in registered_tasks()]
    span_pairs = {i.span_fields for i in inputs if i.span_fields}
    if len(span_pairs) > 1:
        raise ValueError(
            f"the encoder marks one pair of spans (entity markers 1 and 2); tasks declare {sorted(span_pairs)}"
        )
    return (
        sorted({i.text_field for i in inputs if i.text_field}),
        sorted({i.tokens_field for i in inputs if i.tokens_field}),
        next(iter(span_pairs), ()),
    )


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any] | None = None) -> dict[str, tf.Tensor]:
    """Transform's entry point; ``custom_config`` is ``TransformConfig`` as a dict (checked)."""
    config = section_from_json(TransformConfig, custom_config or {}, "transform")
    max_length = config.max_length
    text_fields, tokens_fields, span_fields = _encoder_fields()

    # Words: gold tokens where the task has them, else the split text. Each example has only one of
    # them, so concatenating per row selects it without a branch.
    text_values = first_value(tf.concat([_feature(inputs, name, tf.string) for name in text_fields], axis=1), "")
    no_span = tf.zeros([tf.shape(inputs["task"])[0], 2], tf.int64)
    spans = [_span(inputs, name) for name in span_fields] or [no_span, no_span]
    text_words, markers = text.split_words_marking_spans(text_values, *spans)
    gold_tokens = tf.concat(
        [_feature(inputs, name, tf.string) for name in tokens_fields]
        or [tf.RaggedTensor.from_tensor(tf.zeros([tf.shape(inputs["task"])[0], 0], tf.string))],
        axis=1,
    )
    words = tf.concat([gold_tokens, text_words], axis=1)
    markers = tf.concat([tf.zeros_like(gold_tokens, tf.int64), markers], axis=1)
    backbone_outputs, kept_words = {}, None
    if config.backbone_preset:
        # the preset's tokenizer; words whose pieces do not fit the backbone are dropped from here on
        tokenizer = backbone.preset_tokenizer(config.backbone_preset)
        keep, piece_ids, first_piece = backbone.piece_features(words, tokenizer, max_length)
        words, markers = tf.ragged.boolean_mask(words, keep), tf.ragged.boolean_mask(markers, keep)
        kept_words = words.row_lengths()
        backbone_outputs = {
            PIECE_IDS: piece_ids.to_tensor(default_value=0, shape=[None, tokenizer.max_pieces]),
            FIRST_PIECE: first_piece.to_tensor(default_value=0, shape=[None, max_length]),
        }

    vocab_ids = tft.compute_and_apply_vocabulary(
        text.normalize_words(words),
        top_k=config.vocabulary_size,
        frequency_threshold=config.min_word_frequency,
        num_oov_buckets=config.num_oov_buckets,
        vocab_filename=WORDS_VOCABULARY,
    )

    def dense(x: tf.RaggedTensor, default: Any) -> tf.Tensor:
        return x.to_tensor(default_value=default, shape=[None, max_length])

    outputs = {
        "words": dense(words, ""),
        "token_ids": dense(vocab_ids + 1, 0),
        "shape_ids": dense(tf.ragged.map_flat_values(text.word_shapes, words), 0),
        "entity_ids": dense(markers, 0),
        **{
            name: dense(tf.ragged.map_flat_values(_hashed, feature(words), config.subword_buckets), 0)
            for name, feature in _subword_features(config.affix_length).items()
        },
        "task_id": label_ids(
            first_value(_feature(inputs, "task", tf.string), ""), tuple(t.name for t in registered_tasks())
        ),
        **backbone_outputs,
    }
    aligned = {f.name for t in registered_tasks() for f in t.fields if f.aligned_with}  # one label per word
    labels = {}
    for head in all_heads():
        labels[head.name] = _feature(inputs, head.label_field, tf.string)
        if kept_words is not None and head.label_field in aligned:  # the dropped words' labels go too
            labels[head.name] = tf.ragged.boolean_mask(
                labels[head.name], tf.ragged.range(labels[head.name].row_lengths()) < kept_words[:, None]
            )
    # every head's analyzers before any head's lookups, so that Transform analyzes in one phase (Head.analyze)
    analyzed = {head.name: head.analyze(labels[head.name], config) for head in all_heads()}
    for head in all_heads():
        outputs.update(head.transform_features(labels[head.name], max_length, config, analyzed[head.name]))
    return outputs
