"""The input fingerprint: what the ingest will read, as a string that KFP's and TFX's caches key on.

An orchestrator's cache sees a task's parameters and input artifacts, not the files under a data folder:
KFP v2 keys on the task's inputs, TFX's local runner on its exec properties and input artifacts.
``input_fingerprint`` lists the files the ingest's span selection picks (``layout.selected_files``) and
digests the spans and, per file, path, size and modification time. The ingest takes the result as its
exec property ``input_fingerprint``, so a new or changed span reruns it (and everything after it) and an
unchanged folder leaves it cached. Who computes it:

- ``mtnlp run`` (and the other local runs) as it builds the pipeline, which it does when it runs it;
- on Kubeflow, the ``InputFingerprint`` task in every run (compiled with caching off:
  pipelines/kubeflow_runner.py). The ingest gets its ``String`` output as
  ``outputs["fingerprint"].future()[0].value``, which TFX's Kubeflow V2 compiler turns into an input
  *parameter* fed by this task's output parameter: part of KFP's cache key, while an artifact would not do
  (each run's output artifact has a new URI). The local runner does not take this route because it puts
  that fresh artifact into the ingest's cache key, which would then never hit.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from mtnlp.components.jsonl_example_gen import layout

FINGERPRINT_KEY = "fingerprint"


def input_fingerprint(input_base: str, span_selection: str = "all", span_window: int = 1) -> str:
    """``spans 0,1; 8 files; sha256:...``: the selected spans and a digest of each file's path, size and
    modification time (TFX's own file fingerprint uses size and mtime too, ``io_utils.generate_fingerprint``)."""
    digest = hashlib.sha256()
    spans: set[int] = set()
    count = 0
    for split in layout.SPLIT_FILES:
        for span, files in sorted(layout.selected_files(input_base, split, span_selection, span_window).items()):
            spans.add(span)
            for path in files:
                stat = fileio.stat(path)
                digest.update(f"{split}\t{span}\t{path}\t{stat.length}\t{stat.mtime_nsec}\n".encode())
                count += 1
    return f"spans {','.join(map(str, sorted(spans)))}; {count} files; sha256:{digest.hexdigest()}"


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        fingerprint = input_fingerprint(
            exec_properties["input_base"], exec_properties["span_selection"], exec_properties["span_window"]
        )
        artifact_utils.get_single_instance(output_dict[FINGERPRINT_KEY]).value = fingerprint


class InputFingerprintSpec(ComponentSpec):
    PARAMETERS = {
        "input_base": ExecutionParameter(type=str),
        "span_selection": ExecutionParameter(type=str),
        "span_window": ExecutionParameter(type=int),
    }
    INPUTS = {}
    OUTPUTS = {FINGERPRINT_KEY: ChannelParameter(type=standard_artifacts.String)}


class InputFingerprint(base_component.BaseComponent):
    """Outputs ``fingerprint`` (a String value): the files under ``input_base`` that the ingest reads.
    Run it uncached: its inputs never change, the files do."""

    SPEC_CLASS = InputFingerprintSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, input_base: str, span_selection: str = "all", span_window: int = 1):
        super().__init__(
            spec=InputFingerprintSpec(
                input_base=input_base,
                span_selection=span_selection,
                span_window=span_window,
                fingerprint=channel.Channel(type=standard_artifacts.String),
            )
        )
