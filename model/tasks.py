"""The tasks: the one place that says what each task reads, predicts and is scored on.

A *task* is one data folder (``data/<task>/``) whose JSON Lines records share a layout. It declares
its record ``fields`` (validated at ingest, written to ``tf.Example``s, described in the schema)
and one or more ``heads``: the model outputs trained on its labels. ``tagging`` carries two heads
(``pos`` and ``ner``) on the same sentences; the others carry one.

Everything downstream is derived from this module: ingest validation, the curated schema's label
domains, the Transform features (``<head>_label`` / ``<head>_weight``), the Keras heads and losses,
the TFMA metrics and blessing thresholds, and the serving signature outputs. Adding a task means
adding one ``Task`` here (and a threshold in ``pipelines/config.py`` if it should gate blessing).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Sequence


class FieldKind(enum.Enum):
    TEXT = "text"  # a string
    TOKENS = "tokens"  # a non-empty list of strings
    LABEL = "label"  # one string from a label set
    TOKEN_LABELS = "token_labels"  # one label per token of `aligned_with`
    CHAR_SPAN = "char_span"  # [start, end) character offsets into `within`


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of a task's JSON record; also the name of its ``tf.Example`` feature."""

    name: str
    kind: FieldKind
    labels: tuple[str, ...] = ()
    aligned_with: str | None = None
    within: str | None = None
    # An optional field may be null or absent; its head then gets no loss for that record.
    optional: bool = False


class HeadKind(enum.Enum):
    SENTENCE = "sentence"  # one label per text, from the pooled encoder output
    TOKEN = "token"  # one label per token
    ENTITY_PAIR = "entity_pair"  # one label per (text, span 1, span 2), from the spans' first tokens


class EncoderInput(enum.Enum):
    TEXT = "text"  # raw text, tokenized in the graph
    TOKENS = "tokens"  # gold tokens from the data
    TEXT_WITH_SPANS = "text_with_spans"  # raw text plus two marked character spans


@dataclasses.dataclass(frozen=True)
class Head:
    """One model output: its label set, where its labels come from, and how it is scored.

    ``metrics`` are the TFMA metric names computed for this head (see ``model/metrics.py``);
    the first one is the head's primary metric, used for blessing and reported first.
    """

    name: str
    kind: HeadKind
    label_field: str
    labels: tuple[str, ...]
    metrics: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    # Feature names produced by Transform for this head.
    @property
    def label_key(self) -> str:
        return f"{self.name}_label"

    @property
    def weight_key(self) -> str:
        return f"{self.name}_weight"


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    encoder_input: EncoderInput
    fields: tuple[Field, ...]
    heads: tuple[Head, ...]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"task {self.name!r} has no field {name!r}")


UPOS_TAGS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
SENTIMENT_LABELS = ("negative", "positive")
SEMEVAL_RELATIONS = ("Other",) + tuple(
    f"{relation}({a},{b})"
    for relation in (
        "Cause-Effect", "Component-Whole", "Content-Container", "Entity-Destination",
        "Entity-Origin", "Instrument-Agency", "Member-Collection", "Message-Topic",
        "Product-Producer",
    )  # fmt: skip
    for a, b in (("e1", "e2"), ("e2", "e1"))
)

TAGGING = Task(
    name="tagging",
    encoder_input=EncoderInput.TOKENS,
    fields=(
        Field("tokens", FieldKind.TOKENS),
        Field("pos", FieldKind.TOKEN_LABELS, labels=UPOS_TAGS, aligned_with="tokens"),
        Field("ner", FieldKind.TOKEN_LABELS, labels=NER_TAGS, aligned_with="tokens", optional=True),
    ),
    heads=(
        Head("pos", HeadKind.TOKEN, "pos", UPOS_TAGS, metrics=("token_accuracy",)),
        Head("ner", HeadKind.TOKEN, "ner", NER_TAGS,
             metrics=("entity_f1", "entity_precision", "entity_recall")),
    ),
)  # fmt: skip

SENTIMENT = Task(
    name="sentiment",
    encoder_input=EncoderInput.TEXT,
    fields=(
        Field("text", FieldKind.TEXT),
        Field("label", FieldKind.LABEL, labels=SENTIMENT_LABELS),
    ),
    heads=(Head("sentiment", HeadKind.SENTENCE, "label", SENTIMENT_LABELS, metrics=("accuracy", "auc")),),
)

RELATION = Task(
    name="relation",
    encoder_input=EncoderInput.TEXT_WITH_SPANS,
    fields=(
        Field("text", FieldKind.TEXT),
        Field("e1", FieldKind.CHAR_SPAN, within="text"),
        Field("e2", FieldKind.CHAR_SPAN, within="text"),
        Field("relation", FieldKind.LABEL, labels=SEMEVAL_RELATIONS),
    ),
    heads=(
        Head("relation", HeadKind.ENTITY_PAIR, "relation", SEMEVAL_RELATIONS,
             metrics=("semeval_macro_f1", "accuracy")),
    ),
)  # fmt: skip

TASKS: tuple[Task, ...] = (TAGGING, SENTIMENT, RELATION)


def get_task(name: str) -> Task:
    for task in TASKS:
        if task.name == name:
            return task
    raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(t.name for t in TASKS)}")


def select_tasks(names: Sequence[str] | None) -> tuple[Task, ...]:
    """The tasks with these names, in registry order; all of them for ``None``."""
    if names is None:
        return TASKS
    unknown = set(names) - {t.name for t in TASKS}
    if unknown:
        raise KeyError(f"unknown task(s) {sorted(unknown)}; known tasks: {', '.join(t.name for t in TASKS)}")
    return tuple(t for t in TASKS if t.name in names)


def all_heads(tasks: Sequence[Task] = TASKS) -> tuple[Head, ...]:
    return tuple(head for task in tasks for head in task.heads)


def all_fields(tasks: Sequence[Task] = TASKS) -> dict[str, Field]:
    """Every field by name. Tasks may share a field name (``text``) only with the same kind."""
    fields: dict[str, Field] = {}
    for task in tasks:
        for f in task.fields:
            seen = fields.get(f.name)
            if seen is not None and seen.kind != f.kind:
                raise ValueError(f"field {f.name!r} is {seen.kind} in one task and {f.kind} in another")
            fields.setdefault(f.name, f)
    return fields


# Checked at import so that a bad task definition fails at once, not in the middle of a pipeline run.
all_fields()
