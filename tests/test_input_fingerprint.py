"""The ingest's cache follows its input files without a custom driver: their fingerprint is in its cache key,
computed when a local run builds the pipeline, or by the always-run InputFingerprint task on Kubeflow
(its output parameter feeds the ingest's; the compiled spec: tests/test_kubeflow.py)."""

from __future__ import annotations

import json
import os
import time

import pytest

from mtnlp.components.input_fingerprint import input_fingerprint
from tests.test_ingest import _sentiment, _write


@pytest.fixture
def data(tmp_path):
    base = tmp_path / "data"
    _write(base / "sentiment" / "train.jsonl", [_sentiment(i) for i in range(4)])
    _write(base / "sentiment" / "validation.jsonl", [_sentiment(9)])
    return base


def _add_span(base, span, size=2):
    for split in ("train", "validation"):
        _write(
            base / "spans" / str(span) / "sentiment" / f"{split}.jsonl",
            [_sentiment(100 * span + i) for i in range(size)],
        )


def _touch_later(path):
    """A new modification time, as a rewrite of the file would give, whatever the file system's granularity."""
    later = time.time() + 10
    os.utime(path, (later, later))


def test_the_fingerprint_changes_exactly_when_the_selected_files_do(data):
    first = input_fingerprint(str(data), "all")
    assert first.startswith("spans 0; 2 files; sha256:")
    assert input_fingerprint(str(data), "all") == first  # nothing changed

    _add_span(data, 1)
    with_span = input_fingerprint(str(data), "all")
    assert with_span.startswith("spans 0,1; 4 files;")

    _touch_later(data / "spans" / "1" / "sentiment" / "train.jsonl")
    assert input_fingerprint(str(data), "all") != with_span  # a changed file of a read span

    latest = input_fingerprint(str(data), "latest")
    assert latest.startswith("spans 1; 2 files;")
    _touch_later(data / "sentiment" / "train.jsonl")  # span 0, which "latest" does not read
    assert input_fingerprint(str(data), "latest") == latest


def test_under_the_local_runner_the_ingest_reruns_only_on_new_or_changed_files(data, tmp_path):
    from tfx import v1 as tfx
    from tfx.orchestration import metadata as tfx_metadata

    from mtnlp.components.jsonl_example_gen.executor import SPANS_PROPERTY
    from mtnlp.pipelines.config import get_config
    from mtnlp.pipelines.local_runner import LOCAL_BEAM_ARGS
    from mtnlp.pipelines.pipeline import data_components
    from mtnlp.pipelines.summary import summarize_latest_run

    metadata = str(tmp_path / "metadata.sqlite")
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata)
    config = get_config("quick", tasks=("sentiment",))

    def run() -> dict[str, str]:
        # the ingest alone, built anew on each run as `mtnlp run` builds the pipeline: no driver, no resolver
        ingest = data_components(str(data), config).example_gen
        tfx.orchestration.LocalDagRunner().run(
            tfx.dsl.Pipeline(
                pipeline_name="fingerprint-test",
                pipeline_root=str(tmp_path / "root"),
                components=[ingest],
                enable_cache=True,
                metadata_connection_config=connection,
                beam_pipeline_args=list(LOCAL_BEAM_ARGS),
            )
        )
        return {c["component"]: c["state"] for c in summarize_latest_run(metadata)["components"]}

    def spans_read() -> str:
        with tfx_metadata.Metadata(connection) as m:
            examples = max(m.store.get_artifacts_by_type("Examples"), key=lambda a: a.id)
        return examples.custom_properties[SPANS_PROPERTY].string_value

    assert run() == {"JsonlExampleGen": "COMPLETE"}
    assert run() == {"JsonlExampleGen": "CACHED"}  # same files
    _add_span(data, 1)
    assert run() == {"JsonlExampleGen": "COMPLETE"} and spans_read() == "0,1"  # a new span
    assert run() == {"JsonlExampleGen": "CACHED"}
    _touch_later(data / "sentiment" / "validation.jsonl")
    assert run() == {"JsonlExampleGen": "COMPLETE"}  # a changed file


def test_the_kubeflow_task_outputs_the_fingerprint_as_a_parameter(data, tmp_path):
    """InputFingerprint's executor through TFX's KFP v2 entrypoint, as its pod runs it: the value reaches KFP
    as the task's output parameter, which the compiled spec feeds into the ingest's input parameter."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor

    executor_input = {
        "inputs": {
            "parameterValues": {"input_base": str(data), "span_selection": "all", "span_window": 1},
        },
        "outputs": {
            "artifacts": {
                "fingerprint": {
                    "artifacts": [
                        {"name": "fingerprint", "type": {"schemaTitle": "tfx.String"}, "uri": str(tmp_path / "value")}
                    ]
                }
            },
            "parameters": {"fingerprint": {"outputFile": str(tmp_path / "fingerprint_parameter")}},
            "outputFile": str(tmp_path / "executor_output.json"),
        },
    }
    parameter_types = {"input_base": "STRING", "span_selection": "STRING", "span_window": "NUMBER_INTEGER"}
    inputs_spec = {"parameters": {name: {"parameterType": kind} for name, kind in parameter_types.items()}}
    kubeflow_v2_run_executor.main(
        kubeflow_v2_run_executor._parse_flags(  # the arguments the compiled spec gives the container
            [
                "--executor_class_path",
                "mtnlp.components.input_fingerprint.Executor",
                "--json_serialized_invocation_args",
                json.dumps(executor_input),
                "--json_serialized_inputs_spec_args",
                json.dumps(inputs_spec),
            ]
        )
    )
    output = pipeline_spec_pb2.ExecutorOutput()
    json_format.Parse((tmp_path / "executor_output.json").read_text(), output)
    assert output.parameter_values["fingerprint"].string_value == input_fingerprint(str(data), "all", 1)
