"""serving/deploy: the production configs parse with TF Serving's protos and the manifests agree with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtnlp.serving.model_server import flags as flagmod
from mtnlp.serving.model_server.batching import BatchOptions
from mtnlp.serving.model_server.config import (
    batching_parameters,
    model_server_config,
    monitoring_config,
    validate_config,
)

from .conftest import REPO

DEPLOY = REPO / "serving" / "deploy"
yaml = pytest.importorskip("yaml")


def load_yaml(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_model_config():
    cfg = model_server_config(str(DEPLOY / "models.config"))
    validate_config(cfg)
    (mc,) = cfg.model_config_list.config
    assert (mc.name, mc.base_path, mc.model_platform) == ("mtnlp", "/models/mtnlp", "tensorflow")
    assert mc.model_version_policy.latest.num_versions == 1


def test_batching_parameters_valid():
    o = BatchOptions.from_proto(batching_parameters(str(DEPLOY / "batching_parameters.txt")))
    assert o.max_batch_size == 32 and o.allowed_batch_sizes[-1] == o.max_batch_size


def test_monitoring_config():
    m = monitoring_config(str(DEPLOY / "monitoring.config"))
    assert m.prometheus_config.enable and m.prometheus_config.path == "/monitoring/prometheus/metrics"


def _image_matches_lock(image: str) -> None:
    import tensorflow as tf

    name, tag = image.split(":")
    assert name == "tensorflow/serving"
    assert tag.split(".")[:2] == tf.__version__.split(".")[:2], (tag, tf.__version__)
    lock = (REPO / "requirements.lock").read_text() if (REPO / "requirements.lock").exists() else ""
    if "tensorflow==" in lock:
        pinned = next(ln.split("==")[1] for ln in lock.splitlines() if ln.startswith("tensorflow=="))
        assert tag.split(".")[:2] == pinned.split(".")[:2]


def _check_flags(args: list[str]) -> flagmod.ServerOptions:
    values, unknown = flagmod.parse(args)
    assert unknown == []  # every flag is one tensorflow_model_server (and ours) accepts
    flagmod.check(values)
    return values


def test_compose():
    (doc,) = load_yaml(DEPLOY / "docker-compose.yml")
    svc = doc["services"]["tfserving"]
    _image_matches_lock(svc["image"])
    values = _check_flags(svc["command"])
    mounts = {}
    for v in svc["volumes"]:
        src, dst = v.removesuffix(":ro").rsplit(":", 1)
        mounts[dst] = src
    assert mounts["/models"].endswith("serving_model}") or mounts["/models"].endswith("serving_model")
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        target = getattr(values, flag)
        assert target in mounts, f"{flag}={target} is not mounted"
        assert (DEPLOY / mounts[target]).is_file()
    assert values.enable_batching and values.port == 8500 and values.rest_api_port == 8501


def test_kubernetes_manifests():
    docs = {
        d["kind"]: d
        for p in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for d in load_yaml(p)
    }
    assert set(docs) == {"ConfigMap", "Deployment", "Service"}
    dep = docs["Deployment"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    _image_matches_lock(container["image"])
    values = _check_flags(container["args"])
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": "/v1/models/mtnlp", "port": 8501}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/config"]]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        assert Path(getattr(values, flag)).parent == Path("/config")
        assert Path(getattr(values, flag)).name in docs["ConfigMap"]["data"]
    assert "/models" in mounts
    svc = docs["Service"]
    assert {p["port"] for p in svc["spec"]["ports"]} == {8500, 8501}
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    kust = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    assert set(kust["resources"]) == {"configmap.yaml", "deployment.yaml", "service.yaml"}


def test_configmap_matches_config_files(tmp_path):
    (cm,) = load_yaml(DEPLOY / "kubernetes" / "configmap.yaml")
    for name, text in cm["data"].items():
        assert text == (DEPLOY / name).read_text(), f"{name} in the ConfigMap differs from serving/deploy/{name}"
        (tmp_path / name).write_text(text)
    model_server_config(str(tmp_path / "models.config"))
    BatchOptions.from_proto(batching_parameters(str(tmp_path / "batching_parameters.txt")))
    monitoring_config(str(tmp_path / "monitoring.config"))
