"""``mtnlp add-data``: drops a file of new labelled records (or raw text for ``unlabeled``) into the data folder
as the next span.

``data/spans/<N>/<task>/train.jsonl`` and ``validation.jsonl`` are written (the validation records are
a deterministic 10 % of the file unless a validation file is given), after every record has been
checked with the same rules as ingest, so a bad file is refused before it reaches a pipeline run.
The span folder appears complete or not at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile

from mtnlp.components.jsonl_example_gen.layout import SPANS_DIR, next_span
from mtnlp.model.records import JSON_LINES, PLAIN_TEXT, RecordError, bytes_to_example, plain_text_record
from mtnlp.model.tasks import Task, get_task, registered_tasks

MAX_ERRORS_SHOWN = 10


class BadDataError(ValueError):
    pass


@dataclasses.dataclass
class AddedSpan:
    span: int
    folder: str
    train_records: int
    validation_records: int
    rejected: list[str]


def resolve_task(name: str) -> Task:
    """A task by its name or by the name of one of its heads (``ner`` -> ``tagging``)."""
    for task in registered_tasks():
        if name == task.name or name in {h.name for h in task.heads}:
            return task
    return get_task(name)  # raises with the list of known tasks


def _check(path: str, task: Task) -> tuple[list[str], list[str]]:
    """(every record line, an error per malformed one). Lines stay raw so that a forced add keeps them; a
    plain-text file (``.txt``, raw text for a task whose only field is a text) becomes JSON Lines records."""
    plain = path.endswith(PLAIN_TEXT)  # any other name is read as JSON Lines, as before
    lines, errors = [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            try:
                bytes_to_example(raw, task, PLAIN_TEXT if plain else JSON_LINES)
                if plain:
                    line = plain_text_record(line, task)
            except RecordError as e:
                errors.append(f"{path}:{number}: {e}")
            lines.append(line)
    return lines, errors


def _is_validation(line: str, fraction: float) -> bool:
    digest = int(hashlib.sha256(line.encode()).hexdigest()[:8], 16)
    return digest % 1000 < fraction * 1000


def add_span(
    data_root: str,
    task_name: str,
    train_file: str,
    validation_file: str | None = None,
    validation_fraction: float = 0.1,
    force: bool = False,
) -> AddedSpan:
    task = resolve_task(task_name)
    train, errors = _check(train_file, task)
    validation = []
    if validation_file:
        validation, more_errors = _check(validation_file, task)
        errors += more_errors
    else:
        held_out = [_is_validation(line, validation_fraction) for line in train]
        validation = [line for line, out in zip(train, held_out) if out]
        train = [line for line, out in zip(train, held_out) if not out]
    # with --force the malformed lines are written too: ingest rejects them with file and line
    if errors and not force:
        shown = "\n  ".join(errors[:MAX_ERRORS_SHOWN])
        more = f"\n  ... and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise BadDataError(
            f"{len(errors)} malformed record(s) for task {task.name!r}; nothing was added:\n  "
            f"{shown}{more}\n(use --force to add the file anyway and let ingest reject them)"
        )
    if not train or not validation:
        raise BadDataError(
            f"need at least one training and one validation record for task {task.name!r} "
            f"(got {len(train)} and {len(validation)}); pass --validation FILE for small files"
        )

    span = next_span(data_root)
    spans_dir = os.path.join(data_root, SPANS_DIR)
    os.makedirs(spans_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".incoming-", dir=spans_dir)  # not a number: invisible to ingest
    try:
        os.makedirs(os.path.join(staging, task.name))
        for name, lines in (("train.jsonl", train), ("validation.jsonl", validation)):
            with open(os.path.join(staging, task.name, name), "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)
        folder = os.path.join(spans_dir, str(span))
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return AddedSpan(span, os.path.join(folder, task.name), len(train), len(validation), errors)
