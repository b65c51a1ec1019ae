"""The REST API: /v1/models/... status, metadata, :predict (row and columnar, b64), :classify, :regress, metrics."""

from __future__ import annotations

import base64
import json
import math
import urllib.error
import urllib.request

import pytest


def call(base: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if r.headers.get_content_type() == "application/json" else text
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_status(rest_base):
    status, doc = call(rest_base, "/v1/models/half_plus_two")
    assert status == 200
    versions = {v["version"]: v for v in doc["model_version_status"]}
    assert set(versions) == {"1", "2"}
    assert versions["2"]["state"] == "AVAILABLE"
    assert versions["2"]["status"] == {"error_code": "OK", "error_message": ""}


@pytest.mark.parametrize("path,version", [("/versions/1", "1"), ("/labels/canary", "2")])
def test_status_of_version_and_label(rest_base, path, version):
    status, doc = call(rest_base, "/v1/models/half_plus_two" + path)
    assert status == 200
    assert [v["version"] for v in doc["model_version_status"]] == [version]


def test_status_unknown_model_404(rest_base):
    status, doc = call(rest_base, "/v1/models/no_such_model")
    assert status == 404 and "no_such_model" in doc["error"]


def test_metadata(rest_base):
    status, doc = call(rest_base, "/v1/models/half_plus_two/versions/1/metadata")
    assert status == 200
    assert doc["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "1"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert sigs["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sigs["classify"]["method_name"] == "tensorflow/serving/classify"


def test_predict_row_format(rest_base):
    status, doc = call(rest_base, "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0]})
    assert status == 200
    assert doc == {"predictions": [{"batch_size": 2, "y": 3.5}, {"batch_size": 2, "y": 4.0}]}


def test_predict_row_format_named_inputs_single_output(rest_base):
    body = {"signature_name": "two_inputs", "instances": [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]}
    status, doc = call(rest_base, "/v1/models/half_plus_two:predict", body)
    assert status == 200 and doc == {"predictions": [3.0, 7.0]}


def test_predict_columnar_format(rest_base):
    body = {"signature_name": "two_inputs", "inputs": {"a": [1.0, 2.0], "b": [0.5, 0.5]}}
    status, doc = call(rest_base, "/v1/models/half_plus_two:predict", body)
    assert status == 200 and doc == {"outputs": [1.5, 2.5]}
    status, doc = call(rest_base, "/v1/models/half_plus_two/versions/1:predict", {"inputs": [4.0]})
    assert status == 200 and doc == {"outputs": {"batch_size": [1], "y": [4.0]}}


def test_predict_by_label(rest_base):
    status, doc = call(rest_base, "/v1/models/half_plus_two/labels/stable:predict", {"instances": [0.0]})
    assert status == 200 and doc["predictions"][0]["y"] == 2.0


def test_predict_b64_and_strings(rest_base):
    raw = "naïve".encode()
    body = {"signature_name": "strings", "instances": [{"b64": base64.b64encode(raw).decode()}, "ab"]}
    status, doc = call(rest_base, "/v1/models/half_plus_two:predict", body)
    assert status == 200
    assert doc["predictions"] == [{"length": 5, "upper": "NAïVE"}, {"length": 2, "upper": "AB"}]


def test_predict_unknown_signature_400(rest_base):
    status, doc = call(rest_base, "/v1/models/half_plus_two:predict", {"signature_name": "nope", "instances": [1]})
    assert status == 400 and "nope" in doc["error"]


def test_predict_missing_model_404(rest_base):
    status, doc = call(rest_base, "/v1/models/nope:predict", {"instances": [1.0]})
    assert status == 404 and "nope" in doc["error"]


def test_predict_missing_version_404(rest_base):
    status, doc = call(rest_base, "/v1/models/half_plus_two/versions/7:predict", {"instances": [1.0]})
    assert status == 404


def test_classify_and_regress(rest_base):
    body = {"signature_name": "classify", "examples": [{"x": 0.0}, {"x": 10.0}]}
    status, doc = call(rest_base, "/v1/models/tf1_half_plus_two:classify", body)
    assert status == 200
    assert [[c[0] for c in r] for r in doc["results"]] == [["negative", "positive"]] * 2
    assert doc["results"][1][1][1] == pytest.approx(1 / (1 + math.exp(-4.0)), abs=1e-6)
    body = {"signature_name": "regress", "context": {"x": 4.0}, "examples": [{}, {"x": 2.0}]}
    status, doc = call(rest_base, "/v1/models/half_plus_two/versions/1:regress", body)
    assert status == 200 and doc == {"results": [4.0, 3.0]}


def test_malformed_path(rest_base):
    status, doc = call(rest_base, "/v1/models/half_plus_two:explode", {"instances": [1.0]})
    assert status in (400, 404) and "Malformed request" in doc["error"]


def test_prometheus_metrics(server, rest_base):
    call(rest_base, "/v1/models/half_plus_two:predict", {"instances": [1.0]})
    req = urllib.request.urlopen(rest_base + "/monitoring/prometheus/metrics", timeout=30)
    text = req.read().decode()
    assert req.headers.get_content_type() == "text/plain"
    assert ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK"}' in text
    assert ":tensorflow:serving:request_latency_bucket" in text
    if server.process is not None:  # our additions
        assert ":tensorflow:cc:saved_model:load_attempt_count" in text
        assert 'model_version_state{model_name="half_plus_two",version="2",state="AVAILABLE"} 1' in text
