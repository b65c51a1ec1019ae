"""The serving SavedModel: raw inputs in, readable labels and scores out, no Python in the graph.

Signatures (every output is batched on axis 0; T is the longest sentence of the request). Which
heads each one answers, and with which inputs, is the serving contract (``model/contract.py``); what
a head returns is its kind's (``model/heads.py``):

- ``analyze`` (also ``serving_default``): ``text`` string [B] ->
  ``tokens`` string [B, T] ("" padding), ``length`` int32 [B], and for each sentence head
  ``<head>_label`` string [B], ``<head>_probability`` float [B], ``<head>_probabilities`` float [B, C];
  for each token head ``<head>_tags`` string [B, T] ("" padding).
- ``analyze_tokens``: the same on pre-split words, ``tokens`` string [B, T] padded with "" (used
  to score token tasks on a corpus's own tokens).
- ``relation`` (one per task with entity-pair heads, named after it): ``text`` string [B],
  ``e1_start``, ``e1_end``, ``e2_start``, ``e2_end`` int64 [B] (character offsets, end exclusive) ->
  ``relation_label``, ``relation_probability``, ``relation_probabilities`` for each entity-pair head.
- ``translate`` (one per sequence head, named by ``SequenceHead.signature``, by default the head's
  name): its task input's request (``text`` string [B]) -> ``<head>`` string [B] (translation's:
  ``translation``): beam search (``beam_width``, ``length_penalty``; width 1 is greedy)
  in a ``tf.while_loop`` up to ``max_target_length`` pieces, detokenized. Rows are decoded
  independently (padding is masked), so a sentence gets the same output alone and in a batch.
- ``serving_tf_example``: ``examples`` serialized tf.Example [B] -> per-head probabilities at full
  length (the Evaluator's view; for a token head with structured ``decoding``, the one-hot of its
  decoded tags, so that the Evaluator scores what clients get); for a sequence head its
  translation, string [B] ("" for examples of other tasks, which are not decoded).
- ``transform_features``: ``examples`` -> Transform's output features (TFMA reads labels from it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import keras
import tensorflow as tf
import tensorflow_transform as tft

from mtnlp.model import contract
from mtnlp.model.network import (
    ENCODER_OUTPUT,
    encoder_input_names,
    has_backbone,
    has_backbone_shape_features,
    has_character_cnn,
    inference_model,
    model_input_names,
)
from mtnlp.model.preprocessing import CHAR_CODES, char_codes, trim_to_longest
from mtnlp.model.tasks import Task, registered_tasks

# kept here too: the names callers of this module know
EXAMPLES_SIGNATURE = contract.EXAMPLES_SIGNATURE
TRANSFORM_SIGNATURE = contract.TRANSFORM_SIGNATURE


class ServingModule(tf.Module):
    """The serving signatures of a trained model (see the module docstring).

    Args:
        model: the trained multi-task Keras model.
        tf_transform_output: the Transform output it was trained on (its graph runs in every signature).
        tasks: the tasks whose heads the model has.
        beam_width: hypotheses kept per sentence when decoding sequence heads (1: greedy).
        length_penalty: GNMT length penalty alpha of beam search (0: none).
    """

    def __init__(
        self,
        model: keras.Model,
        tf_transform_output: tft.TFTransformOutput,
        tasks: Sequence[Task],
        beam_width: int = 1,
        length_penalty: float = 0.0,
    ):
        super().__init__()
        self.model = model = inference_model(model)
        self.beam_width, self.length_penalty = beam_width, length_penalty
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._raw_spec = tf_transform_output.raw_feature_spec()
        self._tasks = tuple(tasks)
        # the encoder alone (shared layers), for heads that run their own decoding loop
        self.has_backbone = has_backbone(model)
        self._shape_features = has_backbone_shape_features(model)
        self._characters = has_character_cnn(model)
        self.encoder_inputs = encoder_input_names(self.has_backbone, self._shape_features, self._characters)
        self.encoder = keras.Model(
            {k: model.input[k] for k in self.encoder_inputs}, model.get_layer(ENCODER_OUTPUT).output
        )
        self.head_constants: dict = {}
        for task in self._tasks:
            for head in task.heads:
                head.prepare_serving(self, tf_transform_output)

    @property
    def _heads(self):
        return tuple(h for t in self._tasks for h in t.heads)

    # -- helpers ---------------------------------------------------------------------------------
    def _raw_features(self, batch_size: tf.Tensor, given: dict[str, tf.SparseTensor]) -> dict[str, tf.SparseTensor]:
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

    def _trim(self, transformed: dict) -> dict:
        """A transformed batch cut to its longest sentence (a request does not pay for 128 words) and, when the
        encoder reads them, its words' character codes (not stored by Transform: ``preprocessing.char_codes``),
        decoded after the cut."""
        trimmed = trim_to_longest(transformed)
        if self._characters:
            trimmed[CHAR_CODES] = char_codes(trimmed["words"])
        return trimmed

    def _logits(self, transformed: dict) -> dict:
        inputs = {k: transformed[k] for k in self.encoder_inputs}
        for name in model_input_names(
            self._heads, backbone=self.has_backbone, shape_features=self._shape_features, characters=self._characters
        ):
            if name not in inputs:  # serving never teacher-forces: no target, no decoder compute
                inputs[name] = tf.zeros([tf.shape(transformed["token_ids"])[0], 1], tf.int64)
        return self.model(inputs, training=False)

    def _answer(self, signature: contract.Signature, request: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        batch_size = tf.shape(next(iter(request.values())))[0]
        transformed = self._trim(
            self.tft_layer(self._raw_features(batch_size, signature.input.raw_features(**request)))
        )
        logits = self._logits(transformed) if any(h.needs_logits for h in signature.heads) else {}
        outputs = {}
        if signature.plain:
            outputs["tokens"] = transformed["words"]
            outputs["length"] = tf.reduce_sum(tf.cast(transformed["token_ids"] > 0, tf.int32), axis=1)
        for head in signature.heads:
            outputs.update(head.served_outputs(self, logits.get(head.name), transformed))
        return outputs

    def _signature_function(self, signature: contract.Signature) -> tf.types.experimental.ConcreteFunction:
        specs = signature.input.request_specs()

        @tf.function(input_signature=list(specs.values()))
        def answer(*tensors):
            return self._answer(signature, dict(zip(specs, tensors)))

        return answer.get_concrete_function()

    # -- signatures ------------------------------------------------------------------------------
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_tf_example(self, examples):
        transformed = self.tft_layer(tf.io.parse_example(examples, self._raw_spec))
        # the encoder runs on the batch's longest sentence, not on max_length; heads pad back to the labels
        logits = self._logits(self._trim(transformed))
        task_index = {t.name: i for i, t in enumerate(registered_tasks())}
        outputs = {}
        for task in self._tasks:
            rows = tf.where(tf.equal(transformed["task_id"], task_index[task.name]))[:, 0]
            for head in task.heads:
                outputs[head.name] = head.evaluator_output(self, logits[head.name], transformed, rows)
        return outputs

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(self, examples):
        return self.tft_layer(tf.io.parse_example(examples, self._raw_spec))

    def signatures(self, only: Collection[str] | None = None) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """Every signature of the SavedModel; with ``only``, just the request signatures named there (in
        process, e.g. to score a model while it trains, without tracing the rest)."""
        if only is not None:
            return {s.name: self._signature_function(s) for s in contract.signatures(self._tasks) if s.name in only}
        functions = {s.name: self._signature_function(s) for s in contract.signatures(self._tasks)}
        return {
            contract.DEFAULT_SIGNATURE: functions[contract.ANALYZE_SIGNATURE],  # the same function
            **functions,
            EXAMPLES_SIGNATURE: self.serving_tf_example.get_concrete_function(),
            TRANSFORM_SIGNATURE: self.transform_features.get_concrete_function(),
        }


def export_serving_model(
    model: keras.Model,
    tf_transform_output: tft.TFTransformOutput,
    tasks: Sequence[Task],
    export_dir: str,
    beam_width: int = 1,
    length_penalty: float = 0.0,
) -> None:
    module = ServingModule(model, tf_transform_output, tasks, beam_width, length_penalty)
    tf.saved_model.save(module, export_dir, signatures=module.signatures())
