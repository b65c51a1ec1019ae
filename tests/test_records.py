"""Ingest validation: one test per kind of malformed record, and what a good record becomes."""

from __future__ import annotations

import json

import pytest

from mtnlp.model.records import RecordError, record_to_example
from mtnlp.model.tasks import RELATION, SENTIMENT, TAGGING

GOOD_TAGGING = {
    "id": "s1",
    "tokens": ["Apple", "sued", "Samsung", "."],
    "pos": ["PROPN", "VERB", "PROPN", "PUNCT"],
    "ner": ["B-ORG", "O", "B-ORG", "O"],
}
GOOD_RELATION = {
    "id": "r1",
    "text": "The company fabricates plastic chairs.",
    "e1": [4, 11],
    "e2": [30, 36],
    "relation": "Product-Producer(e2,e1)",
}


def features(example):
    f = example.features.feature
    return {k: (list(v.bytes_list.value) or list(v.int64_list.value)) for k, v in f.items()}


def test_good_tagging_record_keeps_every_field_and_the_task():
    got = features(record_to_example(json.dumps(GOOD_TAGGING), TAGGING))
    assert got["task"] == [b"tagging"]
    assert got["id"] == [b"s1"]
    assert got["tokens"] == [b"Apple", b"sued", b"Samsung", b"."]
    assert got["ner"] == [b"B-ORG", b"O", b"B-ORG", b"O"]


def test_optional_null_field_is_left_out_not_rejected():
    got = features(record_to_example(json.dumps({**GOOD_TAGGING, "ner": None}), TAGGING))
    assert "ner" not in got and "pos" in got


def test_spans_become_int64_offsets():
    got = features(record_to_example(json.dumps(GOOD_RELATION), RELATION))
    assert got["e1"] == [4, 11] and got["e2"] == [30, 36]


@pytest.mark.parametrize(
    "line, task, field, message",
    [
        ('{"id": "x", "text": "ok", "label": "positive"', SENTIMENT, None, "invalid JSON"),
        ('["not", "an", "object"]', SENTIMENT, None, "expected a JSON object"),
        (json.dumps({"id": "x", "label": "positive"}), SENTIMENT, "text", "missing"),
        (json.dumps({"id": "x", "text": None, "label": "positive"}), SENTIMENT, "text", "null"),
        (json.dumps({"id": "x", "text": "   ", "label": "positive"}), SENTIMENT, "text", "non-empty string"),
        (json.dumps({"id": "x", "text": "fine", "label": "neutral"}), SENTIMENT, "label", "unknown label 'neutral'"),
        (json.dumps({**GOOD_TAGGING, "pos": ["PROPN", "VERB"]}), TAGGING, "pos", "has 2 labels but 'tokens' has 4"),
        (
            json.dumps({**GOOD_TAGGING, "ner": ["B-ORG", "O", "B-MISC", "O"]}),
            TAGGING,
            "ner",
            "unknown label(s) ['B-MISC']",
        ),
        (json.dumps({**GOOD_TAGGING, "tokens": []}), TAGGING, "tokens", "non-empty list"),
        (json.dumps({**GOOD_RELATION, "e2": [30, 99]}), RELATION, "e2", "outside the text"),
        (json.dumps({**GOOD_RELATION, "e1": [11, 4]}), RELATION, "e1", "outside the text"),
        (json.dumps({**GOOD_RELATION, "e1": "4-11"}), RELATION, "e1", "expected [start, end]"),
        (json.dumps({**GOOD_RELATION, "relation": "Likes(e1,e2)"}), RELATION, "relation", "unknown label"),
    ],
    ids=[
        "bad-json",
        "not-object",
        "missing-field",
        "null-field",
        "empty-text",
        "unknown-label",
        "length-mismatch",
        "unknown-token-label",
        "empty-tokens",
        "span-outside-text",
        "span-reversed",
        "span-not-offsets",
        "unknown-relation",
    ],
)
def test_malformed_record_is_rejected_naming_field_and_problem(line, task, field, message):
    with pytest.raises(RecordError) as error:
        record_to_example(line, task)
    assert error.value.field == field
    assert message in str(error.value)
    if field:
        assert f"field {field!r}" in str(error.value)
