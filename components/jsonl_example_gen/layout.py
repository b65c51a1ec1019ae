"""Where a data folder keeps its files, and which spans a run reads.

Two layouts, recognised by ``has_spans``:

- flat: ``<data>/<task>/train.jsonl*`` and ``validation.jsonl*`` (the bundled data; ``.txt*`` for raw text);
- spans: the same plus ``<data>/spans/<N>/<task>/...`` for each span N >= 1 of new data. The flat
  files, when present, are span 0.

The layout is recognised when the data are read, not when the pipeline is built: the ingest's executor and
the input fingerprint (``components/input_fingerprint.py``) both call ``selected_files``. Which spans a run
reads is the ingest's ``span_selection``: ``latest`` (the newest span N only), ``all`` (0..N) or ``window``
(the last K spans).
"""

from __future__ import annotations

import os
import re

from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2

SPANS_DIR = "spans"
# any extension: the executor reads .jsonl and .txt (each optionally .gz) and names any other file it finds
SPLIT_FILES = {"train": "train.*", "eval": "validation.*"}
SPAN_SELECTIONS = ("latest", "all", "window")


def has_spans(data_root: str) -> bool:
    spans = os.path.join(data_root, SPANS_DIR)
    return fileio.isdir(spans) and any(name.rstrip("/").isdigit() for name in fileio.listdir(spans))


def flat_pattern(split: str) -> str:
    return f"*/{SPLIT_FILES[split]}"


def span_pattern(split: str) -> str:
    """The files of a split in every span."""
    return f"{SPANS_DIR}/*/*/{SPLIT_FILES[split]}"


def input_config() -> example_gen_pb2.Input:
    """The splits and their flat patterns; with spans, ``selected_files`` finds each span's files of a split."""
    return example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=split, pattern=flat_pattern(split)) for split in SPLIT_FILES]
    )


def span_files(input_base: str, split: str) -> dict[int, list[str]]:
    """Files of a split per span number (0 for the flat files), for every span present."""
    found: dict[int, list[str]] = {}
    flat = sorted(fileio.glob(os.path.join(input_base, flat_pattern(split))))
    if flat:
        found[0] = flat
    number = re.compile(re.escape(os.path.join(input_base, SPANS_DIR)) + r"/(\d+)/")
    for path in sorted(fileio.glob(os.path.join(input_base, span_pattern(split)))):
        match = number.match(path)
        if match:
            found.setdefault(int(match.group(1)), []).append(path)
    return found


def select_spans(available: list[int], latest: int, selection: str, window: int = 1) -> list[int]:
    """The spans a run reads, given the spans present and the newest one to read."""
    if selection not in SPAN_SELECTIONS:
        raise ValueError(f"unknown span selection {selection!r}; use one of {', '.join(SPAN_SELECTIONS)}")
    candidates = sorted(s for s in available if s <= latest)
    if selection == "latest":
        return [latest]
    if selection == "window":
        if window < 1:
            raise ValueError(f"span window must be at least 1, got {window}")
        return candidates[-window:]
    return candidates


def selected_files(input_base: str, split: str, selection: str = "all", window: int = 1) -> dict[int, list[str]]:
    """{span: files} of a split that a run reads: the selected spans of the spans layout (newest: the highest
    present), or the flat files as span 0."""
    if not has_spans(input_base):
        return {0: sorted(fileio.glob(os.path.join(input_base, flat_pattern(split))))}
    per_span = span_files(input_base, split)
    if not per_span:
        return {}
    return {span: per_span[span] for span in select_spans(list(per_span), max(per_span), selection, window)}


def next_span(data_root: str) -> int:
    spans = os.path.join(data_root, SPANS_DIR)
    if not fileio.isdir(spans):
        return 1
    numbers = [int(n.rstrip("/")) for n in fileio.listdir(spans) if n.rstrip("/").isdigit()]
    return max(numbers, default=0) + 1
