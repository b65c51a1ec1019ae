"""The multi-task pipeline: ``create_pipeline`` only wires components; runners choose where it runs.

JsonlExampleGen -> StatisticsGen -> ImportSchemaGen (the schema generated from the tasks) -> ExampleValidator -> AnomaliesGate
-> Transform -> Trainer (warm-started) -> Evaluator (against the baseline) -> Pusher (blessed only).
Warm start and baseline come from resolvers that keep a rerun with nothing new fully cached
(components/baseline_resolver.py).

Transform and Trainer reference their functions by import path, not ``module_file``: nothing is
built or uploaded at compile time, and Transform stays cached when only training code changes.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from mtnlp.components import versioned_pusher
from mtnlp.components.baseline_resolver import baseline_model_resolver, warm_start_model_resolver
from mtnlp.components.anomalies_gate import AnomaliesGate
from mtnlp.components.jsonl_example_gen import JsonlExampleGen
from mtnlp.pipelines import evaluation
from mtnlp.pipelines.config import PipelineConfig
from mtnlp.pipelines.schema import SCHEMA_PATH

PREPROCESSING_FN = "mtnlp.model.preprocessing.preprocessing_fn"
RUN_FN = "mtnlp.pipelines.trainer_module.run_fn"

# The resolver that finds the baseline model (the Trainer's warm start and the Evaluator's baseline):
# "other_data": warm start from the latest blessed model not trained on this run's examples, and compare
#   with the latest blessed model other than the candidate (components/baseline_resolver.py: keeps reruns
#   cached); custom strategies query ML Metadata in the orchestrator's process, as LocalDagRunner runs them.
# "latest_blessed": TFX's LatestBlessedModelStrategy, the only baseline resolver KubeflowV2DagRunner compiles
#   (Vertex AI Pipelines runs it).
# "none": no baseline and no warm start, where the orchestrator runs no resolvers (open-source KFP v2).
BASELINES = ("other_data", "latest_blessed", "none")


class VersionedPusher(tfx.components.Pusher):
    """TFX's Pusher with versions 1, 2, ... published atomically (see components/versioned_pusher.py)."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(versioned_pusher.Executor)


@dataclasses.dataclass(frozen=True)
class DataComponents:
    """Ingest, validation and Transform: what every model of the project trains on."""

    example_gen: JsonlExampleGen
    statistics_gen: tfx.components.StatisticsGen
    schema_gen: tfx.components.ImportSchemaGen
    example_validator: tfx.components.ExampleValidator
    anomalies_gate: AnomaliesGate
    transform: tfx.components.Transform

    def all(self) -> list:
        return [self.example_gen, self.statistics_gen, self.schema_gen, self.example_validator,
                self.anomalies_gate, self.transform]  # fmt: skip


def data_components(
    data_root: str, config: PipelineConfig, data_has_spans: bool = False, schema_file: str = SCHEMA_PATH
) -> DataComponents:
    example_gen = JsonlExampleGen(
        input_base=data_root,
        spans=data_has_spans,
        span_selection=config.span_selection,
        span_window=config.span_window,
        tasks=config.task_names,  # explicit: the executor may run in another process
        max_records_per_split=config.max_records_per_split,
        max_rejected_fraction=config.max_rejected_fraction,
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
    return DataComponents(example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate, transform)


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
    data_has_spans: bool = False,
    schema_file: str = SCHEMA_PATH,  # read by the executor: on Kubeflow, the path inside the image
    baseline: str = "other_data",  # which resolver finds the baseline model: see BASELINES
) -> tfx.dsl.Pipeline:
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; use one of {', '.join(BASELINES)}")
    data = data_components(data_root, config, data_has_spans, schema_file)
    example_gen, schema_gen, transform = data.example_gen, data.schema_gen, data.transform

    # The latest blessed model (see BASELINES): the Trainer's warm start and the Evaluator's baseline.
    if baseline == "other_data":
        warm_start_model = warm_start_model_resolver(example_gen.id)
        warm_start_model.add_upstream_node(example_gen)
    elif baseline == "latest_blessed":
        warm_start_model = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("baseline_model_resolver")
    else:
        warm_start_model = None

    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        base_model=warm_start_model.outputs["model"] if warm_start_model else None,  # empty on a first run
        train_args=tfx.proto.TrainArgs(num_steps=config.training.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=config.training.eval_steps),
        custom_config=config.to_json_dict(),
    )

    if baseline == "other_data":
        baseline_model = baseline_model_resolver(trainer.id)
        baseline_model.add_upstream_node(trainer)
    else:
        baseline_model = warm_start_model  # TFX's latest blessed model for both, or none
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline_model.outputs["model"] if baseline_model else None,
        eval_config=evaluation.eval_config(config),
    )
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
        components=[*data.all(), trainer, *dict.fromkeys(r for r in (warm_start_model, baseline_model) if r),
                    evaluator, pusher],  # fmt: skip
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )
