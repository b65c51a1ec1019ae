"""training.strategy=multi_worker for real: two worker processes on loopback (TF_CONFIG with two 127.0.0.1 ports)
run the Trainer's run_fn on the shared pipeline run's Transform output with MultiWorkerMirroredStrategy. Both end
with identical weights, only the chief writes the model and its logs, and the chief's SavedModel answers the same
signatures as the single-worker model the pipeline pushed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from mtnlp.components.served_baseline import mismatch
from mtnlp.model.distribution import DistributionError, is_chief, tf_config
from mtnlp.pipelines.summary import latest_transform_outputs
from tests.conftest import FIXTURE_TASKS

HELPERS = os.path.join(os.path.dirname(__file__), "helpers")
STEPS = 30
TIMEOUT = 600  # a hung collective fails the test instead of blocking CI


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _workers(transform: dict[str, str], out, strategy: str, count: int) -> list[dict]:
    """``count`` worker processes of one training (with a TF_CONFIG when more than one); their JSON reports."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(count)]
    processes = []
    for index in range(count):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
        }
        if count == 1:
            env.pop("TF_CONFIG")
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    os.path.join(HELPERS, "multi_worker_train.py"),
                    transform["transform_graph"],
                    transform["transformed_examples"],
                    str(out / f"worker{index}"),
                    str(STEPS),
                    strategy,
                    *FIXTURE_TASKS,
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    reports = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, stderr[-4000:]
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return reports


@pytest.mark.slow
def test_two_workers_on_loopback_train_one_model(pipeline_run, tmp_path):
    transform = latest_transform_outputs(str(pipeline_run.workdir / "metadata.sqlite"))
    chief, other = _workers(transform, tmp_path, "multi_worker", 2)
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["steps"] == other["steps"] == STEPS
    assert chief["digest"] == other["digest"]  # gradients all-reduced: the same weights on both workers

    # only the chief wrote the model and the TensorBoard logs; the other worker's temporary copies are gone
    model_dir = tmp_path / "worker0" / "model" / "Format-Serving"
    assert (model_dir / "saved_model.pb").is_file() and (tmp_path / "worker0" / "model" / "Format-Keras").is_dir()
    assert any(
        f.startswith("events.out.tfevents")
        for _, _, files in os.walk(tmp_path / "worker0" / "model_run")
        for f in files
    )
    assert not (tmp_path / "worker1").exists()
    training = json.loads((tmp_path / "worker0" / "model_run" / "training_config.json").read_text())
    assert training["replicas"] == 2 and training["training"]["strategy"] == "multi_worker"

    # the same serving contract as the single-worker model the pipeline pushed, checked in a fresh process
    assert mismatch(str(model_dir), list(FIXTURE_TASKS)) is None
    answers = {}
    for name, path in (("multi", model_dir), ("single", pipeline_run.pushed_model_dir)):
        result = subprocess.run(
            [sys.executable, os.path.join(HELPERS, "call_signatures.py"), str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        answers[name] = json.loads(result.stdout.strip().splitlines()[-1])
    multi, single = answers["multi"], answers["single"]
    assert multi["blocked_modules_loaded"] == [] and multi["signatures"] == single["signatures"]
    for signature in ("analyze", "analyze_tokens", "relation"):
        assert multi[signature].keys() == single[signature].keys(), signature
        for key, value in multi[signature].items():
            assert len(value) == len(single[signature][key]), (signature, key)  # batched on axis 0
    assert len(multi["translate"]["batch"]) == len(single["translate"]["batch"])


def test_tf_config_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}')
    with pytest.raises(DistributionError, match="cluster.worker must be a non-empty list"):
        tf_config()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(DistributionError, match="TF_CONFIG is not a cluster description"):
        tf_config()
    monkeypatch.delenv("TF_CONFIG")
    assert tf_config() is None


class _Resolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

    def cluster_spec(self):
        import tensorflow as tf

        return tf.train.ClusterSpec(self._cluster)


@pytest.mark.parametrize(
    "task_type, task_id, cluster, chief",
    [
        ("worker", 0, {"worker": ["a:1", "b:1"]}, True),  # TFJob with workers only: worker 0
        ("worker", 1, {"worker": ["a:1", "b:1"]}, False),
        ("chief", 0, {"chief": ["a:1"], "worker": ["b:1"]}, True),  # Vertex AI: the first worker pool is the chief
        ("worker", 0, {"chief": ["a:1"], "worker": ["b:1"]}, False),
    ],
)
def test_who_writes_the_outputs(task_type, task_id, cluster, chief):
    strategy = type("Strategy", (), {"cluster_resolver": _Resolver(task_type, task_id, cluster)})()
    assert is_chief(strategy) is chief


def test_unknown_strategy_is_refused():
    from mtnlp.pipelines.config import get_config
    from mtnlp.pipelines.settings import SettingsError, apply_mapping

    with pytest.raises(
        (SettingsError, ValueError), match="training.strategy.*'parameter_server'.*mirrored, multi_worker"
    ):
        apply_mapping(get_config("quick"), {"training": {"strategy": "parameter_server"}})


def test_the_local_runner_refuses_multi_worker(tmp_path):
    from mtnlp.pipelines.config import get_config
    from mtnlp.pipelines.local_runner import Workdir, run_locally
    from mtnlp.pipelines.settings import apply_mapping

    config = apply_mapping(get_config("quick"), {"training": {"strategy": "multi_worker"}})
    with pytest.raises(ValueError, match="--trainer-workers N on a cluster"):
        run_locally(config, "data", Workdir(str(tmp_path / "workdir")))
    assert not (tmp_path / "workdir").exists()
