"""ServedBaseline: the model a new run must beat is the one being served, found by an ordinary component.

The baseline (the Trainer's warm start and the Evaluator's comparison) is the newest version under the
push destination, the folder TF Serving polls. An ordinary executor looks it up, so every orchestrator
runs it the same way: the local runner, open-source Kubeflow Pipelines (which runs no TFX resolver
tasks) and Vertex AI. The executor copies that version into its output Model artifact in the Trainer's
layout (``Format-Serving/``, and ``Format-Keras/`` from the version's ``assets.extra``, which the Pusher
publishes with it; see ``warm_start_files``), so the Trainer and the Evaluator take it as they take any
Model.

Where nothing is served and the executor is given an ML Metadata connection (the local runner passes its
SQLite store; Kubeflow passes none, see docs/kubeflow.md), the baseline is the newest blessed model in ML
Metadata instead: the Model that the newest ``ModelBlessing`` with ``blessed`` = 1 names in
``current_model_id`` (TFX's Evaluator writes both), copied as it is (it has the Trainer's layout). The served
model wins when both exist: it is what users' traffic meets, so it is what a new model must not be worse than.

No baseline, said in the log and recorded as an empty artifact (``baseline_from`` empty), when: nothing is
served yet and ML Metadata has no blessed model (a first run), or the model's signatures lack an output the
current tasks are evaluated on (the tasks changed), or it has no warm-start files (then it is still the
Evaluator's baseline, only the warm start is skipped). The Trainer (``run_fn``) and
``BaselineAwareEvaluator`` treat an empty artifact as no baseline.

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

from google.protobuf import json_format
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import io_utils, path_utils

from mtnlp.model.warm_start import KERAS_DIR

SERVED_VERSION = "served_version"  # custom property of the output Model: the served version copied, else 0
BASELINE_FROM = "baseline_from"  # the folder copied (a served version, or a Model in ML Metadata); "" for none
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


def newest_blessed_model(connection_config: metadata_store_pb2.ConnectionConfig) -> str | None:
    """The folder of the newest Model that TFX's Evaluator blessed in this ML Metadata store (live, still on
    disk), or None."""
    import ml_metadata as mlmd
    from tfx.components.evaluator import constants

    store = mlmd.MetadataStore(connection_config)
    blessings = store.get_artifacts_by_type(standard_artifacts.ModelBlessing.TYPE_NAME)  # [] before any Evaluator
    for blessing in sorted(blessings, key=lambda a: a.id, reverse=True):
        properties = blessing.custom_properties
        if properties[constants.ARTIFACT_PROPERTY_BLESSED_KEY].int_value != constants.BLESSED_VALUE:
            continue
        models = store.get_artifacts_by_id([properties[constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY].int_value])
        live = metadata_store_pb2.Artifact.LIVE
        if models and models[0].state == live and fileio.exists(path_utils.serving_model_dir(models[0].uri)):
            return models[0].uri
    return None


def _read_only(connection_json: str) -> metadata_store_pb2.ConnectionConfig:
    config = json_format.Parse(connection_json, metadata_store_pb2.ConnectionConfig())
    if config.HasField("sqlite"):  # the runner owns the store: look, never write
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return config


_NO_BASELINE = "No baseline: %s; training from scratch, blessing by the absolute gates only"


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        model = artifact_utils.get_single_instance(output_dict["model"])
        model.set_int_custom_property(SERVED_VERSION, 0)
        model.set_string_custom_property(BASELINE_FROM, "")
        base_directory = exec_properties["serving_model_dir"]
        tasks = json.loads(exec_properties["custom_config"]).get("tasks")
        versions = served_versions(base_directory)
        if versions:
            self._copy_served(model, os.path.join(base_directory, str(versions[-1])), versions[-1], tasks)
            return
        connection = exec_properties.get("metadata_connection_config")
        blessed = newest_blessed_model(_read_only(connection)) if connection else None
        if blessed is None:
            where = " or blessed in ML Metadata" if connection else ""
            log.warning(_NO_BASELINE, f"no model is served under {base_directory}{where} yet (a first run)")
            return
        problem = mismatch(path_utils.serving_model_dir(blessed), tasks)
        if problem:
            log.warning(_NO_BASELINE, f"the newest blessed model {blessed} does not fit the current tasks ({problem})")
            return
        io_utils.copy_dir(blessed, model.uri)  # the Trainer's layout already
        model.set_string_custom_property(BASELINE_FROM, blessed)
        log.info(
            "Baseline: nothing served under %s; the newest blessed model in ML Metadata, %s", base_directory, blessed
        )

    @staticmethod
    def _copy_served(model: types.Artifact, version_dir: str, version: int, tasks: list[str] | None) -> None:
        problem = mismatch(version_dir, tasks)
        if problem:
            log.warning(_NO_BASELINE, f"the served model {version_dir} does not fit the current tasks ({problem})")
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
        model.set_int_custom_property(SERVED_VERSION, version)
        model.set_string_custom_property(BASELINE_FROM, version_dir)
        log.info("Baseline: served version %d (%s)", version, version_dir)


def has_model(model: types.Artifact) -> bool:
    """Whether a ServedBaseline output holds a model (``baseline_from`` set)."""
    return bool(model.get_string_custom_property(BASELINE_FROM))


class ServedBaselineSpec(ComponentSpec):
    PARAMETERS = {
        "serving_model_dir": ExecutionParameter(type=str),  # the push destination's base directory
        "custom_config": ExecutionParameter(type=str),  # the run's settings (JSON): a change reruns the lookup
        # a metadata_store_pb2.ConnectionConfig as JSON: where nothing is served, the newest blessed model there
        "metadata_connection_config": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}  # new data reruns the lookup
    OUTPUTS = {"model": ChannelParameter(type=standard_artifacts.Model)}


class ServedBaseline(base_component.BaseComponent):
    """Outputs ``model``: a copy of the served model (or, where nothing is served, of the newest blessed model in
    ``metadata_connection_config``'s store), or an empty Model (``baseline_from`` "") when there is none."""

    SPEC_CLASS = ServedBaselineSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        serving_model_dir: str,
        custom_config: dict[str, Any],
        metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    ):
        super().__init__(
            spec=ServedBaselineSpec(
                examples=examples,
                serving_model_dir=serving_model_dir,
                custom_config=json.dumps(custom_config, sort_keys=True),
                metadata_connection_config=(
                    json_format.MessageToJson(metadata_connection_config, sort_keys=True)
                    if metadata_connection_config is not None
                    else None
                ),
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
