"""``assets.extra/tf_serving_warmup_requests``: PredictionLog records that TF Serving replays at load
(``--enable_model_warmup``), so the first real request does not pay for graph initialization."""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
_SENTENCES = ["Apple sued Samsung in California.", "I love this movie, it is great!"]


def _predict_log(signature: str, inputs: dict[str, list]) -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=signature))
    for name, value in inputs.items():
        # the signatures take int64 offsets; a plain Python int list would become int32
        dtype = tf.int64 if isinstance(value[0], int) else tf.string
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup_requests(export_dir: str, relation_signatures: list[str], translate_signatures: list[str] = ()) -> str:
    logs = [_predict_log("serving_default", {"text": _SENTENCES})]
    for signature in relation_signatures:
        logs.append(_predict_log(signature, {
            "text": ["The company fabricates plastic chairs."],
            "e1_start": [4], "e1_end": [11], "e2_start": [31], "e2_end": [37],
        }))  # fmt: skip
    for signature in translate_signatures:
        logs.append(_predict_log(signature, {"text": ["Where is the station?", "I like to read books."]}))
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path
