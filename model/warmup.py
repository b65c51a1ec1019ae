"""``assets.extra/tf_serving_warmup_requests``: PredictionLog records that TF Serving replays at load
(``--enable_model_warmup``), so the first real request does not pay for graph initialization."""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from mtnlp.model import contract
from mtnlp.model.tasks import Task

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def _predict_log(signature: str, inputs: dict) -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=signature))
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup_requests(export_dir: str, tasks: Sequence[Task]) -> str:
    """One request per answering signature of the serving contract (``model/contract.py``)."""
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in contract.warmup_requests(tasks):
            writer.write(_predict_log(signature, inputs).SerializeToString())
    return path
