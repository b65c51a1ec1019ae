"""The task registry and the kinds' declarations: what a bad declaration is told, and the serving contract."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mtnlp.model import contract
from mtnlp.model.heads import EntityPairHead, SentenceHead, SequenceHead, TokenHead
from mtnlp.model.inputs import TextInput, TextWithSpansInput, TokensInput
from mtnlp.model.tasks import (
    RELATION,
    SENTIMENT,
    TAGGING,
    TRANSLATION,
    UNLABELED,
    Field,
    FieldKind,
    Task,
    all_heads,
    register_task,
    registered_tasks,
    select_tasks,
    supervised_tasks,
)
from mtnlp.pipelines.config import get_config
from mtnlp.sections import HeadConfig
from tests.conftest import REPO

LABELS = ("no", "yes")


def test_a_field_that_nothing_reads_is_an_error_naming_it():
    # a sentence-pair task declared naively: the second text would be validated at ingest and then ignored
    pair = Task(
        "paraphrase",
        TextInput("text"),
        (Field("text", FieldKind.TEXT), Field("text2", FieldKind.TEXT), Field("label", FieldKind.LABEL, labels=LABELS)),
        (SentenceHead("paraphrase", "label", LABELS, metrics=("accuracy",)),),
    )
    with pytest.raises(ValueError, match=r"\['text2'\] are read by nothing"):
        pair.check()


@pytest.mark.parametrize(
    "task, message",
    [
        (
            Task(
                "t",
                TextInput("body"),
                (Field("text", FieldKind.TEXT), Field("label", FieldKind.LABEL, labels=LABELS)),
                (SentenceHead("h", "label", LABELS, metrics=("accuracy",)),),
            ),
            "reads field 'body'",
        ),
        (
            Task(
                "t",
                TextInput("text"),
                (Field("text", FieldKind.TEXT), Field("label", FieldKind.LABEL, labels=LABELS)),
                (TokenHead("h", "label", LABELS, metrics=("accuracy",)),),
            ),
            "needs one of: token_labels",
        ),
        (
            Task(
                "t",
                TextInput("text"),
                (Field("text", FieldKind.TEXT), Field("label", FieldKind.LABEL, labels=LABELS)),
                (EntityPairHead("h", "label", LABELS, metrics=("accuracy",)),),
            ),
            "needs an input that marks two spans",
        ),
        (
            Task(
                "t",
                TextInput("text"),
                (Field("text", FieldKind.TEXT), Field("label", FieldKind.LABEL, labels=LABELS)),
                (SentenceHead("h", "label", LABELS),),
            ),
            "declares no metrics",
        ),
        (
            Task(
                "t",
                TextInput("text"),
                (Field("text", FieldKind.TEXT), Field("label", FieldKind.LABEL, labels=LABELS)),
                (SentenceHead("h", "label", LABELS, metrics=("accuracy", "f1_macro")),),
            ),
            r"head 'h': unknown metric\(s\) \['f1_macro'\]; model/scoring.py computes: bleu, accuracy",
        ),
        (
            Task(
                "t",
                TextInput("text"),
                (Field("text", FieldKind.TEXT), Field("label", FieldKind.LABEL, labels=LABELS)),
                (SentenceHead("h", "label", LABELS, metrics=("accuracy",), default_config=HeadConfig(loss="ranking")),),
            ),
            "loss 'ranking' .* head 'h' declares no none_label",
        ),
        (
            Task(
                "t",
                TextInput("text"),
                (Field("text", FieldKind.TEXT), Field("target", FieldKind.TEXT)),
                (SequenceHead("h", "target", metrics=("bleu",), default_config=HeadConfig(encoder_layer=1)),),
            ),
            r"head 'h' \(sequence\) reads the encoder's last layer",
        ),
        (
            Task(
                "t",
                TokensInput("tokens"),
                (
                    Field("tokens", FieldKind.TOKENS),
                    Field("tags", FieldKind.TOKEN_LABELS, labels=LABELS, aligned_with="tokens"),
                ),
                (TokenHead("h", "tags", LABELS, metrics=("accuracy",), decoding="crf"),),
            ),
            "unknown decoding 'crf'",
        ),
        (
            Task(
                "t",
                TextInput("text"),
                (Field("text", FieldKind.TEXT), Field("label", FieldKind.LABEL, labels=LABELS)),
                (SentenceHead("h", "label", LABELS, metrics=("accuracy",), none_label="none"),),
            ),
            "none_label 'none' is not one of its labels",
        ),
    ],
)
def test_declarations_the_kinds_cannot_serve_fail_with_the_reason(task, message):
    with pytest.raises(ValueError, match=message):
        task.check()


def test_registering_a_taken_name_or_head_fails():
    with pytest.raises(ValueError, match="registered already"):
        register_task(SENTIMENT)
    clash = Task(
        "sentiment2",
        TextInput("text"),
        SENTIMENT.fields,
        (SentenceHead("sentiment", "label", SENTIMENT.heads[0].labels, metrics=("accuracy",)),),
    )
    with pytest.raises(ValueError, match="taken by another task"):
        register_task(clash)
    assert [t.name for t in registered_tasks()] == ["tagging", "sentiment", "relation", "translation", "unlabeled"]


def test_task_lists_default_to_every_registered_task_and_unknown_names_list_the_known():
    assert select_tasks(None) == registered_tasks() == (TAGGING, SENTIMENT, RELATION, TRANSLATION, UNLABELED)
    assert supervised_tasks() == (TAGGING, SENTIMENT, RELATION, TRANSLATION)  # raw text has no heads
    assert get_config("quick").task_names == ("tagging", "sentiment", "relation", "translation", "unlabeled")
    with pytest.raises(KeyError, match="known tasks: tagging, sentiment, relation, translation, unlabeled"):
        select_tasks(["tagging", "chunking"])
    with pytest.raises(ValueError, match="tasks: unknown task"):
        get_config("quick", tasks=("taging",))
    with pytest.raises(ValueError, match="heads names head 'nerr'"):
        get_config("quick", heads={"nerr": get_config("quick").heads["ner"]})


def test_the_serving_contract_of_the_five_heads():
    signatures = {s.name: s for s in contract.signatures(registered_tasks())}
    assert list(signatures) == ["analyze", "analyze_tokens", "relation", "translate"]
    assert [h.name for h in signatures["analyze"].heads] == ["pos", "ner", "sentiment"]
    assert signatures["analyze"].plain and not signatures["relation"].plain
    assert isinstance(signatures["relation"].input, TextWithSpansInput)
    assert signatures["translate"].input == TextInput("source") and isinstance(
        signatures["translate"].heads[0], SequenceHead
    )
    assert {h.name: contract.signature_for(t, h) for t in registered_tasks() for h in t.heads} == {
        "pos": "analyze_tokens",
        "ner": "analyze_tokens",
        "sentiment": "analyze",
        "relation": "relation",
        "translation": "translate",
    }
    assert [name for name, _ in contract.warmup_requests(registered_tasks())] == [
        "serving_default",
        "relation",
        "translate",
    ]


def test_a_second_sequence_head_gets_a_signature_and_an_output_named_after_it():
    reversal = Task(
        "reversal",
        TextInput("text"),
        (Field("text", FieldKind.TEXT), Field("reversed", FieldKind.TEXT)),
        (SequenceHead("reversal", "reversed", metrics=("bleu",)),),
    )
    reversal.check()
    signatures = {s.name: s for s in contract.signatures((*registered_tasks(), reversal))}
    assert [h.name for h in signatures["reversal"].heads] == ["reversal"]
    assert [h.name for h in signatures["translate"].heads] == ["translation"]
    assert (reversal.heads[0].scored_output, TRANSLATION.heads[0].scored_output) == ("reversal", "translation")
    # a signature name taken by another input is refused
    clash = Task(
        "clash", TextWithSpansInput("text"), RELATION.fields, (SequenceHead("analyze", "text", metrics=("bleu",)),)
    )
    with pytest.raises(ValueError, match="signature 'analyze' of head 'analyze' is taken by another signature"):
        contract.signatures((*registered_tasks(), clash))


def test_requests_are_built_from_records_by_the_input_kind():
    request = contract.request(RELATION, [{"text": "A cat in a box.", "e1": [2, 5], "e2": [11, 14]}])
    assert request["text"].tolist() == ["A cat in a box."] and request["e1_start"].tolist() == [2]
    assert request["e2_end"].dtype.name == "int64"
    tokens = contract.request(TAGGING, [{"tokens": ["a", "b"]}, {"tokens": ["c"]}])["tokens"]
    assert tokens.tolist() == [["a", "b"], ["c", ""]]
    assert contract.request(TRANSLATION, [{"source": "Hi."}])["text"].tolist() == ["Hi."]


def test_no_module_branches_on_head_kinds_outside_the_kind_classes():
    found = subprocess.run(
        [
            "grep",
            "-rnE",
            r"HeadKind|\bh(ead)?\.kind\b|isinstance\([^)]*(Sentence|Token|EntityPair|Sequence)Head",
            "model",
            "serving",
            "pipelines",
            "components",
            "experiments",
            "benchmarks",
            "mtnlp",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    lines = [line for line in found.stdout.splitlines() if not line.startswith("model/heads.py")]
    assert lines == [], "\n".join(lines)


def test_reading_the_registry_imports_no_tensorflow():
    code = (
        "import sys, mtnlp.model.tasks, mtnlp.model.contract, mtnlp.serving.analysis; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'apache_beam') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_head_has_one_kind_class():
    assert {type(h).__name__ for h in all_heads()} == {"TokenHead", "SentenceHead", "EntityPairHead", "SequenceHead"}
