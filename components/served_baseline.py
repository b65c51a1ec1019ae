"""ServedBaseline: the model a new run must beat is the one being served, found by an ordinary component.

The baseline (the Trainer's warm start and the Evaluator's comparison) is the newest version under the
push destination, the folder TF Serving polls. An ordinary executor looks it up, so every orchestrator
runs it the same way: the local runner, open-source Kubeflow Pipelines (which runs no TFX resolver
tasks) and Vertex AI. The executor copies that version into its output Model artifact in the Trainer's
layout (``Format-Serving/``, and ``Format-Keras/`` from the version's ``assets.extra``, which the Pusher
publishes with it; see ``warm_start_files``), so the Trainer and the Evaluator take it as they take any
Model.

No baseline, said in the log and recorded as ``served_version`` 0 on an empty artifact, when: nothing is
served yet (a first run), or the newest version's signatures lack an output the current tasks are
evaluated on (the tasks changed), or it has no warm-start files (then it is still the Evaluator's
baseline, only the warm start is skipped). The Trainer (``run_fn``) and ``BaselineAwareEvaluator``
treat an empty artifact as no baseline.

Caching: the component's inputs are this run's Examples and the run's settings, so it runs again, and
finds the model served *now*, whenever the Trainer would train again (new data, other settings); a rerun
with nothing new reuses its output and stays cached downstream.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from tfx import types
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import io_utils, path_utils

from mtnlp.model.warm_start import KERAS_DIR

SERVED_VERSION = "served_version"  # custom property of the output Model: the version copied, 0 for none
SERVED_FROM = "served_from"  # the version's folder
# Where a published version keeps the Keras model and vocabulary that a warm start reads (model/warm_start.py):
# TF Serving reads only its warmup file from assets.extra.
WARM_START_ASSETS = os.path.join("assets.extra", "mtnlp_warm_start")

# a project logger: the runner's log filter keeps only component progress of absl's (mtnlp/logs.py)
log = logging.getLogger(__name__)


def served_versions(base_directory: str) -> list[int]:
    """The version numbers under a model base path, as TF Serving sees them (numeric folder names)."""
    if not fileio.exists(base_directory):
        return []
    return sorted(int(name.rstrip("/")) for name in fileio.listdir(base_directory) if re.fullmatch(r"\d+/?", name))


def signature_outputs(saved_model_dir: str) -> dict[str, set[str]]:
    """{signature: output keys} read from ``saved_model.pb`` (no TensorFlow ops loaded)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with fileio.open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    graph = next(g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags)
    return {name: set(signature.outputs) for name, signature in graph.signature_def.items()}


def required_outputs(tasks: list[str] | None) -> dict[str, set[str]]:
    """What the Evaluator reads from a baseline for these tasks: every head's prediction from the Examples
    signature, and its label and weight from the Transform signature (pipelines/evaluation.py)."""
    from mtnlp.model.signatures import EXAMPLES_SIGNATURE, TRANSFORM_SIGNATURE
    from mtnlp.model.tasks import all_heads, select_tasks

    heads = all_heads(select_tasks(tasks))
    return {
        EXAMPLES_SIGNATURE: {h.name for h in heads},
        TRANSFORM_SIGNATURE: {k for h in heads for k in (h.eval_label_key, h.eval_weight_key)},
    }


def mismatch(saved_model_dir: str, tasks: list[str] | None) -> str | None:
    """Why this SavedModel cannot be the current tasks' baseline, or None when it can."""
    try:
        found = signature_outputs(saved_model_dir)
    except Exception as e:  # noqa: BLE001 - an unreadable model is no baseline; the message says why
        return f"cannot read its signatures ({type(e).__name__}: {e})"
    for signature, keys in required_outputs(tasks).items():
        missing = sorted(keys - found.get(signature, set()))
        if missing:
            return f"signature {signature!r} lacks the output(s) {', '.join(missing)} of the current tasks"
    return None


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        model = artifact_utils.get_single_instance(output_dict["model"])
        model.set_int_custom_property(SERVED_VERSION, 0)
        base_directory = exec_properties["serving_model_dir"]
        tasks = json.loads(exec_properties["custom_config"]).get("tasks")
        versions = served_versions(base_directory)
        if not versions:
            log.warning(
                "No baseline: no model is served under %s yet (a first run); training from scratch, "
                "blessing by the absolute gates only",
                base_directory,
            )
            return
        version_dir = os.path.join(base_directory, str(versions[-1]))
        problem = mismatch(version_dir, tasks)
        if problem:
            log.warning(
                "No baseline: the served model %s does not fit the current tasks (%s); training from "
                "scratch, blessing by the absolute gates only",
                version_dir,
                problem,
            )
            return
        io_utils.copy_dir(version_dir, path_utils.serving_model_dir(model.uri))
        warm_start_files = os.path.join(version_dir, WARM_START_ASSETS)
        if fileio.exists(warm_start_files):
            io_utils.copy_dir(warm_start_files, os.path.join(model.uri, KERAS_DIR))
        else:
            log.warning(
                "The served model %s has no warm-start files (%s): it is the Evaluator's baseline, but "
                "the Trainer starts from scratch",
                version_dir,
                WARM_START_ASSETS,
            )
        model.set_int_custom_property(SERVED_VERSION, versions[-1])
        model.set_string_custom_property(SERVED_FROM, version_dir)
        log.info("Baseline: served version %d (%s)", versions[-1], version_dir)


def has_model(model: types.Artifact) -> bool:
    """Whether a ServedBaseline output holds a model (``served_version`` > 0)."""
    return model.get_int_custom_property(SERVED_VERSION) > 0


class ServedBaselineSpec(ComponentSpec):
    PARAMETERS = {
        "serving_model_dir": ExecutionParameter(type=str),  # the push destination's base directory
        "custom_config": ExecutionParameter(type=str),  # the run's settings (JSON): a change reruns the lookup
    }
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}  # new data reruns the lookup
    OUTPUTS = {"model": ChannelParameter(type=standard_artifacts.Model)}


class ServedBaseline(base_component.BaseComponent):
    """Outputs ``model``: the served model's copy, or an empty Model (``served_version`` 0) when there is none."""

    SPEC_CLASS = ServedBaselineSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples: types.BaseChannel, serving_model_dir: str, custom_config: dict[str, Any]):
        super().__init__(
            spec=ServedBaselineSpec(
                examples=examples,
                serving_model_dir=serving_model_dir,
                custom_config=json.dumps(custom_config, sort_keys=True),
                model=channel.Channel(type=standard_artifacts.Model),
            )
        )


class BaselineAwareExecutor(tfx_evaluator_executor.Executor):
    """TFX's Evaluator executor, given no baseline when ServedBaseline found none (an empty Model): TFMA then
    applies the absolute thresholds only, as on a first run."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        key = standard_component_specs.BASELINE_MODEL_KEY
        input_dict = {**input_dict, key: [m for m in input_dict.get(key, []) if has_model(m)]}
        super().Do(input_dict, output_dict, exec_properties)
