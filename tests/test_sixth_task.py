"""A sixth task of existing kinds, declared in one place (``tests/fixtures/chunking_task.py``, named in
``MTNLP_TASK_MODULES``), goes the whole way with no other change: ingest, schema, Transform, training, the
Evaluator, the serving signatures, ``mtnlp evaluate`` and ``mtnlp predict``. So does a second sequence head
beside translation's (``tests/fixtures/reversal_task.py``): its signature and output are named after it.

Everything runs in subprocesses: the test process keeps the five built-in tasks (the committed schema, the other
tests' registry), as a user's checkout would without the variable."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import subprocess
import sys

import pytest

from mtnlp.model.tasks import TASK_MODULES_VARIABLE
from tests.conftest import DATA, run_cli
from tests.fixtures.chunks import chunk_tags
from tests.serving.conftest import ServerProcess

pytestmark = pytest.mark.slow

ENV = {TASK_MODULES_VARIABLE: "tests.fixtures.chunking_task,tests.fixtures.reversal_task"}
RECORDS = 150  # per task and split


def reversed_words(text: str) -> str:
    """The reversal task's target (``tests/fixtures/reversal_task.py``): the sentence's words in reverse order."""
    return " ".join(reversed(text.split()))


def _records(task: str, split: str) -> list[dict]:
    with gzip.open(DATA / task / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(RECORDS), f)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    """The tagging and translation data, the chunking task's folder made from tagging (chunks from the gold POS
    tags) and the reversal task's from translation's English side."""
    data = tmp_path_factory.mktemp("sixth") / "data"
    for split in ("train", "validation"):
        tagging, translation = _records("tagging", split), _records("translation", split)
        for task, lines in (
            ("tagging", tagging),
            ("chunking", [{"tokens": r["tokens"], "chunk": chunk_tags(r["pos"])} for r in tagging]),
            ("translation", translation),
            ("reversal", [{"text": r["source"], "reversed": reversed_words(r["source"])} for r in translation]),
        ):
            (data / task).mkdir(parents=True, exist_ok=True)
            with open(data / task / f"{split}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in lines)
    return data


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sixth-run") / "workdir"
    result = run_cli(
        "run",
        "--profile",
        "quick",
        "--workdir",
        str(workdir),
        "--data",
        str(data_dir),
        "--max-records",
        str(RECORDS),
        "--train-steps",
        "80",
        "--tasks",
        "tagging",
        "chunking",
        "translation",
        "reversal",
        env=ENV,
    )
    assert result.returncode == 0, f"pipeline failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return workdir, json.loads((workdir / "run_summary.json").read_text())


def test_the_pipeline_ingests_trains_and_evaluates_the_new_task(run):
    workdir, summary = run
    chunking_files = {path: f for path, f in summary["ingest"]["train"].items() if "chunking" in path}
    assert sum(f["records"] for f in chunking_files.values()) == RECORDS, summary["ingest"]
    chunk = summary["metrics"]["chunk"]
    assert set(chunk) >= {"entity_f1", "token_accuracy"}
    # chunks follow the POS tags closely: even a briefly trained shared encoder learns them
    assert chunk["token_accuracy"] > 0.5, chunk
    # the schema was generated from the registry (the committed one knows five tasks)
    assert "chunking" in (workdir / "schema" / "schema.pbtxt").read_text()
    # two sequence heads, each trained and scored on its own task (BLEU of a briefly trained decoder: any value)
    assert {"translation", "reversal"} <= set(summary["metrics"]), summary["metrics"]
    assert 0 <= summary["metrics"]["reversal"]["bleu"] <= 1


def test_two_sequence_heads_get_signatures_and_outputs_of_their_own(run, tmp_path):
    workdir, summary = run
    code = (
        "import json, sys, tensorflow as tf; from mtnlp.model.serving_ops import load_text_ops; load_text_ops(); "
        "m = tf.saved_model.load(sys.argv[1]); "
        "print(json.dumps({k: sorted(f.structured_outputs) for k, f in m.signatures.items()}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, summary["pushed_to"]],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **ENV},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    assert outputs["translate"] == ["translation"] and outputs["reversal"] == ["reversal"]


def test_mtnlp_evaluate_scores_the_new_head_through_analyze_tokens(run, data_dir, tmp_path):
    workdir, summary = run
    output = tmp_path / "evaluation.json"
    result = run_cli(
        "evaluate",
        summary["pushed_to"],
        "--data",
        str(data_dir),
        "--split",
        "validation",
        "--json",
        str(output),
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    heads = json.loads(output.read_text())["heads"]
    assert heads["chunk"]["signature"] == "analyze_tokens" and heads["chunk"]["examples"] == RECORDS
    assert heads["reversal"]["signature"] == "reversal" and heads["reversal"]["examples"] == RECORDS
    assert heads["translation"]["signature"] == "translate"
    # the same model and data as the Evaluator: the same figure (the summary keeps 4 digits)
    assert heads["chunk"]["metrics"]["token_accuracy"] == pytest.approx(
        summary["metrics"]["chunk"]["token_accuracy"], abs=1e-4
    )


def test_mtnlp_predict_shows_the_new_head(run, tmp_path):
    workdir, _ = run
    server = ServerProcess(
        ["--model_name=mtnlp", f"--model_base_path={workdir / 'serving_model' / 'mtnlp'}"], tmp_path, rest=False
    )
    try:
        server.wait_ready(timeout=180)
        result = run_cli(
            "predict",
            "The old man saw a big dog.",
            "--server",
            server.grpc,
            "--json",
            env={**ENV, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        answer = json.loads(result.stdout)
        assert [a["token"] for a in answer["chunk"]] == answer["tokens"]
        assert {a["tag"] for a in answer["chunk"]} <= {"O", "B-NP", "I-NP"}
        human = run_cli("predict", "The old man saw a big dog.", "--server", server.grpc, "--task", "chunk", env=ENV)
        assert human.returncode == 0 and "CHUNK:" in human.stdout and "POS:" not in human.stdout, human.stdout
        # the second sequence head, asked by its name, through its own signature
        reversal = run_cli("predict", "Go away.", "--server", server.grpc, "--task", "reversal", "--json", env=ENV)
        assert reversal.returncode == 0, reversal.stderr[-3000:]
        assert set(json.loads(reversal.stdout)) >= {"reversal"} and isinstance(
            json.loads(reversal.stdout)["reversal"], str
        )
    finally:
        server.stop()
