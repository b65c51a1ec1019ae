"""A Pusher executor that makes each version appear atomically, numbered 1, 2, 3, ...

TFX's filesystem Pusher copies straight into ``<base>/<unix time>/``, so a model server polling the
base directory can see a half-copied version. This executor copies into a hidden sibling folder
(``.incoming-<version>``; TF Serving only considers numeric folder names) and renames it into place,
which is atomic on a local or POSIX filesystem. Versions count up from the highest existing one, so
a client sees ``model_spec.version`` move from N to N+1. On object stores (``gs://``, ``s3://``)
renames are copies; there TF Serving's own half-written-version guard (``saved_model.pb`` last) is
what protects it, and this executor still copies that file last.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from absl import logging
from tfx import types
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from mtnlp.components.served_baseline import KERAS_DIR, WARM_START_ASSETS, served_versions


def next_version(base_directory: str) -> int:
    return max(served_versions(base_directory), default=0) + 1


def publish_version(model_path: str, base_directory: str, warm_start_dir: str | None = None) -> tuple[str, int]:
    """Copies a SavedModel to ``<base>/<next version>`` so that it appears complete or not at all; with
    ``warm_start_dir`` (the Trainer's Keras model and vocabulary), also those, into the version's
    ``assets.extra`` where the next run's baseline finds them (components/served_baseline.py)."""
    fileio.makedirs(base_directory)
    version = next_version(base_directory)
    incoming = os.path.join(base_directory, f".incoming-{version}-{os.getpid()}")
    if fileio.exists(incoming):
        fileio.rmtree(incoming)
    io_utils.copy_dir(model_path, incoming, deny_regex_patterns=[r"saved_model\.pb"])
    if warm_start_dir and fileio.exists(warm_start_dir):
        io_utils.copy_dir(warm_start_dir, os.path.join(incoming, WARM_START_ASSETS))
    io_utils.copy_file(os.path.join(model_path, "saved_model.pb"), os.path.join(incoming, "saved_model.pb"))
    destination = os.path.join(base_directory, str(version))
    try:
        fileio.rename(incoming, destination, overwrite=False)
    except Exception:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    return destination, version


class Executor(tfx_pusher_executor.Executor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        model_path = self.GetModelPath(input_dict)
        warm_start_dir = os.path.join(os.path.dirname(model_path.rstrip("/")), KERAS_DIR)  # beside Format-Serving
        serving_path, version = publish_version(model_path, destination.filesystem.base_directory, warm_start_dir)
        logging.info("Model version %d published at %s", version, serving_path)
        io_utils.copy_dir(model_path, model_push.uri)  # the artifact keeps its own copy, as TFX's Pusher does
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=str(version))
