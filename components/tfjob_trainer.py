"""The Trainer as a Kubeflow TFJob of N workers (open-source Kubeflow Pipelines).

KFP runs each task in one pod. For a multi-worker Trainer, this executor, in the Trainer's pod, creates a TFJob
(the Kubeflow training operator's resource, ``kubeflow.org/v1``) whose N worker pods run TFX's own Trainer
executor with the same inputs, outputs and settings (``python -m tfx.scripts.run_executor``, the contract TFX's
Vertex AI trainer uses), and waits for it. The training operator gives every worker its ``TF_CONFIG``; ``run_fn``
trains under ``MultiWorkerMirroredStrategy`` (``training.strategy=multi_worker``) and worker 0, the chief, writes
the model into the Trainer's output artifacts (model/distribution.py).

Settings: ``custom_config[TFJOB_KEY]`` (``tfjob_settings``), written by ``mtnlp kubeflow compile
--trainer-workers N``. The Trainer pod's service account must be allowed to create, read and delete TFJobs in
its namespace (docs/kubeflow.md gives the Role to apply where Kubeflow's profiles do not already grant it).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from absl import logging
from tfx import types
from tfx.components.trainer import component as tfx_trainer_component
from tfx.components.trainer import executor as tfx_trainer_executor
from tfx.dsl.components.base import base_executor, executor_spec
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import name_utils

TFJOB_KEY = "mtnlp_tfjob"  # custom_config key of the TFJob settings; run_fn ignores it
GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "tfjobs"
CONTAINER_NAME = "tensorflow"  # the training operator finds the TF container by this name
IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class TFJobFailed(RuntimeError):
    pass


def tfjob_settings(
    workers: int,
    image: str,
    cpu: float,
    memory_gb: float,
    gpus: int = 0,
    gpu_resource: str = "nvidia.com/gpu",
    timeout_hours: float = 24,
) -> dict[str, Any]:
    """What ``custom_config[TFJOB_KEY]`` holds: the workers' count, image and per-worker resources."""
    return {
        "workers": workers,
        "image": image,
        "cpu": cpu,
        "memory_gb": memory_gb,
        "gpus": gpus,
        "gpu_resource": gpu_resource,
        "timeout_hours": timeout_hours,
    }


def run_executor_command(input_dict, output_dict, exec_properties: Mapping[str, Any]) -> list[str]:
    """TFX's Trainer executor on these artifacts and properties, as a container command."""
    return [
        "python",
        "-m",
        "tfx.scripts.run_executor",
        "--executor_class_path",
        name_utils.get_full_name(tfx_trainer_executor.GenericExecutor),
        "--inputs",
        artifact_utils.jsonify_artifact_dict(input_dict),
        "--outputs",
        artifact_utils.jsonify_artifact_dict(output_dict),
        "--exec-properties",
        json.dumps(dict(exec_properties), sort_keys=True),
    ]


def tfjob_manifest(name: str, namespace: str, settings: Mapping[str, Any], command: list[str]) -> dict[str, Any]:
    """A TFJob of ``settings["workers"]`` identical workers running ``command`` (worker 0 is the chief)."""
    limits = {"cpu": str(settings["cpu"]), "memory": f"{settings['memory_gb']}G"}
    if settings.get("gpus"):
        limits[settings["gpu_resource"]] = str(settings["gpus"])
    container = {
        "name": CONTAINER_NAME,
        "image": settings["image"],
        "command": command,
        "resources": {"limits": limits, "requests": dict(limits)},
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TFJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "mtnlp"}},
        "spec": {
            # no restarts: a worker that fails fails the job, and the pipeline task with it
            "runPolicy": {
                "backoffLimit": 0,
                "cleanPodPolicy": "Running",
                "activeDeadlineSeconds": int(settings["timeout_hours"] * 3600),
            },
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": int(settings["workers"]),
                    "restartPolicy": "Never",
                    "template": {"spec": {"containers": [container]}},
                }
            },
        },
    }


def job_state(tfjob: Mapping[str, Any]) -> str | None:
    """ "Succeeded", "Failed" or None (still running), from the TFJob's status conditions."""
    for condition in reversed(tfjob.get("status", {}).get("conditions", [])):
        if condition.get("status") == "True" and condition.get("type") in ("Succeeded", "Failed"):
            return condition["type"]
    return None


def _in_cluster_api():
    from kubernetes import client, config

    config.load_incluster_config()
    return client.CustomObjectsApi()


def _pod_namespace() -> str:
    with open(IN_CLUSTER_NAMESPACE_FILE, encoding="utf-8") as f:
        return f.read().strip()


class Executor(base_executor.BaseExecutor):
    """Launches the TFJob and waits for it; the artifacts are written by its chief (see the module docstring)."""

    api_factory: Callable[[], Any] = staticmethod(_in_cluster_api)
    namespace_factory: Callable[[], str] = staticmethod(_pod_namespace)
    poll_seconds: float = 30

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        custom_config = json.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "{}")
        settings = custom_config[TFJOB_KEY]
        model_uri = artifact_utils.get_single_uri(output_dict[standard_component_specs.MODEL_KEY])
        # unique per execution, stable for its retries; a Kubernetes name (lowercase, <= 63 characters)
        name = "mtnlp-trainer-" + hashlib.sha256(model_uri.encode()).hexdigest()[:16]
        manifest = tfjob_manifest(
            name, self.namespace_factory(), settings, run_executor_command(input_dict, output_dict, exec_properties)
        )
        api = self.api_factory()
        namespace = manifest["metadata"]["namespace"]
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
            logging.info("Created TFJob %s/%s with %d workers", namespace, name, settings["workers"])
        except Exception as e:  # noqa: BLE001 - only "already exists" is expected; anything else is re-raised
            if getattr(e, "status", None) != 409:
                raise
            logging.info("TFJob %s/%s exists (this task was retried): waiting for it", namespace, name)
        deadline = time.monotonic() + settings["timeout_hours"] * 3600 + 600
        while True:
            state = job_state(api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
            if state == "Succeeded":
                logging.info("TFJob %s/%s succeeded", namespace, name)
                return
            if state == "Failed" or time.monotonic() > deadline:
                raise TFJobFailed(
                    f"TFJob {namespace}/{name} {'failed' if state else 'did not finish in time'}: see "
                    f"kubectl -n {namespace} describe tfjob {name}, and its workers' logs "
                    f"(kubectl -n {namespace} logs -l training.kubeflow.org/job-name={name})"
                )
            time.sleep(self.poll_seconds)


class TFJobTrainer(tfx_trainer_component.Trainer):
    """TFX's Trainer, trained by a TFJob of ``custom_config[TFJOB_KEY]["workers"]`` workers."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
