"""The raw-data schema (``schema.pbtxt``, generated from the task registry and committed) that SchemaGen
imports, and the code that derives it.

The schema states what valid data looks like: label domains (an unknown label is an anomaly), value
counts (a span has exactly two offsets, a text exactly one string) and the task names. Which fields
a task *requires* is enforced per record at ingest (``model/records.py``):
TFDV has no conditional presence, so every task-specific feature is optional here.

``schema.pbtxt`` is generated from ``model/tasks.py`` and committed, so that a review shows any
change of the data contract; ``python -m mtnlp.pipelines.schema`` rewrites it, and a test fails when it is
stale.
"""

from __future__ import annotations

import logging
import os

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from mtnlp.model.records import ID_FEATURE, TASK_FEATURE
from mtnlp.model.tasks import FieldKind, all_fields, registered_tasks

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "schema.pbtxt")


def build_schema() -> schema_pb2.Schema:
    schema = schema_pb2.Schema()

    task = schema.feature.add(name=TASK_FEATURE, type=schema_pb2.BYTES, domain=TASK_FEATURE)
    task.presence.min_fraction = 1.0
    task.presence.min_count = 1
    task.value_count.min = task.value_count.max = 1
    schema.string_domain.add(name=TASK_FEATURE, value=[t.name for t in registered_tasks()])

    example_id = schema.feature.add(name=ID_FEATURE, type=schema_pb2.BYTES)
    example_id.value_count.min = example_id.value_count.max = 1

    for field in all_fields().values():
        feature = schema.feature.add(name=field.name)
        users = [t.name for t in registered_tasks() if any(f.name == field.name for f in t.fields)]
        feature.annotation.comment.append(f"used by task(s): {', '.join(users)}")
        if field.kind is FieldKind.CHAR_SPAN:
            feature.type = schema_pb2.INT
            feature.value_count.min = feature.value_count.max = 2
            feature.int_domain.min = 0
            continue
        feature.type = schema_pb2.BYTES
        feature.value_count.min = 1
        if field.kind in (FieldKind.TEXT, FieldKind.LABEL):
            feature.value_count.max = 1
        if field.labels:
            feature.domain = field.name
            schema.string_domain.add(name=field.name, value=list(field.labels))
    return schema


def load_schema(path: str = SCHEMA_PATH) -> schema_pb2.Schema:
    with open(path) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def schema_file_for(directory: str) -> str:
    """The schema a run imports: the committed one, or, when tasks are registered beyond
    ``model/tasks.py`` (``MTNLP_TASK_MODULES``), one generated from the registry into ``directory``."""
    if build_schema() == load_schema():
        return SCHEMA_PATH
    path = os.path.join(directory, "schema.pbtxt")
    os.makedirs(directory, exist_ok=True)
    write_schema(path)
    logging.getLogger(__name__).warning(
        "The task registry differs from %s: using a schema generated from it, %s", SCHEMA_PATH, path
    )
    return path


def write_schema(path: str = SCHEMA_PATH) -> None:
    header = "# Generated from model/tasks.py by `python -m mtnlp.pipelines.schema`; do not edit by hand.\n"
    with open(path, "w") as f:
        f.write(header + text_format.MessageToString(build_schema()))
