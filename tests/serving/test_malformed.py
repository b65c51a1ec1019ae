"""Malformed requests of every kind get INVALID_ARGUMENT (HTTP 400), and the server keeps serving."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import model_pb2, predict_pb2

from mtnlp.serving.client import to_tensor_proto
from mtnlp.serving.model_server.tensors import to_numpy

from .conftest import post_json


def request(inputs: dict, signature: str = "") -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="half_plus_two", signature_name=signature))
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(v if hasattr(v, "dtype") and hasattr(v, "tensor_shape") else to_tensor_proto(v))
    return req


def huge_shape(size: int = 1 << 40, signature: str = "") -> predict_pb2.PredictRequest:
    """A few bytes that claim `size` elements: TensorProto's last value repeats to fill the shape."""
    req = request({"x": np.array([1.0], np.float32)}, signature)
    t = req.inputs["x"]
    del t.tensor_shape.dim[:]
    t.tensor_shape.dim.add(size=size)  # by default 4 TiB of floats, carried in 4 bytes
    return req


def content_mismatch() -> predict_pb2.PredictRequest:
    req = request({"x": np.array([1.0], np.float32)})
    t = req.inputs["x"]
    t.ClearField("float_val")
    t.tensor_shape.dim[0].size = 3
    t.tensor_content = b"\x00" * 5
    return req


CASES = {
    "wrong_dtype": lambda: request({"x": np.array([1, 2], np.int64)}),
    "string_for_float": lambda: request({"x": np.array([b"1.0"], object)}),
    "unknown_input_name": lambda: request({"z": np.array([1.0], np.float32)}),
    "extra_input": lambda: request({"x": np.array([1.0], np.float32), "z": np.array([1.0], np.float32)}),
    "missing_input": lambda: request({"a": np.array([1.0], np.float32)}, "two_inputs"),
    "empty_request": lambda: request({}),
    "tensor_content_size_mismatch": content_mismatch,
    "invalid_utf8_string": lambda: request({"text": np.array([b"ok", b"\xff\xfe bad"], object)}, "strings"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_predict_is_invalid_argument(stub, case):
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(CASES[case](), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert e.value.details()
    # ... and the server still answers a good request.
    ok = stub.Predict(request({"x": np.array([2.0], np.float32)}), timeout=30)
    assert to_numpy(ok.outputs["y"]).tolist() == [4.0]


def test_huge_claimed_shape_is_resource_exhausted_before_allocation(stub):
    req = huge_shape()
    assert req.inputs["x"].ByteSize() < 40
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max_request_tensor_" in e.value.details()


def test_empty_model_spec_is_not_found(stub):
    req = predict_pb2.PredictRequest()
    req.inputs["x"].CopyFrom(to_tensor_proto(np.array([1.0], np.float32)))
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


REST_CASES = {
    "not_json": (":predict", b"{instances: [1,"),
    "not_an_object": (":predict", b"[1, 2]"),
    "no_instances_or_inputs": (":predict", b'{"foo": [1]}'),
    "both_instances_and_inputs": (":predict", b'{"instances": [1], "inputs": [1]}'),
    "string_for_float": (":predict", b'{"instances": ["a"]}'),
    "ragged": (":predict", b'{"signature_name": "matrix", "instances": [[1, 2, 3], [1, 2]]}'),
    "non_string_signature_name": (":predict", b'{"signature_name": 5, "instances": [1.0]}'),
    "deeply_nested": (":predict", b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "empty_body": (":predict", b""),
    "unknown_input": (":predict", b'{"inputs": {"z": [1.0]}}'),
    "invalid_utf8_body": (":predict", b'{"signature_name": "strings", "instances": ["\xff\xfe"]}'),
    "bad_b64": (":predict", b'{"signature_name": "strings", "instances": [{"b64": "@@@"}]}'),
    "invalid_utf8_via_b64": (":predict", b'{"signature_name": "strings", "instances": [{"b64": "//4="}]}'),
    "classify_no_examples": (":classify", b'{"signature_name": "classify"}'),
    "mixed_feature_types": (":regress", b'{"signature_name": "regress", "examples": [{"x": [1.0, "a"]}]}'),
}


@pytest.mark.parametrize("case", sorted(REST_CASES))
def test_malformed_rest_is_400(rest_base, case):
    verb, body = REST_CASES[case]
    status, doc = post_json(rest_base + "/v1/models/half_plus_two" + verb, body)
    assert status == 400, doc
    assert isinstance(doc.get("error"), str) and doc["error"]
    status, doc = post_json(rest_base + "/v1/models/half_plus_two:predict", b'{"instances": [2.0]}')
    assert status == 200 and doc["predictions"][0]["y"] == 4.0
