"""JsonlExampleGen: TFX's file-based ExampleGen contract (splits from file patterns, Examples in TFRecords) for
per-task JSON Lines folders, with spans (``layout.py``), plus a ``rejected`` output of malformed records.

It has no custom driver: the executor finds the spans, so every orchestrator runs it the same way, and its
cache key holds ``input_fingerprint``, the fingerprint of the files it will read (components/input_fingerprint.py:
taken as a local run builds the pipeline, or by the InputFingerprint task in each Kubeflow run): new or changed
files rerun it, unchanged ones leave it cached."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tfx.components.example_gen import utils
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.dsl.placeholder import placeholder
from tfx.proto import example_gen_pb2
from tfx.types import artifact, channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from mtnlp.components.jsonl_example_gen import executor, layout


class RejectedRecords(artifact.Artifact):
    """Malformed input records with file, line and reason, and per-file counts, one folder per split."""

    TYPE_NAME = "mtnlp.RejectedRecords"


class JsonlExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        # JSON: {"tasks": [...], "max_records_per_split": int|null, "max_rejected_fraction": float,
        #        "span_selection": {"selection": "latest"|"all"|"window", "window": int}}
        "ingest_config": ExecutionParameter(type=str),
        # the input files' fingerprint: in the cache key only (the executor does not read it)
        "input_fingerprint": ExecutionParameter(type=str, optional=True),
    }
    OUTPUTS = {
        **standard_component_specs.FileBasedExampleGenSpec.OUTPUTS,
        executor.REJECTED_KEY: ChannelParameter(type=RejectedRecords),
    }


class JsonlExampleGen(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = JsonlExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        input_base: str,
        span_selection: str = "all",
        span_window: int = 3,
        tasks: Sequence[str] | None = None,
        max_records_per_split: int | None = None,
        max_rejected_fraction: float = 0.0,
        input_fingerprint: str | placeholder.Placeholder | None = None,
    ):
        """Args:
        input_base: the data folder: ``<task>/`` sub-folders, and ``spans/<N>/<task>/`` for spans (``layout.py``).
        span_selection: with spans, which spans a run reads: "latest", "all" or "window".
        span_window: the number of most recent spans read with "window".
        tasks: task folders to read (others are skipped with a log line); all when None.
        max_records_per_split: read at most this many lines of each file.
        max_rejected_fraction: fail when a file has more malformed records than this fraction.
        input_fingerprint: what the input files are, for the cache key: ``input_fingerprint(...)``'s string, or
            InputFingerprint's ``outputs["fingerprint"].future()[0].value`` (a KFP task output parameter once
            compiled).
        """
        layout.select_spans([0], 0, span_selection, span_window)  # fail at construction on a bad setting
        input_config = layout.input_config()
        ingest_config: dict[str, Any] = {
            "tasks": list(tasks) if tasks is not None else None,
            "max_records_per_split": max_records_per_split,
            "max_rejected_fraction": max_rejected_fraction,
            "span_selection": {"selection": span_selection, "window": span_window},
        }
        spec = JsonlExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=utils.make_default_output_config(input_config),
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            ingest_config=json.dumps(ingest_config, sort_keys=True),
            input_fingerprint=input_fingerprint,
            examples=channel.Channel(type=standard_artifacts.Examples),
            rejected=channel.Channel(type=RejectedRecords),
        )
        super().__init__(spec=spec)
