"""The Kubeflow (KFP v2) compile and submit: the spec parses with kfp's own protos and reader, holds every
component of the local pipeline with the image, pipeline root, Beam arguments and resources, compiles
identically twice, and submit hands the kfp client the right arguments. Nothing here needs a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex

import pytest
import yaml
from google.protobuf import json_format

from mtnlp.pipelines import kubeflow_cli, kubeflow_runner
from mtnlp.pipelines.config import get_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = "gs://mtnlp-test-bucket/pipelines/mtnlp"
IMAGE = "europe-docker.pkg.dev/proj/repo/mtnlp-pipeline:0.1.0-gpu"
BEAM_ARGS = (
    "--runner=DataflowRunner",
    "--project=proj",
    "--region=europe-west4",
    "--temp_location=gs://mtnlp-test-bucket/tmp",
    f"--sdk_container_image={IMAGE}",
)
GPUS = 2
# The Beam-powered components the issue names; the test also covers any other BeamExecutorSpec component.
BEAM_COMPONENTS = ("JsonlExampleGen", "StatisticsGen", "Transform", "Evaluator")


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI commands configure the root logger for a terminal; put it back for the other tests."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _settings(**overrides) -> kubeflow_runner.KubeflowSettings:
    values = dict(pipeline_root=ROOT, image=IMAGE, beam_pipeline_args=BEAM_ARGS, gpus=GPUS)
    values.update(overrides)
    return kubeflow_runner.KubeflowSettings(**values)


@pytest.fixture(scope="module")
def job() -> dict:
    return kubeflow_runner.compile_pipeline_job(get_config("quick"), _settings())


@pytest.fixture(scope="module")
def spec(job) -> dict:
    return job["pipelineSpec"]


@pytest.fixture(scope="module")
def vertex_spec() -> dict:
    return kubeflow_runner.compile_pipeline_job(get_config("quick"), _settings(platform="vertex"))["pipelineSpec"]


@pytest.fixture(scope="module")
def files(job, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("kfp")
    return {ext: kubeflow_runner.write_pipeline(job, str(folder / f"pipeline.{ext}")) for ext in ("yaml", "json")}


@pytest.fixture(scope="module")
def local_pipeline(tmp_path_factory):
    """The pipeline as the local runner builds it (its own paths, SQLite metadata, DirectRunner args)."""
    from tfx import v1 as tfx

    from mtnlp.pipelines.local_runner import LOCAL_BEAM_ARGS
    from mtnlp.pipelines.pipeline import create_pipeline

    work = tmp_path_factory.mktemp("local")
    return create_pipeline(
        pipeline_name="mtnlp",
        pipeline_root=str(work / "pipeline_root"),
        data_root=os.path.join(REPO, "data"),
        serving_model_dir=str(work / "serving_model" / "mtnlp"),
        config=get_config("quick"),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(work / "metadata.sqlite")
        ),
        beam_pipeline_args=list(LOCAL_BEAM_ARGS),
    )


def _containers(spec: dict) -> dict[str, dict]:
    """Task name -> its executor's container, for every task that runs one (resolvers do not)."""
    out = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        executor_label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        container = spec["deploymentSpec"]["executors"][executor_label].get("container")
        if container is not None:
            out[name] = container
    return out


def _contains_in_order(args: list[str], expected: tuple[str, ...]) -> bool:
    n = len(expected)
    return any(tuple(args[i : i + n]) == expected for i in range(len(args) - n + 1))


# --- the compiled spec --------------------------------------------------------------------------------


def test_yaml_is_a_pipeline_spec_that_kfp_reads(files):
    from kfp.client import client as kfp_client
    from kfp.pipeline_spec import pipeline_spec_pb2

    with open(files["yaml"], encoding="utf-8") as f:
        document = yaml.safe_load(f)
    parsed = json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec())  # strict: no unknown fields
    assert parsed.pipeline_info.name == "mtnlp"
    assert parsed.schema_version == "2.1.0"
    # What kfp.Client.create_run_from_pipeline_package / upload_pipeline do with the file.
    assert kfp_client._extract_pipeline_yaml(files["yaml"]).pipeline_spec == parsed


def test_json_is_a_pipeline_job(files):
    from kfp.pipeline_spec import pipeline_spec_pb2

    with open(files["json"], encoding="utf-8") as f:
        job = json_format.Parse(f.read(), pipeline_spec_pb2.PipelineJob())
    assert job.runtime_config.gcs_output_directory == ROOT
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(json_format.MessageToDict(job.pipeline_spec), spec)
    assert spec.default_pipeline_root == ROOT


def test_every_component_of_the_local_pipeline_is_a_task(spec, vertex_spec, local_pipeline):
    components = {n.id for n in local_pipeline.components}
    assert len(components) >= 10
    for compiled in (spec, vertex_spec):  # the same pipeline on both platforms: no resolver task on either
        # and the fingerprint task, which the local runner replaces by fingerprinting as it builds the pipeline
        assert set(compiled["root"]["dag"]["tasks"]) == components | {"InputFingerprint"}
        assert set(_containers(compiled)) == components | {"InputFingerprint"}


def test_the_ingest_cache_key_holds_the_fingerprint_of_its_files(spec, vertex_spec):
    # KFP's cache key is the task's inputs: the ingest's input parameter `input_fingerprint` is the output parameter
    # of InputFingerprint, a task that runs uncached on every run, so new or changed files rerun the ingest.
    for compiled in (spec, vertex_spec):
        tasks = compiled["root"]["dag"]["tasks"]
        ingest = tasks["JsonlExampleGen"]
        source = ingest["inputs"]["parameters"]["input_fingerprint"]
        assert source == {
            "taskOutputParameter": {"producerTask": "InputFingerprint", "outputParameterKey": "fingerprint"}
        }
        assert ingest["dependentTasks"] == ["InputFingerprint"] and not ingest["inputs"].get("artifacts")
        assert ingest["cachingOptions"] == {"enableCache": True}
        assert tasks["InputFingerprint"]["cachingOptions"] == {"enableCache": False}
        fingerprint = compiled["components"]["InputFingerprint"]["outputDefinitions"]["parameters"]["fingerprint"]
        assert fingerprint == {"parameterType": "STRING"}
        looked_at = tasks["InputFingerprint"]["inputs"]["parameters"]
        assert looked_at["input_base"] == ingest["inputs"]["parameters"]["input_base"]
        assert looked_at["span_selection"]["runtimeValue"]["constant"] == get_config("quick").span_selection


def test_the_served_model_is_the_baseline_on_both_platforms(spec, vertex_spec):
    # An ordinary task looks up the served model (components/served_baseline.py): open-source KFP, which runs no
    # resolver tasks, gets the warm start and the regression gate as Vertex AI and the local runner do.
    for compiled in (spec, vertex_spec):
        assert not any("resolver" in e for e in compiled["deploymentSpec"]["executors"].values())
        tasks = compiled["root"]["dag"]["tasks"]
        for task, key in (("Evaluator", "baseline_model"), ("Trainer", "base_model")):
            source = tasks[task]["inputs"]["artifacts"][key]["taskOutputArtifact"]
            assert source == {"producerTask": "ServedBaseline", "outputArtifactKey": "model"}, task
        lookup = tasks["ServedBaseline"]["inputs"]
        assert lookup["parameters"]["serving_model_dir"]["runtimeValue"]["constant"] == f"{ROOT}/serving_model/mtnlp"
        # new data rerun the lookup: this run's Examples are its input
        assert lookup["artifacts"]["examples"]["taskOutputArtifact"]["producerTask"] == "JsonlExampleGen"


def test_every_container_runs_the_image_with_tfx_entrypoint(spec):
    kubeflow_v2_run_executor = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
    containers = _containers(spec)
    assert len(containers) == 11  # 10 components and the input fingerprint
    for name, container in containers.items():
        assert container["image"] == IMAGE, name
        assert container["command"] == ["python", "-m", kubeflow_v2_run_executor]


def test_pipeline_root_data_and_serving_dir(job, spec):
    assert spec["defaultPipelineRoot"] == ROOT
    assert job["runtimeConfig"]["gcsOutputDirectory"] == ROOT
    tasks = spec["root"]["dag"]["tasks"]
    input_base = tasks["JsonlExampleGen"]["inputs"]["parameters"]["input_base"]["runtimeValue"]["constant"]
    assert input_base == f"{ROOT}/data"
    push = tasks["VersionedPusher"]["inputs"]["parameters"]["push_destination"]["runtimeValue"]["constant"]
    assert f"{ROOT}/serving_model/mtnlp" in push


def test_schema_is_read_from_the_image(spec):
    schema_file = spec["root"]["dag"]["tasks"]["ImportSchemaGen"]["inputs"]["parameters"]["schema_file"]
    assert schema_file["runtimeValue"]["constant"] == "/opt/mtnlp/pipelines/schema/schema.pbtxt"
    assert REPO not in yaml.safe_dump(spec), "the spec names a path of the compiling machine"


def test_beam_args_reach_the_beam_components(spec, local_pipeline):
    from tfx.dsl.components.base import executor_spec

    beam_ids = {c.id for c in local_pipeline.components if isinstance(c.executor_spec, executor_spec.BeamExecutorSpec)}
    assert set(BEAM_COMPONENTS) <= beam_ids
    containers = _containers(spec)
    for component_id in sorted(beam_ids):
        assert _contains_in_order(containers[component_id]["args"], BEAM_ARGS), component_id


def test_without_a_distributed_runner_beam_uses_the_pod_cpus(spec, local_pipeline):
    from tfx.dsl.components.base import executor_spec

    settings = kubeflow_runner.KubeflowSettings(pipeline_root="s3://bucket/mtnlp", image=IMAGE)
    assert settings.beam_pipeline_args == ("--direct_running_mode=multi_processing",)
    assert settings.resolved_data_root() == "s3://bucket/mtnlp/data"
    default = _containers(kubeflow_runner.compile_pipeline_job(get_config("quick"), settings)["pipelineSpec"])
    beam = executor_spec.BeamExecutorSpec
    beam_ids = {c.id for c in local_pipeline.components if isinstance(c.executor_spec, beam)}
    for name, container in default.items():
        workers = [a for a in container["args"] if a.startswith("--direct_num_workers")]
        if name in beam_ids:  # DirectRunner's default would be one worker per CPU of the node
            cpus = int(kubeflow_runner.DEFAULT_RESOURCES.get(name, kubeflow_runner.SMALL_COMPONENT).cpu)
            assert workers == [f"--direct_num_workers={cpus}"], name
            args = container["args"]
            assert args.index("--direct_running_mode=multi_processing") < args.index(workers[0]), name
        else:
            assert workers == [], name
    # A distributed runner, or a worker count of the user's, is left alone.
    assert not any(a.startswith("--direct_num_workers") for c in _containers(spec).values() for a in c["args"])
    assert not kubeflow_runner.runs_in_pod(["--runner=DirectRunner", "--direct_num_workers=2"])
    assert kubeflow_runner.runs_in_pod(["--runner=DirectRunner"])


def test_resources_per_component_and_gpus_on_the_trainer(spec):
    for name, container in _containers(spec).items():
        resources = container["resources"]
        expected = kubeflow_runner.DEFAULT_RESOURCES.get(name, kubeflow_runner.SMALL_COMPONENT)
        assert resources["cpuLimit"] == expected.cpu, name
        assert resources["memoryLimit"] == expected.memory_gb, name
        if name == "Trainer":
            assert resources["accelerator"] == {"type": "nvidia.com/gpu", "count": str(GPUS)}
        else:
            assert "accelerator" not in resources, name


def test_compiling_twice_gives_the_same_spec(job, files, tmp_path):
    # KubeflowV2DagRunner puts no timestamp or random suffix in this pipeline (only labels with the TFX and
    # Python versions), so nothing is stripped before comparing.
    again = kubeflow_runner.compile_pipeline_job(get_config("quick"), _settings())
    assert again == job
    for ext, first in files.items():
        second = kubeflow_runner.write_pipeline(again, str(tmp_path / f"again.{ext}"))
        with open(first, "rb") as a, open(second, "rb") as b:
            assert a.read() == b.read(), ext


def test_caching_follows_the_setting(spec, vertex_spec):
    def cached(spec: dict) -> dict[str, bool]:
        tasks = spec["root"]["dag"]["tasks"]
        return {name: tasks[name].get("cachingOptions", {}).get("enableCache", False) for name in _containers(spec)}

    for compiled in (spec, vertex_spec):
        assert [name for name, on in cached(compiled).items() if not on] == ["InputFingerprint"]

    uncached = kubeflow_runner.compile_pipeline_job(get_config("quick"), _settings(enable_cache=False))
    assert not any(cached(uncached["pipelineSpec"]).values())


# --- settings and compile flags ---------------------------------------------------------------------


@pytest.mark.parametrize("root", ["/tmp/pipeline_root", "workdir", "minio://mlpipeline/v2", "", "gcs://bucket"])
def test_pipeline_root_must_be_object_storage(root):
    with pytest.raises(kubeflow_runner.KubeflowConfigError, match="gs:// or s3://"):
        _settings(pipeline_root=root)


def test_beam_args_must_be_options():
    with pytest.raises(kubeflow_runner.KubeflowConfigError, match="--beam-arg=--name=value"):
        _settings(beam_pipeline_args=("runner=DataflowRunner",))


def _parse(command: str) -> argparse.Namespace:
    from mtnlp.cli import build_parser

    return build_parser().parse_args(shlex.split(command))


def test_compile_flags_become_settings(tmp_path):
    beam_file = tmp_path / "dataflow.txt"
    beam_file.write_text("# Dataflow\n--runner=DataflowRunner\n\n--project=proj\n")
    args = _parse(
        f"kubeflow compile --image {IMAGE} --pipeline-root {ROOT}/ --profile full --data gs://other/data "
        f"--serving-model-dir gs://serving/mtnlp --beam-args-file {beam_file} --beam-arg=--region=europe-west4 "
        "--beam-arg=--num_workers=4 --gpus 4 --gpu-type NVIDIA_L4 --no-cache --output out.json --platform vertex"
    )
    assert args.func is kubeflow_cli.compile_command and args.output == "out.json" and args.profile == "full"
    settings = kubeflow_cli.settings_from_args(args)
    assert settings.pipeline_root == ROOT  # trailing slash dropped
    assert settings.image == IMAGE
    assert settings.resolved_data_root() == "gs://other/data"
    assert settings.resolved_serving_model_dir("mtnlp") == "gs://serving/mtnlp"
    assert settings.beam_pipeline_args == (
        "--runner=DataflowRunner",
        "--project=proj",
        "--region=europe-west4",
        "--num_workers=4",
    )
    assert (settings.gpus, settings.gpu_type, settings.enable_cache) == (4, "NVIDIA_L4", False)
    assert settings.platform == "vertex"


def test_compile_defaults(monkeypatch):
    monkeypatch.delenv("MTNLP_PIPELINE_ROOT", raising=False)
    args = _parse(f"kubeflow compile --pipeline-root {ROOT}")
    settings = kubeflow_cli.settings_from_args(args)
    assert args.output == "pipeline.yaml"
    assert re.fullmatch(r"mtnlp-pipeline:\d+\.\d+\.\d+.*", settings.image)
    assert settings.resolved_serving_model_dir("mtnlp") == f"{ROOT}/serving_model/mtnlp"
    assert settings.gpus == 0 and settings.enable_cache and settings.platform == "kfp"


@pytest.mark.parametrize(
    "flags, message",
    [
        ("", "no pipeline root"),
        ("--pipeline-root ./workdir", "not a gs:// or s3:// URI"),
        (f"--pipeline-root {ROOT} --beam-args-file missing.txt", "Beam arguments file missing.txt does not exist"),
        (f"--pipeline-root {ROOT} --beam-arg=runner=DataflowRunner", "does not start with '--'"),
        (f"--pipeline-root {ROOT} --gpus -1", "--gpus must be 0 or more"),
        (f"--pipeline-root {ROOT} --output pipeline.txt", "must end in .yaml"),
    ],
)
def test_compile_refuses_bad_settings_with_a_clear_error(flags, message, monkeypatch, capfd, tmp_path):
    monkeypatch.delenv("MTNLP_PIPELINE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    # A wrong output extension is only seen when writing: skip the compile itself.
    monkeypatch.setattr(kubeflow_runner, "compile_pipeline_job", lambda config, settings: {"pipelineSpec": {}})
    args = _parse(f"kubeflow compile {flags}")
    assert args.func(args) == 2
    assert message in capfd.readouterr().err


def test_the_pipeline_root_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MTNLP_PIPELINE_ROOT", "s3://env-bucket/mtnlp")
    assert kubeflow_cli.settings_from_args(_parse("kubeflow compile")).pipeline_root == "s3://env-bucket/mtnlp"


# --- submit ---------------------------------------------------------------------------------------------


def _bind_to_real(method_name: str, *args, **kwargs) -> None:
    """The call must fit the real kfp 2.5 Client method's signature (names, not just positions)."""
    import inspect

    from kfp.client import client as kfp_client

    inspect.signature(getattr(kfp_client.Client, method_name)).bind(None, *args, **kwargs)


class FakeClient:
    """Stands in for kfp.Client; records the calls and checks the package the way kfp reads it."""

    instances: list[FakeClient] = []

    def __init__(self, *args, **kwargs):
        _bind_to_real("__init__", *args, **kwargs)
        self.host, self.namespace, self.runs = kwargs.get("host"), kwargs.get("namespace", "kubeflow"), []
        FakeClient.instances.append(self)

    def create_run_from_pipeline_package(
        self,
        pipeline_file,
        arguments=None,
        run_name=None,
        experiment_name=None,
        namespace=None,
        pipeline_root=None,
        enable_caching=None,
        service_account=None,
        experiment_id=None,
    ):
        from kfp.client import client as kfp_client

        _bind_to_real(
            "create_run_from_pipeline_package",
            pipeline_file,
            arguments=arguments,
            run_name=run_name,
            experiment_name=experiment_name,
            namespace=namespace,
            pipeline_root=pipeline_root,
            enable_caching=enable_caching,
        )

        doc = kfp_client._extract_pipeline_yaml(pipeline_file)  # the real reader, while the file exists
        self.runs.append(
            dict(
                pipeline_file=pipeline_file,
                name=doc.pipeline_spec.pipeline_info.name,
                arguments=arguments,
                run_name=run_name,
                experiment_name=experiment_name,
                namespace=namespace,
                pipeline_root=pipeline_root,
                enable_caching=enable_caching,
            )
        )
        return type("RunPipelineResult", (), {"run_id": "run-123"})()


@pytest.fixture
def fake_kfp(monkeypatch):
    import kfp

    FakeClient.instances = []
    monkeypatch.setattr(kfp, "Client", FakeClient)  # submit_pipeline looks it up as kfp.Client
    return FakeClient


@pytest.mark.parametrize("ext", ["yaml", "json"])
def test_submit_a_compiled_file(ext, files, fake_kfp, capfd):
    args = _parse(
        f"kubeflow submit --host https://kfp.example.org --pipeline-file {files[ext]} "
        "--experiment nightly --run-name retrain-7 --namespace team-nlp"
    )
    assert args.func(args) == 0
    (client,) = fake_kfp.instances
    assert (client.host, client.namespace) == ("https://kfp.example.org", "team-nlp")
    (run,) = client.runs
    assert run["name"] == "mtnlp"
    assert run["pipeline_file"].endswith(".yaml")  # a .json PipelineJob is unwrapped for kfp.Client
    assert run | {"pipeline_file": None, "name": None} == dict(
        pipeline_file=None,
        name=None,
        arguments={},
        run_name="retrain-7",
        experiment_name="nightly",
        namespace="team-nlp",
        pipeline_root=ROOT,
        enable_caching=None,
    )
    captured = capfd.readouterr()
    assert "run-123" in captured.out


def test_submit_compiles_first_and_can_disable_caching(job, fake_kfp, monkeypatch):
    seen = {}

    def compile_job(config, settings):
        seen.update(profile=config.profile, settings=settings)
        return job

    monkeypatch.setattr(kubeflow_runner, "compile_pipeline_job", compile_job)
    args = _parse(
        f"kubeflow submit --host http://localhost:8080 --pipeline-root {ROOT} --image {IMAGE} "
        "--profile full --beam-arg=--runner=DataflowRunner --gpus 1 --no-cache"
    )
    assert args.func(args) == 0
    assert seen["profile"] == "full"
    assert (seen["settings"].image, seen["settings"].gpus, seen["settings"].enable_cache) == (IMAGE, 1, False)
    assert seen["settings"].beam_pipeline_args == ("--runner=DataflowRunner",)
    (client,) = fake_kfp.instances
    (run,) = client.runs
    assert (client.namespace, run["namespace"]) == ("kubeflow", None)
    assert run["experiment_name"] == "mtnlp" and run["run_name"] is None
    assert run["pipeline_root"] == ROOT and run["enable_caching"] is False


def test_submit_needs_a_host_and_an_existing_file(fake_kfp, capfd, tmp_path):
    with pytest.raises(SystemExit):
        _parse("kubeflow submit --pipeline-file pipeline.yaml")
    assert "--host" in capfd.readouterr().err
    args = _parse(f"kubeflow submit --host http://localhost:8080 --pipeline-file {tmp_path / 'missing.yaml'}")
    assert args.func(args) == 2
    assert "does not exist" in capfd.readouterr().err and not fake_kfp.instances


def test_submit_refuses_a_file_without_an_object_store_root(spec, fake_kfp, capfd, tmp_path):
    for name, root in (("no-root.yaml", None), ("local-root.yaml", "/tmp/root")):
        document = {k: v for k, v in spec.items() if k != "defaultPipelineRoot"}
        if root:
            document["defaultPipelineRoot"] = root
        path = tmp_path / name
        path.write_text(yaml.safe_dump(document))
        args = _parse(f"kubeflow submit --host http://localhost:8080 --pipeline-file {path}")
        assert args.func(args) == 2
        err = capfd.readouterr().err
        assert ("names no pipeline root" if root is None else "not a gs:// or s3:// URI") in err, name
    assert not fake_kfp.instances


def test_submit_to_an_unreachable_host_says_so(files, capfd):
    # The real client against a closed local port: refused at once, reported with the endpoint named.
    args = _parse(f"kubeflow submit --host http://127.0.0.1:9 --pipeline-file {files['yaml']}")
    assert args.func(args) == 2
    err = capfd.readouterr().err
    assert "cannot reach Kubeflow Pipelines at http://127.0.0.1:9" in err
    assert "Retrying" not in err


# --- the image -------------------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    with open(os.path.join(REPO, "Dockerfile"), encoding="utf-8") as f:
        text = f.read()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def _lock() -> dict[str, str]:
    with open(os.path.join(REPO, "requirements.lock"), encoding="utf-8") as f:
        pins = (line.strip().split("==") for line in f if "==" in line)
        return {name.lower().replace("_", "-"): version for name, version in pins}


def test_dockerfile_matches_the_lock_and_the_runner():
    instructions = _dockerfile()
    args = dict(a.split("=", 1) for kind, a in instructions if kind == "ARG" and "=" in a)
    lock = _lock()
    assert args["TFX_VERSION"] == lock["tfx"]
    assert args["BEAM_VERSION"] == lock["apache-beam"]
    froms = [a for kind, a in instructions if kind == "FROM"]
    assert froms[-1] == "tensorflow/tfx:${TFX_VERSION}"  # the final stage: the official TFX image
    workdirs = [a for kind, a in instructions if kind == "WORKDIR"]
    assert workdirs == [kubeflow_runner.IMAGE_PROJECT_DIR]
    runs = " ".join(a for kind, a in instructions if kind == "RUN")
    assert "-c requirements.lock" in runs and "-e ." in runs
    for kind, arguments in instructions:
        if kind == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                assert os.path.exists(os.path.join(REPO, source)), source


def test_dockerignore_keeps_what_the_install_needs():
    import fnmatch

    with open(os.path.join(REPO, ".dockerignore"), encoding="utf-8") as f:
        patterns = [p.strip().lstrip("/") for p in f if p.strip() and not p.startswith("#")]
    needed = [
        "pyproject.toml",
        "requirements.lock",
        "README.md",
        "pipelines/trainer_module.py",
        "model/preprocessing.py",
        "components/jsonl_example_gen/executor.py",
        "pipelines/pipeline.py",
        "pipelines/schema/schema.pbtxt",
        "mtnlp/cli.py",
        "serving/__init__.py",
    ]
    for path in needed:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = [p for p in patterns if any(fnmatch.fnmatch(prefix, p.replace("**/", "")) for prefix in prefixes)]
        assert not excluded, f"{path} is excluded from the image by {excluded}"
    assert {"data", ".venv", ".git", "workdir"} <= set(patterns)


# --- a multi-worker Trainer (--trainer-workers) ---------------------------------------------------------


def _trainer(spec: dict) -> tuple[dict, dict, dict]:
    """The compiled Trainer: its container, its settings (custom_config) and its resources."""
    task = spec["root"]["dag"]["tasks"]["Trainer"]
    container = _containers(spec)["Trainer"]
    custom_config = json.loads(task["inputs"]["parameters"]["custom_config"]["runtimeValue"]["constant"])
    return container, custom_config, container["resources"]


@pytest.fixture(scope="module")
def tfjob_spec() -> dict:
    settings = _settings(trainer_workers=3, beam_pipeline_args=())
    return kubeflow_runner.compile_pipeline_job(get_config("quick"), settings)["pipelineSpec"]


def test_kfp_trainer_workers_compile_to_a_tfjob_launcher(tfjob_spec):
    from mtnlp.components.tfjob_trainer import TFJOB_KEY
    from mtnlp.model.distribution import LAUNCHER_KEYS, training_settings

    container, custom_config, resources = _trainer(tfjob_spec)
    assert _contains_in_order(container["args"], ("--executor_class_path", "mtnlp.components.tfjob_trainer.Executor"))
    assert custom_config[TFJOB_KEY] == {
        "workers": 3,
        "image": IMAGE,
        "cpu": 8,
        "memory_gb": 32,
        "gpus": GPUS,
        "gpu_resource": "nvidia.com/gpu",
        "timeout_hours": 24,
    }
    assert custom_config["training"]["strategy"] == "multi_worker"
    # the launching pod only waits: small, no GPUs (each worker gets the Trainer's resources and GPUs)
    assert "accelerator" not in resources and resources["cpuLimit"] == kubeflow_runner.SMALL_COMPONENT.cpu
    # what run_fn reads is the run's config alone
    assert TFJOB_KEY in LAUNCHER_KEYS and TFJOB_KEY not in training_settings(custom_config)


class _FakeKubernetes:
    """Stands in for kubernetes' CustomObjectsApi: keeps the created TFJob, then reports the given states."""

    def __init__(self, states):
        self.created, self.states = [], list(states)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append((group, version, namespace, plural, body))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        state = self.states.pop(0)
        return {
            "status": {
                "conditions": [{"type": "Created", "status": "True"}]
                + ([{"type": state, "status": "True"}] if state else [])
            }
        }


def _launch(spec: dict, api: _FakeKubernetes, tmp_path) -> None:
    from tfx.types import standard_artifacts

    from mtnlp.components import tfjob_trainer

    _, custom_config, _ = _trainer(spec)
    model, run = standard_artifacts.Model(), standard_artifacts.ModelRun()
    model.uri, run.uri = f"{ROOT}/Trainer/model/7", f"{ROOT}/Trainer/model_run/7"
    examples = standard_artifacts.Examples()
    examples.uri = f"{ROOT}/Transform/transformed_examples/5"
    executor = tfjob_trainer.Executor()
    executor.api_factory, executor.namespace_factory, executor.poll_seconds = (lambda: api), (lambda: "team-nlp"), 0
    executor.Do(
        {"examples": [examples]},
        {"model": [model], "model_run": [run]},
        {"custom_config": json.dumps(custom_config), "run_fn": "mtnlp.pipelines.trainer_module.run_fn"},
    )


def test_the_tfjob_runs_tfx_trainer_on_every_worker_and_its_failure_fails_the_task(tfjob_spec, tmp_path):
    from mtnlp.components.tfjob_trainer import TFJobFailed

    api = _FakeKubernetes([None, None, "Succeeded"])
    _launch(tfjob_spec, api, tmp_path)
    ((group, version, namespace, plural, tfjob),) = api.created
    assert (group, version, namespace, plural) == ("kubeflow.org", "v1", "team-nlp", "tfjobs")
    assert tfjob["kind"] == "TFJob" and tfjob["metadata"]["namespace"] == "team-nlp"
    assert re.fullmatch(r"[a-z0-9-]{1,63}", tfjob["metadata"]["name"])
    workers = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
    assert workers["replicas"] == 3 and set(tfjob["spec"]["tfReplicaSpecs"]) == {"Worker"}  # worker 0 is the chief
    (container,) = workers["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow" and container["image"] == IMAGE
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "32G", "nvidia.com/gpu": str(GPUS)}
    command = container["command"]
    assert command[:3] == ["python", "-m", "tfx.scripts.run_executor"]
    assert command[command.index("--executor_class_path") + 1] == "tfx.components.trainer.executor.GenericExecutor"
    outputs = json.loads(command[command.index("--outputs") + 1])
    assert outputs["model"][0]["artifact"]["uri"] == f"{ROOT}/Trainer/model/7"  # the chief writes the artifact
    properties = json.loads(command[command.index("--exec-properties") + 1])
    assert json.loads(properties["custom_config"])["training"]["strategy"] == "multi_worker"
    assert api.states == []  # waited until it succeeded

    with pytest.raises(TFJobFailed, match="kubectl -n team-nlp describe tfjob mtnlp-trainer-"):
        _launch(tfjob_spec, _FakeKubernetes([None, "Failed"]), tmp_path)


def test_vertex_trainer_workers_compile_to_worker_pools():
    settings = _settings(
        platform="vertex",
        trainer_workers=4,
        gpu_type="NVIDIA_L4",
        vertex_project="proj",
        vertex_region="europe-west4",
        beam_pipeline_args=(),
    )
    spec = kubeflow_runner.compile_pipeline_job(get_config("quick"), settings)["pipelineSpec"]
    container, custom_config, resources = _trainer(spec)
    vertex_executor = "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"
    assert _contains_in_order(container["args"], ("--executor_class_path", vertex_executor))
    assert custom_config["ai_platform_enable_vertex"] is True
    assert custom_config["ai_platform_vertex_region"] == "europe-west4"
    job = custom_config["ai_platform_training_args"]
    assert job["project"] == "proj"
    machine = {"machine_type": "n1-standard-8", "accelerator_type": "NVIDIA_L4", "accelerator_count": GPUS}
    pool = {"machine_spec": machine, "container_spec": {"image_uri": IMAGE}}
    # pool 0: the chief; pool 1: the other workers (Vertex AI gives each its TF_CONFIG)
    assert job["job_spec"]["worker_pool_specs"] == [{**pool, "replica_count": 1}, {**pool, "replica_count": 3}]
    assert custom_config["training"]["strategy"] == "multi_worker"
    assert "accelerator" not in resources

    with pytest.raises(kubeflow_runner.KubeflowConfigError, match="--vertex-project and --vertex-region"):
        _settings(platform="vertex", trainer_workers=2)
    with pytest.raises(kubeflow_runner.KubeflowConfigError, match="--trainer-workers must be 1 or more"):
        _settings(trainer_workers=0)


def test_trainer_workers_flags(tmp_path):
    args = _parse(
        f"kubeflow compile --pipeline-root {ROOT} --trainer-workers 2 --platform vertex "
        "--vertex-project p --vertex-region r --vertex-machine-type n2-standard-16"
    )
    settings = kubeflow_cli.settings_from_args(args)
    assert (
        settings.trainer_workers,
        settings.vertex_project,
        settings.vertex_region,
        settings.vertex_machine_type,
    ) == (2, "p", "r", "n2-standard-16")


def test_the_documented_role_lets_the_trainer_create_its_tfjob():
    from mtnlp.components.tfjob_trainer import GROUP, PLURAL

    with open(os.path.join(REPO, "docs", "kubeflow.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```yaml\n(.*?)```", f.read(), flags=re.S)
    (role, binding) = [
        d
        for block in blocks
        for d in yaml.safe_load_all(re.sub(r"(?m)^  ", "", block))
        if d and d.get("kind") in ("Role", "RoleBinding")
    ]
    (rule,) = role["rules"]
    assert GROUP in rule["apiGroups"] and PLURAL in rule["resources"]
    assert {"create", "get"} <= set(rule["verbs"])  # what the executor calls
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
