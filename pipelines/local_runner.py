"""Runs the pipeline on this machine: LocalDagRunner, Beam DirectRunner, SQLite ML Metadata.

Workdir layout: ``pipeline_root/`` (artifacts), ``metadata.sqlite``, ``serving_model/<model_name>/<version>/``
(what TF Serving polls) and ``run_summary.json``.
"""

from __future__ import annotations

import dataclasses
import os

from mtnlp.pipelines.config import PipelineConfig

PIPELINE_NAME = "mtnlp"

# Beam's DirectRunner in this process, one worker. Multi-processing with 2 workers (the alternative on 2 cores)
# measured slower here: benchmarks/beam_modes.py (results and load in benchmarks/beam_modes_results.json).
LOCAL_BEAM_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")


@dataclasses.dataclass(frozen=True)
class Workdir:
    root: str

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.root, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.root, "metadata.sqlite")

    def serving_model_dir(self, model_name: str) -> str:
        return os.path.join(self.root, "serving_model", model_name)

    @property
    def summary_path(self) -> str:
        return os.path.join(self.root, "run_summary.json")


def run_locally(config: PipelineConfig, data_root: str, workdir: Workdir, enable_cache: bool = True) -> None:
    if config.training.strategy != "mirrored":
        raise ValueError(
            f"training.strategy={config.training.strategy} trains on workers that TF_CONFIG names, each "
            "in its own process; the local runner trains in its own process: use mirrored here, and "
            "mtnlp kubeflow compile --trainer-workers N on a cluster"
        )
    # Logical CPU devices for MirroredStrategy must exist before any component initializes TensorFlow.
    from mtnlp.model import devices

    devices.configure_cpu_replicas(config.training.cpu_replicas)

    from tfx import v1 as tfx

    from mtnlp.pipelines.pipeline import create_pipeline
    from mtnlp.pipelines.schema import schema_file_for

    os.makedirs(workdir.root, exist_ok=True)
    pipeline = create_pipeline(
        pipeline_name=PIPELINE_NAME,
        pipeline_root=workdir.pipeline_root,
        data_root=os.path.abspath(data_root),
        serving_model_dir=os.path.abspath(workdir.serving_model_dir(config.model_name)),
        config=config,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(workdir.metadata_path),
        beam_pipeline_args=list(LOCAL_BEAM_ARGS),
        enable_cache=enable_cache,
        schema_file=schema_file_for(os.path.join(workdir.root, "schema")),
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
