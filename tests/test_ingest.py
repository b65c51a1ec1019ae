"""JsonlExampleGen's executor on Beam: malformed lines are kept with file and line, good ones all pass,
and the run fails with a readable message only above the configured fraction."""

from __future__ import annotations

import glob
import gzip
import json
import os

import pytest
import tensorflow as tf
from tfx.components.example_gen import utils
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from mtnlp.components.jsonl_example_gen import RejectedRecords
from mtnlp.components.jsonl_example_gen.executor import Executor, TooManyRejectedRecords, read_rejected_summary
from mtnlp.components.jsonl_example_gen.layout import input_config


def _write(path, lines, compress=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)


def _sentiment(i, label="positive"):
    return json.dumps({"id": f"s{i}", "text": f"sentence number {i}", "label": label})


def _run(input_base, out, max_fraction, tasks=None, span_selection=None):
    """The executor as every orchestrator runs it: no driver; the spans layout is found when reading."""
    config = input_config()
    examples, rejected = standard_artifacts.Examples(), RejectedRecords()
    examples.uri, rejected.uri = str(out / "examples"), str(out / "rejected")
    exec_properties = {
        "input_base": str(input_base),
        "input_config": proto_utils.proto_to_json(config),
        "output_config": proto_utils.proto_to_json(utils.make_default_output_config(config)),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        "ingest_config": json.dumps(
            {
                "tasks": tasks,
                "max_records_per_split": None,
                "max_rejected_fraction": max_fraction,
                "span_selection": span_selection,
            }
        ),
    }
    Executor().Do({}, {"examples": [examples], "rejected": [rejected]}, exec_properties)
    return examples, rejected


def _count(examples_uri, split):
    files = glob.glob(os.path.join(examples_uri, f"Split-{split}", "*.gz"))
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))


@pytest.fixture
def data_with_bad_lines(tmp_path):
    base = tmp_path / "data"
    train = [_sentiment(i) for i in range(20)]
    train.insert(5, '{"id": "broken", "text": ')  # line 6: bad JSON
    train.insert(12, _sentiment(99, label="neutral"))  # line 13: unknown label
    _write(base / "sentiment" / "train.jsonl.gz", train, compress=True)
    _write(base / "sentiment" / "validation.jsonl", [_sentiment(i, "negative") for i in range(6)])
    _write(base / "translation" / "train.jsonl", ['{"not": "read"}'])  # a task that is not enabled
    return base


def test_bad_lines_are_reported_with_file_and_line_and_good_ones_kept(data_with_bad_lines, tmp_path):
    examples, rejected = _run(data_with_bad_lines, tmp_path / "out", max_fraction=0.2, tasks=["sentiment"])
    assert _count(examples.uri, "train") == 20
    assert _count(examples.uri, "eval") == 6

    records = [json.loads(line) for line in open(os.path.join(rejected.uri, "Split-train", "rejected.jsonl"))]
    by_line = {r["line"]: r for r in records}
    assert sorted(by_line) == [6, 13]
    assert by_line[6]["file"].endswith("sentiment/train.jsonl.gz") and "invalid JSON" in by_line[6]["error"]
    assert by_line[13]["field"] == "label" and "unknown label 'neutral'" in by_line[13]["error"]
    assert by_line[13]["record"] == _sentiment(99, label="neutral")

    summary = read_rejected_summary(rejected.uri)
    train_file = str(data_with_bad_lines / "sentiment" / "train.jsonl.gz")
    assert summary["train"][train_file] == {"records": 22, "rejected": 2}
    assert list(summary["eval"].values()) == [{"records": 6, "rejected": 0}]


def test_run_fails_naming_the_file_when_the_rejected_fraction_is_exceeded(data_with_bad_lines, tmp_path):
    with pytest.raises(TooManyRejectedRecords) as error:
        _run(data_with_bad_lines, tmp_path / "out", max_fraction=0.05, tasks=["sentiment"])
    message = str(error.value)
    assert "sentiment/train.jsonl.gz: 2 of 22 records rejected (9.1%)" in message
    assert "line 6: invalid JSON" in message and "line 13: field 'label'" in message
    assert "validation.jsonl" not in message  # a clean file is not blamed


def test_invalid_utf8_line_is_rejected_not_mangled(tmp_path):
    base = tmp_path / "data"
    lines = [_sentiment(i).encode() for i in range(5)] + [b'{"id": "x", "text": "caf\xe9", "label": "positive"}']
    os.makedirs(base / "sentiment")
    (base / "sentiment" / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    _write(base / "sentiment" / "validation.jsonl", [_sentiment(0)])
    examples, rejected = _run(base, tmp_path / "out", max_fraction=0.5)
    assert _count(examples.uri, "train") == 5
    (record,) = [json.loads(line) for line in open(os.path.join(rejected.uri, "Split-train", "rejected.jsonl"))]
    assert record["line"] == 6 and "invalid UTF-8" in record["error"]


def test_raw_text_is_read_from_plain_text_and_json_lines_and_a_stray_file_stops_the_run(tmp_path):
    base = tmp_path / "data"
    _write(base / "sentiment" / "train.jsonl", [_sentiment(i) for i in range(3)])
    _write(base / "sentiment" / "validation.jsonl", [_sentiment(0)])
    _write(
        base / "unlabeled" / "train.txt.gz",
        ["Raw text, one sentence per line.", "", "Blank lines are skipped."],
        compress=True,
    )
    _write(base / "unlabeled" / "validation.jsonl", [json.dumps({"text": "JSON Lines work too."}), '{"txt": "typo"}'])
    examples, rejected = _run(base, tmp_path / "out", max_fraction=0.5)
    assert _count(examples.uri, "train") == 3 + 2 and _count(examples.uri, "eval") == 1 + 1
    texts = {
        tf.train.Example.FromString(r.numpy()).features.feature["text"].bytes_list.value[0].decode()
        for r in tf.data.TFRecordDataset(glob.glob(os.path.join(examples.uri, "Split-train", "*.gz")), "GZIP")
    }
    assert {"Raw text, one sentence per line.", "Blank lines are skipped."} <= texts
    (record,) = [json.loads(line) for line in open(os.path.join(rejected.uri, "Split-eval", "rejected.jsonl"))]
    assert record["line"] == 2 and record["task"] == "unlabeled" and record["field"] == "text"

    # plain text is no record of a labelled task: every line is rejected, naming why
    _write(base / "sentiment" / "train.txt", ["a sentence without its label"])
    with pytest.raises(TooManyRejectedRecords, match="plain text files are for tasks whose only field is a text"):
        _run(base, tmp_path / "out2", max_fraction=0.5)
    os.remove(base / "sentiment" / "train.txt")

    _write(base / "unlabeled" / "train.csv", ["text", "a,b"])
    with pytest.raises(ValueError, match=r"unlabeled/train.csv: unknown data file type; name it .jsonl .* or .txt"):
        _run(base, tmp_path / "out3", max_fraction=0.5)


def test_span_selection():
    from mtnlp.components.jsonl_example_gen.layout import select_spans

    assert select_spans([0, 1, 2, 3], 3, "all") == [0, 1, 2, 3]
    assert select_spans([0, 1, 2, 3], 3, "latest") == [3]
    assert select_spans([0, 1, 2, 3], 3, "window", 2) == [2, 3]
    assert select_spans([0, 1, 2, 3], 2, "all") == [0, 1, 2]  # a span newer than the newest to read waits
    with pytest.raises(ValueError, match="unknown span selection 'newest'"):
        select_spans([0], 0, "newest")


@pytest.fixture
def data_with_spans(tmp_path):
    base = tmp_path / "data"
    _write(base / "sentiment" / "train.jsonl", [_sentiment(i) for i in range(4)])  # span 0: the flat data
    _write(base / "sentiment" / "validation.jsonl", [_sentiment(0)])
    for span, size in ((1, 3), (2, 2)):
        _write(
            base / "spans" / str(span) / "sentiment" / "train.jsonl", [_sentiment(100 * span + i) for i in range(size)]
        )
        _write(base / "spans" / str(span) / "sentiment" / "validation.jsonl", [_sentiment(100 * span)])
    return base


@pytest.mark.parametrize(
    "selection, window, spans_read, train_records",
    [
        ("all", 1, "0,1,2", 4 + 3 + 2),
        ("latest", 1, "2", 2),
        ("window", 2, "1,2", 3 + 2),
    ],
)
def test_a_run_reads_the_selected_spans_and_records_which(
    data_with_spans, tmp_path, selection, window, spans_read, train_records
):
    from mtnlp.components.jsonl_example_gen.executor import SPANS_PROPERTY
    from mtnlp.components.jsonl_example_gen.layout import has_spans

    assert has_spans(str(data_with_spans))
    examples, _ = _run(
        data_with_spans, tmp_path / "out", max_fraction=0.0, span_selection={"selection": selection, "window": window}
    )
    assert examples.get_string_custom_property(SPANS_PROPERTY) == spans_read
    assert _count(examples.uri, "train") == train_records
    # a flat folder stays the flat data
    flat, _ = _run(
        data_with_spans / "spans" / "1",
        tmp_path / "flat",
        max_fraction=0.0,
        span_selection={"selection": "latest", "window": 1},
    )
    assert flat.get_string_custom_property(SPANS_PROPERTY) == "0" and _count(flat.uri, "train") == 3
