"""TF Serving compatibility on real model directories (issue 13, items 1-6): version directory names, shapes left to
TensorFlow, Classify/Regress on TF2 SavedModels, TF1 ParseExample models, IPv6 loopback, start-up messages and exit
codes, and failed loads that never hold up a good version."""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.request

import grpc
import numpy as np
import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from mtnlp.serving.client import ServingClient, to_tensor_proto
from mtnlp.serving.model_server.manager import parse_version, version_directories
from mtnlp.serving.model_server.tensors import to_numpy
from tests.serving.toy_models import copy_version

from .conftest import LOCAL_ONLY, wait_for

State = get_model_status_pb2.ModelVersionStatus.State


def example(x: float) -> example_pb2.Example:
    ex = example_pb2.Example()
    ex.features.feature["x"].float_list.value.append(x)
    return ex


@pytest.fixture(scope="module")
def stub(server, grpc_client):
    channel = grpc.insecure_channel(server.grpc)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def states(client: ServingClient, model: str | None = None) -> dict[int, str]:
    return {s.version: State.Name(s.state) for s in client.status(model_name=model).model_version_status}


# ----- 1. version directories ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,version",
    [
        ("1", 1),
        ("00000123", 123),
        (" 7 ", 7),
        ("\t8\n", 8),
        ("-3", -3),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", None),
        ("99999999999999999999", None),
        ("²", None),
        ("１", None),
        ("٣", None),
        ("+5", None),
        ("1a", None),
        ("", None),
        ("-", None),
        ("1 2", None),
        (".tmp-2", None),
        ("v1", None),
    ],
)
def test_version_names_parse_as_tf_servings_safe_strto64(name, version):
    assert parse_version(name) == version


def test_duplicate_version_names_later_in_byte_order_wins(tmp_path):
    for name in ("7", "007", "other", "²"):
        (tmp_path / name).mkdir()
    assert version_directories(str(tmp_path)) == {7: "7"}  # "007" < "7": "7" wins, as TF Serving's std::map


def test_zero_padded_version_served_from_its_own_directory(grpc_client, rest_base):
    assert states(grpc_client, "tf2_padded") == {123: "AVAILABLE"}
    out = grpc_client.predict({"x": np.array([[1.0], [2.0]], np.float32)}, model_name="tf2_padded", version=123)
    assert out["y"].tolist() == [[1.0], [3.0]]
    with urllib.request.urlopen(f"{rest_base}/v1/models/tf2_padded/versions/123", timeout=30) as r:
        assert json.loads(r.read())["model_version_status"][0]["state"] == "AVAILABLE"


@LOCAL_ONLY
def test_hostile_version_names_are_ignored_and_status_stays_readable(start_server, tmp_path, toy_dir):
    base = tmp_path / "hpt"
    base.mkdir()
    copy_version(toy_dir / "half_plus_two" / "1", base / "00000001")
    for junk in ("²", "１", "99999999999999999999", "latest"):
        (base / junk).mkdir()
    p = start_server("--model_name=hpt", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1")
    with ServingClient(p.grpc, model_name="hpt") as c:
        assert states(c) == {1: "AVAILABLE"}
        # Junk appearing later must not stop polling: a newer version still comes in.
        (base / "٣").mkdir()
        copy_version(toy_dir / "half_plus_two" / "2", base / "0002")
        wait_for(lambda: states(c).get(2) == "AVAILABLE", what="version 2 (from 0002/) to load")
        assert float(c.predict({"x": [0.0]})["y"][0]) == 3.0
    with urllib.request.urlopen(f"http://{p.rest}/v1/models/hpt", timeout=30) as r:  # the readiness probe
        assert r.status == 200
    assert p.proc.poll() is None


# ----- 2. shapes are TensorFlow's business -----------------------------------------------------------------------
def test_vector_fed_to_a_column_signature_runs_as_in_tf_serving(stub, rest_base):
    # tf1_half_plus_three's serving_default declares x as [-1, 1]; TF Serving feeds a [3] vector to the graph.
    req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="tf1_half_plus_three"))
    req.inputs["x"].CopyFrom(to_tensor_proto(np.array([2.0, 3.0, 4.0], np.float32)))
    assert to_numpy(stub.Predict(req, timeout=30).outputs["y"]).tolist() == [4.0, 4.5, 5.0]
    body = json.dumps({"instances": [2.0, 3.0, 4.0]}).encode()
    with urllib.request.urlopen(
        urllib.request.Request(f"{rest_base}/v1/models/tf1_half_plus_three:predict", data=body), timeout=30
    ) as r:
        assert json.loads(r.read()) == {"predictions": [4.0, 4.5, 5.0]}


def test_tf2_signature_shape_is_not_checked_either(grpc_client):
    out = grpc_client.predict({"x": np.array([1.0, 2.0], np.float32)}, model_name="tf2_padded")
    assert out["y"].tolist() == [1.0, 3.0]


def test_dtype_is_still_checked(stub):
    req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="tf1_half_plus_three"))
    req.inputs["x"].CopyFrom(to_tensor_proto(np.array([[1]], np.int64)))
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expects arg[0] to be float but int64 is provided" in e.value.details()


# ----- 3. Classify/Regress on TF2 SavedModels (method name `predict`) ----------------------------------------
def test_tf2_classify_and_regress_on_predict_method_signatures(stub):
    sigmoid = 1 / (1 + np.exp(-np.array([1.0, 3.0])))
    req = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name="tf2_padded", signature_name="classify")
    )
    req.input.example_list.examples.extend([example(1.0), example(2.0)])
    resp = stub.Classify(req, timeout=30)
    assert resp.model_spec.version.value == 123
    assert np.allclose([c.classes[1].score for c in resp.result.classifications], sigmoid, atol=1e-6)
    req = regression_pb2.RegressionRequest(model_spec=model_pb2.ModelSpec(name="tf2_padded", signature_name="regress"))
    req.input.example_list.examples.extend([example(1.0), example(2.0)])
    assert [r.value for r in stub.Regress(req, timeout=30).result.regressions] == [1.0, 3.0]


def test_classify_unknown_signature_is_tf_servings_invalid_argument(stub):
    req = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name="tf2_padded", signature_name="nope")
    )
    req.input.example_list.examples.append(example(1.0))
    with pytest.raises(grpc.RpcError) as e:
        stub.Classify(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "No signature was found with the name: nope"


def test_regress_on_a_predict_shaped_signature_is_rejected_by_shape(stub):
    # serving_default takes "x", not the "inputs" a regression signature needs.
    req = regression_pb2.RegressionRequest(model_spec=model_pb2.ModelSpec(name="tf2_padded"))
    req.input.example_list.examples.append(example(1.0))
    with pytest.raises(grpc.RpcError) as e:
        stub.Regress(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "No regression inputs found in SignatureDef" in e.value.details()


@LOCAL_ONLY
def test_method_name_check_flag_restores_the_strict_check(start_server, toy_dir):
    p = start_server(
        "--model_name=padded",
        f"--model_base_path={toy_dir / 'tf2_padded'}",
        "--enable_signature_method_name_check",
        rest=False,
    )
    channel = grpc.insecure_channel(p.grpc)
    req = regression_pb2.RegressionRequest(model_spec=model_pb2.ModelSpec(name="padded", signature_name="regress"))
    req.input.example_list.examples.append(example(1.0))
    with pytest.raises(grpc.RpcError) as e:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Regress(req, timeout=30)
    channel.close()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == (
        "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/predict"
    )


# ----- 4. TF1 ParseExample models, IPv6 loopback -------------------------------------------------------------------
def test_tf1_parse_example_model_with_shapeless_signatures(stub):
    req = regression_pb2.RegressionRequest(
        model_spec=model_pb2.ModelSpec(name="tf1_half_plus_three", signature_name="regress")
    )
    req.input.example_list.examples.extend([example(2.0), example(4.0)])
    assert [r.value for r in stub.Regress(req, timeout=30).result.regressions] == [4.0, 5.0]
    req = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name="tf1_half_plus_three", signature_name="classify")
    )
    req.input.example_list.examples.append(example(0.0))
    scores = [c.score for c in stub.Classify(req, timeout=30).result.classifications[0].classes]
    assert scores == pytest.approx([0.5, 0.5])


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@LOCAL_ONLY
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_both_listeners_accept_ipv6_loopback(start_server, toy_dir):
    p = start_server(
        "--model_name=hpt", f"--model_base_path={toy_dir / 'half_plus_two'}", "--bind_address=127.0.0.1,::1"
    )
    with ServingClient(f"[::1]:{p.grpc_port}", model_name="hpt") as c:
        assert float(c.predict({"x": [0.0]})["y"][0]) == 3.0
    with ServingClient(f"localhost:{p.grpc_port}", model_name="hpt") as c:
        assert float(c.predict({"x": [0.0]})["y"][0]) == 3.0
    with urllib.request.urlopen(f"http://[::1]:{p.rest_port}/v1/models/hpt", timeout=30) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{p.rest_port}/v1/models/hpt", timeout=30) as r:
        assert r.status == 200


# ----- 5. start-up messages and exit codes ------------------------------------------------------------------------
@LOCAL_ONLY
def test_initial_load_failure_reported_as_tf_serving(start_server, tmp_path, toy_dir):
    base = tmp_path / "broken"
    base.mkdir()
    copy_version(toy_dir / "broken" / "3", base / "3")
    p = start_server("--model_name=broken", f"--model_base_path={base}", "--max_num_load_retries=0", ready=False)
    assert p.wait_exit(90) == 255
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: broken version: 3} due to error: NOT_FOUND: Could not find meta graph def"
    ) in p.log()


@LOCAL_ONLY
def test_unknown_argument_is_reported_and_the_server_starts(start_server, toy_dir):
    p = start_server("--bogus_flag=1", "--model_name=hpt", f"--model_base_path={toy_dir / 'half_plus_two'}", rest=False)
    with ServingClient(p.grpc, model_name="hpt") as c:
        assert float(c.predict({"x": [0.0]})["y"][0]) == 3.0
    assert "unknown argument: --bogus_flag=1" in p.log()


@LOCAL_ONLY
def test_rest_port_equal_to_grpc_port_skips_rest(start_server, toy_dir):
    from .conftest import free_port

    port = free_port()
    p = start_server(
        "--model_name=hpt",
        f"--model_base_path={toy_dir / 'half_plus_two'}",
        f"--port={port}",
        f"--rest_api_port={port}",
        rest=False,
        ready=False,
    )
    p.grpc_port = port  # the flags given last win over the fixture's own port
    p.wait_ready()
    with ServingClient(f"127.0.0.1:{port}", model_name="hpt") as c:
        assert float(c.predict({"x": [0.0]})["y"][0]) == 3.0
    assert "Skipped exporting HTTP/REST API." in p.log()


# ----- 6. failed loads never hold up a good version ---------------------------------------------------------------
@LOCAL_ONLY
def test_newer_version_cancels_retries_of_a_broken_one(start_server, tmp_path, toy_dir):
    base = tmp_path / "hpt"
    base.mkdir()
    copy_version(toy_dir / "half_plus_two" / "1", base / "1")
    # Retries every 60 s (TF Serving's default interval), five of them: the broken version would block for minutes.
    p = start_server(
        "--model_name=hpt",
        f"--model_base_path={base}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=5",
        "--load_retry_interval_micros=60000000",
        "--num_load_threads=1",
    )
    with ServingClient(p.grpc, model_name="hpt") as c:
        copy_version(toy_dir / "broken" / "3", base / "3")

        def retrying_with_error():
            st = {s.version: s for s in c.status().model_version_status}
            return 3 in st and st[3].state == State.Value("LOADING") and st[3].status.error_message

        wait_for(retrying_with_error, what="version 3 to fail and wait for its retry, with its error in the status")
        start = time.monotonic()
        copy_version(toy_dir / "half_plus_two" / "2", base / "4")
        wait_for(lambda: states(c).get(4) == "AVAILABLE", timeout=30, what="version 4 to load")
        assert time.monotonic() - start < 30
        st = {s.version: s for s in c.status().model_version_status}
        assert st[3].state == State.Value("END") and st[3].status.error_code != 0
        assert float(c.predict({"x": [0.0]})["y"][0]) == 3.0
    assert "Cancelled loading of servable version {name: hpt version: 3}" in p.log()


@LOCAL_ONLY
def test_deleting_a_retrying_version_cancels_its_retries(start_server, tmp_path, toy_dir):
    base = tmp_path / "hpt"
    base.mkdir()
    copy_version(toy_dir / "half_plus_two" / "1", base / "1")
    p = start_server(
        "--model_name=hpt",
        f"--model_base_path={base}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=5",
        "--load_retry_interval_micros=60000000",
    )
    with ServingClient(p.grpc, model_name="hpt") as c:
        copy_version(toy_dir / "broken" / "3", base / "3")
        wait_for(lambda: states(c).get(3) == "LOADING", what="version 3 to be loading")
        shutil.rmtree(base / "3")
        wait_for(lambda: 3 not in states(c), what="version 3 to be forgotten")
        assert states(c) == {1: "AVAILABLE"}
    assert "Cancelled loading of servable version {name: hpt version: 3}" in p.log()
