"""`mtnlp serve` and `mtnlp predict` end to end on a stand-in for the pushed model (same signature contract).

The real pushed model is covered by test_project_model.py (slow: it needs the pipeline run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mtnlp import cli as mtnlp_cli
from serving.analysis import align_tokens, iob2_spans, parse_markers

from .conftest import LOCAL_ONLY, REPO, ServerProcess, free_port


# ----- pure helpers -------------------------------------------------------------------------------------------
def test_parse_markers_offsets_on_clean_text():
    m = parse_markers("The [[company]] makes [[chairs]].")
    assert m.text == "The company makes chairs."
    assert [m.text[s:e] for s, e in m.spans] == ["company", "chairs"]
    assert m.spans == [(4, 11), (18, 24)]
    assert parse_markers("no markers").spans == []
    with pytest.raises(ValueError):
        parse_markers("broken [[marker")


def test_iob2_spans():
    tags = ["B-PER", "I-PER", "O", "B-ORG", "B-LOC", "I-LOC", "I-PER", "O"]
    assert iob2_spans(tags) == [(0, 2, "PER"), (3, 4, "ORG"), (4, 6, "LOC"), (6, 7, "PER")]
    assert iob2_spans(["O", "O"]) == []


def test_align_tokens_case_insensitive():
    assert align_tokens("Apple sued Samsung.", ["apple", "sued", "samsung", "."]) == [(0, 5), (6, 10), (11, 18),
                                                                                      (18, 19)]


# ----- end to end -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_workdir(tmp_path_factory):
    from tests.serving.fake_project_model import build

    wd = tmp_path_factory.mktemp("fake_workdir")
    build(wd / "serving_model" / "mtnlp", 1)
    return wd


@pytest.fixture(scope="module")
def mtnlp_serve(fake_workdir, server_logs):
    """`mtnlp serve` as a user starts it (a subprocess), on free ports."""
    if os.environ.get("MTNLP_SERVING_GRPC"):
        pytest.skip("starts its own server")
    grpc_port, rest_port = free_port(), free_port()
    log = open(server_logs / "mtnlp-serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mtnlp.cli", "serve", "--workdir", str(fake_workdir),
                             "--port", str(grpc_port), "--rest-port", str(rest_port)],
                            cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    holder = ServerProcess.__new__(ServerProcess)  # reuse its readiness logic on this process
    holder.proc, holder.grpc_port, holder.rest_port, holder._log = proc, grpc_port, rest_port, log
    holder.log_path = server_logs / "mtnlp-serve.log"
    holder.wait_ready()
    yield holder
    holder.stop()


def predict(capsys, *args: str) -> str:
    rc = mtnlp_cli.main(["predict", *args])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def test_serve_binds_loopback_and_logs_equivalent_command(mtnlp_serve):
    text = mtnlp_serve.log()
    assert "--bind_address=127.0.0.1" in text and f"127.0.0.1:{mtnlp_serve.grpc_port}" in text


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_predict_human(mtnlp_serve, capsys, transport):
    server = mtnlp_serve.grpc if transport == "grpc" else mtnlp_serve.rest
    extra = ["--rest"] if transport == "rest" else []
    out = predict(capsys, "Apple sued Samsung in California.", "--server", server, *extra)
    assert "Sentiment: negative (p=0.900)" in out
    assert "[Apple]ORG sued [Samsung]ORG in [California]LOC." in out
    assert "LOC  'California' (chars 22-32)" in out
    assert "Apple/PROPN sued/VERB Samsung/PROPN" in out


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_predict_json_with_relation(mtnlp_serve, capsys, transport):
    server = mtnlp_serve.grpc if transport == "grpc" else mtnlp_serve.rest
    extra = ["--rest"] if transport == "rest" else []
    doc = json.loads(predict(capsys, "The [[company]] makes [[chairs]].", "--server", server, "--json", *extra))
    assert doc["text"] == "The company makes chairs."
    assert doc["tokens"] == ["The", "company", "makes", "chairs", "."]
    assert doc["sentiment"]["label"] == "positive"
    assert doc["sentiment"]["probabilities"]["positive"] == pytest.approx(0.8)
    assert doc["relation"]["label"] == "Product-Producer(e1,e2)"
    assert doc["relation"]["probability"] == pytest.approx(0.82)
    assert doc["relation"]["e1"] == {"text": "company", "start": 4, "end": 11}
    assert doc["relation"]["e2"] == {"text": "chairs", "start": 18, "end": 24}
    assert [p["tag"] for p in doc["pos"]][-1] == "PUNCT"


def test_predict_task_selection(mtnlp_serve, capsys):
    out = predict(capsys, "Apple sued Samsung.", "--server", mtnlp_serve.grpc, "--task", "sentiment")
    assert "Sentiment:" in out and "Entities:" not in out and "POS:" not in out


def test_predict_unreachable_server_fails_cleanly(capsys):
    rc = mtnlp_cli.main(["predict", "x", "--server", f"127.0.0.1:{free_port()}", "--timeout", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "UNAVAILABLE" in err


def test_predict_wrong_model_name(mtnlp_serve, capsys):
    rc = mtnlp_cli.main(["predict", "x", "--server", mtnlp_serve.grpc, "--model-name", "nope"])
    err = capsys.readouterr().err
    assert rc == 1 and "NOT_FOUND" in err and "nope" in err


def test_serve_without_pushed_model(tmp_path, capsys):
    rc = mtnlp_cli.main(["serve", "--workdir", str(tmp_path)])
    assert rc == 2 and "no pushed model" in capsys.readouterr().err


@LOCAL_ONLY
def test_console_entry_predict_subprocess(mtnlp_serve):
    r = subprocess.run([sys.executable, "-m", "mtnlp.cli", "predict", "Apple sued Samsung.", "--server",
                        mtnlp_serve.grpc, "--json"], cwd=str(REPO), capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ner"]["entities"][0]["text"] == "Apple"
