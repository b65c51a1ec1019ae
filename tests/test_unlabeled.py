"""Raw text in ``data/unlabeled/``: ingested and validated like the labelled folders, and learned from by the
masked-word objective only (never a supervised stream, never a head, never served)."""

from __future__ import annotations

import glob
import gzip
import json
import pathlib

import pytest

from tests.conftest import run_cli

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
RECORDS = 60
RAW_WORD = "zorblax"  # a word only the raw text has


def _first_lines(path: pathlib.Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


@pytest.fixture(scope="module")
def run_with_raw_text(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlabeled")
    data = root / "data"
    for split in ("train", "validation"):
        (data / "sentiment").mkdir(parents=True, exist_ok=True)
        (data / "sentiment" / f"{split}.jsonl").write_text(
            "\n".join(_first_lines(DATA / "sentiment" / f"{split}.jsonl.gz", RECORDS)) + "\n", encoding="utf-8"
        )
    (data / "unlabeled").mkdir()
    (data / "unlabeled" / "train.txt").write_text(
        "".join(f"The {RAW_WORD} number {i} glimmered quietly.\n" for i in range(RECORDS)), encoding="utf-8"
    )
    workdir = root / "workdir"
    result = run_cli(
        "run",
        "--profile",
        "quick",
        "--data",
        str(data),
        "--workdir",
        str(workdir),
        "--train-steps",
        "20",
        "--tasks",
        "sentiment",
        "unlabeled",
        "--set",
        "training.masked_word_share=0.5",
        "--set",
        "heads.sentiment.gate.lower_bound=0",
        timeout=900,
    )
    assert result.returncode == 0, f"pipeline failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return workdir, result.stdout + result.stderr


@pytest.mark.slow
def test_raw_text_feeds_only_the_masked_word_objective(run_with_raw_text):
    import tensorflow_transform as tft

    from mtnlp.model import dataset
    from mtnlp.model.network import MASKED_WORD_LABELS
    from mtnlp.model.preprocessing import WORDS_VOCABULARY
    from mtnlp.model.tasks import get_task
    from mtnlp.model.training import vocabulary_size
    from mtnlp.sections import TransformConfig

    workdir, log = run_with_raw_text
    assert f"unlabeled: {RECORDS} examples of raw text, drawn by the masked-word objective only" in log
    summary = json.loads((workdir / "run_summary.json").read_text())
    assert summary["blessed"]

    (graph,) = glob.glob(str(workdir / "pipeline_root" / "Transform" / "transform_graph" / "*"))
    train_files = glob.glob(
        str(workdir / "pipeline_root" / "Transform" / "transformed_examples" / "*" / "Split-train" / "*")
    )
    tft_output = tft.TFTransformOutput(graph)
    words = [w.strip() for w in open(tft_output.vocabulary_file_by_name(WORDS_VOCABULARY), encoding="utf-8")]
    raw_word_id = words.index(RAW_WORD) + 1  # the raw text shapes the vocabulary
    counts = dataset.count_examples_per_task(train_files, tft_output)
    assert counts["unlabeled"] == RECORDS and dataset.raw_text_counts(counts) == {"unlabeled": RECORDS}
    weights = dataset.task_weights(counts, "temperature", 2.0)
    assert weights == {"sentiment": 1.0}  # no supervised stream of raw text

    heads = get_task("sentiment").heads

    def batches(masked_words):
        data = dataset.training_dataset(train_files, tft_output, heads, 16, weights, seed=1, masked_words=masked_words)
        return [inputs for inputs, _, _ in data.take(12)]

    supervised = batches(None)
    assert not any((b["token_ids"] == raw_word_id).numpy().any() for b in supervised)
    objective = dataset.MaskedWords(
        share=1.0, rate=0.5, vocabulary_size=vocabulary_size(tft_output, TransformConfig().num_oov_buckets)
    )
    masked = batches(objective)
    # the objective draws raw text: its word is read or is a masked word's label
    assert any(((b["token_ids"] == raw_word_id) | (b[MASKED_WORD_LABELS] == raw_word_id)).numpy().any() for b in masked)


@pytest.mark.slow
def test_the_served_model_knows_nothing_of_raw_text(run_with_raw_text):
    import tensorflow as tf

    workdir, _ = run_with_raw_text
    summary = json.loads((workdir / "run_summary.json").read_text())
    served = tf.saved_model.load(summary["pushed_to"])
    for name, signature in served.signatures.items():
        outputs = signature.structured_outputs
        assert not any("unlabeled" in key or "masked" in key for key in outputs), (name, list(outputs))
        assert not any("masked" in key for key in signature.structured_input_signature[1]), name
