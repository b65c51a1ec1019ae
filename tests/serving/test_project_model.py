"""The pipeline's pushed model, served by our server, queried with `mtnlp predict` (slow: needs `pipeline_run`)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from mtnlp import cli as mtnlp_cli
from mtnlp.model.tasks import UPOS_TAGS
from mtnlp.serving.client import RestClient, ServingClient

from .conftest import LOCAL_ONLY, ServerProcess

pytestmark = [pytest.mark.slow, LOCAL_ONLY]

DT_STRING, DT_FLOAT, DT_INT32, DT_INT64 = 7, 1, 3, 9
ANALYZE_OUTPUTS = {
    "tokens": DT_STRING,
    "length": DT_INT32,
    "sentiment_label": DT_STRING,
    "sentiment_probability": DT_FLOAT,
    "sentiment_probabilities": DT_FLOAT,
    "pos_tags": DT_STRING,
    "ner_tags": DT_STRING,
}
UPOS = set(UPOS_TAGS)
NER = re.compile(r"^(O|[BI]-(PER|ORG|LOC))$")


@pytest.fixture(scope="module")
def served(pipeline_run, server_logs):
    p = ServerProcess(
        [f"--model_name={pipeline_run.model_name}", f"--model_base_path={pipeline_run.serving_model_base}"], server_logs
    ).wait_ready(180)
    yield p
    p.stop()


def test_signature_contract(served, pipeline_run):
    with ServingClient(served.grpc, model_name=pipeline_run.model_name) as c:
        sigs = c.metadata()
    assert {"serving_default", "analyze", "analyze_tokens", "relation", "serving_tf_example", "translate"} <= set(sigs)
    for key in ("serving_default", "analyze"):
        assert {k: v.dtype for k, v in sigs[key].inputs.items()} == {"text": DT_STRING}
        assert {k: v.dtype for k, v in sigs[key].outputs.items()} == ANALYZE_OUTPUTS
    assert {k: v.dtype for k, v in sigs["analyze_tokens"].inputs.items()} == {"tokens": DT_STRING}
    assert {k: v.dtype for k, v in sigs["relation"].inputs.items()} == {
        "text": DT_STRING,
        "e1_start": DT_INT64,
        "e1_end": DT_INT64,
        "e2_start": DT_INT64,
        "e2_end": DT_INT64,
    }
    assert {k: v.dtype for k, v in sigs["relation"].outputs.items()} == {
        "relation_label": DT_STRING,
        "relation_probability": DT_FLOAT,
        "relation_probabilities": DT_FLOAT,
    }
    assert {k: v.dtype for k, v in sigs["serving_tf_example"].inputs.items()} == {"examples": DT_STRING}
    assert {k: v.dtype for k, v in sigs["translate"].inputs.items()} == {"text": DT_STRING}
    assert {k: v.dtype for k, v in sigs["translate"].outputs.items()} == {"translation": DT_STRING}


def test_warmup_file_replayed(served, pipeline_run):
    """The pushed model's warmup requests name the signatures clients call, and the server replays every one
    of them through those signatures before the version serves (a request a signature refused fails the load)."""
    versions = sorted(int(p.name) for p in pipeline_run.serving_model_base.iterdir() if p.name.isdigit())
    path = pipeline_run.serving_model_base / str(versions[-1]) / "assets.extra" / "tf_serving_warmup_requests"
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    assert [r.predict_log.request.model_spec.signature_name for r in records] == [
        "serving_default",
        "relation",
        "translate",
    ]
    assert f"Number of warmup records read: {len(records)}" in served.log()


def test_batch_outputs_shapes(served, pipeline_run):
    texts = ["Apple sued Samsung in California.", "I loved this wonderful film."]
    with ServingClient(served.grpc, model_name=pipeline_run.model_name, timeout=60) as c:
        out = c.predict({"text": texts})
        rel = c.predict(
            {
                "text": ["The company makes chairs."],
                "e1_start": np.array([4], np.int64),
                "e1_end": np.array([11], np.int64),
                "e2_start": np.array([18], np.int64),
                "e2_end": np.array([24], np.int64),
            },
            "relation",
        )
        tok = c.predict({"tokens": out["tokens"]}, "analyze_tokens")
    b, t = out["tokens"].shape
    assert b == 2 and out["pos_tags"].shape == (b, t) and out["ner_tags"].shape == (b, t)
    assert out["sentiment_probabilities"].shape == (2, 2)
    assert np.allclose(out["sentiment_probabilities"].sum(axis=1), 1.0, atol=1e-4)
    for i, n in enumerate(out["length"].tolist()):
        assert 0 < n <= t
        assert all(x == b"" for x in out["tokens"][i, n:])
        assert {x.decode() for x in out["pos_tags"][i, :n]} <= UPOS
        assert all(NER.match(x.decode()) for x in out["ner_tags"][i, :n])
    assert {x.decode() for x in out["sentiment_label"]} <= {"negative", "positive"}
    assert rel["relation_probabilities"].shape == (1, 19)
    assert tok["length"].tolist() == out["length"].tolist()


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_mtnlp_predict_human_and_json(served, pipeline_run, capsys, transport):
    server = served.grpc if transport == "grpc" else served.rest
    extra = ["--rest"] if transport == "rest" else []
    rc = mtnlp_cli.main(
        [
            "predict",
            "Apple sued Samsung in California.",
            "--server",
            server,
            "--model-name",
            pipeline_run.model_name,
            *extra,
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert re.search(r"Sentiment: (negative|positive) \(p=0\.\d{3}\)", out.out)
    assert "Entities:" in out.out and "POS:" in out.out

    rc = mtnlp_cli.main(
        [
            "predict",
            "The [[company]] makes [[chairs]].",
            "--server",
            server,
            "--json",
            "--model-name",
            pipeline_run.model_name,
            *extra,
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    assert doc["text"] == "The company makes chairs."
    assert doc["relation"]["e1"] == {"text": "company", "start": 4, "end": 11}
    assert doc["relation"]["label"] == "Other" or re.match(
        r"^[A-Z][a-z]+-[A-Z][a-z]+\(e[12],e[12]\)$", doc["relation"]["label"]
    )
    assert 0.0 <= doc["relation"]["probability"] <= 1.0
    assert {p["tag"] for p in doc["pos"]} <= UPOS


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_mtnlp_predict_translate(served, pipeline_run, capsys, transport):
    server = served.grpc if transport == "grpc" else served.rest
    extra = ["--rest"] if transport == "rest" else []
    rc = mtnlp_cli.main(
        [
            "predict",
            "--task",
            "translate",
            "Where is the station?",
            "--server",
            server,
            "--model-name",
            pipeline_run.model_name,
            *extra,
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    lines = out.out.splitlines()
    assert lines[0] == "Text:      Where is the station?"
    assert lines[1].startswith("Translation: ") and lines[1][len("Translation: ") :].strip(), out.out
    assert "Sentiment:" not in out.out  # only what was asked for

    rc = mtnlp_cli.main(
        [
            "predict",
            "--task",
            "translate",
            "--task",
            "sentiment",
            "Thank you.",
            "--json",
            "--server",
            server,
            "--model-name",
            pipeline_run.model_name,
            *extra,
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    assert isinstance(doc["translation"], str) and doc["translation"].strip()
    assert doc["sentiment"]["label"] in ("negative", "positive")


def test_rest_status_ready(served, pipeline_run):
    st = RestClient(served.rest, model_name=pipeline_run.model_name).status()
    assert any(v["state"] == "AVAILABLE" for v in st["model_version_status"])
