"""Head kinds: one class per kind of model output, owning everything that kind does.

A head is declared in a task (``model/tasks.py``) with its name, the record field its labels come from,
its label set and its metrics. Its *kind* (the class) owns the rest, so no other module branches on it:

==========================  ==================================================================
what                        method
==========================  ==================================================================
Transform features          ``analyze`` (full-pass statistics), ``transform_features`` (``<head>_label``, ...)
batch trimming              ``trim`` (which features are cut to the batch's longest sentence)
model inputs                ``model_inputs`` (a sequence head's teacher-forced targets)
Keras layers and loss       ``build``, ``output_layer``, ``loss``, ``training_metric``
settings                    ``default_config``, ``check_config``, ``decoders`` (the section ``heads.<name>``)
serving outputs             ``own_signature``, ``served_outputs``, ``scored_output``, ``evaluator_output``
scoring                     ``eval_label_key`` / ``eval_weight_key`` (TFMA), ``scorer_inputs`` (records)
a client's answer           ``read_answer`` and ``describe`` (``mtnlp predict``)
==========================  ==================================================================

The kinds: ``SentenceHead`` (one label per text), ``TokenHead`` (one label per word; optionally
decoded as well-formed IOB2 spans, and with ``heads.<name>.decoder=crf`` a linear-chain CRF, ``model/crf.py``), ``EntityPairHead`` (one label per text and two marked entities)
and ``SequenceHead`` (generated text: a decoder over the encoder, beam search when served).

A head's settings (gate, loss, loss weight, encoder layer, dropout: ``HeadConfig``, the config's section
``heads.<name>``) are declared with the head (``default_config``) and checked by its kind (``check_config``).

A new kind is one subclass here; a task declares heads of it (``model/tasks.py``), and a kind whose
output needs a new request shape may need an input kind too (``model/inputs.py``). TensorFlow and Keras
are imported inside the methods that need them, so reading the registry stays light (ingest checks,
``mtnlp predict``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mtnlp.model.scoring import SCORERS, as_text, iob2_chunks
from mtnlp.sections import HeadConfig

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from mtnlp.model.tasks import Task
    from mtnlp.sections import TransformConfig

# Structured decodings a token head may ask for (see model/decoding.py).
DECODINGS = (None, "iob2")


@dataclasses.dataclass(frozen=True)
class DecoderSizes:
    """The sizes of a sequence head's decoder (``layers.SequenceDecoder``); they follow the encoder's.

    Args:
        vocabulary_sizes: each sequence head's target vocabulary size, special ids and OOV buckets included.
        max_length: target pieces per example (``transform.max_target_length``).
        layers, num_heads, intermediate_dim, dropout, tie_embeddings: as ``model.decoder_layers``,
            ``model.num_heads``, ``model.intermediate_dim``, ``model.dropout``, ``model.tie_decoder_embeddings``.
    """

    vocabulary_sizes: Mapping[str, int]
    max_length: int
    layers: int
    num_heads: int
    intermediate_dim: int
    dropout: float
    tie_embeddings: bool


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What every head's ``build`` reads besides its own ``HeadConfig``: the built encoder (``model/network.py``).

    Args:
        layer_outputs: each encoder layer's output, float [B, T, D], bottom first.
        padding_mask: bool [B, T], True on real words.
        inputs: the model's inputs by name (int64 [B, T], targets [B, L]).
        dropout: the encoder's dropout, a head's unless its ``HeadConfig.dropout`` says otherwise.
        decoder: the sequence heads' decoder sizes.
    """

    layer_outputs: Sequence[Any]
    padding_mask: Any
    inputs: Mapping[str, Any]
    dropout: float
    decoder: DecoderSizes

    def encoder_layer(self, head_name: str, config: HeadConfig) -> Any:
        """The output of the encoder layer the head reads (``config.encoder_layer``)."""
        from mtnlp.model.network import encoder_layer_index

        return self.layer_outputs[encoder_layer_index(head_name, config.encoder_layer, len(self.layer_outputs)) - 1]


@dataclasses.dataclass(frozen=True)
class Head:
    """One model output trained on one field of a task's records.

    Args:
        name: the output's name (also of its Keras layer, Transform features and serving outputs).
        label_field: the task field its labels come from.
        labels: the label set (empty for generated text).
        metrics: the metric names computed for it (``model/scoring.py``); the first is its primary
            metric, used for blessing and reported first.
        none_label: the label that means "none of the others" (relation's ``Other``), if the label set
            has one: such a head may be trained with the pairwise ranking loss (``HeadConfig.loss``), which
            does not score that class.
        default_config: the head's settings unless the config's section ``heads.<name>`` overrides them.
    """

    name: str
    label_field: str
    labels: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    none_label: str | None = None
    default_config: HeadConfig = HeadConfig()

    kind: ClassVar[str] = ""
    # The field kinds (``tasks.FieldKind`` values) its label field may have.
    label_field_kinds: ClassVar[tuple[str, ...]] = ()

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def label_key(self) -> str:
        return f"{self.name}_label"

    @property
    def weight_key(self) -> str:
        return f"{self.name}_weight"

    # What the Evaluator (TFMA) reads as this head's label and example weight.
    @property
    def eval_label_key(self) -> str:
        return self.label_key

    @property
    def eval_weight_key(self) -> str:
        return self.weight_key

    def check(self, task: Task) -> None:
        """Raises ValueError when the declaration does not fit the kind."""
        field = task.field(self.label_field)
        if field.kind.value not in self.label_field_kinds:
            raise ValueError(
                f"head {self.name!r} ({self.kind}) reads labels from a {field.kind.value} field; "
                f"it needs one of: {', '.join(self.label_field_kinds)}"
            )
        if not self.metrics:
            raise ValueError(f"head {self.name!r} declares no metrics")
        unknown = [m for m in self.metrics if m not in SCORERS]
        if unknown:
            raise ValueError(
                f"head {self.name!r}: unknown metric(s) {unknown}; model/scoring.py computes: {', '.join(SCORERS)}"
            )
        if self.none_label is not None and self.none_label not in self.labels:
            raise ValueError(f"head {self.name!r}: its none_label {self.none_label!r} is not one of its labels")
        self.check_config(self.default_config)

    # The values of ``HeadConfig.decoder`` the kind can build (a CRF needs a label per word).
    decoders: ClassVar[tuple[str, ...]] = ("softmax",)

    def check_config(self, config: HeadConfig) -> None:
        """Raises ValueError when ``config`` (the head's section ``heads.<name>``) does not fit the head."""
        if config.decoder not in self.decoders:
            raise ValueError(
                f"decoder {config.decoder!r}: head {self.name!r} ({self.kind}) has the decoders {', '.join(self.decoders)}"
            )
        if config.loss == "ranking" and self.none_label is None:
            raise ValueError(
                f"loss 'ranking' (the pairwise ranking loss) needs a none class, and head {self.name!r} "
                "declares no none_label"
            )

    # -- Transform ---------------------------------------------------------------------------------
    def analyze(self, labels: tf.RaggedTensor, config: TransformConfig) -> dict[str, tf.Tensor]:
        """The head's Transform analyzers (full-pass statistics, e.g. a vocabulary) over its raw label field.

        ``preprocessing_fn`` runs every head's before any head's ``transform_features``: an analyzer traced
        after another head's lookup table would wait for that table's vocabulary (a second analysis phase,
        which TFX 1.16's Transform cannot run on Beam 2.74: its deep copy of the input fails)."""
        return {}

    def transform_features(
        self, labels: tf.RaggedTensor, max_length: int, config: TransformConfig, analyzed: Mapping[str, tf.Tensor]
    ) -> dict:
        """The head's Transform outputs from its raw label field, string [B, (n)] (no values: no label), and
        its ``analyze`` results."""
        import tensorflow as tf

        from mtnlp.model.preprocessing import first_value, label_ids

        return {
            self.label_key: label_ids(first_value(labels, ""), self.labels),
            self.weight_key: tf.cast(labels.row_lengths() > 0, tf.float32),
        }

    def trim(self, features: Mapping[str, tf.Tensor], length: tf.Tensor) -> dict:
        """The head's features of a batch cut to the batch's longest sentence ``length`` (int32 [])."""
        return {}

    # -- Keras -------------------------------------------------------------------------------------
    def model_inputs(self) -> tuple[str, ...]:
        """Model inputs of its own (beyond the encoder's)."""
        return ()

    def output_vocabulary_size(self, tf_transform_output: Any, num_oov_buckets: int) -> int | None:
        """The size of a generated vocabulary (None: the head predicts from ``labels``)."""
        return None

    def build(self, context: BuildContext, config: HeadConfig) -> keras.KerasTensor:
        """The head's logits: [B, C] for one label per example, [B, T, C] per word; with the ranking loss
        the none class's logit is 0 (``NoneClassDense``, the same weights as ``Dense``)."""
        import keras

        features = self.features(context, config)
        dropout = context.dropout if config.dropout is None else config.dropout
        features = keras.layers.Dropout(dropout, name=f"{self.name}_dropout")(features)
        return self.output_layer(config)(features)

    def output_layer(self, config: HeadConfig) -> keras.layers.Layer:
        """The layer that gives the head's logits, named after the head."""
        import keras

        if config.loss == "ranking":
            from mtnlp.model.layers import NoneClassDense

            # in the model rather than in the loss, so that the served argmax and softmax follow CR-CNN's rule
            return NoneClassDense(self.num_labels, self.labels.index(self.none_label), name=self.name)
        return keras.layers.Dense(self.num_labels, name=self.name)

    def features(self, context: BuildContext, config: HeadConfig) -> keras.KerasTensor:
        raise NotImplementedError

    def loss(self, config: HeadConfig, output_layer: keras.layers.Layer | None = None) -> keras.losses.Loss:
        """Cross-entropy (with ``config.label_smoothing``) averaged over the examples (words) that carry this
        head's label, or CR-CNN's pairwise ranking loss (``config.loss == "ranking"``), averaged the same way.
        ``output_layer``: the model's ``output_layer``, for a loss that reads its weights (a CRF's)."""
        import keras

        if config.loss == "ranking":
            from mtnlp.model.layers import PairwiseRankingLoss

            return PairwiseRankingLoss(self.labels.index(self.none_label))
        if config.label_smoothing > 0:
            from mtnlp.model.layers import SmoothedSparseCrossentropy

            return SmoothedSparseCrossentropy(config.label_smoothing)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")

    def training_metric(self) -> keras.metrics.Metric:
        """What Keras reports for the head while training (``<head>_accuracy``, weighted by the head's sample
        weights; ``model.training.KeepBestWeights`` reads its validation value)."""
        import keras

        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    # -- serving -----------------------------------------------------------------------------------
    def own_signature(self, task: Task) -> str | None:
        """The signature that answers only this kind of head, if any; None: the plain signatures
        (``analyze`` and ``analyze_tokens``) answer it on any text."""
        return None

    needs_logits: ClassVar[bool] = True  # served from the model's logits (not by its own decoding loop)
    # ``mtnlp predict`` asks for it only when named (a decoding loop is costly)
    on_request: ClassVar[bool] = False
    # Distillation (model/distillation.py): the teacher's most probable classes kept per position in the cache;
    # None keeps the whole distribution (exact), which label heads afford and a target vocabulary does not.
    distilled_classes: ClassVar[int | None] = None

    def prepare_serving(self, module: Any, tf_transform_output: Any) -> None:
        """Graph constants the head's serving outputs need, kept on the serving module."""

    def best_labels(self, logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        return tf.argmax(logits, axis=-1)

    def served_outputs(self, module: Any, logits: tf.Tensor, transformed: Mapping[str, tf.Tensor]) -> dict:
        """What a client gets: ``<head>_label`` string [B], ``<head>_probability`` float [B] and
        ``<head>_probabilities`` float [B, C]."""
        import tensorflow as tf

        probabilities = tf.nn.softmax(logits, axis=-1)
        best = self.best_labels(logits, transformed["token_ids"] > 0)
        return {
            f"{self.name}_label": tf.gather(tf.constant(self.labels), best),
            f"{self.name}_probability": tf.reduce_max(probabilities, axis=-1),
            f"{self.name}_probabilities": probabilities,
        }

    @property
    def scored_output(self) -> str:
        """The served output that ``mtnlp evaluate`` scores."""
        return f"{self.name}_probabilities"

    def evaluator_output(
        self, module: Any, logits: tf.Tensor, transformed: Mapping[str, tf.Tensor], rows: tf.Tensor
    ) -> tf.Tensor:
        """The head's output in ``serving_tf_example`` (what TFMA scores) from its logits on the batch cut
        to its longest sentence; ``transformed``: the batch at full length (the labels' shape); ``rows``:
        int64 [N], the batch's examples of the head's task."""
        import tensorflow as tf

        return tf.nn.softmax(logits, axis=-1)

    # -- scoring and clients -----------------------------------------------------------------------
    def scorer_inputs(self, gold: Any, answer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels, predictions, weights) of one record for ``model/scoring.py``'s scorers, from the
        record's label field and the served ``scored_output`` row."""
        return np.array([self.labels.index(gold)]), np.asarray(answer, np.float32), np.ones([1])

    def read_answer(self, outputs: Mapping[str, Any], row: int, words: Sequence[str], text: str) -> Any:
        """One row of served outputs as a JSON-able answer."""
        probabilities = np.asarray(outputs[f"{self.name}_probabilities"], dtype=float)[row].tolist()
        return {
            "label": as_text(np.asarray(outputs[f"{self.name}_label"]).reshape(-1)[row]),
            "probability": float(np.asarray(outputs[f"{self.name}_probability"]).reshape(-1)[row]),
            "probabilities": dict(zip(self.labels, probabilities)),
        }

    def synthetic_labels(
        self,
        rng: np.random.Generator,
        rows: np.ndarray,
        words: np.ndarray,
        target_lengths: np.ndarray,
        target_vocabulary_size: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Random labels and weights as ``model/dataset.py`` feeds them, for synthetic batches (benchmarks).

        rows: bool [B], the batch's examples of this head; words: bool [B, T], real words;
        target_lengths: int [B], lengths of generated targets (sequence heads)."""
        return np.where(rows, rng.integers(0, self.num_labels, size=len(rows)), 0), rows.astype("float32")

    @property
    def title(self) -> str:
        """How ``mtnlp predict`` names the head's answer for people."""
        return self.name.capitalize()

    def describe(self, answer: Any, text: str) -> list[str]:
        """``read_answer``'s result as lines for people."""
        return [titled(self.title, f"{answer['label']} (p={answer['probability']:.3f})")]


@dataclasses.dataclass(frozen=True)
class SentenceHead(Head):
    """One label per text, from the mean of the encoder's word vectors."""

    kind: ClassVar[str] = "sentence"
    label_field_kinds: ClassVar[tuple[str, ...]] = ("label",)

    def features(self, context: BuildContext, config: HeadConfig):
        from mtnlp.model.layers import MaskedMeanPooling

        return MaskedMeanPooling(name=f"{self.name}_mean_pooling")(
            context.encoder_layer(self.name, config), context.padding_mask
        )


@dataclasses.dataclass(frozen=True)
class TokenHead(Head):
    """One label per word.

    Args:
        decoding: how served tags are chosen: None (each word's best tag) or "iob2" (the best tag
            sequence that is well-formed IOB2, by constrained Viterbi; see ``model/decoding.py``); the
            Evaluator then scores the decoded tags, and clients get entity spans.
    """

    decoding: str | None = None

    kind: ClassVar[str] = "token"
    label_field_kinds: ClassVar[tuple[str, ...]] = ("token_labels",)

    def check(self, task: Task) -> None:
        super().check(task)
        if self.decoding not in DECODINGS:
            raise ValueError(f"head {self.name!r}: unknown decoding {self.decoding!r}; use one of {DECODINGS}")

    def transform_features(self, labels, max_length, config, analyzed):
        import tensorflow as tf

        from mtnlp.model.preprocessing import label_ids

        ids = tf.ragged.map_flat_values(label_ids, labels, self.labels)
        return {
            self.label_key: ids.to_tensor(default_value=0, shape=[None, max_length]),
            self.weight_key: tf.ones_like(ids, tf.float32).to_tensor(default_value=0.0, shape=[None, max_length]),
        }

    def trim(self, features, length):
        return {key: features[key][:, :length] for key in (self.label_key, self.weight_key)}

    def features(self, context: BuildContext, config: HeadConfig):
        return context.encoder_layer(self.name, config)

    decoders: ClassVar[tuple[str, ...]] = ("softmax", "crf")

    def output_layer(self, config):
        if config.decoder == "crf":
            from mtnlp.model.crf import CrfDense

            return CrfDense(self.num_labels, name=self.name)
        return super().output_layer(config)

    def loss(self, config, output_layer=None):
        if config.decoder == "crf":
            from mtnlp.model.crf import CrfLoss

            return CrfLoss(output_layer)
        return super().loss(config, output_layer)

    def _crf(self, module: Any) -> Any:
        """The served model's ``CrfDense`` output layer of this head (None: a softmax head)."""
        from mtnlp.model.crf import CrfDense

        layer = module.model.get_layer(self.name)
        return layer if isinstance(layer, CrfDense) else None

    def best_labels(self, logits, mask, crf=None):
        """The served tags' ids [B, T]: each word's best label, or with ``decoding="iob2"`` or a CRF (``crf``: its
        ``CrfDense`` layer) the Viterbi-best sequence (IOB2-constrained with "iob2"; with the CRF's learned
        transitions over its emission scores)."""
        import tensorflow as tf

        from mtnlp.model import decoding

        if self.decoding is None and crf is None:
            return tf.argmax(logits, axis=-1)
        if self.decoding == "iob2":
            allowed, allowed_start = decoding.iob2_transitions(self.labels)
        else:
            allowed, allowed_start = np.ones([self.num_labels] * 2, bool), np.ones([self.num_labels], bool)
        if crf is None:
            return decoding.constrained_viterbi(tf.nn.log_softmax(logits, axis=-1), mask, allowed, allowed_start)
        return decoding.constrained_viterbi(logits, mask, allowed, allowed_start, crf.transitions, crf.start_scores)

    def served_outputs(self, module, logits, transformed):
        """``<head>_tags`` string [B, T] ("" on padding)."""
        import tensorflow as tf

        mask = transformed["token_ids"] > 0
        tags = tf.gather(tf.constant(self.labels), self.best_labels(logits, mask, self._crf(module)))
        return {f"{self.name}_tags": tf.where(mask, tags, "")}

    @property
    def scored_output(self) -> str:
        return f"{self.name}_tags"

    def evaluator_output(self, module, logits, transformed, rows):
        import tensorflow as tf

        # logits of the batch's longest sentence, padded back to the labels' length (padding weighs 0)
        logits = tf.pad(logits, [[0, 0], [0, tf.shape(transformed["token_ids"])[1] - tf.shape(logits)[1]], [0, 0]])
        probabilities = tf.nn.softmax(logits, axis=-1)
        crf = self._crf(module)
        if self.decoding is None and crf is None:
            return probabilities
        # the Evaluator scores the tags a client gets: their one-hot
        best = self.best_labels(logits, transformed["token_ids"] > 0, crf)
        return tf.one_hot(best, self.num_labels, dtype=probabilities.dtype)

    def scorer_inputs(self, gold, answer):
        # the predicted tag of each of the record's words as a one-hot row (words beyond the model's
        # maximum length get no tag: an all-zero row, scored as the first label)
        index = {label: i for i, label in enumerate(self.labels)}
        one_hot = np.zeros([len(gold), self.num_labels], np.float32)
        for position, tag in enumerate(as_text(t) for t in np.asarray(answer)[: len(gold)]):
            if tag in index:
                one_hot[position, index[tag]] = 1.0
        return np.array([index[g] for g in gold]), one_hot, np.ones([len(gold)])

    def read_answer(self, outputs, row, words, text):
        tags = [as_text(t) for t in np.asarray(outputs[f"{self.name}_tags"])[row][: len(words)]]
        if self.decoding != "iob2":
            return [{"token": w, "tag": t} for w, t in zip(words, tags)]
        offsets = align_words(text, words)
        entities = []
        for kind, a, b in sorted(iob2_chunks(tags), key=lambda chunk: chunk[1]):
            if offsets[a] is not None and offsets[b - 1] is not None:
                start, end = offsets[a][0], offsets[b - 1][1]
                surface = text[start:end]
            else:
                start = end = None
                surface = " ".join(words[a:b])
            entities.append(
                {"text": surface, "type": kind, "start": start, "end": end, "token_start": a, "token_end": b}
            )
        return {"tags": tags, "entities": entities}

    def synthetic_labels(self, rng, rows, words, target_lengths, target_vocabulary_size):
        on = words & rows[:, None]
        return np.where(on, rng.integers(0, self.num_labels, size=on.shape), 0), on.astype("float32")

    @property
    def title(self) -> str:
        return "Entities" if self.decoding == "iob2" else self.name.upper()

    def describe(self, answer, text):
        if self.decoding != "iob2":
            return [titled(self.title, " ".join(f"{a['token']}/{a['tag']}" for a in answer))]
        pieces, position = [], 0
        for e in sorted((e for e in answer["entities"] if e["start"] is not None), key=lambda e: e["start"]):
            pieces += [text[position : e["start"]], f"[{text[e['start'] : e['end']]}]{e['type']}"]
            position = e["end"]
        lines = [titled(self.title, "".join(pieces) + text[position:])]
        for e in answer["entities"]:
            where = f"chars {e['start']}-{e['end']}" if e["start"] is not None else "unaligned"
            lines.append(titled("", f"{e['type']:<4} {e['text']!r} ({where})"))
        if not answer["entities"]:
            lines.append(titled("", "(no entities)"))
        return lines


def titled(title: str, text: str) -> str:
    """One line of ``mtnlp predict``'s output for people: the title in a column of its own."""
    return f"{title + ':' if title else '':<10} {text}"


def align_words(text: str, words: Sequence[str]) -> list[tuple[int, int] | None]:
    """Character offsets of each word in ``text`` (case-insensitive, in order); None when not found."""
    low, position, offsets = text.lower(), 0, []
    for word in words:
        found = low.find(word.lower(), position)
        if found < 0:
            offsets.append(None)
            continue
        offsets.append((found, found + len(word)))
        position = found + len(word)
    return offsets


@dataclasses.dataclass(frozen=True)
class EntityPairHead(Head):
    """One label per text with two marked entities (the task's input must mark spans): from the first
    and last word of both entities and the mean of all words. Answered by a signature named after its
    task, which takes the text and the two spans' character offsets."""

    kind: ClassVar[str] = "entity_pair"
    label_field_kinds: ClassVar[tuple[str, ...]] = ("label",)

    def check(self, task: Task) -> None:
        super().check(task)
        if not task.encoder_input.span_fields:
            raise ValueError(
                f"head {self.name!r} (entity pair) needs an input that marks two spans; "
                f"task {task.name!r} reads {type(task.encoder_input).__name__}"
            )

    def features(self, context: BuildContext, config: HeadConfig):
        import keras

        from mtnlp.model.layers import EntityBoundaryPooling, MaskedMeanPooling

        hidden = context.encoder_layer(self.name, config)
        entities = EntityBoundaryPooling(name=f"{self.name}_entity_pooling")(hidden, context.inputs["entity_ids"])
        sentence = MaskedMeanPooling(name=f"{self.name}_mean_pooling")(hidden, context.padding_mask)
        return keras.layers.Concatenate(name=f"{self.name}_features")([entities, sentence])

    def own_signature(self, task: Task) -> str | None:
        return task.name

    def describe(self, answer, text):
        line = f"{answer['label']} (p={answer['probability']:.3f})"
        if "e1" in answer:
            line += f"  e1={answer['e1']['text']!r} e2={answer['e2']['text']!r}"
        return [titled(self.title, line)]


@dataclasses.dataclass(frozen=True)
class SequenceHead(Head):
    """Generated text (translation): a Transformer decoder that cross-attends to the encoder.

    Its labels are WordPiece ids of a target vocabulary that Transform learns (``model/subwords.py``),
    so ``labels`` is empty. Trained per target piece (teacher forcing), scored per example on text
    (BLEU): the Evaluator reads a reference string and a per-example weight.

    Its served output is named after the head (``<head>`` string [B]), so two sequence heads never collide.

    Args:
        signature: the serving signature that generates its text (its task input's request, e.g. ``text``
            string [B] -> ``<head>`` string [B]); None: the head's name.
    """

    signature: str | None = None

    kind: ClassVar[str] = "sequence"
    label_field_kinds: ClassVar[tuple[str, ...]] = ("text",)
    needs_logits: ClassVar[bool] = False
    on_request: ClassVar[bool] = True
    # the top 8 pieces carry almost all of a position's mass; thousands per position would bloat the cache ~1000x
    distilled_classes: ClassVar[int | None] = 8

    def check_config(self, config):
        super().check_config(config)
        # the decoder cross-attends to the encoder's last layer, with the decoder's own dropout (model.dropout)
        if config.encoder_layer != -1:
            raise ValueError(
                f"head {self.name!r} (sequence) reads the encoder's last layer; encoder_layer "
                f"{config.encoder_layer} cannot be set for it"
            )
        if config.dropout is not None:
            raise ValueError(
                f"head {self.name!r} (sequence) has no classifier dropout (its decoder uses "
                "model.dropout); leave dropout unset"
            )

    @property
    def eval_label_key(self) -> str:
        return f"{self.name}_reference"

    @property
    def eval_weight_key(self) -> str:
        return f"{self.name}_example_weight"

    @property
    def vocabulary_name(self) -> str:
        """Transform's vocabulary file of the head's target pieces."""
        return f"{self.name}_words"

    @property
    def decoder_name(self) -> str:
        return f"{self.name}_decoder"

    def analyze(self, labels, config):
        """``vocabulary``: the path of the head's WordPiece target vocabulary, learned from its targets."""
        from mtnlp.model import subwords, text
        from mtnlp.model.preprocessing import first_value

        words = text.split_words(first_value(labels, ""))
        return {
            "vocabulary": subwords.learn_vocabulary(
                words.flat_values, config.target_vocabulary_size, self.vocabulary_name
            )
        }

    def transform_features(self, labels, max_length, config, analyzed):
        """``<head>_label`` int64 [B, Lt] (target piece ids then EOS, 0 padding; Lt = max_target_length),
        ``<head>_weight`` float [B, Lt], ``<head>_reference`` string [B], ``<head>_example_weight`` float [B]."""
        import tensorflow as tf

        from mtnlp.model import subwords, text
        from mtnlp.model.preprocessing import FIRST_TARGET_WORD, TARGET_EOS, TARGET_PAD, first_value

        target, has_target = first_value(labels, ""), labels.row_lengths() > 0
        length = config.max_target_length
        words = text.split_words(target)  # "" (no target) has no words
        vocabulary = analyzed["vocabulary"]
        piece_ids = subwords.tokenize(words, vocabulary)
        eos = tf.ragged.boolean_mask(
            tf.fill([tf.shape(target)[0], 1], tf.constant(TARGET_EOS, tf.int64)), has_target[:, None]
        )
        # Long targets are cut, but always end in EOS, so the decoder learns to stop.
        ids = tf.concat([(piece_ids + FIRST_TARGET_WORD)[:, : length - 1], eos], axis=1)
        return {
            self.label_key: ids.to_tensor(default_value=TARGET_PAD, shape=[None, length]),
            self.weight_key: tf.ones_like(ids, tf.float32).to_tensor(default_value=0.0, shape=[None, length]),
            self.eval_label_key: tf.where(has_target, target, ""),
            self.eval_weight_key: tf.cast(has_target, tf.float32),
        }

    def trim(self, features, length):
        # cut to the batch's longest target (1 when it has none), so a batch without this head's
        # examples carries no target-length tensors
        import tensorflow as tf

        target_length = tf.maximum(
            tf.reduce_max(tf.reduce_sum(tf.cast(features[self.label_key] > 0, tf.int32), axis=1)), 1
        )
        return {key: features[key][:, :target_length] for key in (self.label_key, self.weight_key)}

    def model_inputs(self) -> tuple[str, ...]:
        return (self.label_key,)  # teacher forcing

    def output_vocabulary_size(self, tf_transform_output, num_oov_buckets):
        from mtnlp.model.preprocessing import FIRST_TARGET_WORD

        # target ids: 0 padding, BOS, EOS, then the vocabulary, then the OOV buckets
        return tf_transform_output.vocabulary_size_by_name(self.vocabulary_name) + num_oov_buckets + FIRST_TARGET_WORD

    def build(self, context: BuildContext, config: HeadConfig):
        """Logits [B, L, V] of each target position (teacher forced), V the target vocabulary size."""
        import keras

        from mtnlp.model.layers import SequenceDecoder
        from mtnlp.model.preprocessing import TARGET_BOS, TARGET_EOS

        d = context.decoder
        decoder = SequenceDecoder(
            d.vocabulary_sizes[self.name],
            d.max_length,
            d.layers,
            d.num_heads,
            d.intermediate_dim,
            d.dropout,
            bos_id=TARGET_BOS,
            eos_id=TARGET_EOS,
            tie_embeddings=d.tie_embeddings,
            name=self.decoder_name,
        )
        encoder_output = context.layer_outputs[-1]
        # an Identity names the output after the head, as the other heads' Dense layers are
        return keras.layers.Identity(name=self.name)(
            decoder(encoder_output, context.padding_mask, context.inputs[self.label_key])
        )

    def own_signature(self, task: Task) -> str | None:
        return self.signature or self.name

    def prepare_serving(self, module, tf_transform_output):
        # id -> target piece ("" for padding, BOS, EOS, the unknown piece and OOV buckets), a constant
        # of the graph; the unknown piece is never emitted
        from mtnlp.model.preprocessing import FIRST_TARGET_WORD
        from mtnlp.model.subwords import UNKNOWN

        size = module.model.get_layer(self.decoder_name).vocabulary_size
        pieces = [as_text(p) for p in tf_transform_output.vocabulary_by_name(self.vocabulary_name)]
        never_emit = tuple(FIRST_TARGET_WORD + i for i, p in enumerate(pieces) if p == UNKNOWN)
        table = [""] * FIRST_TARGET_WORD + ["" if p == UNKNOWN else p for p in pieces]
        module.head_constants[self.name] = (table + [""] * (size - len(table)), never_emit)

    def _decode_rows(self, module: Any, transformed: Mapping[str, tf.Tensor], rows: tf.Tensor) -> tf.Tensor:
        """Beam-search translations of the given rows (int64 [N]) of a transformed batch: string [B], "" elsewhere."""
        import tensorflow as tf

        from mtnlp.model import text as text_ops
        from mtnlp.model.preprocessing import trim_to_longest

        words, never_emit = module.head_constants[self.name]
        # the encoder's inputs (a backbone's pieces, or the word features) and the word mask, cut to these rows' longest
        names = dict.fromkeys((*module.encoder_inputs, "token_ids"))
        batch = trim_to_longest({k: tf.gather(transformed[k], rows) for k in names})
        decoder = module.model.get_layer(self.decoder_name)
        hidden = module.encoder({k: batch[k] for k in module.encoder_inputs}, training=False)
        ids = decoder.beam_decode(
            hidden, batch["token_ids"] > 0, decoder.max_length, module.beam_width, module.length_penalty, never_emit
        )
        translations = text_ops.join_words(tf.gather(tf.constant(words), ids))
        batch_size = tf.shape(transformed["token_ids"])[0]
        return tf.tensor_scatter_nd_update(tf.fill([batch_size], ""), rows[:, None], translations)

    def served_outputs(self, module, logits, transformed):
        """``<head>`` string [B]: beam search in a ``tf.while_loop``, detokenized."""
        import tensorflow as tf

        rows = tf.range(tf.cast(tf.shape(transformed["token_ids"])[0], tf.int64))
        return {self.scored_output: self._decode_rows(module, transformed, rows)}

    @property
    def scored_output(self) -> str:
        return self.name

    def evaluator_output(self, module, logits, transformed, rows):
        return self._decode_rows(module, transformed, rows)  # "" for examples of other tasks, not decoded

    def scorer_inputs(self, gold, answer):
        return np.array([gold], object), np.array([as_text(answer)], object), np.ones([1])

    def synthetic_labels(self, rng, rows, words, target_lengths, target_vocabulary_size):
        from mtnlp.model.preprocessing import FIRST_TARGET_WORD, TARGET_EOS

        longest = max(int(target_lengths[rows].max()) if rows.any() else 1, 1)
        on = rows[:, None] & (np.arange(longest)[None, :] < target_lengths[:, None])
        ids = np.where(on, rng.integers(FIRST_TARGET_WORD, target_vocabulary_size, size=on.shape), 0)
        ids[np.arange(len(rows))[rows], target_lengths[rows] - 1] = TARGET_EOS
        return ids, on.astype("float32")

    def read_answer(self, outputs, row, words, text):
        return as_text(np.asarray(outputs[self.scored_output]).reshape(-1)[row])

    def describe(self, answer, text):
        return [titled(self.title, answer)]
