"""Replay `assets.extra/tf_serving_warmup_requests` (PredictionLog TFRecords) against a version before it serves."""

from __future__ import annotations

import logging
import os

from tensorflow_serving.apis import prediction_log_pb2

from . import inference
from .errors import ServingError, data_loss, invalid_argument, unimplemented
from .servable import Servable

log = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit


def _records(path: str):
    import tensorflow as tf

    for raw in tf.data.TFRecordDataset(path):
        yield raw.numpy()


def run_warmup(servable: Servable, version_path: str) -> int:
    """Replays every record; returns how many. A failing record fails the load, as in TF Serving."""
    path = os.path.join(version_path, WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    count = 0
    try:
        for raw in _records(path):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}")
            entry = prediction_log_pb2.PredictionLog()
            entry.ParseFromString(raw)
            kind = entry.WhichOneof("log_type")
            if kind == "predict_log":
                inference.predict(servable, entry.predict_log.request)
            elif kind == "classify_log":
                inference.classify(servable, entry.classify_log.request)
            elif kind == "regress_log":
                inference.regress(servable, entry.regress_log.request)
            elif kind == "multi_inference_log":
                inference.multi_inference(servable, entry.multi_inference_log.request)
            else:
                raise unimplemented(f"Unsupported log_type for warmup: {kind}")
    except ServingError as e:
        raise ServingError(e.code, f"Warmup of {version_path} failed at record {count}: {e.message}") from e
    except Exception as e:  # noqa: BLE001 - a corrupt TFRecord file
        raise data_loss(f"Failed to read warmup data from {path}: {e}") from e
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.", version_path, count)
    return count
