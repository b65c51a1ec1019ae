"""tf.data input for training and evaluation, from Transform's output.

Training batches mix the tasks by sampling: each task gets its own shuffled, repeated stream, and
``tf.data.Dataset.sample_from_datasets`` draws from them with weights ``n_task ** (1 / T)``
(proportional for T=1, uniform for T -> infinity). Every batch is cut to the length of its longest
sentence, so short sentences do not pay for the 128-word maximum.

With the masked-word objective (``MaskedWords``), one more stream joins the mix: examples of every
task (translation's English side included) with a share of their words masked BERT-style, labelled
only with the masked words' ids, so the shared encoder also learns from the text itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from mtnlp.model.distillation import pack_targets, teacher_feature_spec
from mtnlp.model.heads import Head
from mtnlp.model.network import MASKED_WORD_LABELS, MASKED_WORDS, mask_word_id, model_input_names
from mtnlp.model.preprocessing import (
    CHAR_CODES,
    PIECE_FEATURES,
    SUBWORD_INPUTS,
    WORD_FEATURES,
    batch_length,
    char_codes,
    trim_to_longest,
)
from mtnlp.model.tasks import get_task, registered_tasks

SEQUENCE_FEATURES = WORD_FEATURES + (MASKED_WORD_LABELS,)
MASKED_WORDS_WEIGHT = "masked_words_weight"


@dataclasses.dataclass(frozen=True)
class MaskedWords:
    """The masked-word objective's share of training examples and how words are masked.

    Args:
        share: probability that a training example is drawn for the objective (from all tasks' text).
        rate: probability that a word of such an example is masked; of the masked words 80 % read
            the mask id, 10 % a random word, 10 % themselves (Devlin et al. 2019).
        vocabulary_size: word ids of the encoder (the mask id is one past them).
    """

    share: float
    rate: float
    vocabulary_size: int

    def mask(self, features: dict[str, tf.Tensor], seed: int) -> dict[str, tf.Tensor]:
        """One example masked: [L] features in, the same with masked words and their labels, every
        head's weights 0 and the objective's weight 1 (0 when no word was drawn)."""
        token_ids = features["token_ids"]
        draws = tf.random.uniform(tf.shape(token_ids), seed=seed)
        masked = (draws < self.rate) & (token_ids > 0)
        how = draws / self.rate  # uniform in [0, 1) again on the masked words
        random_words = tf.random.uniform(tf.shape(token_ids), 1, self.vocabulary_size, dtype=tf.int64, seed=seed + 1)
        replaced = tf.where(
            how < 0.8,
            tf.constant(mask_word_id(self.vocabulary_size), tf.int64),
            tf.where(how < 0.9, random_words, token_ids),
        )
        # no head learns from this example (and a translation example's decoder does not run)
        out = {k: (tf.zeros_like(v) if k.endswith(("_weight", "_label")) else v) for k, v in features.items()}
        out["token_ids"] = tf.where(masked, replaced, token_ids)
        # a masked word's spelling and shape would give it away (its characters too: they are read from words)
        for name in SUBWORD_INPUTS + ("shape_ids",):
            out[name] = tf.where(masked, tf.zeros_like(features[name]), features[name])
        out["words"] = tf.where(masked, tf.constant(""), features["words"])
        out[MASKED_WORD_LABELS] = tf.where(masked, token_ids, tf.zeros_like(token_ids))
        out[MASKED_WORDS_WEIGHT] = tf.cast(tf.reduce_any(masked), tf.float32)
        return out


def _without_masked_words(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """A supervised example in the masked-word stream's structure: no masked word, weight 0."""
    return {**features, MASKED_WORD_LABELS: tf.zeros_like(features["token_ids"]), MASKED_WORDS_WEIGHT: tf.constant(0.0)}


def task_weights(counts: dict[str, int], sampling: str, temperature: float = 1.0) -> dict[str, float]:
    """Sampling probability of each supervised task with examples, from its example count (raw text without
    heads is drawn only by the masked-word objective)."""
    present = {name: n for name, n in counts.items() if n > 0 and get_task(name).supervised}
    if sampling == "proportional":
        raw = dict(present)
    elif sampling == "temperature":
        raw = {name: n ** (1.0 / temperature) for name, n in present.items()}
    elif sampling == "uniform":
        raw = {name: 1.0 for name in present}
    else:
        raise ValueError(f"unknown task_sampling {sampling!r}: use proportional, temperature or uniform")
    total = sum(raw.values())
    return {name: value / total for name, value in raw.items()}


def matching_files(file_patterns: Sequence[str]) -> list[str]:
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {list(file_patterns)}")
    return files


def _parsed(
    file_patterns: Sequence[str], tf_transform_output: tft.TFTransformOutput, distilled: Sequence[str] = ()
) -> tf.data.Dataset:
    """Transform's features of each record, and the teacher predictions of the ``distilled`` heads (written by
    ``distillation.cache_teacher_predictions``; sparse, empty where a record has none)."""
    spec = {**tf_transform_output.transformed_feature_spec(), **teacher_feature_spec(distilled)}
    return tf.data.TFRecordDataset(matching_files(file_patterns), compression_type="GZIP").map(
        lambda record: tf.io.parse_single_example(record, spec), num_parallel_calls=tf.data.AUTOTUNE
    )


def count_examples_per_task(file_patterns: Sequence[str], tf_transform_output: tft.TFTransformOutput) -> dict[str, int]:
    tasks = registered_tasks()
    task_ids = _parsed(file_patterns, tf_transform_output).map(lambda f: f["task_id"])
    counts = task_ids.reduce(
        tf.zeros([len(tasks)], tf.int64), lambda acc, t: acc + tf.one_hot(t, len(tasks), dtype=tf.int64)
    )
    return {task.name: int(n) for task, n in zip(tasks, counts.numpy())}


def trim_batch(
    features: dict[str, tf.Tensor], heads: Sequence[Head], length_buckets: Sequence[int] = ()
) -> dict[str, tf.Tensor]:
    """A batch of Transform's features cut to its longest sentence (``batch_length``): the encoder's word
    features and each head's own (``Head.trim``: per-word labels, targets); the other features are kept."""
    length = batch_length(features, length_buckets)
    trimmed = trim_to_longest(features, SEQUENCE_FEATURES, length_buckets)  # a pretrained backbone's pieces too
    for head in heads:  # each head kind cuts its own features (per-word labels, targets)
        trimmed.update(head.trim(features, length))
    return trimmed


def _to_keras(
    features: dict[str, tf.Tensor],
    heads: Sequence[Head],
    shape_features: bool = False,
    characters: bool = False,
    distilled: Mapping[str, int] | None = None,
):
    """(inputs, labels, sample weights) of a batch; a distilled head's labels are packed with its teacher's
    predictions (``distilled``: head name -> classes kept per position; ``distillation.pack_targets``)."""
    masked_words = MASKED_WORD_LABELS in features
    backbone = PIECE_FEATURES[0] in features
    names = model_input_names(heads, masked_words, backbone, shape_features, characters)
    if CHAR_CODES in names:  # per batch, after the cut: not stored by Transform (see model/preprocessing.py)
        features = {**features, CHAR_CODES: char_codes(features["words"])}
    inputs = {k: features[k] for k in names}
    distilled = distilled or {}
    labels = {
        h.name: pack_targets(features[h.label_key], features, h.name, distilled[h.name])
        if h.name in distilled
        else features[h.label_key]
        for h in heads
    }
    weights = {h.name: features[h.weight_key] for h in heads}
    if masked_words:  # the output is the loss itself; its label is a placeholder
        labels[MASKED_WORDS], weights[MASKED_WORDS] = (
            tf.zeros_like(features[MASKED_WORDS_WEIGHT]),
            features[MASKED_WORDS_WEIGHT],
        )
    return inputs, labels, weights


def training_dataset(
    file_patterns: Sequence[str],
    tf_transform_output: tft.TFTransformOutput,
    heads: Sequence[Head],
    batch_size: int,
    weights: dict[str, float],
    seed: int,
    masked_words: MaskedWords | None = None,
    length_buckets: Sequence[int] = (),
    shape_features: bool = False,
    characters: bool = False,
    distilled: Mapping[str, int] | None = None,
) -> tf.data.Dataset:
    """Endless (inputs, labels, sample_weights) batches, tasks mixed with the given sampling weights
    (and, with ``masked_words``, its share of masked-word examples), each cut to its longest sentence
    rounded up to ``length_buckets`` (``training.length_buckets``). ``shape_features``: the inputs of a
    backbone model built with ``shape_features_beside_backbone``; ``characters``: of a from-scratch model with a
    character CNN (``model.char_cnn_dim``), whose character codes are computed per batch. ``distilled``: the heads
    with teacher predictions in ``file_patterns`` (head name -> classes kept per position; see
    ``model/distillation.py``)."""
    parsed = _parsed(file_patterns, tf_transform_output, list(distilled or {}))
    task_index = {t.name: i for i, t in enumerate(registered_tasks())}
    streams = [
        parsed.filter(lambda f, i=task_index[name]: tf.equal(f["task_id"], i))
        .cache()
        .shuffle(4096, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        for name in weights
    ]
    stream_weights = list(weights.values())
    if masked_words is not None:
        streams = [stream.map(_without_masked_words) for stream in streams]
        streams.append(
            parsed.filter(lambda f: tf.reduce_any(f["token_ids"] > 0))
            .cache()
            .shuffle(8192, seed=seed + 1, reshuffle_each_iteration=True)
            .repeat()
            .map(lambda f: masked_words.mask(f, seed), num_parallel_calls=tf.data.AUTOTUNE)
        )
        stream_weights = [w * (1 - masked_words.share) for w in stream_weights] + [masked_words.share]
    mixed = tf.data.Dataset.sample_from_datasets(streams, weights=stream_weights, seed=seed)
    return (
        mixed.batch(batch_size, drop_remainder=True)
        .map(
            lambda f: _to_keras(trim_batch(f, heads, length_buckets), heads, shape_features, characters, distilled),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )


def evaluation_dataset(
    file_patterns: Sequence[str],
    tf_transform_output: tft.TFTransformOutput,
    heads: Sequence[Head],
    batch_size: int,
    masked_words: bool = False,
    length_buckets: Sequence[int] = (),
    shape_features: bool = False,
    characters: bool = False,
    distilled: Mapping[str, int] | None = None,
) -> tf.data.Dataset:
    """One pass over the evaluation split, in file order, repeated so Keras can take N steps each epoch.
    ``masked_words``: in the structure of a model with the masked-word objective (which it is not scored on);
    ``shape_features`` and ``characters`` as for ``training_dataset``; ``distilled``: the distilled heads, whose
    labels are packed as in training, without teacher predictions (validated on the gold labels)."""
    parsed = _parsed(file_patterns, tf_transform_output)
    return (
        (parsed.map(_without_masked_words) if masked_words else parsed)
        .cache()
        .shuffle(8192, seed=0, reshuffle_each_iteration=False)  # mixes tasks so a few steps see all of them
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .map(lambda f: _to_keras(trim_batch(f, heads, length_buckets), heads, shape_features, characters, distilled))
        .prefetch(tf.data.AUTOTUNE)
    )


def raw_text_counts(counts: dict[str, int]) -> dict[str, int]:
    """The example counts of the tasks without heads (``unlabeled``) that have examples."""
    return {name: n for name, n in counts.items() if n > 0 and not get_task(name).supervised}


def describe_weights(weights: dict[str, float], counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {weights[name]:.0%} of batches ({counts[name]} examples)" for name in weights)
