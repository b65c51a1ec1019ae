"""The serving SavedModel: raw inputs in, readable labels and scores out, no Python in the graph.

Signatures (every output is batched on axis 0; T is the longest sentence of the request):

- ``analyze`` (also ``serving_default``): ``text`` string [B] ->
  ``tokens`` string [B, T] ("" padding), ``length`` int32 [B], and for each sentence head
  ``<head>_label`` string [B], ``<head>_probability`` float [B], ``<head>_probabilities`` float [B, C];
  for each token head ``<head>_tags`` string [B, T] ("" padding).
- ``analyze_tokens``: the same on pre-split words, ``tokens`` string [B, T] padded with "" (used
  to score token tasks on a corpus's own tokens).
- ``relation``: ``text`` string [B], ``e1_start``, ``e1_end``, ``e2_start``, ``e2_end`` int64 [B]
  (character offsets, end exclusive) -> ``relation_label``, ``relation_probability``,
  ``relation_probabilities`` for each entity-pair head.
- ``translate`` (one per sequence head, named by ``Head.signature``): ``text`` string [B] ->
  ``translation`` string [B]: beam search (``beam_width``, ``length_penalty``; width 1 is greedy)
  in a ``tf.while_loop`` up to ``max_target_length`` pieces, detokenized. Rows are decoded independently (padding is masked), so a sentence gets the
  same output alone and in a batch.
- ``serving_tf_example``: ``examples`` serialized tf.Example [B] -> per-head probabilities at full
  length (the Evaluator's view; for a token head with structured ``decoding``, the one-hot of its
  decoded tags, so that the Evaluator scores what clients get); for a sequence head its greedy translation, string [B] ("" for
  examples of other tasks, which are not decoded).
- ``transform_features``: ``examples`` -> Transform's output features (TFMA reads labels from it).

Which heads go where follows from ``model/tasks.py``: entity-pair heads need spans and get their own
signature, named after their task; all other heads answer ``analyze``.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
import tensorflow_transform as tft

from model import decoding
from model import text as text_ops
from model.network import ENCODER_OUTPUT, decoder_layer_name, inference_model, model_input_names
from model.preprocessing import FIRST_TARGET_WORD, MODEL_INPUTS
from model.subwords import UNKNOWN as UNKNOWN_PIECE
from model.tasks import ENCODER_TEXT_FIELDS, TASKS, Head, HeadKind, Task

DEFAULT_SIGNATURE = "analyze"
EXAMPLES_SIGNATURE = "serving_tf_example"
TRANSFORM_SIGNATURE = "transform_features"


def _sparse_rows(values: tf.Tensor) -> tf.SparseTensor:
    """[B] or [B, N] dense values as a [B, N] SparseTensor holding every value (zeros included)."""
    values = values if values.shape.rank == 2 else values[:, None]
    shape = tf.shape(values, out_type=tf.int64)
    indices = tf.where(tf.ones_like(values, tf.bool))
    return tf.SparseTensor(indices, tf.reshape(values, [-1]), shape)


class ServingModule(tf.Module):
    """The serving signatures of a trained model (see the module docstring).

    Args:
        model: the trained multi-task Keras model.
        tf_transform_output: the Transform output it was trained on (its graph runs in every signature).
        tasks: the tasks whose heads the model has.
        beam_width: hypotheses kept per sentence when decoding sequence heads (1: greedy).
        length_penalty: GNMT length penalty alpha of beam search (0: none).
    """

    def __init__(self, model: keras.Model, tf_transform_output: tft.TFTransformOutput, tasks: Sequence[Task],
                 beam_width: int = 1, length_penalty: float = 0.0):  # fmt: skip
        super().__init__()
        self.model = model = inference_model(model)
        self._beam_width, self._length_penalty = beam_width, length_penalty
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._raw_spec = tf_transform_output.raw_feature_spec()
        self._tasks = tuple(tasks)
        self._heads = tuple(h for t in self._tasks for h in t.heads)
        self._sequence_heads = tuple(h for h in self._heads if h.kind is HeadKind.SEQUENCE)
        if self._sequence_heads:
            # the encoder alone (shared layers), for the decoding loop of sequence heads
            self.encoder = keras.Model({k: model.input[k] for k in MODEL_INPUTS}, model.get_layer(ENCODER_OUTPUT).output)
            # id -> target piece ("" for padding, BOS, EOS, the unknown piece and OOV buckets), a
            # constant of the graph; the unknown piece is never emitted
            self._target_words, self._never_emit = {}, {}
            for head in self._sequence_heads:
                size = model.get_layer(decoder_layer_name(head)).vocabulary_size
                pieces = [w.decode() if isinstance(w, bytes) else w for w in tf_transform_output.vocabulary_by_name(head.vocabulary_name)]
                self._never_emit[head.name] = tuple(FIRST_TARGET_WORD + i for i, p in enumerate(pieces) if p == UNKNOWN_PIECE)
                table = [""] * FIRST_TARGET_WORD + ["" if p == UNKNOWN_PIECE else p for p in pieces]
                self._target_words[head.name] = table + [""] * (size - len(table))

    # -- helpers ---------------------------------------------------------------------------------
    def _raw_features(self, batch_size: tf.Tensor, **given: tf.SparseTensor) -> dict[str, tf.SparseTensor]:
        """Every raw feature Transform expects: the given ones, and empty ones for the rest (labels...)."""
        features = {}
        for name, spec in self._raw_spec.items():
            if name in given:
                features[name] = given[name]
            else:
                features[name] = tf.SparseTensor(
                    tf.zeros([0, 2], tf.int64), tf.zeros([0], spec.dtype), tf.stack([tf.cast(batch_size, tf.int64), 0])
                )
        return features

    def _run(self, raw: dict[str, tf.SparseTensor], trim: bool) -> tuple[dict, dict, tf.Tensor]:
        transformed = self.tft_layer(raw)
        lengths = tf.reduce_sum(tf.cast(transformed["token_ids"] > 0, tf.int32), axis=1)
        if trim:
            longest = tf.maximum(tf.reduce_max(lengths), 1)
            transformed = {k: (v[:, :longest] if k in MODEL_INPUTS + ("words",) else v) for k, v in transformed.items()}
        inputs = {k: transformed[k] for k in model_input_names(self._heads)}
        for head in self._sequence_heads:  # serving never teacher-forces: no target, no decoder compute
            inputs[head.label_key] = tf.zeros([tf.shape(transformed["token_ids"])[0], 1], tf.int64)
        logits = self.model(inputs, training=False)
        return transformed, logits, lengths

    def _translate_rows(self, head: Head, transformed: dict, rows: tf.Tensor) -> tf.Tensor:
        """Greedy translations of the given rows (int64 [N]) of a transformed batch: string [B], "" elsewhere."""
        inputs = {k: tf.gather(transformed[k], rows) for k in MODEL_INPUTS}
        longest = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(inputs["token_ids"] > 0, tf.int32), axis=1)), 1)
        inputs = {k: v[:, :longest] for k, v in inputs.items()}
        decoder = self.model.get_layer(decoder_layer_name(head))
        hidden = self.encoder(inputs, training=False)
        ids = decoder.beam_decode(hidden, inputs["token_ids"] > 0, decoder.max_length, self._beam_width,
                                  self._length_penalty, self._never_emit[head.name])  # fmt: skip
        translations = text_ops.join_words(tf.gather(tf.constant(self._target_words[head.name]), ids))
        batch_size = tf.shape(transformed["token_ids"])[0]
        return tf.tensor_scatter_nd_update(tf.fill([batch_size], ""), rows[:, None], translations)

    def _best_labels(self, head: Head, logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """The served label ids of a head: argmax, or for an "iob2" token head the best well-formed
        IOB2 sequence (constrained Viterbi over log-probabilities), int64 [B] or [B, T]."""
        if head.decoding == "iob2":
            allowed, allowed_start = decoding.iob2_transitions(head.labels)
            return decoding.constrained_viterbi(tf.nn.log_softmax(logits, axis=-1), mask, allowed, allowed_start)
        return tf.argmax(logits, axis=-1)

    def _head_outputs(self, heads: Sequence[Head], logits: dict, transformed: dict) -> dict[str, tf.Tensor]:
        outputs = {}
        mask = transformed["token_ids"] > 0
        for head in heads:
            probabilities = tf.nn.softmax(logits[head.name], axis=-1)
            best = self._best_labels(head, logits[head.name], mask)
            labels = tf.gather(tf.constant(head.labels), best)
            if head.kind is HeadKind.TOKEN:
                outputs[f"{head.name}_tags"] = tf.where(mask, labels, "")
            else:
                outputs[f"{head.name}_label"] = labels
                outputs[f"{head.name}_probability"] = tf.reduce_max(probabilities, axis=-1)
                outputs[f"{head.name}_probabilities"] = probabilities
        return outputs

    def _analyze_heads(self) -> list[Head]:
        return [h for h in self._heads if h.kind in (HeadKind.SENTENCE, HeadKind.TOKEN)]

    def _analyze(self, raw: dict) -> dict[str, tf.Tensor]:
        transformed, logits, lengths = self._run(raw, trim=True)
        outputs = {"tokens": transformed["words"], "length": lengths}
        outputs.update(self._head_outputs(self._analyze_heads(), logits, transformed))
        return outputs

    # -- signatures ------------------------------------------------------------------------------
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def analyze(self, text):
        return self._analyze(self._raw_features(tf.shape(text)[0], text=_sparse_rows(text)))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="tokens")])
    def analyze_tokens(self, tokens):
        # from_dense drops the "" padding, leaving each row's real words
        return self._analyze(self._raw_features(tf.shape(tokens)[0], tokens=tf.sparse.from_dense(tokens)))

    def relation_signature(self, task: Task) -> tf.types.experimental.ConcreteFunction:
        heads = [h for h in task.heads if h.kind is HeadKind.ENTITY_PAIR]
        span_fields = [f.name for f in task.fields if f.kind.value == "char_span"]
        assert len(span_fields) == 2, task

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([None], tf.int64, name="e1_start"), tf.TensorSpec([None], tf.int64, name="e1_end"),
            tf.TensorSpec([None], tf.int64, name="e2_start"), tf.TensorSpec([None], tf.int64, name="e2_end"),
        ])  # fmt: skip
        def relation(text, e1_start, e1_end, e2_start, e2_end):
            raw = self._raw_features(
                tf.shape(text)[0],
                text=_sparse_rows(text),
                **{span_fields[0]: _sparse_rows(tf.stack([e1_start, e1_end], axis=1)),
                   span_fields[1]: _sparse_rows(tf.stack([e2_start, e2_end], axis=1))},
            )  # fmt: skip
            transformed, logits, _ = self._run(raw, trim=True)
            return self._head_outputs(heads, logits, transformed)

        return relation.get_concrete_function()

    def translate_signature(self, task: Task, head: Head) -> tf.types.experimental.ConcreteFunction:
        source_field = ENCODER_TEXT_FIELDS[task.encoder_input]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def translate(text):
            batch_size = tf.shape(text)[0]
            transformed = self.tft_layer(self._raw_features(batch_size, **{source_field: _sparse_rows(text)}))
            rows = tf.range(tf.cast(batch_size, tf.int64))
            return {"translation": self._translate_rows(head, transformed, rows)}

        return translate.get_concrete_function()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_tf_example(self, examples):
        raw = tf.io.parse_example(examples, self._raw_spec)
        transformed, logits, _ = self._run(raw, trim=False)
        outputs = {h.name: tf.nn.softmax(logits[h.name], axis=-1) for h in self._heads if h.kind is not HeadKind.SEQUENCE}
        mask = transformed["token_ids"] > 0
        for head in self._heads:
            if head.decoding is not None:  # the Evaluator scores the tags a client gets: their one-hot
                best = self._best_labels(head, logits[head.name], mask)
                outputs[head.name] = tf.one_hot(best, head.num_labels, dtype=outputs[head.name].dtype)
        task_index = {t.name: i for i, t in enumerate(TASKS)}
        for task in self._tasks:
            for head in task.heads:
                if head.kind is HeadKind.SEQUENCE:  # decoded text, only for the examples of the head's task
                    rows = tf.where(tf.equal(transformed["task_id"], task_index[task.name]))[:, 0]
                    outputs[head.name] = self._translate_rows(head, transformed, rows)
        return outputs

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(self, examples):
        return self.tft_layer(tf.io.parse_example(examples, self._raw_spec))

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        analyze = self.analyze.get_concrete_function()
        signatures = {
            "serving_default": analyze,
            DEFAULT_SIGNATURE: analyze,
            "analyze_tokens": self.analyze_tokens.get_concrete_function(),
            EXAMPLES_SIGNATURE: self.serving_tf_example.get_concrete_function(),
            TRANSFORM_SIGNATURE: self.transform_features.get_concrete_function(),
        }
        for task in self._tasks:
            if any(h.kind is HeadKind.ENTITY_PAIR for h in task.heads):
                signatures[task.name] = self.relation_signature(task)
            for head in task.heads:
                if head.kind is HeadKind.SEQUENCE:
                    signatures[head.signature] = self.translate_signature(task, head)
        return signatures


def export_serving_model(
    model: keras.Model, tf_transform_output: tft.TFTransformOutput, tasks: Sequence[Task], export_dir: str,
    beam_width: int = 1, length_penalty: float = 0.0,
) -> None:
    module = ServingModule(model, tf_transform_output, tasks, beam_width, length_penalty)
    tf.saved_model.save(module, export_dir, signatures=module.signatures())
