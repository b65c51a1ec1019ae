"""The tasks: the one place that says what each task reads, predicts and is scored on.

A *task* is one data folder (``data/<task>/``) whose JSON Lines records share a layout. It declares
its record ``fields`` (validated at ingest, written to ``tf.Example``s, described in the schema), its
*input kind* (how its records reach the shared encoder: ``model/inputs.py``) and one or more *heads*
of some *head kind* (the model outputs trained on its labels: ``model/heads.py``). ``tagging``
carries two heads (``pos`` and ``ner``) on the same sentences; the others carry one.

Everything downstream is derived from the registry: ingest validation, the schema's label domains,
the Transform features, the Keras heads and losses, the TFMA metrics and blessing thresholds, the
serving signatures and their outputs (``model/contract.py``), ``mtnlp evaluate`` and ``mtnlp predict``,
and the default list of tasks of the pipeline and the study (the tests name the tasks they run). The kinds
own what a head or input *does*; a head's settings (``heads.<name>`` in the config) default to what it
declares here (``Head.default_config``).

A task may have no heads: ``unlabeled`` is raw text (``data/unlabeled/``, JSON Lines ``{"text": ...}`` or plain
text, one sentence per line) that feeds only the self-supervised masked-word objective and the word vocabulary.

Adding a task of an existing kind is one ``register_task(Task(...))``: here, or in a module of your
own named in ``MTNLP_TASK_MODULES`` (see the README's "Adding a task"). A gate (``heads.<name>.gate``,
in the head's ``default_config``, a profile or ``--set``) is optional: heads without one are evaluated
but do not gate blessing.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import os
from collections.abc import Sequence

from mtnlp.model.heads import EntityPairHead, Head, SentenceHead, SequenceHead, TokenHead
from mtnlp.model.inputs import EncoderInput, TextInput, TextWithSpansInput, TokensInput


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


@dataclasses.dataclass(frozen=True)
class Task:
    """One data folder (``data/<name>/``): its record fields, how they reach the encoder, its heads.

    Args:
        name: the task (and data folder) name.
        encoder_input: the input kind that turns a record into the encoder's words (``model/inputs.py``).
        fields: the record fields, validated at ingest and written to ``tf.Example``s.
        heads: the model outputs trained on its labels (``model/heads.py``); none for raw text that only
            the masked-word objective learns from.
    """

    name: str
    encoder_input: EncoderInput
    fields: tuple[Field, ...]
    heads: tuple[Head, ...]

    @property
    def supervised(self) -> bool:
        """Whether the task has heads; one without feeds only the masked-word objective."""
        return bool(self.heads)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"task {self.name!r} has no field {name!r}")

    def check(self) -> None:
        """Raises ValueError for a declaration the kinds cannot serve: a field nothing reads, a field
        an input or head needs but the task lacks, a head of the wrong kind for its field."""
        declared = {f.name for f in self.fields}
        for name in self.encoder_input.fields:
            if name not in declared:
                raise ValueError(
                    f"task {self.name!r}: its input {self.encoder_input} reads field {name!r}, "
                    f"which the task does not declare"
                )
        for head in self.heads:
            if head.label_field not in declared:
                raise ValueError(
                    f"task {self.name!r}: head {head.name!r} reads labels from undeclared field {head.label_field!r}"
                )
            head.check(self)
        read = set(self.encoder_input.fields) | {h.label_field for h in self.heads}
        unread = [f.name for f in self.fields if f.name not in read]
        if unread:
            raise ValueError(
                f"task {self.name!r}: field(s) {unread} are read by nothing: neither its input "
                f"{type(self.encoder_input).__name__} (reads {list(self.encoder_input.fields)}) nor a head's labels "
                f"({[h.label_field for h in self.heads]}). Give the task an input kind that reads them "
                "(model/inputs.py) or drop them."
            )


UPOS_TAGS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
)
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
SENTIMENT_LABELS = ("negative", "positive")
SEMEVAL_RELATIONS = ("Other",) + tuple(
    f"{relation}({a},{b})"
    for relation in (
        "Cause-Effect",
        "Component-Whole",
        "Content-Container",
        "Entity-Destination",
        "Entity-Origin",
        "Instrument-Agency",
        "Member-Collection",
        "Message-Topic",
        "Product-Producer",
    )
    for a, b in (("e1", "e2"), ("e2", "e1"))
)

TAGGING = Task(
    name="tagging",
    encoder_input=TokensInput("tokens"),
    fields=(
        Field("tokens", FieldKind.TOKENS),
        Field("pos", FieldKind.TOKEN_LABELS, labels=UPOS_TAGS, aligned_with="tokens"),
        Field("ner", FieldKind.TOKEN_LABELS, labels=NER_TAGS, aligned_with="tokens", optional=True),
    ),
    heads=(
        TokenHead("pos", "pos", UPOS_TAGS, metrics=("token_accuracy",)),
        TokenHead("ner", "ner", NER_TAGS, metrics=("entity_f1", "entity_precision", "entity_recall"), decoding="iob2"),
    ),
)

SENTIMENT = Task(
    name="sentiment",
    encoder_input=TextInput("text"),
    fields=(
        Field("text", FieldKind.TEXT),
        Field("label", FieldKind.LABEL, labels=SENTIMENT_LABELS),
    ),
    heads=(SentenceHead("sentiment", "label", SENTIMENT_LABELS, metrics=("accuracy", "auc")),),
)

RELATION = Task(
    name="relation",
    encoder_input=TextWithSpansInput("text", spans=("e1", "e2")),
    fields=(
        Field("text", FieldKind.TEXT),
        Field("e1", FieldKind.CHAR_SPAN, within="text"),
        Field("e2", FieldKind.CHAR_SPAN, within="text"),
        Field("relation", FieldKind.LABEL, labels=SEMEVAL_RELATIONS),
    ),
    heads=(
        # "Other" is SemEval's "none of the nine relations" (left out of its macro-F1): the class the
        # pairwise ranking loss (heads.relation.loss=ranking) does not score
        EntityPairHead(
            "relation", "relation", SEMEVAL_RELATIONS, metrics=("semeval_macro_f1", "accuracy"), none_label="Other"
        ),
    ),
)

TRANSLATION = Task(
    name="translation",
    encoder_input=TextInput("source"),
    fields=(
        Field("source", FieldKind.TEXT),
        Field("target", FieldKind.TEXT),
    ),
    heads=(SequenceHead("translation", "target", metrics=("bleu",), signature="translate"),),
)

# Raw text without labels: the masked-word objective (training.masked_word_share) learns from it, with every
# other task's text; no head, no validation split needed, nothing served or scored.
UNLABELED = Task(
    name="unlabeled",
    encoder_input=TextInput("text"),
    fields=(Field("text", FieldKind.TEXT),),
    heads=(),
)

_REGISTRY: list[Task] = []


def register_task(task: Task) -> Task:
    """Adds a task to the registry (checked first); every list of tasks is derived from the registry."""
    task.check()
    if any(t.name == task.name for t in _REGISTRY):
        raise ValueError(f"task {task.name!r} is registered already")
    head_names = {h.name for t in _REGISTRY for h in t.heads}
    clash = [h.name for h in task.heads if h.name in head_names]
    if clash:
        raise ValueError(f"task {task.name!r}: head name(s) {clash} are taken by another task")
    all_fields([*_REGISTRY, task])  # a shared field name must keep its kind
    _REGISTRY.append(task)
    return task


def registered_tasks() -> tuple[Task, ...]:
    """Every registered task, in registration order (its index is the ``task_id`` feature)."""
    return tuple(_REGISTRY)


def supervised_tasks(tasks: Sequence[Task] | None = None) -> tuple[Task, ...]:
    """The tasks (of the registry by default) that have heads: what is trained on labels, scored and served."""
    return tuple(t for t in (registered_tasks() if tasks is None else tasks) if t.supervised)


def task_names() -> tuple[str, ...]:
    return tuple(t.name for t in _REGISTRY)


def get_task(name: str) -> Task:
    for task in _REGISTRY:
        if task.name == name:
            return task
    raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")


def select_tasks(names: Sequence[str] | None) -> tuple[Task, ...]:
    """The tasks with these names, in registry order; all of them for ``None``."""
    if names is None:
        return registered_tasks()
    unknown = set(names) - set(task_names())
    if unknown:
        raise KeyError(f"unknown task(s) {sorted(unknown)}; known tasks: {', '.join(task_names())}")
    return tuple(t for t in _REGISTRY if t.name in names)


def all_heads(tasks: Sequence[Task] | None = None) -> tuple[Head, ...]:
    return tuple(head for task in (registered_tasks() if tasks is None else tasks) for head in task.heads)


def get_head(name: str) -> Head:
    for head in all_heads():
        if head.name == name:
            return head
    raise KeyError(f"unknown head {name!r}; known heads: {', '.join(h.name for h in all_heads())}")


def all_fields(tasks: Sequence[Task] | None = None) -> dict[str, Field]:
    """Every field by name. Tasks may share a field name (``text``) only with the same kind."""
    fields: dict[str, Field] = {}
    for task in registered_tasks() if tasks is None else tasks:
        for f in task.fields:
            seen = fields.get(f.name)
            if seen is not None and seen.kind != f.kind:
                raise ValueError(f"field {f.name!r} is {seen.kind} in one task and {f.kind} in another")
            fields.setdefault(f.name, f)
    return fields


for _task in (TAGGING, SENTIMENT, RELATION, TRANSLATION, UNLABELED):
    register_task(_task)

# Tasks declared outside this file (a user's package, a test's fixture): modules named in this
# variable are imported here, and each calls ``register_task``. The variable travels with the
# process, so the TFX components of a local run see the same tasks.
TASK_MODULES_VARIABLE = "MTNLP_TASK_MODULES"
for _module in filter(None, os.environ.get(TASK_MODULES_VARIABLE, "").split(",")):
    importlib.import_module(_module.strip())
