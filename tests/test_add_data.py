"""`mtnlp add-data`: a checked file becomes the next span, split into train and validation."""

from __future__ import annotations

import json
import os

import pytest

from mtnlp.components.jsonl_example_gen.layout import has_spans, span_files
from mtnlp.pipelines.add_data import BadDataError, add_span, resolve_task
from tests.conftest import run_cli


def _tagging(i, ner=("B-ORG", "O")):
    return json.dumps({"id": f"n{i}", "tokens": [f"Acme{i}", "rocks"], "pos": ["PROPN", "VERB"], "ner": list(ner)})


def test_head_names_resolve_to_their_task():
    assert resolve_task("ner").name == "tagging"
    assert resolve_task("relation").name == "relation"
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        resolve_task("nope")


def test_new_file_becomes_the_next_span_with_a_validation_share(tmp_path):
    new = tmp_path / "new.jsonl"
    new.write_text("".join(_tagging(i) + "\n" for i in range(200)))
    data = tmp_path / "data"
    first = add_span(str(data), "ner", str(new))
    second = add_span(str(data), "tagging", str(new))
    assert (first.span, second.span) == (1, 2)
    assert first.train_records + first.validation_records == 200
    assert 5 <= first.validation_records <= 40  # ~10 %, decided by a hash of the record: reproducible
    assert (second.train_records, second.validation_records) == (first.train_records, first.validation_records)
    assert has_spans(str(data))
    assert sorted(span_files(str(data), "train")) == [1, 2]
    assert sorted(os.listdir(data / "spans")) == ["1", "2"]  # no staging folder left behind


def test_malformed_records_are_refused_with_file_and_line(tmp_path):
    new = tmp_path / "new.jsonl"
    new.write_text(_tagging(0) + "\n" + _tagging(1, ner=("B-MISC", "O")) + "\n")
    with pytest.raises(BadDataError) as error:
        add_span(str(tmp_path / "data"), "ner", str(new))
    assert f"{new}:2: field 'ner': unknown label(s) ['B-MISC']" in str(error.value)
    assert not (tmp_path / "data").exists() or not has_spans(str(tmp_path / "data"))


def test_raw_text_becomes_a_span_of_json_lines_records(tmp_path):
    new = tmp_path / "more.txt"
    new.write_text("".join(f'Plain sentence {i}, with "quotes".\n' for i in range(50)) + "\n")
    added = add_span(str(tmp_path / "data"), "unlabeled", str(new))
    assert added.train_records + added.validation_records == 50 and added.folder.endswith("unlabeled")
    records = [json.loads(line) for line in open(os.path.join(added.folder, "train.jsonl"), encoding="utf-8")]
    assert all(set(r) == {"text"} and r["text"].startswith("Plain sentence") for r in records)
    with pytest.raises(BadDataError, match="plain text files are for tasks whose only field is a text"):
        add_span(str(tmp_path / "data"), "sentiment", str(new))


def test_cli_reports_the_span(tmp_path):
    new = tmp_path / "new.jsonl"
    new.write_text("".join(_tagging(i) + "\n" for i in range(50)))
    result = run_cli("add-data", "--task", "ner", "--data", str(tmp_path / "data"), str(new), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Added span 1:" in result.stdout
