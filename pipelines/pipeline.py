"""The multi-task pipeline: ``create_pipeline`` only wires components; runners choose where it runs.

JsonlExampleGen -> StatisticsGen -> ImportSchemaGen (the schema generated from the tasks) -> ExampleValidator -> AnomaliesGate
-> Transform -> Trainer (warm-started) -> Evaluator (against the baseline) -> Pusher (blessed only).
The baseline, the Trainer's warm start and the Evaluator's comparison, is the model being served, found by
an ordinary component (components/served_baseline.py), so that every orchestrator runs the same pipeline:
the local runner, open-source Kubeflow Pipelines (no resolver tasks) and Vertex AI.

Transform and Trainer reference their functions by import path, not ``module_file``: nothing is
built or uploaded at compile time, and Transform stays cached when only training code changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from mtnlp.components import versioned_pusher
from mtnlp.components.anomalies_gate import AnomaliesGate
from mtnlp.components.input_fingerprint import InputFingerprint, input_fingerprint
from mtnlp.components.jsonl_example_gen import JsonlExampleGen
from mtnlp.components.served_baseline import BaselineAwareExecutor, ServedBaseline
from mtnlp.pipelines import evaluation
from mtnlp.pipelines.config import PipelineConfig
from mtnlp.pipelines.schema import SCHEMA_PATH

PREPROCESSING_FN = "mtnlp.model.preprocessing.preprocessing_fn"
RUN_FN = "mtnlp.pipelines.trainer_module.run_fn"


class VersionedPusher(tfx.components.Pusher):
    """TFX's Pusher with versions 1, 2, ... published atomically (see components/versioned_pusher.py)."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(versioned_pusher.Executor)


class BaselineAwareEvaluator(tfx.components.Evaluator):
    """TFX's Evaluator, comparing with the served model only when ServedBaseline found one."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(BaselineAwareExecutor)


@dataclasses.dataclass(frozen=True)
class TrainerLauncher:
    """How the Trainer runs: TFX's Trainer in its own process (the default), or a Trainer whose executor starts
    the training elsewhere (a TFJob, a Vertex AI custom job), reading its settings from ``custom_config``
    (run_fn ignores those keys: model/distribution.py, LAUNCHER_KEYS)."""

    component_class: type = tfx.components.Trainer
    custom_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DataComponents:
    """Ingest, validation and Transform: what every model of the project trains on."""

    example_gen: JsonlExampleGen
    statistics_gen: tfx.components.StatisticsGen
    schema_gen: tfx.components.ImportSchemaGen
    example_validator: tfx.components.ExampleValidator
    anomalies_gate: AnomaliesGate
    transform: tfx.components.Transform
    input_fingerprint: InputFingerprint | None  # the task, where the data are fingerprinted at run time

    def all(self) -> list:
        return [
            *([self.input_fingerprint] if self.input_fingerprint else []),
            self.example_gen,
            self.statistics_gen,
            self.schema_gen,
            self.example_validator,
            self.anomalies_gate,
            self.transform,
        ]


def data_components(
    data_root: str, config: PipelineConfig, schema_file: str = SCHEMA_PATH, fingerprint_task: bool = False
) -> DataComponents:
    """``fingerprint_task``: fingerprint the input files in an InputFingerprint task of the pipeline, for a spec
    that runs later, again or on a schedule (Kubeflow); else now, while the pipeline is built (a local run builds
    it when it runs it). Either way the fingerprint is in the ingest's cache key (components/input_fingerprint.py).
    """
    fingerprint_component = None
    if fingerprint_task:
        fingerprint_component = InputFingerprint(data_root, config.span_selection, config.span_window)
        fingerprint = fingerprint_component.outputs["fingerprint"].future()[0].value
    else:
        fingerprint = input_fingerprint(data_root, config.span_selection, config.span_window)
    example_gen = JsonlExampleGen(
        input_base=data_root,
        span_selection=config.span_selection,
        span_window=config.span_window,
        tasks=config.task_names,  # explicit: the executor may run in another process
        max_records_per_split=config.max_records_per_split,
        max_rejected_fraction=config.max_rejected_fraction,
        input_fingerprint=fingerprint,
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])

    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config=config.to_json_dict()["transform"],
    )
    transform.add_upstream_node(anomalies_gate)  # no training on data that breaks the schema
    return DataComponents(
        example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate, transform, fingerprint_component
    )


def create_data_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    config: PipelineConfig,
    metadata_connection_config=None,
    beam_pipeline_args: Sequence[str] = (),
) -> tfx.dsl.Pipeline:
    """Ingest -> ... -> Transform only: the transformed examples that experiments train their own models on."""
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=data_components(data_root, config).all(),
        enable_cache=True,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    config: PipelineConfig,
    metadata_connection_config=None,
    beam_pipeline_args: Sequence[str] = (),
    enable_cache: bool = True,
    schema_file: str = SCHEMA_PATH,  # read by the executor: on Kubeflow, the path inside the image
    trainer_launcher: TrainerLauncher | None = None,  # how the Trainer runs, when not in its own process
    fingerprint_task: bool = False,  # see data_components
) -> tfx.dsl.Pipeline:
    data = data_components(data_root, config, schema_file, fingerprint_task)
    example_gen, schema_gen, transform = data.example_gen, data.schema_gen, data.transform
    custom_config = config.to_json_dict()

    # The served model (empty on a first run): the Trainer's warm start and the Evaluator's baseline.
    baseline = ServedBaseline(
        examples=example_gen.outputs["examples"],
        serving_model_dir=serving_model_dir,
        custom_config=custom_config,
        metadata_connection_config=metadata_connection_config,  # None on Kubeflow: the served model only
    )
    launcher = trainer_launcher or TrainerLauncher()
    trainer = launcher.component_class(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        base_model=baseline.outputs["model"],
        train_args=tfx.proto.TrainArgs(num_steps=config.training.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=config.training.eval_steps),
        custom_config={**custom_config, **launcher.custom_config},
    ).with_id("Trainer")
    evaluator = BaselineAwareEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        eval_config=evaluation.eval_config(config),
    ).with_id("Evaluator")
    pusher = VersionedPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)
        ),
    )

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[*data.all(), baseline, trainer, evaluator, pusher],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )
