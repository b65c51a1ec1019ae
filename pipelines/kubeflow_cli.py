"""``mtnlp kubeflow compile`` and ``mtnlp kubeflow submit``: the pipeline on Kubeflow Pipelines (KFP v2).

``compile`` writes the KFP pipeline spec (see pipelines/kubeflow_runner.py); ``submit`` starts a run of
it on a KFP endpoint with the ``kfp`` client, compiling first unless ``--pipeline-file`` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import textwrap
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtnlp.pipelines.kubeflow_runner import KubeflowSettings

log = logging.getLogger("mtnlp")

DEFAULT_OUTPUT = "pipeline.yaml"
DEFAULT_EXPERIMENT = "mtnlp"


class SubmitError(RuntimeError):
    """Submitting failed for a reason the user can fix (the message says which)."""


def _add_compile_flags(parser: argparse.ArgumentParser, for_submit: bool) -> None:
    from mtnlp.pipelines.config import PROFILES
    from mtnlp.pipelines.kubeflow_runner import DEFAULT_GPU_TYPE, DEFAULT_IMAGE_REPOSITORY, DEFAULT_VERTEX_MACHINE_TYPE
    from mtnlp.pipelines.settings import add_settings_arguments

    group = parser.add_argument_group("compile" if not for_submit else "compile (without --pipeline-file)")
    group.add_argument(
        "--image",
        help=f"pipeline image, e.g. REGISTRY/{DEFAULT_IMAGE_REPOSITORY}:TAG "
        f"(default {DEFAULT_IMAGE_REPOSITORY}:<package version>)",
    )
    group.add_argument(
        "--pipeline-root",
        default=os.environ.get("MTNLP_PIPELINE_ROOT"),
        help="gs://... or s3://... where every artifact goes (default $MTNLP_PIPELINE_ROOT)",
    )
    group.add_argument(
        "--platform",
        choices=("kfp", "vertex"),
        default="kfp",
        help="kfp: open-source Kubeflow Pipelines; vertex: Vertex AI Pipelines. They differ in how "
        "--trainer-workers runs the Trainer (default kfp)",
    )
    group.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default="quick",
        help="hyper-parameters (default quick); --config and --set change them",
    )
    add_settings_arguments(group)
    group.add_argument("--verbose", action="store_true", help="print the effective settings (default off)")
    group.add_argument("--data", help="data folder as the pods see it (default <pipeline-root>/data)")
    group.add_argument(
        "--serving-model-dir", help="where blessed models are pushed (default <pipeline-root>/serving_model/<model>)"
    )
    group.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        metavar="ARG",
        dest="beam_args",
        help="a Beam pipeline argument for ExampleGen, StatisticsGen, Transform and Evaluator; "
        "repeat it, and attach the value with '=': --beam-arg=--runner=DataflowRunner "
        "(default none: DirectRunner in the pod)",
    )
    group.add_argument(
        "--beam-args-file", help="Beam arguments, one per line (# comments); --beam-arg adds to them (default none)"
    )
    group.add_argument(
        "--gpus", type=int, default=0, help="GPUs for the Trainer's pod; MirroredStrategy uses all (default 0)"
    )
    group.add_argument(
        "--gpu-type",
        default=DEFAULT_GPU_TYPE,
        help=f"accelerator type for --gpus (default {DEFAULT_GPU_TYPE}; on Vertex AI e.g. NVIDIA_L4)",
    )
    group.add_argument(
        "--trainer-workers",
        type=int,
        default=1,
        help="train as N workers with MultiWorkerMirroredStrategy (sets training.strategy="
        "multi_worker): on kfp a TFJob of the Kubeflow training operator, on vertex a Vertex "
        "AI custom job; each worker gets the Trainer's resources and --gpus (default 1)",
    )
    group.add_argument("--vertex-project", help="Vertex AI: the project of the Trainer's custom job (default none)")
    group.add_argument("--vertex-region", help="Vertex AI: the region of the Trainer's custom job (default none)")
    group.add_argument(
        "--vertex-machine-type",
        default=DEFAULT_VERTEX_MACHINE_TYPE,
        help=f"Vertex AI: the machine type of each Trainer worker (default {DEFAULT_VERTEX_MACHINE_TYPE})",
    )
    group.add_argument(
        "--no-cache",
        action="store_true",
        help="re-execute every component (compiled with caching off; on submit, also for this run; default off)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    kubeflow = subparsers.add_parser("kubeflow", help="compile the pipeline for Kubeflow Pipelines, or submit a run")
    commands = kubeflow.add_subparsers(dest="kubeflow_command", required=True, metavar="COMMAND")

    compile_ = commands.add_parser(
        "compile",
        help="write the KFP v2 pipeline spec (no network needed)",
        description="Compile the pipeline (the same create_pipeline() as `mtnlp run`) "
        "into a KFP v2 pipeline spec with TFX's KubeflowV2DagRunner. The "
        "settings (profile, --config, --set) are baked into the spec.",
    )
    _add_compile_flags(compile_, for_submit=False)
    compile_.add_argument(
        "--output",
        default=DEFAULT_OUTPUT,
        help=".yaml: PipelineSpec for kfp/KFP UI (default pipeline.yaml); .json: Vertex PipelineJob",
    )
    compile_.set_defaults(func=compile_command)

    submit = commands.add_parser(
        "submit",
        help="start a run on a KFP endpoint with the kfp client",
        description="Start a run of a compiled pipeline (--pipeline-file) on a Kubeflow "
        "Pipelines endpoint with the kfp client, compiling it first (with the "
        "compile options) when no file is given.",
    )
    submit.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080 (port-forward)")
    submit.add_argument(
        "--pipeline-file", help="an already compiled pipeline (.yaml or .json) (default: compile one now)"
    )
    submit.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"experiment (default {DEFAULT_EXPERIMENT})")
    submit.add_argument("--run-name", help="run name shown in the UI (default: the pipeline file name and time)")
    submit.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs; default kubeflow)")
    _add_compile_flags(submit, for_submit=True)
    submit.set_defaults(func=submit_command)


def settings_from_args(args: argparse.Namespace) -> KubeflowSettings:
    from mtnlp.pipelines import kubeflow_runner

    if not args.pipeline_root:
        raise kubeflow_runner.KubeflowConfigError(
            "no pipeline root: pass --pipeline-root gs://BUCKET/PATH or s3://BUCKET/PATH (or set MTNLP_PIPELINE_ROOT)"
        )
    if args.beam_args_file and not os.path.isfile(args.beam_args_file):
        raise kubeflow_runner.KubeflowConfigError(f"Beam arguments file {args.beam_args_file} does not exist")
    from_file = kubeflow_runner.beam_args_from_file(args.beam_args_file) if args.beam_args_file else []
    optional: dict[str, Any] = {}
    if args.image:
        optional["image"] = args.image
    return kubeflow_runner.KubeflowSettings(
        pipeline_root=args.pipeline_root,
        data_root=args.data,
        serving_model_dir=args.serving_model_dir,
        beam_pipeline_args=kubeflow_runner.merge_beam_args(from_file, args.beam_args),
        gpus=args.gpus,
        gpu_type=args.gpu_type,
        enable_cache=not args.no_cache,
        platform=args.platform,
        trainer_workers=args.trainer_workers,
        vertex_project=args.vertex_project,
        vertex_region=args.vertex_region,
        vertex_machine_type=args.vertex_machine_type,
        **optional,
    )


def _compile(args: argparse.Namespace, output: str) -> str:
    from mtnlp import logs
    from mtnlp.pipelines import kubeflow_runner
    from mtnlp.pipelines.settings import config_from_args, format_config

    settings = settings_from_args(args)  # before the slow imports: a bad flag fails at once
    config = config_from_args(args)
    if args.verbose:
        print(f"Effective settings (profile {config.profile}):\n" + textwrap.indent(format_config(config), "  "))
    logs.quiet_environment(False)
    from tfx import v1 as tfx  # noqa: F401 - imported before configure_logging: absl/Beam install handlers

    logs.configure_logging(False)
    path = kubeflow_runner.compile_pipeline(config, settings, output)
    log.info(
        "Compiled the %s pipeline for %s: %s",
        config.profile,
        "Vertex AI Pipelines" if settings.platform == "vertex" else "Kubeflow Pipelines",
        path,
    )
    log.info("  image %s, pipeline root %s", settings.image, settings.pipeline_root)
    log.info(
        "  data %s, serving models %s",
        settings.resolved_data_root(),
        settings.resolved_serving_model_dir(config.model_name),
    )
    log.info(
        "  Beam args %s%s",
        " ".join(settings.beam_pipeline_args),
        f"; Trainer GPUs: {settings.gpus} x {settings.gpu_type}" if settings.gpus else "",
    )
    if settings.trainer_workers > 1:
        log.info(
            "  Trainer: %d workers (MultiWorkerMirroredStrategy) as %s",
            settings.trainer_workers,
            "a Vertex AI custom job"
            if settings.platform == "vertex"
            else "a TFJob: the Trainer's service account must be allowed to create TFJobs (docs/kubeflow.md)",
        )
    return path


def compile_command(args: argparse.Namespace) -> int:
    from mtnlp import logs
    from mtnlp.extras import require_extra
    from mtnlp.pipelines.kubeflow_runner import KubeflowConfigError
    from mtnlp.pipelines.settings import SettingsError

    require_extra("kubeflow")
    logs.configure_logging(False)
    try:
        _compile(args, args.output)
    except (KubeflowConfigError, SettingsError) as e:
        log.error("error: %s", e)
        return 2
    return 0


def submit_pipeline(
    host: str,
    pipeline_file: str,
    experiment: str,
    run_name: str | None = None,
    namespace: str | None = None,
    enable_caching: bool | None = None,
) -> Any:
    """Starts a run of a compiled pipeline; returns the kfp ``RunPipelineResult``."""
    import kfp

    from mtnlp.pipelines import kubeflow_runner

    spec, pipeline_root = kubeflow_runner.load_pipeline_spec(pipeline_file)
    if not pipeline_root:
        raise kubeflow_runner.KubeflowConfigError(
            f"{pipeline_file} names no pipeline root; compile it with mtnlp kubeflow compile --pipeline-root gs://..."
        )
    kubeflow_runner.check_pipeline_root(pipeline_root)
    with tempfile.TemporaryDirectory() as tmp:
        package = _as_kfp_package(pipeline_file, tmp)
        try:
            client = kfp.Client(host=host, namespace=namespace or "kubeflow")
            # Creates the experiment if needed, uploads the spec with the run, and starts it.
            return client.create_run_from_pipeline_package(
                package,
                arguments={},
                run_name=run_name,
                experiment_name=experiment,
                namespace=namespace,
                # The compiled root, passed explicitly so that no backend default (minio://) applies.
                pipeline_root=pipeline_root,
                enable_caching=enable_caching,
            )
        except Exception as e:  # noqa: BLE001 - re-raised with the endpoint named, original chained
            raise SubmitError(_explain_submit_failure(host, e)) from e


def _as_kfp_package(pipeline_file: str, tmp: str) -> str:
    """kfp.Client reads a bare PipelineSpec from .yaml/.yml/.zip/.tar.gz; a .json PipelineJob is unwrapped."""
    import yaml

    from mtnlp.pipelines import kubeflow_runner

    if pipeline_file.endswith((".yaml", ".yml", ".zip", ".tar.gz", ".tgz")):
        return pipeline_file
    spec, _ = kubeflow_runner.load_pipeline_spec(pipeline_file)
    path = os.path.join(tmp, os.path.splitext(os.path.basename(pipeline_file))[0] + ".yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(spec, f, sort_keys=True)
    return path


def _explain_submit_failure(host: str, error: Exception) -> str:
    text = f"{type(error).__name__}: {error}"
    unreachable = (
        "Max retries exceeded",
        "Connection refused",
        "Failed to establish",
        "Name or service not known",
        "timed out",
        "NewConnectionError",
    )
    if isinstance(error, (ConnectionError, OSError)) or any(marker in text for marker in unreachable):
        return (
            f"cannot reach Kubeflow Pipelines at {host} ({text.splitlines()[0][:300]}). Check the URL and that "
            "the API is reachable, e.g. kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80 "
            "and --host http://localhost:8080"
        )
    status = getattr(error, "status", None)
    if status in (401, 403):
        return (
            f"Kubeflow Pipelines at {host} refused the request ({status}): "
            "log in, or pass --namespace with your profile's namespace"
        )
    return f"submitting to Kubeflow Pipelines at {host} failed: {text[:2000]}"


def submit_command(args: argparse.Namespace) -> int:
    from mtnlp import logs
    from mtnlp.extras import require_extra
    from mtnlp.pipelines.kubeflow_runner import KubeflowConfigError
    from mtnlp.pipelines.settings import SettingsError

    require_extra("kubeflow")
    logs.configure_logging(False)
    # The client's own noise: a FutureWarning on every construction, and urllib3's retry lines (a filter,
    # because the kfp_server_api configuration resets the urllib3 logger's level).
    warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
    logging.getLogger("urllib3.connectionpool").addFilter(lambda record: not record.getMessage().startswith("Retrying"))
    tmp = None
    try:
        if args.pipeline_file:
            if not os.path.isfile(args.pipeline_file):
                raise KubeflowConfigError(f"pipeline file {args.pipeline_file} does not exist")
            pipeline_file = args.pipeline_file
        else:
            tmp = tempfile.mkdtemp(prefix="mtnlp-kfp-")
            pipeline_file = _compile(args, os.path.join(tmp, "mtnlp-pipeline.yaml"))
        result = submit_pipeline(
            host=args.host,
            pipeline_file=pipeline_file,
            experiment=args.experiment,
            run_name=args.run_name,
            namespace=args.namespace,
            enable_caching=False if args.no_cache else None,  # None: as compiled
        )
    except (KubeflowConfigError, SettingsError, SubmitError) as e:
        log.error("error: %s", e)
        return 2
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    run_id = getattr(result, "run_id", None)
    print(f"Submitted run {run_id} to {args.host} (experiment {args.experiment})", file=sys.stdout)
    return 0
