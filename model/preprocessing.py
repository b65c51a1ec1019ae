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
- ``task_id``     int64 [B]: index of the example's task in ``model.tasks.TASKS``;
- ``<head>_label`` int64 [B] or [B, L] and ``<head>_weight`` float32, same shape: 1 where the
  example has that label (and the position is a real word), else 0.

Sequence heads (translation), with Lt = ``max_target_length``: the encoder reads the ``source``
text like any other text, and the target side is spelled in WordPiece pieces of its own vocabulary
(``<head>_words``, learned on Beam, case kept so that outputs read naturally; see ``model/subwords.py``):

- ``<head>_label``  int64 [B, Lt]: target piece ids then EOS (``TARGET_EOS``), 0 padding; all 0 for
  examples without a target. The decoder's teacher-forced input is this shifted right behind BOS.
- ``<head>_weight`` float32 [B, Lt]: 1 on the label's real positions (EOS included);
- ``<head>_reference`` string [B]: the raw target text ("" without one), what BLEU compares with;
- ``<head>_example_weight`` float32 [B]: 1 for examples with a target.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from model import subwords, text
from model.tasks import ENCODER_TEXT_FIELDS, TASKS, FieldKind, HeadKind, all_fields, all_heads
from pipelines.config import TransformConfig

WORDS_VOCABULARY = "words"
SUBWORD_INPUTS = ("prefix_ids", "suffix_ids", "pattern_ids")
MODEL_INPUTS = ("token_ids", "shape_ids", "entity_ids") + SUBWORD_INPUTS

# Target-side ids of sequence heads: 0 padding, then BOS and EOS, then the vocabulary and its OOV buckets.
TARGET_PAD, TARGET_BOS, TARGET_EOS = 0, 1, 2
FIRST_TARGET_WORD = 3


def _feature(inputs: dict[str, Any], name: str, dtype: tf.DType) -> tf.RaggedTensor:
    """A raw [B, (n)] feature as a ragged tensor; no values for every row when it is absent."""
    x = inputs.get(name)
    if x is None:
        return tf.RaggedTensor.from_tensor(tf.zeros([tf.shape(inputs["task"])[0], 0], dtype))
    return tf.RaggedTensor.from_sparse(x) if isinstance(x, tf.SparseTensor) else tf.RaggedTensor.from_tensor(x)


def _first_value(x: tf.RaggedTensor, default: Any) -> tf.Tensor:
    """The first value of each row of a [B, (n)] feature, ``default`` where the row is empty: [B]."""
    return x[:, :1].to_tensor(default_value=default, shape=[None, 1])[:, 0]


def _label_ids(labels: tf.Tensor, label_set: tuple[str, ...]) -> tf.Tensor:
    """Index of each label in ``label_set`` (0 when absent; ingest guarantees known labels)."""
    matches = tf.equal(tf.expand_dims(labels, -1), tf.constant(label_set))
    return tf.argmax(tf.cast(matches, tf.int64), axis=-1)


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


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any] | None = None) -> dict[str, tf.Tensor]:
    config = dataclasses.asdict(TransformConfig())
    config.update(custom_config or {})
    max_length = config["max_length"]
    fields = all_fields()

    # Words: gold tokens where the task has them, else the split text. Each example has only one of
    # the two, so concatenating per row selects it without a branch.
    text_fields = sorted(set(ENCODER_TEXT_FIELDS.values()))
    text_values = _first_value(tf.concat([_feature(inputs, name, tf.string) for name in text_fields], axis=1), "")
    text_words, markers = text.split_words_marking_spans(text_values, _span(inputs, "e1"), _span(inputs, "e2"))
    gold_tokens = _feature(inputs, "tokens", tf.string)
    words = tf.concat([gold_tokens, text_words], axis=1)
    markers = tf.concat([tf.zeros_like(gold_tokens, tf.int64), markers], axis=1)

    vocab_ids = tft.compute_and_apply_vocabulary(
        text.normalize_words(words),
        top_k=config["vocabulary_size"],
        frequency_threshold=config["min_word_frequency"],
        num_oov_buckets=config["num_oov_buckets"],
        vocab_filename=WORDS_VOCABULARY,
    )

    def dense(x: tf.RaggedTensor, default: Any) -> tf.Tensor:
        return x.to_tensor(default_value=default, shape=[None, max_length])

    outputs = {
        "words": dense(words, ""),
        "token_ids": dense(vocab_ids + 1, 0),
        "shape_ids": dense(tf.ragged.map_flat_values(text.word_shapes, words), 0),
        "entity_ids": dense(markers, 0),
        **{name: dense(tf.ragged.map_flat_values(_hashed, feature(words), config["subword_buckets"]), 0)
           for name, feature in _subword_features(config["affix_length"]).items()},
        "task_id": _label_ids(_first_value(_feature(inputs, "task", tf.string), ""), tuple(t.name for t in TASKS)),
    }

    for head in all_heads():
        kind = fields[head.label_field].kind
        labels = _feature(inputs, head.label_field, tf.string)
        if head.kind is HeadKind.SEQUENCE:
            outputs.update(_target_features(head, _first_value(labels, ""), labels.row_lengths() > 0, config))
        elif head.kind is HeadKind.TOKEN:
            assert kind is FieldKind.TOKEN_LABELS, head
            ids = tf.ragged.map_flat_values(_label_ids, labels, head.labels)
            outputs[head.label_key] = dense(ids, 0)
            outputs[head.weight_key] = dense(tf.ones_like(ids, tf.float32), 0.0)
        else:
            outputs[head.label_key] = _label_ids(_first_value(labels, ""), head.labels)
            outputs[head.weight_key] = tf.cast(labels.row_lengths() > 0, tf.float32)
    return outputs


def _target_features(head, target: tf.Tensor, has_target: tf.Tensor, config: dict[str, Any]) -> dict[str, tf.Tensor]:
    """A sequence head's features (see the module docstring). target: string [B]; has_target: bool [B]."""
    length = config["max_target_length"]
    words = text.split_words(target)  # "" (no target) has no words
    vocabulary = subwords.learn_vocabulary(words.flat_values, config["target_vocabulary_size"], head.vocabulary_name)
    piece_ids = subwords.tokenize(words, vocabulary)
    eos = tf.ragged.boolean_mask(tf.fill([tf.shape(target)[0], 1], tf.constant(TARGET_EOS, tf.int64)), has_target[:, None])
    # Long targets are cut, but always end in EOS, so the decoder learns to stop.
    ids = tf.concat([(piece_ids + FIRST_TARGET_WORD)[:, : length - 1], eos], axis=1)
    return {
        head.label_key: ids.to_tensor(default_value=TARGET_PAD, shape=[None, length]),
        head.weight_key: tf.ones_like(ids, tf.float32).to_tensor(default_value=0.0, shape=[None, length]),
        head.eval_label_key: tf.where(has_target, target, ""),
        head.eval_weight_key: tf.cast(has_target, tf.float32),
    }
