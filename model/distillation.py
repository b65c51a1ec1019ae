"""Knowledge distillation with teacher annealing (Clark et al. 2019, "BAM! Born-Again Multi-Task Networks").

A head with a teacher (``heads.<name>.teacher``: a trained model of the same Transform output) learns from

    loss = lambda * CE(gold) + (1 - lambda) * CE(teacher's distribution)

where lambda (``gold_weight``) follows ``training.teacher_annealing``: "linear" rises from 0 to 1 over the run's
steps (the target moves from the teacher's prediction to the gold label), "off" stays 0 (the teacher only).
Sentence and entity-pair heads distil one distribution per example, token heads one per word, sequence heads
(translation) one per target position under teacher forcing (word-level distillation, Kim & Rush 2016).

The teachers run ONCE per training example, before ``fit`` (``cache_teacher_predictions``): each training record
is written again, in file order, with its teacher's top-k classes and probabilities per position as extra features
(``<head>_teacher_ids``, ``<head>_teacher_probs``). The Trainer's input pipeline (``model/dataset.py``) then reads
them with the record, so task sampling, shuffling and caching work as before and a training step costs what it
costs without distillation; running the teachers in every step would add one forward pass per teacher per batch.
A label head stores its whole distribution (k = its label count: exact); a sequence head its 8 most probable
target pieces per position, renormalized (its vocabulary has thousands of pieces: the full distribution would make
the cache ~1000x larger, while the top 8 carry almost all the mass).

In a batch, a distilled head's labels are packed as one float tensor ``[..., 1 + 2k]`` (gold id, teacher ids,
teacher probabilities; ``pack_targets``): Keras hands one ``y_true`` per output to its loss and metrics. Rows
without teacher predictions (other tasks, the validation split) carry probabilities 0 and learn from the gold label
alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from mtnlp.model.heads import Head
from mtnlp.model.preprocessing import CHAR_CODES, char_codes
from mtnlp.sections import HeadConfig

log = logging.getLogger(__name__)

CACHE_FILE = "teacher_predictions.tfrecord.gz"


def gold_weight(step: int | tf.Tensor, total_steps: int, annealing: str = "linear") -> tf.Tensor:
    """lambda, the gold label's weight at optimizer step ``step`` (0-based) of ``total_steps``: "linear" rises
    from 0 at step 0 to 1 at the last step's end, "off" is 0."""
    if annealing == "off":
        return tf.constant(0.0)
    return tf.clip_by_value(tf.cast(step, tf.float32) / float(max(total_steps, 1)), 0.0, 1.0)


def teacher_keys(head_name: str) -> tuple[str, str]:
    """The features a cached record carries for a distilled head: top-k class ids and their probabilities,
    each flat [positions * k]."""
    return f"{head_name}_teacher_ids", f"{head_name}_teacher_probs"


def top_k(head: Head, num_classes: int) -> int:
    """Classes kept per position: the head kind's ``distilled_classes`` (a sequence head's 8 pieces), or all."""
    return min(head.distilled_classes or num_classes, num_classes)


def teacher_feature_spec(head_names: Sequence[str]) -> dict[str, tf.io.VarLenFeature]:
    """How ``model/dataset.py`` parses the cached records' teacher features (absent: empty)."""
    spec = {}
    for name in head_names:
        ids, probs = teacher_keys(name)
        spec[ids], spec[probs] = tf.io.VarLenFeature(tf.int64), tf.io.VarLenFeature(tf.float32)
    return spec


def pack_targets(gold: tf.Tensor, features: Mapping[str, tf.Tensor], head_name: str, k: int) -> tf.Tensor:
    """A distilled head's ``y_true`` for a batch: float [B, 1 + 2k] (one label per example) or [B, T, 1 + 2k]
    (per word or target position): the gold id, then the teacher's k ids and probabilities (0 where the batch's
    records have none). ``features``: the batch, its teacher features batched sparse [B, positions * k] (absent
    in the validation split)."""
    ids_key, probs_key = teacher_keys(head_name)
    length = 1 if gold.shape.rank == 1 else tf.shape(gold)[1]
    batch = tf.shape(gold)[0]

    def per_position(key: str, dtype: tf.DType) -> tf.Tensor:
        if key not in features:
            return tf.zeros([batch, length, k], tf.float32)
        values = tf.reshape(tf.sparse.to_dense(tf.cast(features[key], dtype)), [batch, -1, k])
        padded = tf.pad(values, [[0, 0], [0, tf.maximum(length - tf.shape(values)[1], 0)], [0, 0]])
        return tf.cast(padded[:, :length], tf.float32)

    teacher = tf.concat([per_position(ids_key, tf.int64), per_position(probs_key, tf.float32)], axis=-1)
    if gold.shape.rank == 1:
        teacher = teacher[:, 0]
    return tf.concat([tf.cast(gold, tf.float32)[..., None], teacher], axis=-1)


def _unpack(y_true: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    k = (y_true.shape[-1] - 1) // 2
    return tf.cast(y_true[..., 0], tf.int32), tf.cast(y_true[..., 1 : 1 + k], tf.int32), y_true[..., 1 + k :]


@keras.saving.register_keras_serializable(package="mtnlp")
class DistillationLoss(keras.losses.Loss):
    """``lambda * CE(gold) + (1 - lambda) * CE(teacher)`` per example (or word, or target position), averaged
    over the sample weights as the heads' plain losses are; lambda is ``gold_weight`` at the optimizer's step.

    Args:
        gold_loss: the head's own cross-entropy (``Head.loss``: with its label smoothing, if any), for CE(gold).
        step: the optimizer's step counter (``optimizer.iterations``), read at each call.
        total_steps: the run's optimizer steps (lambda reaches 1 at their end).
        annealing: ``training.teacher_annealing``.

    ``y_true``: ``pack_targets``' float [..., 1 + 2k]; ``y_pred``: logits [..., C]. A position whose teacher
    probabilities are all 0 (no prediction cached) learns from the gold label alone.
    """

    def __init__(
        self,
        gold_loss: keras.losses.Loss,
        step: keras.Variable,
        total_steps: int,
        annealing: str = "linear",
        reduction="mean_with_sample_weight",
        name="distillation",
    ):
        super().__init__(reduction=reduction, name=name)
        self.gold_loss, self.step, self.total_steps, self.annealing = gold_loss, step, total_steps, annealing

    def call(self, y_true, y_pred):
        gold, ids, probs = _unpack(y_true)
        log_q = tf.nn.log_softmax(tf.cast(y_pred, tf.float32), axis=-1)
        gold_ce = self.gold_loss.call(gold, y_pred)  # per position, unreduced
        teacher_ce = -tf.reduce_sum(probs * tf.gather(log_q, ids, batch_dims=ids.shape.rank - 1), axis=-1)
        weight = gold_weight(self.step, self.total_steps, self.annealing)
        weight = tf.where(tf.reduce_sum(probs, axis=-1) > 0, weight, 1.0)
        return weight * gold_ce + (1.0 - weight) * teacher_ce

    def get_config(self):
        # the step counter is the optimizer's: a reloaded loss needs it passed again
        return {
            **super().get_config(),
            "gold_loss": keras.saving.serialize_keras_object(self.gold_loss),
            "total_steps": self.total_steps,
            "annealing": self.annealing,
        }


@keras.saving.register_keras_serializable(package="mtnlp")
class GoldAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """A distilled head's training metric: accuracy against the gold id of ``pack_targets``' ``y_true``, so
    ``<head>_accuracy`` means what it means for the other heads."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(_unpack(y_true)[0], y_pred, sample_weight)


def distilled_heads(heads: Sequence[Head], head_configs: Mapping[str, HeadConfig]) -> list[Head]:
    """The heads with a teacher (``heads.<name>.teacher``)."""
    return [h for h in heads if h.name in head_configs and head_configs[h.name].teacher]


def teacher_model_file(path: str) -> str:
    """The Keras model of a teacher folder: a Trainer's or the study's ``Format-Keras/`` (``model.keras`` with
    the word vocabulary ``words.txt``), the folder that holds it, or the ``Format-Serving/`` beside it."""
    from mtnlp.model.warm_start import KERAS_DIR, MODEL_FILE, keras_dir_for

    candidates = [path, os.path.join(path, KERAS_DIR), keras_dir_for(path)]
    for folder in candidates:
        if tf.io.gfile.exists(os.path.join(folder, MODEL_FILE)):
            return os.path.join(folder, MODEL_FILE)
    raise FileNotFoundError(
        f"teacher {path!r}: no {MODEL_FILE} in {', '.join(dict.fromkeys(candidates))} (a teacher is a model folder "
        f"the Trainer or `mtnlp experiment` wrote: its {KERAS_DIR}/ holds the Keras model and its word vocabulary)"
    )


def load_teacher(
    path: str, taught: Sequence[Head], words_vocabulary_file: str, output_sizes: Mapping[str, int]
) -> keras.Model:
    """The teacher at ``path`` for the heads ``taught``, checked against the student's Transform output: the
    same word vocabulary (its ids are the student's inputs) and, per head, an output of the student's size
    (labels or target pieces: ``output_sizes``). A mismatch is an error naming the head and the teacher."""
    from mtnlp.model.warm_start import VOCABULARY_FILE

    model_file = teacher_model_file(path)
    settings = ", ".join(f"heads.{h.name}.teacher" for h in taught)
    with tf.io.gfile.GFile(os.path.join(os.path.dirname(model_file), VOCABULARY_FILE)) as f:
        teacher_words = f.read()
    with tf.io.gfile.GFile(words_vocabulary_file) as f:
        student_words = f.read()
    if teacher_words != student_words:
        raise ValueError(
            f"{settings} = {path!r}: the teacher was trained on another Transform output (its word vocabulary "
            f"differs from the student's {words_vocabulary_file}); train the teacher on the same Transform output"
        )
    teacher = keras.saving.load_model(model_file, compile=False)
    for head in taught:
        if head.name not in teacher.output:
            raise ValueError(
                f"heads.{head.name}.teacher = {path!r}: the teacher has no head {head.name!r} "
                f"(its heads: {', '.join(teacher.output)})"
            )
        size, expected = teacher.output[head.name].shape[-1], output_sizes[head.name]
        if size != expected:
            raise ValueError(
                f"heads.{head.name}.teacher = {path!r}: the teacher's {head.name} output has {size} classes, "
                f"the student's {expected} (another label set or target vocabulary: train the teacher on the "
                "same Transform output)"
            )
    return teacher


def _top_predictions(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k class ids and their probabilities, renormalized to sum to 1, along the last axis."""
    logits = logits.astype(np.float64)
    ids = np.argsort(-logits, axis=-1)[..., :k]
    top = np.take_along_axis(logits, ids, axis=-1)
    probs = np.exp(top - top.max(axis=-1, keepdims=True))
    return ids, (probs / probs.sum(axis=-1, keepdims=True)).astype(np.float32)


def cache_teacher_predictions(
    heads: Sequence[Head],
    head_configs: Mapping[str, HeadConfig],
    tf_transform_output,
    train_files: Sequence[str],
    output_sizes: Mapping[str, int],
    words_vocabulary_file: str,
    cache_dir: str,
    batch_size: int = 64,
) -> list[str]:
    """Runs each distilled head's teacher once over the training records of the head's task and writes every
    record, in file order, to ``cache_dir`` with its teacher features (``teacher_keys``). Returns the file
    patterns to train on. ``output_sizes``: each head's class count (labels, or target pieces)."""
    from mtnlp.model import dataset

    distilled = distilled_heads(heads, head_configs)
    by_teacher: dict[str, list[Head]] = {}
    for head in distilled:
        by_teacher.setdefault(head_configs[head.name].teacher, []).append(head)
    teachers = {
        path: load_teacher(path, taught, words_vocabulary_file, output_sizes) for path, taught in by_teacher.items()
    }
    tf.io.gfile.makedirs(cache_dir)
    cache_file = os.path.join(cache_dir, CACHE_FILE)
    records = tf.data.TFRecordDataset(dataset.matching_files(train_files), compression_type="GZIP")
    spec = tf_transform_output.transformed_feature_spec()
    batches = records.batch(batch_size).map(lambda raw: (raw, tf.io.parse_example(raw, spec)))
    written, taught_rows = 0, dict.fromkeys((h.name for h in distilled), 0)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(cache_file, options) as writer:
        for raw, features in batches:
            examples = [tf.train.Example.FromString(r) for r in raw.numpy()]
            for path, taught in by_teacher.items():
                _add_teacher_features(examples, features, teachers[path], taught, output_sizes)
            for head in distilled:
                taught_rows[head.name] += int(np.sum(_rows_of(head, features)))
            for example in examples:
                writer.write(example.SerializeToString())
            written += len(examples)
    log.warning(
        "Teacher predictions cached for %d training records in %s: %s",
        written,
        cache_file,
        ", ".join(f"{name} {n} (teacher {head_configs[name].teacher})" for name, n in taught_rows.items()),
    )
    return [cache_file]


def _rows_of(head: Head, features: Mapping[str, tf.Tensor]) -> np.ndarray:
    """bool [B]: the batch's records that carry the head's label."""
    weights = features[head.weight_key].numpy()
    return weights.reshape(len(weights), -1).sum(axis=1) > 0


def _add_teacher_features(
    examples: list[tf.train.Example],
    features: Mapping[str, tf.Tensor],
    teacher: keras.Model,
    taught: Sequence[Head],
    output_sizes: Mapping[str, int],
) -> None:
    """Adds the teacher's predictions for the heads ``taught`` to the batch's records of their tasks."""
    from mtnlp.model import dataset

    rows = np.flatnonzero(np.any([_rows_of(h, features) for h in taught], axis=0))
    if not len(rows):
        return
    own = dataset.trim_batch({k: tf.gather(v, rows) for k, v in features.items()}, taught)
    if CHAR_CODES in teacher.input:  # a teacher with a character CNN reads codes the datasets compute per batch
        own[CHAR_CODES] = char_codes(own["words"])
    logits = teacher({k: own[k] for k in teacher.input}, training=False)
    for head in taught:
        ids_key, probs_key = teacher_keys(head.name)
        ids, probs = _top_predictions(np.asarray(logits[head.name]), top_k(head, output_sizes[head.name]))
        weights = own[head.weight_key].numpy()
        if weights.ndim == 1:  # one label per example: one position
            ids, probs, weights = ids[:, None], probs[:, None], weights[:, None]
        for i, row in enumerate(rows):
            # the positions that carry a label (words and target pieces come first, then padding)
            n = int(np.count_nonzero(weights[i]))
            if n == 0:  # a record of another head of the teacher's task
                continue
            feature = examples[row].features.feature
            feature[ids_key].int64_list.value.extend(ids[i, :n].reshape(-1).tolist())
            feature[probs_key].float_list.value.extend(probs[i, :n].reshape(-1).tolist())
