"""Compiles the pipeline for Kubeflow Pipelines (KFP v2) with TFX's ``KubeflowV2DagRunner``.

The runner only chooses *where* the pipeline runs: the container image, the pipeline root in object
storage, the Beam runner of the Beam-powered components and the resources of each component's pod.
The pipeline itself is the same ``create_pipeline()`` that ``mtnlp run`` executes locally.

Compiling needs no network and uploads nothing: Transform and Trainer name their functions by import
path (``mtnlp.model.preprocessing.preprocessing_fn``, ``mtnlp.pipelines.trainer_module.run_fn``), which resolve inside the
image built from the repository's ``Dockerfile``.

Output format follows the file name, as in ``KubeflowV2DagRunner`` itself:

- ``.yaml`` / ``.yml`` (default): the bare ``PipelineSpec``, which is what ``kfp.Client`` and the KFP UI
  accept, and which Vertex AI Pipelines also runs;
- ``.json``: the ``PipelineJob`` wrapper (display name, labels, ``runtimeConfig.gcsOutputDirectory``)
  that Vertex AI's ``PipelineJob(template_path=...)`` reads.

Both carry the pipeline root as ``pipelineSpec.defaultPipelineRoot``, so a run started from the KFP UI
without a root still writes where the TFX executors can (they write with ``tf.io.gfile``, which
cannot reach KFP's default ``minio://`` root).

The pipeline is the same on every platform, baseline included (components/served_baseline.py: no resolver
task). The target platform (open-source KFP or Vertex AI) decides how a multi-worker Trainer is launched:
see ``trainer_launcher``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from mtnlp.pipelines.config import PipelineConfig
from mtnlp.pipelines.local_runner import PIPELINE_NAME

if TYPE_CHECKING:  # imported lazily at run time: they pull in TFX and TensorFlow
    from kfp.pipeline_spec.pipeline_spec_pb2 import PipelineDeploymentConfig
    from tfx.v1.dsl import Pipeline

    from mtnlp.pipelines.pipeline import TrainerLauncher

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Where the Dockerfile puts the project inside the image (kept in sync by tests/test_kubeflow.py).
IMAGE_PROJECT_DIR = "/opt/mtnlp"

DEFAULT_IMAGE_REPOSITORY = "mtnlp-pipeline"

# Without a distributed runner, the Beam components run Beam's DirectRunner inside their own pod, in
# worker processes; build_pipeline sets their number per component to the pod's CPU limit.
DEFAULT_BEAM_ARGS: tuple[str, ...] = ("--direct_running_mode=multi_processing",)

SUPPORTED_ROOT_SCHEMES = ("gs://", "s3://")

# Runs uncached in every run: it looks at the data, and its output parameter is in the ingest's cache key.
FINGERPRINT_TASK = "InputFingerprint"
PLATFORMS = ("kfp", "vertex")  # open-source Kubeflow Pipelines, Vertex AI Pipelines
DEFAULT_VERTEX_MACHINE_TYPE = "n1-standard-8"  # each Trainer worker's machine in a Vertex AI custom job

# Kubernetes' extended resource name for NVIDIA GPUs (device plugin); KFP's driver turns the
# accelerator type and count into that pod limit. Vertex AI takes a machine accelerator name instead
# (e.g. NVIDIA_TESLA_T4, NVIDIA_L4).
DEFAULT_GPU_TYPE = "nvidia.com/gpu"


@dataclasses.dataclass(frozen=True)
class Resources:
    """CPU (cores) and memory (GB, as KFP's ResourceSpec counts it) limits of one component's pod."""

    cpu: float
    memory_gb: float


# The Beam components do their work inside the pod (DirectRunner) unless a distributed runner takes it
# elsewhere; the Trainer needs the most (model, optimizer state, input pipeline).
DEFAULT_RESOURCES: Mapping[str, Resources] = {
    "JsonlExampleGen": Resources(cpu=4, memory_gb=16),
    "StatisticsGen": Resources(cpu=4, memory_gb=16),
    "Transform": Resources(cpu=4, memory_gb=16),
    "Trainer": Resources(cpu=8, memory_gb=32),
    "Evaluator": Resources(cpu=4, memory_gb=16),
}
SMALL_COMPONENT = Resources(cpu=1, memory_gb=4)  # schema import, validation, gate, push


class KubeflowConfigError(ValueError):
    """A compile setting that cannot work on a cluster (the message says which and why)."""


def default_image() -> str:
    """``mtnlp-pipeline:<package version>``: the tag the docs build; push it to a registry for a real cluster."""
    from importlib import metadata

    return f"{DEFAULT_IMAGE_REPOSITORY}:{metadata.version('mtnlp')}"


def check_pipeline_root(pipeline_root: str) -> str:
    if not pipeline_root or not pipeline_root.startswith(SUPPORTED_ROOT_SCHEMES):
        raise KubeflowConfigError(
            f"pipeline root {pipeline_root!r} is not a gs:// or s3:// URI. On Kubeflow every component runs in "
            "its own pod and the TFX executors read and write artifacts with tf.io.gfile, so the root must "
            "be object storage all pods can reach, e.g. --pipeline-root gs://BUCKET/mtnlp."
        )
    return pipeline_root.rstrip("/")


@dataclasses.dataclass(frozen=True)
class KubeflowSettings:
    """Where the pipeline runs on Kubeflow. Everything else comes from the PipelineConfig."""

    pipeline_root: str
    image: str = dataclasses.field(default_factory=default_image)
    data_root: str | None = None  # default <pipeline_root>/data
    serving_model_dir: str | None = None  # default <pipeline_root>/serving_model/<model_name>
    beam_pipeline_args: tuple[str, ...] = DEFAULT_BEAM_ARGS
    gpus: int = 0
    gpu_type: str = DEFAULT_GPU_TYPE
    resources: Mapping[str, Resources] = dataclasses.field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    enable_cache: bool = True
    platform: str = "kfp"  # "kfp" (open-source Kubeflow Pipelines) or "vertex" (Vertex AI Pipelines)
    # More than 1: the Trainer trains as that many workers (see trainer_launcher), each with the Trainer's
    # resources and GPUs; on Vertex AI in the project and region given, on machines of vertex_machine_type.
    trainer_workers: int = 1
    vertex_project: str | None = None
    vertex_region: str | None = None
    vertex_machine_type: str = DEFAULT_VERTEX_MACHINE_TYPE

    def __post_init__(self) -> None:
        object.__setattr__(self, "pipeline_root", check_pipeline_root(self.pipeline_root))
        if not self.image:
            raise KubeflowConfigError("the pipeline image is empty; pass --image REGISTRY/mtnlp-pipeline:TAG")
        if self.platform not in PLATFORMS:
            choices = ", ".join(PLATFORMS)
            raise KubeflowConfigError(f"unknown platform {self.platform!r}; use one of {choices}")
        if self.trainer_workers < 1:
            raise KubeflowConfigError(f"--trainer-workers must be 1 or more, not {self.trainer_workers}")
        if self.trainer_workers > 1 and self.platform == "vertex" and not (self.vertex_project and self.vertex_region):
            raise KubeflowConfigError(
                "--trainer-workers on Vertex AI runs a custom job: pass --vertex-project and "
                "--vertex-region (where the job runs)"
            )
        if self.gpus < 0:
            raise KubeflowConfigError(f"--gpus must be 0 or more, not {self.gpus}")
        if self.gpus and not self.gpu_type:
            raise KubeflowConfigError("--gpus needs an accelerator type (--gpu-type, e.g. nvidia.com/gpu)")
        for arg in self.beam_pipeline_args:
            if not arg.startswith("--"):
                raise KubeflowConfigError(
                    f"Beam argument {arg!r} does not start with '--'; pass each as --beam-arg=--name=value"
                )

    def resolved_data_root(self) -> str:
        return self.data_root or f"{self.pipeline_root}/data"

    def resolved_serving_model_dir(self, model_name: str) -> str:
        return self.serving_model_dir or f"{self.pipeline_root}/serving_model/{model_name}"


def image_schema_file() -> str:
    """The committed (generated) schema's path inside the image: ImportSchemaGen's executor reads it in its pod."""
    from mtnlp.pipelines.schema import SCHEMA_PATH  # imported here: it pulls in TensorFlow

    return posixpath.join(IMAGE_PROJECT_DIR, *os.path.relpath(SCHEMA_PATH, REPO_ROOT).split(os.sep))


def resource_spec(
    resources: Resources, gpus: int = 0, gpu_type: str = DEFAULT_GPU_TYPE
) -> PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec:
    """The KFP ResourceSpec proto that ``with_platform_config`` attaches to a component's container."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec(
        cpu_limit=resources.cpu, memory_limit=resources.memory_gb
    )
    if gpus:
        spec.accelerator.type = gpu_type
        spec.accelerator.count = gpus
    return spec


def trainer_launcher(settings: KubeflowSettings) -> TrainerLauncher | None:
    """How a multi-worker Trainer starts its workers (None: the Trainer trains in its own pod).

    - ``kfp``: a TFJob of the Kubeflow training operator (components/tfjob_trainer.py), launched from the
      Trainer's pod, each worker with the Trainer's resources and GPUs.
    - ``vertex``: a Vertex AI custom job with TFX's Vertex trainer: worker pool 0 is the chief (one replica),
      pool 1 the other workers; Vertex gives each its TF_CONFIG.
    """
    from mtnlp.pipelines.pipeline import TrainerLauncher

    if settings.trainer_workers == 1:
        return None
    resources = settings.resources.get("Trainer", SMALL_COMPONENT)
    if settings.platform == "kfp":
        from mtnlp.components.tfjob_trainer import TFJOB_KEY, TFJobTrainer, tfjob_settings

        return TrainerLauncher(
            TFJobTrainer,
            {
                TFJOB_KEY: tfjob_settings(
                    settings.trainer_workers,
                    settings.image,
                    resources.cpu,
                    resources.memory_gb,
                    settings.gpus,
                    settings.gpu_type,
                )
            },
        )
    from tfx.extensions.google_cloud_ai_platform import constants
    from tfx.extensions.google_cloud_ai_platform.trainer import component, executor

    machine_spec: dict[str, Any] = {"machine_type": settings.vertex_machine_type}
    if settings.gpus:
        machine_spec |= {"accelerator_type": settings.gpu_type, "accelerator_count": settings.gpus}
    pool = {"machine_spec": machine_spec, "container_spec": {"image_uri": settings.image}}
    return TrainerLauncher(
        component.Trainer,
        {
            constants.ENABLE_VERTEX_KEY: True,
            constants.VERTEX_REGION_KEY: settings.vertex_region,
            executor.TRAINING_ARGS_KEY: {
                "project": settings.vertex_project,
                "job_spec": {
                    "worker_pool_specs": [
                        {**pool, "replica_count": 1},
                        {**pool, "replica_count": settings.trainer_workers - 1},
                    ]
                },
            },
        },
    )


def build_pipeline(config: PipelineConfig, settings: KubeflowSettings) -> Pipeline:
    """``create_pipeline()`` with Kubeflow's locations, then each component's pod resources."""
    from tfx.dsl.components.base import base_component, executor_spec

    from mtnlp.pipelines.pipeline import create_pipeline

    if settings.trainer_workers > 1 and config.training.strategy != "multi_worker":
        config = dataclasses.replace(config, training=dataclasses.replace(config.training, strategy="multi_worker"))
    pipeline = create_pipeline(
        pipeline_name=PIPELINE_NAME,
        pipeline_root=settings.pipeline_root,
        data_root=settings.resolved_data_root(),
        serving_model_dir=settings.resolved_serving_model_dir(config.model_name),
        config=config,
        # KFP keeps ML Metadata itself; a connection config would be ignored by the V2 runner.
        metadata_connection_config=None,
        beam_pipeline_args=list(settings.beam_pipeline_args),
        enable_cache=settings.enable_cache,
        schema_file=image_schema_file(),
        trainer_launcher=trainer_launcher(settings),
        fingerprint_task=True,  # a compiled spec runs later and again: the data are fingerprinted in each run
    )
    # Resources are a property of where it runs, so they are set here and not in create_pipeline.
    # with_platform_config is TFX's per-component hook; KubeflowV2DagRunner copies the ResourceSpec
    # into deploymentSpec.executors.<exec>.container.resources.
    in_pod = runs_in_pod(settings.beam_pipeline_args)
    for component in pipeline.components:
        if not isinstance(component, base_component.BaseComponent):
            continue
        resources = settings.resources.get(component.id, SMALL_COMPONENT)
        gpus = settings.gpus if component.id == "Trainer" else 0
        if component.id == "Trainer" and settings.trainer_workers > 1:  # its workers train; its pod waits for them
            resources, gpus = SMALL_COMPONENT, 0
        component.with_platform_config(resource_spec(resources, gpus, settings.gpu_type))
        if in_pod and isinstance(component.executor_spec, executor_spec.BeamExecutorSpec):
            # DirectRunner's default (0) starts one worker per CPU of the node (multiprocessing.cpu_count
            # ignores the pod's limit): on a large node that is far more processes than the pod can hold.
            component.with_beam_pipeline_args([f"--direct_num_workers={max(1, int(resources.cpu))}"])
    return pipeline


def runs_in_pod(beam_pipeline_args: Sequence[str]) -> bool:
    """Whether the Beam components run DirectRunner in their pod, with the worker count left to us."""
    runners = [a.split("=", 1)[1] for a in beam_pipeline_args if a.startswith("--runner=")]
    chose_workers = any(a.startswith("--direct_num_workers") for a in beam_pipeline_args)
    return not chose_workers and (not runners or runners[-1] in ("DirectRunner", "direct"))


def compile_pipeline_job(config: PipelineConfig, settings: KubeflowSettings) -> dict[str, Any]:
    """The compiled ``PipelineJob`` as a JSON-able dict (its ``pipelineSpec`` is the KFP pipeline)."""
    from tfx import v1 as tfx

    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=settings.image,
            # Pipeline spec schema 2.1 (typed parameter values) is what the KFP v2 backend and kfp 2.x
            # SDK speak; 2.0 uses fields that pipeline spec 2.1 deprecates.
            use_pipeline_spec_2_1=True,
        )
    )
    job = runner.run(build_pipeline(config, settings), write_out=False)
    job["pipelineSpec"]["defaultPipelineRoot"] = settings.pipeline_root
    job["pipelineSpec"]["root"]["dag"]["tasks"][FINGERPRINT_TASK]["cachingOptions"] = {"enableCache": False}
    _name_parameter_producers_by_task(job["pipelineSpec"])
    return job


def _name_parameter_producers_by_task(spec: dict[str, Any]) -> None:
    """TFX 1.16's V2 compiler names a task-output parameter's producer ``<component id>_task``, but it names the
    task itself ``<component id>`` (step_builder.py; its own test data show the mismatch): KFP would find no such
    task. Point each such input at the task that exists."""
    tasks = spec["root"]["dag"]["tasks"]
    for task in tasks.values():
        for parameter in task.get("inputs", {}).get("parameters", {}).values():
            producer = parameter.get("taskOutputParameter")
            if producer and producer["producerTask"] not in tasks:
                producer["producerTask"] = producer["producerTask"].removesuffix("_task")


def write_pipeline(job: Mapping[str, Any], output: str) -> str:
    """Writes the PipelineSpec (.yaml/.yml) or the whole PipelineJob (.json); returns the path."""
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    if output.endswith((".yaml", ".yml")):
        spec = job["pipelineSpec"]
        header = (
            f"# PIPELINE DEFINITION\n# Name: {spec['pipelineInfo']['name']}\n"
            "# Compiled by `mtnlp kubeflow compile` (TFX KubeflowV2DagRunner) from mtnlp.pipelines.pipeline.create_pipeline\n"
        )
        with open(output, "w", encoding="utf-8") as f:
            f.write(header)
            yaml.safe_dump(spec, f, sort_keys=True)
    elif output.endswith(".json"):
        with open(output, "w", encoding="utf-8") as f:
            json.dump(job, f, sort_keys=True, indent=2)
            f.write("\n")
    else:
        raise KubeflowConfigError(
            f"output {output!r} must end in .yaml/.yml (PipelineSpec, for kfp.Client and the KFP UI) "
            "or .json (PipelineJob, for Vertex AI)"
        )
    return output


def compile_pipeline(config: PipelineConfig, settings: KubeflowSettings, output: str) -> str:
    return write_pipeline(compile_pipeline_job(config, settings), output)


def load_pipeline_spec(path: str) -> tuple[dict[str, Any], str | None]:
    """Reads a compiled file (either form); returns the PipelineSpec dict and its pipeline root."""
    with open(path, encoding="utf-8") as f:
        document = yaml.safe_load(f)  # JSON is YAML
    if not isinstance(document, dict):
        raise KubeflowConfigError(f"{path} is not a compiled pipeline (no mapping at the top)")
    if "pipelineSpec" in document:  # the PipelineJob wrapper
        spec = document["pipelineSpec"]
        root = spec.get("defaultPipelineRoot") or document.get("runtimeConfig", {}).get("gcsOutputDirectory")
    elif "pipelineInfo" in document and "root" in document:
        spec = document
        root = spec.get("defaultPipelineRoot")
    else:
        raise KubeflowConfigError(f"{path} is neither a KFP PipelineSpec nor a PipelineJob")
    return spec, root


def beam_args_from_file(path: str) -> list[str]:
    """One Beam argument per line; blank lines and lines starting with # are skipped."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


def merge_beam_args(from_file: Sequence[str], from_flags: Sequence[str]) -> tuple[str, ...]:
    """File first, then flags (Beam parses them with argparse: a repeated option keeps its last value)."""
    args = [*from_file, *from_flags]
    return tuple(args) if args else DEFAULT_BEAM_ARGS
