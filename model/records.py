"""Validates one JSON Lines record against its task's fields and turns it into a ``tf.train.Example``.

Pure Python (no Beam; TensorFlow only to build the ``tf.train.Example``), so that every rule is
unit-tested on its own and ``mtnlp evaluate`` / ``mtnlp add-data`` check records without the pipeline. A bad record raises
``RecordError`` naming the field and the problem; the executor keeps it, with its file and line,
in the rejected-records output.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mtnlp.model.tasks import Field, FieldKind, Task

if TYPE_CHECKING:
    import tensorflow as tf

TASK_FEATURE = "task"
ID_FEATURE = "id"


class RecordError(ValueError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message if field is None else f"field {field!r}: {message}")
        self.field = field


def _check_field(record: dict[str, Any], field: Field) -> Any:
    value = record.get(field.name)
    if value is None:
        if field.optional:
            return None
        raise RecordError("missing (required)" if field.name not in record else "is null", field.name)

    kind = field.kind
    if kind is FieldKind.TEXT:
        if not isinstance(value, str) or not value.strip():
            raise RecordError(f"expected a non-empty string, got {value!r:.60}", field.name)
    elif kind in (FieldKind.TOKENS, FieldKind.TOKEN_LABELS):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise RecordError("expected a non-empty list of non-empty strings", field.name)
        if kind is FieldKind.TOKEN_LABELS:
            aligned = record.get(field.aligned_with) or []
            if len(value) != len(aligned):
                raise RecordError(
                    f"has {len(value)} labels but {field.aligned_with!r} has {len(aligned)} tokens", field.name
                )
            unknown = sorted(set(value) - set(field.labels))
            if unknown:
                raise RecordError(f"unknown label(s) {unknown}; expected one of {list(field.labels)}", field.name)
    elif kind is FieldKind.LABEL:
        if value not in field.labels:
            raise RecordError(f"unknown label {value!r}; expected one of {list(field.labels)}", field.name)
    elif kind is FieldKind.CHAR_SPAN:
        text = record.get(field.within)
        if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)):
            raise RecordError(f"expected [start, end] character offsets, got {value!r:.60}", field.name)
        start, end = value
        if not isinstance(text, str) or not 0 <= start < end <= len(text):
            length = len(text) if isinstance(text, str) else "no"
            raise RecordError(f"span {value} is outside the text ({length} characters)", field.name)
    return value


def _feature(field: Field, value: Any) -> tf.train.Feature:
    import tensorflow as tf  # here: validating records needs no TensorFlow

    if field.kind is FieldKind.CHAR_SPAN:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=value))
    values = value if isinstance(value, list) else [value]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))


def parse_record(line: str, task: Task) -> dict[str, Any]:
    """The record on one line of ``task``'s data, every field checked; raises ``RecordError`` if it is malformed.

    Optional fields that are null or absent are left out of the result.
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise RecordError(f"invalid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    checked = {ID_FEATURE: str(record[ID_FEATURE])} if isinstance(record.get(ID_FEATURE), (str, int)) else {}
    for field in task.fields:
        value = _check_field(record, field)
        if value is not None:
            checked[field.name] = value
    return checked


def record_to_example(line: str, task: Task) -> tf.train.Example:
    """Parses one line of ``task``'s data; raises ``RecordError`` if it is malformed."""
    import tensorflow as tf

    record = parse_record(line, task)
    features = {TASK_FEATURE: _feature(Field(TASK_FEATURE, FieldKind.TEXT), task.name)}
    if ID_FEATURE in record:
        features[ID_FEATURE] = _feature(Field(ID_FEATURE, FieldKind.TEXT), record[ID_FEATURE])
    for field in task.fields:
        if field.name in record:
            features[field.name] = _feature(field, record[field.name])
    return tf.train.Example(features=tf.train.Features(feature=features))


# A data file's format, by its name (``.gz`` compressed or not): JSON Lines records, or plain text, one
# record per line, for tasks whose only field is a text (raw text for the masked-word objective).
JSON_LINES, PLAIN_TEXT = ".jsonl", ".txt"


def file_format(path: str) -> str:
    """``JSON_LINES`` or ``PLAIN_TEXT`` from the file name; raises ValueError naming the file otherwise."""
    name = path.removesuffix(".gz")
    for suffix in (JSON_LINES, PLAIN_TEXT):
        if name.endswith(suffix):
            return suffix
    raise ValueError(
        f"{path}: unknown data file type; name it .jsonl (JSON Lines records) or .txt (plain text, "
        "one text per line), optionally .gz compressed"
    )


def plain_text_record(line: str, task: Task) -> str:
    """The JSON Lines record of one plain-text line of ``task``'s data, for a task whose only field is a text;
    raises ``RecordError`` for any other task."""
    if len(task.fields) != 1 or task.fields[0].kind is not FieldKind.TEXT:
        raise RecordError(
            f"task {task.name!r} reads JSON Lines records ({', '.join(f.name for f in task.fields)}); "
            "plain text files are for tasks whose only field is a text, such as unlabeled"
        )
    return json.dumps({task.fields[0].name: line.rstrip("\r\n")}, ensure_ascii=False)


def bytes_to_example(raw_line: bytes, task: Task, fmt: str = JSON_LINES) -> tf.train.Example:
    """``record_to_example`` on a line as read from a file of format ``fmt``; invalid UTF-8 is a malformed
    record too."""
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(f"invalid UTF-8 at byte {e.start}") from None
    if fmt == PLAIN_TEXT:
        line = plain_text_record(line, task)
    return record_to_example(line, task)
