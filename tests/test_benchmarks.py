"""The benchmark scripts keep running: each one runs with its smallest settings and writes JSON with the expected
keys and positive figures. (They are scripts run by hand; these tests only guard them against rotting.)"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO


def run_benchmark(script: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result


def ran(result: subprocess.CompletedProcess, output) -> dict:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-5000:]}"
    assert "Machine: " in result.stdout and "logical cores" in result.stdout
    document = json.loads(output.read_text())
    assert document["machine"]["logical_cores"] > 0 and document["machine"]["cpu_model"]
    return document


@pytest.mark.parametrize(
    "script", ["training.py", "inference.py", "pipeline.py", "decoding.py", "oov_entities.py", "beam_modes.py"]
)
def test_every_benchmark_states_its_usage(script):
    result = run_benchmark(script, "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--output" in result.stdout and f"python benchmarks/{script}" in result.stdout


def test_the_synthetic_training_batch_weights_each_head_on_its_own_tasks_rows_only():
    from benchmarks.training import mixed_rows, synthetic_batch
    from mtnlp.model.network import model_input_names
    from mtnlp.model.tasks import all_heads, supervised_tasks

    heads = all_heads()
    rows = mixed_rows(supervised_tasks(), 32)
    (inputs, labels, weights), words = synthetic_batch(heads, rows, length=25, target_length=10)
    assert set(inputs) == set(model_input_names(heads))
    real = inputs["token_ids"] > 0
    assert words == real.sum() and 15 <= real.sum(axis=1).min() and real.sum(axis=1).max() == real.shape[1]
    for head in heads:
        mine = np.array([head in task.heads for task in rows])
        assert 0 < mine.sum() < 32
        w = weights[head.name]
        assert (w.reshape(32, -1)[~mine] == 0).all() and (labels[head.name].reshape(32, -1)[~mine] == 0).all()
        if head.kind == "token":
            assert (w[mine] == real[mine]).all()
        elif head.kind == "sequence":
            assert (inputs[head.label_key] == labels[head.name]).all() and (w[mine].sum(axis=1) >= 6).all()
        else:
            assert (w[mine] == 1).all()
    relation = np.array([task.name == "relation" for task in rows])
    assert (inputs["entity_ids"][~relation] == 0).all() and (inputs["entity_ids"][relation].max(axis=1) == 2).all()


def test_the_inference_benchmark_names_the_command_that_makes_a_workdir(tmp_path):
    result = run_benchmark("inference.py", "--workdir", str(tmp_path / "none"), timeout=120)
    assert result.returncode == 2 and "mtnlp run" in result.stderr


@pytest.mark.slow
def test_training_benchmark(tmp_path):
    output = tmp_path / "training.json"
    document = ran(
        run_benchmark(
            "training.py",
            "--quick",
            "--models",
            "mtl",
            "sentiment",
            "--speedups",
            "xla",
            "bf16",
            "--output",
            str(output),
        ),
        output,
    )
    assert {"mtl", "sentiment", "mtl_one_device"} <= set(document["models"])
    for speedup in ("xla", "bf16"):  # each measured, or its failure recorded
        assert (f"{speedup}_over_float32_step_time" in document["summary"]) != (
            f"mtl_{speedup}_failed" in document["summary"]
        )
    for figures in document["models"].values():
        for key in (
            "step_ms_median",
            "examples_per_s",
            "tokens_per_s",
            "encoder_gflops_achieved",
            "fraction_of_matmul_peak",
        ):
            assert figures[key] > 0, key
    assert document["models"]["mtl"]["heads"] == ["pos", "ner", "sentiment", "relation", "translation"]
    assert document["models"]["mtl"]["replicas"] == 2 and document["models"]["mtl_one_device"]["replicas"] == 1
    assert document["matmul_peak"]["gflops_best"] > 0
    assert document["summary"]["mirrored_over_one_device_step_time"] > 0


def test_the_decoding_benchmark_names_the_command_that_makes_a_workdir(tmp_path):
    result = run_benchmark("decoding.py", "--workdir", str(tmp_path / "none"), timeout=120)
    assert result.returncode == 2 and "mtnlp run" in result.stderr


@pytest.mark.slow
def test_decoding_benchmark(pipeline_run, tmp_path):
    output = tmp_path / "decoding.json"
    result = run_benchmark(
        "decoding.py",
        "--workdir",
        str(pipeline_run.workdir),
        "--beams",
        "1",
        "2",
        "--pairs",
        "20",
        "--requests",
        "3",
        "--examples",
        "2",
        "--output",
        str(output),
    )
    document = ran(result, output)
    assert set(document["beams"]) == {"1", "2"}
    for figures in document["beams"].values():
        assert 0 <= figures["bleu"] <= 1 and figures["pairs"] == 20 and figures["ms_one_sentence_p50"] > 0
        assert len(figures["examples"]) == 2 and all(
            e["output"] and "##" not in e["output"] for e in figures["examples"]
        )


def test_an_entity_is_out_of_vocabulary_when_one_of_its_normalized_words_is():
    from benchmarks.oov_entities import entity_groups, normalize_word

    assert normalize_word("Route66") == "route00"
    records = [
        {"tokens": ["Zorblax", "Inc", "met", "Paris", "in", "1999"], "ner": ["B-ORG", "I-ORG", "O", "B-LOC", "O", "O"]}
    ]
    vocabulary = {"inc", "met", "paris", "in", "0000"}
    groups = entity_groups(records, [["B-ORG", "O", "O", "B-LOC", "O", "O"]], vocabulary)
    # "Zorblax Inc" is OOV and missed (wrong boundary); "Paris" is in the vocabulary and found
    assert groups == {"oov": {"found": 0, "total": 1}, "in_vocabulary": {"found": 1, "total": 1}}


@pytest.mark.slow
def test_oov_entity_benchmark(pipeline_run, tmp_path):
    output = tmp_path / "oov.json"
    result = run_benchmark(
        "oov_entities.py", "--workdir", str(pipeline_run.workdir), "--label", "fixture", "--output", str(output)
    )
    document = ran(result, output)
    entities = document["results"]["fixture"]["entities"]
    assert entities["oov"]["total"] > 0 and entities["in_vocabulary"]["total"] > 0
    assert all(0 <= group["error_rate"] <= 1 for group in entities.values())
    missing = run_benchmark("oov_entities.py", "--workdir", str(tmp_path / "none"), timeout=120)
    assert missing.returncode == 2 and "mtnlp run" in missing.stderr


@pytest.mark.slow
def test_inference_benchmark(pipeline_run, tmp_path):
    output = tmp_path / "inference.json"
    result = run_benchmark(
        "inference.py",
        "--workdir",
        str(pipeline_run.workdir),
        "--requests",
        "5",
        "--warmup",
        "1",
        "--output",
        str(output),
    )
    document = ran(result, output)
    assert set(document["latency"]) == {"mtl", "sentiment", "pos", "ner", "stl_sum"}
    for figures in document["latency"].values():
        assert figures["p50_ms"] > 0 and figures["mean_ms"] > 0
    assert document["summary"]["mtl_over_stl_sum_p50"] > 0 and "target" in document["summary"]
    assert "0.45" in result.stdout


@pytest.mark.slow
def test_pipeline_benchmark(tmp_path):
    output = tmp_path / "pipeline.json"
    # two tasks are enough to check the machinery (translation's vocabulary learning and beam search cost most)
    result = run_benchmark(
        "pipeline.py",
        "--base-records",
        "60",
        "--train-steps",
        "5",
        "--sizes",
        "1",
        "2",
        "--tasks",
        "tagging",
        "sentiment",
        "--out",
        str(tmp_path / "runs"),
        "--output",
        str(output),
        timeout=1100,
    )
    document = ran(result, output)
    assert set(document["runs"]) == {"1x", "2x", "rerun"}
    for run in document["runs"].values():
        assert run["wall_seconds"] > 0 and run["records_ingested"] > 0
    for stage in ("JsonlExampleGen", "StatisticsGen", "Transform", "Evaluator", "Trainer"):
        assert document["runs"]["1x"]["components"][stage] > 0 and document["runs"]["2x"]["components"][stage] > 0
    assert document["runs"]["2x"]["records_ingested"] == 2 * document["runs"]["1x"]["records_ingested"]
    assert document["summary"]["rerun_all_cached"]
    assert all(g > 0 for g in document["summary"]["beam_stage_max_growth_per_doubling"].values())


@pytest.mark.slow
def test_beam_modes_benchmark(tmp_path):
    output = tmp_path / "beam_modes.json"
    result = run_benchmark(
        "beam_modes.py",
        "--repeats",
        "1",
        "--max-records",
        "40",
        "--tasks",
        "sentiment",
        "--out",
        str(tmp_path / "runs"),
        "--output",
        str(output),
        timeout=1100,
    )
    document = ran(result, output)
    assert set(document["median_seconds"]) == {"in_memory", "multi_processing x2"}
    for mode in document["median_seconds"].values():
        assert all(mode[stage] > 0 for stage in ("JsonlExampleGen", "StatisticsGen", "Transform"))


# -- benchmarks/peer_spacy.py: only what needs no spaCy (installing it is the script's job, not CI's) --------------


# tagging records as read from the data: one with NER, one without (the field is optional)
PEER_TAGGED_RECORDS = [
    {
        "tokens": ["Apple", "sued", "Samsung", "."],
        "pos": ["PROPN", "VERB", "PROPN", "PUNCT"],
        "ner": ["B-ORG", "O", "B-ORG", "O"],
    },
    {"tokens": ["Hi", "!"], "pos": ["INTJ", "PUNCT"], "ner": None},
]


def test_the_spacy_peer_states_its_usage_without_spacy():
    result = run_benchmark("peer_spacy.py", "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--model-dir", "--max-minutes", "--max-steps", "--venv", "--quick", "--output"):
        assert option in result.stdout, option
    assert "python benchmarks/peer_spacy.py" in result.stdout and "spacy>=3.8,<3.9" in result.stdout


def test_the_spacy_peer_names_a_missing_model_before_doing_anything(tmp_path):
    result = run_benchmark(
        "peer_spacy.py", "--model-dir", str(tmp_path / "none"), "--venv", str(tmp_path / "venv"), timeout=120
    )
    assert result.returncode == 2 and str(tmp_path / "none") in result.stderr and "mtnlp run" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_our_records_become_spacy_examples_with_their_own_words_and_tags():
    from benchmarks.peer_spacy import spacy_examples, words_key

    examples = list(spacy_examples("tagging", PEER_TAGGED_RECORDS))
    assert [(e["words"], e["tags"], e["ents"]) for e in examples] == [
        (r["tokens"], r["pos"], r["ner"]) for r in PEER_TAGGED_RECORDS
    ]
    assert examples[1]["ents"] is None  # missing NER stays missing: spaCy must not learn "no entities" from it
    (sentiment,) = spacy_examples("sentiment", [{"text": "Great!", "label": "positive"}])
    assert sentiment["text"] == "Great!" and sentiment["cats"] == {"negative": 0.0, "positive": 1.0}
    assert json.loads(json.dumps(examples)) == examples  # what the spaCy side reads back
    assert words_key(["Hi", "!", "", ""]) == ("Hi", "!")


def test_the_spacy_peer_reuses_a_recorded_spacy_side_only_when_it_matches(tmp_path):
    """--spacy-from: the recorded spaCy figures come back as they were written; other records or caps are refused
    with a message naming what differs."""
    import argparse

    from benchmarks.peer_spacy import PeerBenchmarkError, recorded_spacy_side

    counts = {"train": {"tagging": 12, "sentiment": 20}, "validation": {"tagging": 3, "sentiment": 4}}
    ns = argparse.Namespace(quick=False, max_minutes=30.0, max_steps=20000, max_records=None)
    spacy = {"version": "3.8.18", "training": {"train_seconds": 1800.3}, "metrics": {"pos": {"token_accuracy": 0.94}}}
    settings = {"quick": False, "max_minutes": 30.0, "max_steps": 20000, "max_records": None, "batch_size": 64}
    recorded = tmp_path / "peer.json"
    recorded.write_text(json.dumps({"settings": settings, "records": counts, "systems": {"spacy": spacy}}))

    about, metrics = recorded_spacy_side(recorded, counts, ns)
    assert metrics == {"pos": {"token_accuracy": 0.94}}
    assert about == {"version": "3.8.18", "training": {"train_seconds": 1800.3}}
    with pytest.raises(PeerBenchmarkError, match=r"max_minutes: recorded 30.0, now 5.0"):
        recorded_spacy_side(recorded, counts, argparse.Namespace(**{**vars(ns), "max_minutes": 5.0}))
    with pytest.raises(PeerBenchmarkError, match="records: recorded"):
        recorded_spacy_side(recorded, {**counts, "train": {"tagging": 11, "sentiment": 20}}, ns)
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(PeerBenchmarkError, match="not a results file of this script"):
        recorded_spacy_side(tmp_path / "other.json", counts, ns)


def test_the_spacy_peer_is_scored_by_the_same_code_as_our_model():
    """Gold answers recorded as spaCy's go through mtnlp evaluate's scoring and score perfectly; a wrong tag and
    a wrong class cost what the pipeline's scorers say."""
    from benchmarks.peer_spacy import spacy_examples, spacy_signatures
    from mtnlp.model.tasks import get_task
    from mtnlp.serving.evaluate import TaskData, evaluate_signatures

    texts = [{"text": "Great!", "label": "positive"}, {"text": "Awful.", "label": "negative"}]
    data = {
        "tagging": TaskData(get_task("tagging"), PEER_TAGGED_RECORDS, []),
        "sentiment": TaskData(get_task("sentiment"), texts, []),
    }

    def scores(answers) -> dict:
        results, skipped = evaluate_signatures(spacy_signatures(answers), data, batch_size=64)
        assert not skipped
        return {r.head: r.metrics for r in results}

    gold = {
        "tagging": [
            {"words": e["words"], "pos_tags": e["tags"], "ner_tags": e["ents"] or ["O"] * len(e["words"])}
            for e in spacy_examples("tagging", PEER_TAGGED_RECORDS)
        ],
        "sentiment": [{"text": e["text"], "cats": e["cats"]} for e in spacy_examples("sentiment", texts)],
    }
    perfect = scores(gold)
    assert perfect["pos"]["token_accuracy"] == 1.0 and perfect["ner"]["entity_f1"] == 1.0
    assert perfect["sentiment"]["accuracy"] == 1.0
    gold["tagging"][0]["pos_tags"][1] = "NOUN"
    gold["tagging"][0]["ner_tags"][2] = "B-LOC"
    gold["sentiment"][1]["cats"] = {"negative": 0.2, "positive": 0.7}
    flawed = scores(gold)
    assert flawed["pos"]["token_accuracy"] == 5 / 6 and flawed["sentiment"]["accuracy"] == 0.5
    assert flawed["ner"]["entity_precision"] == 0.5 and flawed["ner"]["entity_recall"] == 0.5
