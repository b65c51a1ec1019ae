"""`mtnlp evaluate`: score a SavedModel on labelled JSON Lines through its serving signatures.

What is scored is what a client gets: each task's records go through the signature a client would call
(``model/signatures.py``), and the answers are scored with the pipeline's own metric definitions
(``model/scoring.py``: the scorers behind the Evaluator's TFMA metrics). Which signature and which
inputs follow from the serving contract (``model/contract.py``), what is scored from the head kinds:

- raw text (sentiment): ``analyze`` with ``text``; scored on ``<head>_probabilities``;
- gold tokens (tagging): ``analyze_tokens`` with the data's own ``tokens``, so token metrics line up
  with the corpus' tokenization; scored on ``<head>_tags``;
- text with two entity spans (relation): the task's signature with ``text`` and the span offsets;
- source text (translation): the head's signature (``translate``); scored on ``translation`` (BLEU).

The data folder is laid out like ``data/``: one sub-folder per task, JSON Lines files (``.jsonl`` or
``.jsonl.gz``) of any split name inside. Malformed records are reported with file, line and reason, and
left out; heads the model does not have are reported as skipped.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from mtnlp.model import contract
from mtnlp.model.records import RecordError, parse_record
from mtnlp.model.scoring import make_scorer
from mtnlp.model.tasks import Task, supervised_tasks

log = logging.getLogger(__name__)

# signature name -> callable taking the signature's inputs as keyword tensors, returning a dict of tensors:
# a loaded SavedModel's ``signatures``, or ``ServingModule.signatures()`` of a model still in memory.
Signatures = Mapping[str, Callable[..., Mapping[str, Any]]]


class EvaluationError(ValueError):
    """The model or the data cannot be evaluated; the message names the path and the problem."""


@dataclasses.dataclass
class TaskData:
    task: Task
    records: list[dict[str, Any]]
    files: list[str]
    # "file:line: reason" of each malformed record, left out of the scores
    rejected: list[str] = dataclasses.field(default_factory=list)


def _split_name(file_name: str) -> str:
    return file_name.removesuffix(".gz").removesuffix(".jsonl")


def _data_files(folder: str, splits: Sequence[str] | None) -> list[str]:
    return sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if name.endswith((".jsonl", ".jsonl.gz")) and (splits is None or _split_name(name) in splits)
    )


def read_task_data(
    data_dir: str,
    tasks: Sequence[Task] | None = None,
    max_records: int | None = None,
    splits: Sequence[str] | None = None,
) -> dict[str, TaskData]:
    """Every task folder of ``data_dir`` with its checked records: from the files of the given splits
    (``validation`` for ``validation.jsonl[.gz]``; all files for None), at most ``max_records`` per task."""
    if not os.path.isdir(data_dir):
        raise EvaluationError(f"data folder {data_dir} does not exist")
    tasks = supervised_tasks(tasks)  # raw text (no heads) has nothing to score
    found: dict[str, TaskData] = {}
    for task in tasks:
        folder = os.path.join(data_dir, task.name)
        files = _data_files(folder, splits) if os.path.isdir(folder) else []
        if not files:
            continue
        data = TaskData(task, [], files)
        for path in data.files:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                for number, raw in enumerate(f, start=1):
                    if max_records is not None and len(data.records) >= max_records:
                        break
                    if not raw.strip():
                        continue
                    try:
                        data.records.append(parse_record(raw.decode("utf-8"), task))
                    except UnicodeDecodeError as e:
                        data.rejected.append(f"{path}:{number}: invalid UTF-8 at byte {e.start}")
                    except RecordError as e:
                        data.rejected.append(f"{path}:{number}: {e}")
        found[task.name] = data
    if not found:
        expected = ", ".join(f"{t.name}/" for t in tasks)
        which = f" with {' or '.join(f'{s}.jsonl[.gz]' for s in splits)}" if splits else " with JSON Lines files"
        raise EvaluationError(f"{data_dir} has no task folder{which}; expected one or more of: {expected}")
    return found


def _batches(records: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def _request(task: Task, batch: list[dict[str, Any]]) -> dict[str, Any]:
    """The signature's inputs for a batch of records, as a client would send them."""
    import tensorflow as tf

    return {name: tf.constant(value) for name, value in contract.request(task, batch).items()}


@dataclasses.dataclass
class HeadResult:
    task: str
    head: str
    signature: str
    examples: int
    metrics: dict[str, float]
    seconds: float


def evaluate_signatures(
    signatures: Signatures, data: Mapping[str, TaskData], batch_size: int = 64
) -> tuple[list[HeadResult], dict[str, str]]:
    """Scores every head whose signature and output the model has; returns the results and the skipped heads
    (head -> why)."""
    results, skipped = [], {}
    for task_data in data.values():
        task = task_data.task
        for head in task.heads:
            name, output = contract.signature_for(task, head), head.scored_output
            function = signatures.get(name)
            if function is None:
                skipped[head.name] = f"the model has no {name!r} signature"
                continue
            if output not in function.structured_outputs:
                skipped[head.name] = f"signature {name!r} has no output {output!r}"
                continue
            scorers = [make_scorer(metric, head) for metric in head.metrics]
            examples, start = 0, time.perf_counter()
            for batch in _batches(task_data.records, batch_size):
                answers = function(**_request(task, batch))[output].numpy()
                for record, answer in zip(batch, answers):
                    gold = record.get(head.label_field)
                    if gold is None:  # an optional field (NER on a sentence without it)
                        continue
                    scored = head.scorer_inputs(gold, answer)
                    examples += 1
                    for scorer in scorers:
                        scorer.add(*scored)
            metrics = {metric: float(s.result()) for metric, s in zip(head.metrics, scorers)}
            results.append(HeadResult(task.name, head.name, name, examples, metrics, time.perf_counter() - start))
    return results, skipped


def resolve_saved_model(model_dir: str) -> str:
    """A SavedModel folder, or the newest numbered version of a TF Serving model base path."""
    if os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        return model_dir
    if not os.path.isdir(model_dir):
        raise EvaluationError(f"model folder {model_dir} does not exist")
    versions = [
        name
        for name in os.listdir(model_dir)
        if name.isdigit() and os.path.exists(os.path.join(model_dir, name, "saved_model.pb"))
    ]
    if not versions:
        raise EvaluationError(
            f"{model_dir} holds no SavedModel: expected saved_model.pb, or numbered version folders "
            "(TF Serving's model base path, e.g. workdir/serving_model/mtnlp)"
        )
    return os.path.join(model_dir, max(versions, key=int))


def load_signatures(model_dir: str) -> Signatures:
    import tensorflow as tf

    from mtnlp.model.serving_ops import load_text_ops

    path = resolve_saved_model(model_dir)
    try:
        load_text_ops()  # the WordPiece op of the translation target side
        return dict(tf.saved_model.load(path).signatures)
    except Exception as e:  # noqa: BLE001 - any load failure is reported with the path
        raise EvaluationError(f"cannot load the SavedModel in {path}: {type(e).__name__}: {e}") from e


def to_json(
    results: Sequence[HeadResult], skipped: Mapping[str, str], data: Mapping[str, TaskData], **about: Any
) -> dict:
    return {
        **about,
        "heads": {r.head: dataclasses.asdict(r) for r in results},
        "skipped_heads": dict(skipped),
        "data": {
            name: {
                "files": d.files,
                "records": len(d.records),
                "rejected": len(d.rejected),
                "first_rejected": d.rejected[:10],
            }
            for name, d in data.items()
        },
    }


def format_table(results: Sequence[HeadResult], skipped: Mapping[str, str], data: Mapping[str, TaskData]) -> str:
    lines = [f"{'task':<12} {'head':<12} {'signature':<15} {'examples':>8}  metrics"]
    for r in results:
        shown = "  ".join(f"{name}={value:.4f}" for name, value in r.metrics.items())
        lines.append(f"{r.task:<12} {r.head:<12} {r.signature:<15} {r.examples:>8}  {shown}")
    for head, why in skipped.items():
        lines.append(f"{'':<12} {head:<12} skipped: {why}")
    for name, d in data.items():
        if d.rejected:
            lines.append(f"{name}: {len(d.rejected)} malformed record(s) left out, first: {d.rejected[0]}")
    return "\n".join(lines)
