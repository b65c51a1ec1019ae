"""The real pipeline on a tiny slice of the bundled data (shared session fixture), and its pushed model."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import h5py
import pytest
import tensorflow as tf

from mtnlp.model.tasks import NER_TAGS, SEMEVAL_RELATIONS, SENTIMENT_LABELS, UPOS_TAGS, all_heads, select_tasks
from tests.conftest import FIXTURE_RECORDS, FIXTURE_TASKS, run_cli

pytestmark = pytest.mark.slow
HELPERS = os.path.join(os.path.dirname(__file__), "helpers")
HEADS = all_heads(select_tasks(FIXTURE_TASKS))
COMPONENTS = {
    "JsonlExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomaliesGate",
    "Transform",
    "ServedBaseline",
    "Trainer",
    "Evaluator",
    "VersionedPusher",
}


def _fresh_python(script: str, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, os.path.join(HELPERS, script), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_component_ran_and_a_blessed_model_was_pushed(pipeline_run):
    summary = pipeline_run.summary
    assert summary["status"] == "succeeded"
    assert {c["component"] for c in summary["components"]} == COMPONENTS
    assert all(c["state"] == "COMPLETE" for c in summary["components"]), summary["components"]
    assert summary["blessed"] and summary["pushed"] and summary["pushed_version"] == 1
    assert sorted(os.listdir(pipeline_run.serving_model_base)) == ["1"]  # nothing half-written beside it
    assert pipeline_run.pushed_model_dir == pipeline_run.serving_model_base / "1"
    assert (pipeline_run.pushed_model_dir / "saved_model.pb").exists()


def test_summary_reports_each_heads_metrics_and_the_ingest_counts(pipeline_run):
    metrics = pipeline_run.summary["metrics"]
    for head in HEADS:
        for metric in head.metrics:
            assert 0.0 <= metrics[head.name][metric] <= 1.0, (head.name, metric)
    ingest = pipeline_run.summary["ingest"]
    assert sum(f["records"] for f in ingest["train"].values()) == len(FIXTURE_TASKS) * FIXTURE_RECORDS
    assert (
        "entity_f1=" in pipeline_run.stdout
        and "bleu=" in pipeline_run.stdout
        and "pushed: version 1" in pipeline_run.stdout
    )


def test_tensorboard_logs_are_in_the_model_run_output(pipeline_run):
    logdir = pipeline_run.summary["tensorboard_logdir"]
    events = [f for _, _, files in os.walk(logdir) for f in files if f.startswith("events.out.tfevents")]
    assert events


@pytest.fixture(scope="module")
def signature_answers(pipeline_run) -> dict:
    """Every signature's answers from the pushed model, loaded in a fresh process with Keras blocked (run once)."""
    return _fresh_python("call_signatures.py", str(pipeline_run.pushed_model_dir))


def test_pushed_model_answers_every_signature_on_raw_text_without_keras(signature_answers):
    result = signature_answers
    assert result["blocked_modules_loaded"] == []
    assert {
        "serving_default",
        "analyze",
        "analyze_tokens",
        "relation",
        "serving_tf_example",
        "transform_features",
        "translate",
    } <= set(result["signatures"])

    analyze = result["analyze"]
    assert analyze["tokens"][0][:6] == ["Apple", "sued", "Samsung", "in", "California", "."]
    assert analyze["length"] == [6, 7]
    for row, length in zip(range(2), analyze["length"]):
        assert all(t in UPOS_TAGS for t in analyze["pos_tags"][row][:length])
        assert all(t in NER_TAGS for t in analyze["ner_tags"][row][:length])
        assert set(analyze["pos_tags"][row][length:]) <= {""}  # padding is blank, not a tag
        # IOB2-constrained decoding: an I-X only continues a B-X or I-X
        tags = ["O"] + analyze["ner_tags"][row][:length]
        assert all(not t.startswith("I-") or prev[2:] == t[2:] for prev, t in zip(tags, tags[1:])), tags
    assert all(label in SENTIMENT_LABELS for label in analyze["sentiment_label"])
    assert all(abs(sum(p) - 1) < 1e-4 for p in analyze["sentiment_probabilities"])

    by_tokens = result["analyze_tokens"]
    assert by_tokens["length"] == [6, 2]
    assert by_tokens["tokens"][1] == ["Hi", "!", "", "", "", ""]

    relation = result["relation"]
    assert all(label in SEMEVAL_RELATIONS for label in relation["relation_label"])
    assert len(relation["relation_probabilities"][0]) == len(SEMEVAL_RELATIONS)


def test_pushed_model_translates_real_sentences_into_spanish_words_without_keras(signature_answers):
    result = signature_answers
    assert result["blocked_modules_loaded"] == []
    translate = result["translate"]
    pieces = set(result["target_vocabulary"])
    assert len(translate["batch"]) == len(translate["sentences"])
    for translation in translate["batch"]:
        assert isinstance(translation, str) and translation.strip()  # one non-empty string per input
        assert "[UNK]" not in translation and "##" not in translation, translation  # detokenized, no holes
        # every word is spelled with the WordPiece pieces the pipeline learned
        assert all(_spellable(word, pieces) for word in re.findall(r"\w+", translation)), translation
    assert any(any(c.isalpha() for c in t) for t in translate["batch"]), translate["batch"]
    # mixed lengths in one batch: each row decodes exactly as it does alone
    assert translate["batch"] == translate["alone"]


def test_pushed_model_answers_with_its_directory_moved_away(pipeline_run, signature_answers, tmp_path):
    """Nothing is read from the model's files after loading: a version swap or a cleanup that moves or
    deletes a served version's directory must not break the requests it still answers."""
    copy = tmp_path / "1"
    shutil.copytree(pipeline_run.pushed_model_dir, copy)
    moved = _fresh_python("call_signatures.py", str(copy), "--move-away")
    in_place = signature_answers
    assert not copy.exists()
    for signature in ("analyze", "analyze_tokens", "relation", "translate"):
        assert moved[signature] == in_place[signature], signature
    # the translation vocabulary alone is KBs (here 4 KB a request before tables were made at load)
    assert moved["bytes_read_per_request"] < 1024, moved["bytes_read_per_request"]


def test_pushed_model_holds_weights_only_no_optimizer_state(pipeline_run):
    stored = [
        name for name, _ in tf.train.list_variables(str(pipeline_run.pushed_model_dir / "variables" / "variables"))
    ]
    assert any("embedding" in name for name in stored), stored[:20]
    assert not [name for name in stored if "optimizer" in name], "the optimizer's slots are not served"
    # nor pushed beside it: the warm-start files in assets.extra hold the Keras model's weights only
    warm_start_files = list(pipeline_run.pushed_model_dir.glob("assets.extra/*/model.keras"))
    assert warm_start_files
    with zipfile.ZipFile(warm_start_files[0]) as archive, archive.open("model.weights.h5") as weights:
        with h5py.File(io.BytesIO(weights.read())) as h5:
            assert "optimizer" not in h5 and "layers" in h5, list(h5)


def _spellable(word: str, pieces: set[str]) -> bool:
    """Whether a word is a concatenation of a piece and "##" continuation pieces."""
    reachable = [True] + [False] * len(word)
    for end in range(1, len(word) + 1):
        reachable[end] = any(
            reachable[start] and (word[start:end] if start == 0 else "##" + word[start:end]) in pieces
            for start in range(end)
        )
    return reachable[-1]


def test_pushed_model_uses_only_core_tensorflow_and_tf_text_ops(pipeline_run):
    audit = _fresh_python("audit_ops.py", str(pipeline_run.pushed_model_dir))
    assert audit["unregistered"] == [] and audit["python_ops"] == []
    assert audit["per_call_initialisation"] == []  # lookup tables are filled once, at load
    assert audit["text_ops"] == ["WordpieceTokenizeWithOffsets"]  # the target-side WordPiece tokenizer
    assert {"StringSplitV2", "StaticRegexReplace", "MatMul"} <= set(audit["ops"])  # the in-graph tokenizer is there


def test_a_regressing_candidate_is_not_blessed_and_the_serving_model_stays(pipeline_run):
    """Rerun in the same workdir with a barely trained model (from scratch: a retrain would otherwise start from
    the served model): the served model is now the baseline."""
    result = run_cli(
        "run",
        "--profile",
        "quick",
        "--workdir",
        str(pipeline_run.workdir),
        "--max-records",
        str(FIXTURE_RECORDS),
        "--train-steps",
        "2",
        "--tasks",
        *FIXTURE_TASKS,
        "--set",
        "training.warm_start=false",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((pipeline_run.workdir / "run_summary.json").read_text())
    states = {c["component"]: c["state"] for c in summary["components"]}
    assert states["JsonlExampleGen"] == states["Transform"] == "CACHED"  # same data: not recomputed
    assert states["Trainer"] == "COMPLETE"
    assert summary["baseline_version"] == 1 and summary["warm_start"] is None
    assert summary["blessed"] is False and summary["pushed"] is False
    assert any("vs baseline" in failure for failure in summary["blessing_failures"]), summary["blessing_failures"]
    assert set(summary["metric_deltas"]) == {h.name for h in HEADS} | {"overall"}  # vs the baseline
    assert sorted(os.listdir(pipeline_run.serving_model_base)) == ["1"]
    assert "not blessed" in result.stdout
