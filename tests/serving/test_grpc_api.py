"""PredictionService and ModelService over gRPC with the official stubs, on the toy models."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from mtnlp.serving.client import ServingClientError, to_tensor_proto
from mtnlp.serving.model_server.tensors import to_numpy

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def example(x: float) -> example_pb2.Example:
    ex = example_pb2.Example()
    ex.features.feature["x"].float_list.value.append(x)
    return ex


def predict_req(model="half_plus_two", x=(1.0, 2.0, 3.0), **spec) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model, **spec))
    req.inputs["x"].CopyFrom(to_tensor_proto(np.array(x, np.float32)))
    return req


def rpc_error(fn, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, timeout=30)
    return e.value


# ----- Predict --------------------------------------------------------------------------------------------------
def test_predict_latest_version(stub):
    resp = stub.Predict(predict_req(), timeout=30)
    assert to_numpy(resp.outputs["y"]).tolist() == [3.5, 4.0, 4.5]  # v2: 0.5x + 3
    assert resp.model_spec.name == "half_plus_two"
    assert resp.model_spec.version.value == 2
    assert resp.model_spec.signature_name == "serving_default"


def test_predict_specific_version(stub):
    req = predict_req()
    req.model_spec.version.value = 1
    resp = stub.Predict(req, timeout=30)
    assert to_numpy(resp.outputs["y"]).tolist() == [2.5, 3.0, 3.5]
    assert resp.model_spec.version.value == 1


@pytest.mark.parametrize("label,version,offset", [("stable", 1, 2.0), ("canary", 2, 3.0)])
def test_predict_version_label(stub, label, version, offset):
    resp = stub.Predict(predict_req(version_label=label), timeout=30)
    assert resp.model_spec.version.value == version
    assert to_numpy(resp.outputs["y"]).tolist() == [0.5 + offset, 1.0 + offset, 1.5 + offset]


def test_unknown_label_is_invalid_argument(stub):
    e = rpc_error(stub.Predict, predict_req(version_label="nope"))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nope" in e.details()


def test_missing_model_not_found_names_servable(stub):
    e = rpc_error(stub.Predict, predict_req(model="no_such_model"))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_model" in e.details()


def test_missing_version_not_found(stub):
    req = predict_req()
    req.model_spec.version.value = 99
    e = rpc_error(stub.Predict, req)
    assert e.code() == grpc.StatusCode.NOT_FOUND
    assert "half_plus_two" in e.details() and "99" in e.details()


def test_unknown_signature_failed_precondition(stub):
    e = rpc_error(stub.Predict, predict_req(signature_name="nope"))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert '"nope"' in e.details()


def test_output_filter(stub):
    req = predict_req()
    req.output_filter.append("y")
    resp = stub.Predict(req, timeout=30)
    assert list(resp.outputs) == ["y"]
    full = stub.Predict(predict_req(), timeout=30)
    assert sorted(full.outputs) == ["batch_size", "y"]


@pytest.mark.parametrize(
    "filt,fragment", [(["nope"], "output tensor alias not found"), (["y", "y"], "duplicate output tensor alias")]
)
def test_bad_output_filter(stub, filt, fragment):
    req = predict_req()
    req.output_filter.extend(filt)
    e = rpc_error(stub.Predict, req)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in e.details()


def test_named_signatures_and_dtypes(grpc_client):
    out = grpc_client.predict({"a": [1.0, 2.0], "b": [10.0, 20.0]}, "two_inputs")
    assert out["sum"].tolist() == [11.0, 22.0]
    out = grpc_client.predict({"text": ["héllo", "ab"]}, "strings")
    assert out["length"].tolist() == [5, 2]
    assert out["upper"].tolist() == ["HéLLO".encode(), b"AB"]
    out = grpc_client.predict({"x": np.ones((2, 3), np.float32)}, "matrix")
    assert out["row_sum"].tolist() == [3.0, 3.0]


def test_tensor_content_encoding_accepted(stub):
    req = predict_req()
    req.inputs["x"].CopyFrom(predict_pb2.PredictRequest().inputs.get_or_create("x"))
    t = req.inputs["x"]
    t.dtype = 1
    t.tensor_shape.dim.add(size=2)
    t.tensor_content = np.array([2.0, 4.0], np.float32).tobytes()
    assert to_numpy(stub.Predict(req, timeout=30).outputs["y"]).tolist() == [4.0, 5.0]


def test_tf1_model_predict(grpc_client):
    out = grpc_client.predict({"x": [1.0, 2.0]}, model_name="tf1_half_plus_two")
    assert out["y"].tolist() == [2.5, 3.0]


def test_large_message_accepted(grpc_client):
    # 64 MiB: over gRPC's 4 MiB default; TF Serving accepts messages up to 2 GiB.
    x = np.full(16 * 1024 * 1024, 2.0, np.float32)
    req = predict_req(x=())
    req.inputs["x"].Clear()
    req.inputs["x"].dtype = 1
    req.inputs["x"].tensor_shape.dim.add(size=x.size)
    req.inputs["x"].tensor_content = x.tobytes()
    req.output_filter.append("batch_size")
    resp = grpc_client.predict_request(req, timeout=120)
    assert int(to_numpy(resp.outputs["batch_size"])[0]) == x.size


# ----- Classify / Regress / MultiInference ----------------------------------------------------------------------
@pytest.mark.parametrize("model,offset", [("half_plus_two", 3.0), ("tf1_half_plus_two", 2.0)])
def test_classify(stub, model, offset):
    req = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name=model, signature_name="classify")
    )
    req.input.example_list.examples.extend([example(0.0), example(10.0)])
    resp = stub.Classify(req, timeout=30)
    assert resp.model_spec.signature_name == "classify"
    rows = [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]
    assert [r[0][0] for r in rows] == ["negative", "negative"] and [r[1][0] for r in rows] == ["positive"] * 2
    p = 1 / (1 + np.exp(-(np.array([0.0, 5.0]) + offset - 3.0)))
    assert np.allclose([r[1][1] for r in rows], p, atol=1e-5)


@pytest.mark.parametrize("model,offset", [("half_plus_two", 3.0), ("tf1_half_plus_two", 2.0)])
def test_regress(stub, model, offset):
    req = regression_pb2.RegressionRequest(model_spec=model_pb2.ModelSpec(name=model, signature_name="regress"))
    req.input.example_list.examples.extend([example(2.0), example(4.0)])
    resp = stub.Regress(req, timeout=30)
    assert [r.value for r in resp.result.regressions] == [1.0 + offset, 2.0 + offset]


def test_regress_with_context(stub):
    # ExampleListWithContext: the context's features reach every example; an example's own features win.
    req = regression_pb2.RegressionRequest(
        model_spec=model_pb2.ModelSpec(name="half_plus_two", signature_name="regress")
    )
    req.input.example_list_with_context.context.CopyFrom(example(4.0))
    req.input.example_list_with_context.examples.extend([example_pb2.Example(), example(2.0)])
    resp = stub.Regress(req, timeout=30)
    assert [r.value for r in resp.result.regressions] == [5.0, 4.0]


def test_classify_on_predict_signature_rejected(stub):
    # Without --enable_signature_method_name_check TF Serving judges the signature by its shape: no "inputs".
    req = classification_pb2.ClassificationRequest(model_spec=model_pb2.ModelSpec(name="half_plus_two"))
    req.input.example_list.examples.append(example(1.0))
    e = rpc_error(stub.Classify, req)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.details() == "No classification inputs found in SignatureDef: serving_default"


def test_classify_empty_input_rejected(stub):
    req = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name="half_plus_two", signature_name="classify")
    )
    e = rpc_error(stub.Classify, req)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty" in e.details().lower()


def test_multi_inference(stub):
    req = inference_pb2.MultiInferenceRequest()
    for sig, method in (("classify", CLASSIFY), ("regress", REGRESS)):
        t = req.tasks.add(method_name=method)
        t.model_spec.name = "half_plus_two"
        t.model_spec.signature_name = sig
    req.input.example_list.examples.extend([example(2.0)])
    resp = stub.MultiInference(req, timeout=30)
    assert len(resp.results) == 2
    assert resp.results[0].classification_result.classifications[0].classes[1].label == "positive"
    assert resp.results[1].regression_result.regressions[0].value == 4.0
    assert resp.results[1].model_spec.signature_name == "regress"


def test_multi_inference_duplicate_signature_rejected(stub):
    req = inference_pb2.MultiInferenceRequest()
    for _ in range(2):
        t = req.tasks.add(method_name=REGRESS)
        t.model_spec.name = "half_plus_two"
        t.model_spec.signature_name = "regress"
    req.input.example_list.examples.append(example(1.0))
    e = rpc_error(stub.MultiInference, req)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "Duplicate" in e.details()


# ----- GetModelMetadata / GetModelStatus -------------------------------------------------------------------------
def test_metadata(grpc_client):
    sigs = grpc_client.metadata()
    assert {"serving_default", "classify", "regress", "strings"} <= set(sigs)
    assert sigs["classify"].method_name == CLASSIFY
    assert sigs["regress"].method_name == REGRESS
    assert sigs["serving_default"].inputs["x"].dtype == 1  # DT_FLOAT
    assert [d.size for d in sigs["serving_default"].inputs["x"].tensor_shape.dim] == [-1]


def test_metadata_response_spec_and_tf1(stub):
    req = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name="tf1_half_plus_two"), metadata_field=["signature_def"]
    )
    resp = stub.GetModelMetadata(req, timeout=30)
    assert resp.model_spec.name == "tf1_half_plus_two" and resp.model_spec.version.value == 1
    sdm = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sdm)
    assert sdm.signature_def["classify"].method_name == CLASSIFY


@pytest.mark.parametrize("fields", [[], ["nope"]])
def test_metadata_bad_fields(stub, fields):
    req = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name="half_plus_two"), metadata_field=fields
    )
    assert rpc_error(stub.GetModelMetadata, req).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_model_status(grpc_client):
    st = grpc_client.status()
    states = {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state) for s in st.model_version_status}
    assert states == {1: "AVAILABLE", 2: "AVAILABLE"}
    one = grpc_client.status(version=1)
    assert [s.version for s in one.model_version_status] == [1]
    assert one.model_version_status[0].status.error_code == 0


def test_model_status_unknown(grpc_client):
    with pytest.raises(ServingClientError) as e:
        grpc_client.status(model_name="no_such_model")
    assert e.value.code == "NOT_FOUND" and "no_such_model" in e.value.message
    with pytest.raises(ServingClientError) as e:
        grpc_client.status(version=42)
    assert e.value.code == "NOT_FOUND"


def test_profiler_service_with_valid_trace_request(server, grpc_client, tmp_path):
    """As TF Serving's own test: TensorFlow's profiler client asks the model port for a trace, which lands in the
    log directory TensorBoard's profile plugin reads."""
    import threading

    from tensorflow.python.profiler import profiler_client

    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            grpc_client.predict({"x": [1.0, 2.0]})

    worker = threading.Thread(target=load)
    worker.start()
    try:
        profiler_client.trace(f"grpc://{server.grpc}", str(tmp_path), 2000)
    finally:
        stop.set()
        worker.join(30)
    assert list(tmp_path.rglob("*.xplane.pb")), list(tmp_path.rglob("*"))
