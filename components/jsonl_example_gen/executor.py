"""Beam executor of JsonlExampleGen.

Each split pattern (e.g. ``*/train.*``) matches one file per task folder; the folder name is
the task, the file name its format (``.jsonl[.gz]``: JSON Lines; ``.txt[.gz]``: plain text, one text per
line, for a task whose only field is a text such as ``unlabeled``; any other name stops the run). Every line becomes a ``tf.Example`` or, if malformed, a rejected record
(``{"file", "line", "task", "field", "error", "record"}``) written to
``<rejected>/Split-<split>/rejected.jsonl``, next to a ``summary.json`` of per-file counts. After
the Beam run the executor fails the component, naming the files and their first errors, only when
a file's rejected fraction exceeds ``max_rejected_fraction``. Good records are never dropped.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from tfx import types
from tfx.components.example_gen import base_example_gen_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import proto_utils

from mtnlp.components.jsonl_example_gen import layout
from mtnlp.model.records import RecordError, bytes_to_example, file_format
from mtnlp.model.tasks import get_task

REJECTED_KEY = "rejected"
SPANS_PROPERTY = "spans_read"  # custom property of the Examples artifact: the spans it holds, e.g. "0,1,2"
SUMMARY_FILE = "summary.json"
REJECTED_FILE = "rejected.jsonl"
_COUNTS = "counts"
_MAX_RECORD_CHARS = 2000
_ERRORS_SHOWN = 5

log = logging.getLogger(__name__)


class TooManyRejectedRecords(RuntimeError):
    pass


def task_of_file(path: str) -> str:
    return os.path.basename(os.path.dirname(path))


def _read_numbered_lines(path: str, max_lines: int | None) -> Iterator[tuple[str, int, bytes]]:
    with fileio.open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        for number, line in enumerate(stream, start=1):
            if max_lines is not None and number > max_lines:
                return
            if line.strip():
                yield path, number, line


class _ParseLine(beam.DoFn):
    """Main output: tf.Examples. Tagged outputs: rejected records, and (file, rejected?) per line."""

    def process(self, element: tuple[str, int, bytes]):
        path, number, raw_line = element
        task_name = task_of_file(path)
        try:
            example = bytes_to_example(raw_line, get_task(task_name), file_format(path))
        except RecordError as e:
            line = raw_line.decode("utf-8", errors="replace")
            yield beam.pvalue.TaggedOutput(_COUNTS, (path, (1, 1)))
            yield beam.pvalue.TaggedOutput(
                REJECTED_KEY,
                {
                    "file": path,
                    "line": number,
                    "task": task_name,
                    "field": e.field,
                    "error": str(e),
                    "record": line.rstrip("\n")[:_MAX_RECORD_CHARS],
                },
            )
            return
        yield beam.pvalue.TaggedOutput(_COUNTS, (path, (1, 0)))
        yield example


def _sum_pairs(pairs) -> tuple[int, int]:
    total = rejected = 0
    for t, r in pairs:
        total, rejected = total + t, rejected + r
    return total, rejected


def _split_name(exec_properties: dict[str, Any], split_pattern: str) -> str:
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties["input_config"], input_config)
    for split in input_config.splits:
        if split.pattern == split_pattern:
            return split.name
    raise ValueError(f"split pattern {split_pattern!r} is not in the input config")


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Reads ``<input_base>/<task>/<split file>`` JSON Lines into tf.Examples; keeps the malformed lines."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._settings = json.loads(exec_properties.get("ingest_config") or "{}")
        self._rejected_uri = artifact_utils.get_single_uri(output_dict[REJECTED_KEY])
        self._spans_read: set[int] = set()
        super().Do(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        examples.set_string_custom_property(SPANS_PROPERTY, ",".join(map(str, sorted(self._spans_read))))
        report_rejected(self._rejected_uri, float(self._settings.get("max_rejected_fraction", 0.0)))

    def _input_files(self, exec_properties: dict[str, Any], split: str) -> list[str]:
        # The layout is recognised here, where the files are read, so that every orchestrator reads the same:
        # no custom driver runs on Kubeflow. InputFingerprint reads the same selection (layout.selected_files).
        selection = self._settings.get("span_selection") or {}
        per_span = layout.selected_files(
            exec_properties["input_base"], split, selection.get("selection", "all"), selection.get("window", 1)
        )
        self._spans_read.update(per_span)
        return [path for files in per_span.values() for path in files]

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        settings, rejected_uri, input_files = self._settings, self._rejected_uri, self._input_files

        @beam.ptransform_fn
        def _jsonl_to_examples(pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str):
            input_base = exec_properties["input_base"]
            split = _split_name(exec_properties, split_pattern)
            tasks = settings.get("tasks")
            files = input_files(exec_properties, split)
            chosen = [f for f in files if tasks is None or task_of_file(f) in tasks]
            for skipped in sorted(set(files) - set(chosen)):
                log.info("Skipping %s: task %r is not enabled", skipped, task_of_file(skipped))
            for path in chosen:
                file_format(path)  # an unknown file type stops the run before any reading, naming the file
            if not chosen:
                raise FileNotFoundError(f"no input files match {split_pattern!r} under {input_base} for tasks {tasks}")
            split_dir = os.path.join(rejected_uri, f"Split-{split}")
            parsed = (
                pipeline
                | "ListFiles" >> beam.Create(chosen)
                | "ReadLines" >> beam.FlatMap(_read_numbered_lines, settings.get("max_records_per_split"))
                | "Spread" >> beam.Reshuffle()
                | "Parse" >> beam.ParDo(_ParseLine()).with_outputs(REJECTED_KEY, _COUNTS, main="examples")
            )
            _ = (
                parsed[REJECTED_KEY]
                | "RejectedToJson" >> beam.Map(lambda r: json.dumps(r, ensure_ascii=False))
                | "WriteRejected"
                >> beam.io.WriteToText(os.path.join(split_dir, REJECTED_FILE), shard_name_template="", num_shards=1)
            )
            _ = (
                parsed[_COUNTS]
                | "CountPerFile" >> beam.CombinePerKey(_sum_pairs)
                | "AllFiles" >> beam.combiners.ToDict()
                | "SummaryToJson"
                >> beam.Map(lambda d: json.dumps({f: {"records": t, "rejected": r} for f, (t, r) in sorted(d.items())}))
                | "WriteSummary"
                >> beam.io.WriteToText(os.path.join(split_dir, SUMMARY_FILE), shard_name_template="", num_shards=1)
            )
            return parsed["examples"]

        return _jsonl_to_examples


def read_rejected_summary(rejected_uri: str) -> dict[str, dict[str, dict[str, int]]]:
    """{split: {file: {"records": n, "rejected": m}}} from a rejected-records artifact."""
    summary = {}
    for split_dir in sorted(fileio.listdir(rejected_uri)):
        path = os.path.join(rejected_uri, split_dir, SUMMARY_FILE)
        if fileio.exists(path):
            with fileio.open(path, "r") as f:
                summary[split_dir.removeprefix("Split-")] = json.loads(f.read() or "{}")
    return summary


def _first_errors(rejected_uri: str, split: str, path: str) -> list[str]:
    errors = []
    with fileio.open(os.path.join(rejected_uri, f"Split-{split}", REJECTED_FILE), "r") as f:
        for line in f:
            record = json.loads(line)
            if record["file"] == path:
                errors.append(f"    line {record['line']}: {record['error']}")
                if len(errors) == _ERRORS_SHOWN:
                    break
    return errors


def report_rejected(rejected_uri: str, max_fraction: float) -> None:
    """Logs per-file counts; raises TooManyRejectedRecords when a file exceeds ``max_fraction``."""
    problems = []
    for split, files in read_rejected_summary(rejected_uri).items():
        for path, counts in files.items():
            total, rejected = counts["records"], counts["rejected"]
            if rejected:
                log.warning("%s: %d of %d records rejected (%s split)", path, rejected, total, split)
            if total and rejected / total > max_fraction:
                problems.append(
                    f"  {path}: {rejected} of {total} records rejected ({rejected / total:.1%}), e.g.\n"
                    + "\n".join(_first_errors(rejected_uri, split, path))
                )
    if problems:
        raise TooManyRejectedRecords(
            f"Too many malformed records (more than {max_fraction:.1%} of a file):\n"
            + "\n".join(problems)
            + f"\nAll rejected records, with file and line: {rejected_uri}/Split-*/{REJECTED_FILE}"
        )
