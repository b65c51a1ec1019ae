"""`mtnlp evaluate`: a pushed model scored through its serving signatures agrees with the pipeline's Evaluator."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from mtnlp.serving.evaluate import EvaluationError, read_task_data, resolve_saved_model
from tests.conftest import DATA, FIXTURE_RECORDS, run_cli


@pytest.mark.slow
def test_evaluate_matches_the_pipeline_evaluator(pipeline_run, tmp_path):
    out = tmp_path / "results.json"
    # the same records the fixture's Evaluator saw: the first FIXTURE_RECORDS of each validation file
    result = run_cli(
        "evaluate",
        str(pipeline_run.serving_model_base),
        "--data",
        str(DATA),
        "--split",
        "validation",
        "--max-records",
        str(FIXTURE_RECORDS),
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads(out.read_text())
    assert scored["model"] == str(pipeline_run.pushed_model_dir)
    evaluator = pipeline_run.summary["metrics"]
    for head in ("pos", "ner", "sentiment", "relation", "translation"):
        assert head in scored["heads"], result.stdout
        for metric, value in scored["heads"][head]["metrics"].items():
            assert value == pytest.approx(evaluator[head][metric], abs=2e-4), (head, metric)
    assert scored["heads"]["pos"]["signature"] == "analyze_tokens"
    assert scored["heads"]["translation"]["signature"] == "translate"
    assert "token_accuracy=" in result.stdout and "bleu=" in result.stdout


@pytest.mark.slow
def test_evaluate_reports_malformed_records_and_missing_heads(pipeline_run, tmp_path):
    data = tmp_path / "data"
    (data / "sentiment").mkdir(parents=True)
    with gzip.open(DATA / "sentiment" / "validation.jsonl.gz", "rt") as f:
        good = [next(f) for _ in range(20)]
    (data / "sentiment" / "test.jsonl").write_text("".join(good) + '{"text": "fine", "label": "neutral"}\n')
    out = tmp_path / "results.json"
    result = run_cli("evaluate", str(pipeline_run.pushed_model_dir), "--data", str(data), "--json", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads(out.read_text())
    assert scored["heads"]["sentiment"]["examples"] == 20
    assert scored["data"]["sentiment"]["rejected"] == 1
    assert "test.jsonl:21: field 'label': unknown label 'neutral'" in result.stdout
    assert set(scored["heads"]) == {"sentiment"}  # only the tasks the data has


def test_a_folder_without_a_saved_model_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="holds no SavedModel"):
        resolve_saved_model(str(tmp_path / "empty"))
    with pytest.raises(EvaluationError, match="does not exist"):
        resolve_saved_model(str(tmp_path / "missing"))


def test_data_without_task_folders_is_a_clear_error(tmp_path):
    with pytest.raises(EvaluationError, match="no task folder"):
        read_task_data(str(tmp_path))
    (tmp_path / "tagging").mkdir()
    shutil.copy(DATA / "tagging" / "validation.jsonl.gz", tmp_path / "tagging" / "dev.jsonl.gz")
    assert list(read_task_data(str(tmp_path), max_records=5)) == ["tagging"]
    with pytest.raises(EvaluationError, match="validation.jsonl"):
        read_task_data(str(tmp_path), splits=["validation"])


def test_a_model_that_fails_to_load_names_its_path(tmp_path):
    version = tmp_path / "model" / "3"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"not a SavedModel")
    result = run_cli("evaluate", str(tmp_path / "model"), "--data", str(DATA), "--max-records", "1")
    assert result.returncode == 2
    assert f"cannot load the SavedModel in {version}" in result.stderr
