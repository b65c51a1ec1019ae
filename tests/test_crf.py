"""The CRF decoder of token heads (heads.<name>.decoder: crf, model/crf.py): its forward algorithm and Viterbi
against brute-force enumeration, its training in the model, its settings, and the pipeline's servable export."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtnlp.model.crf import CrfDense, CrfLoss, crf_log_likelihood
from mtnlp.model.decoding import constrained_viterbi, iob2_transitions
from mtnlp.model.network import build_model, compile_for_heads
from mtnlp.model.tasks import all_heads
from mtnlp.sections import HeadConfig
from tests.conftest import REPO, run_cli
from tests.test_model import HEADS, SIZES, batch

LABELS = ("O", "B-A", "I-A")
CRF_NER = {"ner": HeadConfig(decoder="crf")}


def sequence_score(emissions, sequence, transitions, start):
    return (
        start[sequence[0]]
        + sum(emissions[t, label] for t, label in enumerate(sequence))
        + sum(transitions[a, b] for a, b in zip(sequence, sequence[1:]))
    )


def test_the_forward_algorithm_is_the_log_sum_over_every_label_sequence():
    rng = np.random.default_rng(0)
    batch_size, time_steps, labels = 4, 4, 3
    emissions = rng.normal(size=(batch_size, time_steps, labels))
    transitions, start = rng.normal(size=(labels, labels)), rng.normal(size=labels)
    lengths = np.array([4, 2, 1, 0])
    mask = np.arange(time_steps)[None, :] < lengths[:, None]
    gold = rng.integers(0, labels, size=(batch_size, time_steps))
    computed = crf_log_likelihood(emissions, gold, mask, transitions, start).numpy()
    for row, length in enumerate(lengths):
        if length == 0:
            assert computed[row] == 0.0  # a row without words (another task's) counts nothing
            continue
        every = [
            sequence_score(emissions[row], s, transitions, start)
            for s in itertools.product(range(labels), repeat=int(length))
        ]
        expected = sequence_score(emissions[row], gold[row, :length], transitions, start) - np.logaddexp.reduce(every)
        np.testing.assert_allclose(computed[row], expected, rtol=1e-5, atol=1e-5)


def test_viterbi_with_learned_transitions_is_the_best_allowed_sequence():
    allowed, allowed_start = iob2_transitions(LABELS)
    rng = np.random.default_rng(1)
    changed_by_transitions = 0
    for seed in range(20):
        emissions = rng.normal(size=(1, 4, 3)).astype(np.float32)
        transitions, start = rng.normal(size=(3, 3)).astype(np.float32) * 2, rng.normal(size=3).astype(np.float32)
        decoded = constrained_viterbi(emissions, None, allowed, allowed_start, transitions, start).numpy()[0]
        candidates = [
            s
            for s in itertools.product(range(3), repeat=4)
            if allowed_start[s[0]] and all(allowed[a, b] for a, b in zip(s, s[1:]))
        ]
        best = max(candidates, key=lambda s: sequence_score(emissions[0], s, transitions, start))
        assert tuple(decoded) == best, seed
        changed_by_transitions += tuple(constrained_viterbi(emissions, None, allowed, allowed_start).numpy()[0]) != best
    assert changed_by_transitions > 5  # the learned scores mattered


def test_a_crf_head_trains_its_transitions_and_serves_its_viterbi_tags():
    model = build_model(HEADS, head_configs=CRF_NER, **SIZES)
    layer = model.get_layer("ner")
    assert isinstance(layer, CrfDense) and not isinstance(model.get_layer("pos"), CrfDense)
    compile_for_heads(model, HEADS, keras.optimizers.Adam(1e-2), head_configs=CRF_NER)
    inputs, labels, weights = batch()
    first = model.train_on_batch(inputs, labels, weights, return_dict=True)["ner_loss"]
    for _ in range(10):
        last = model.train_on_batch(inputs, labels, weights, return_dict=True)["ner_loss"]
    assert last < first and np.abs(layer.transitions.numpy()).max() > 0  # the transitions learn

    ner = next(h for h in HEADS if h.name == "ner")
    # transitions strong enough to change the decoding: staying on a label is worth 3 a word
    layer.transitions.assign(layer.transitions.numpy() + 3 * np.eye(ner.num_labels, dtype=np.float32))
    logits = model.predict(inputs, verbose=0)["ner"]
    mask = inputs["token_ids"] > 0
    module = type("Module", (), {"model": model})()
    served = ner.served_outputs(module, tf.constant(logits), {"token_ids": tf.constant(inputs["token_ids"])})
    allowed, allowed_start = iob2_transitions(ner.labels)
    expected = constrained_viterbi(logits, mask, allowed, allowed_start, layer.transitions, layer.start_scores)
    tags = np.where(mask, np.array(ner.labels, object)[expected.numpy()], "")
    assert served["ner_tags"].numpy().astype(str).tolist() == tags.astype(str).tolist()
    without_transitions = constrained_viterbi(tf.nn.log_softmax(logits), mask, allowed, allowed_start).numpy()
    assert (expected.numpy() != without_transitions).any()  # the served tags read the learned transitions


def test_the_crf_loss_is_the_mean_negative_log_likelihood_per_labelled_word():
    layer = CrfDense(3)
    layer.build((None, None, 2))
    layer.transitions.assign(np.arange(9, dtype=np.float32).reshape(3, 3) / 10)
    emissions = np.random.default_rng(2).normal(size=(2, 3, 3)).astype(np.float32)
    gold = np.array([[0, 1, 2], [2, 0, 0]])
    weights = np.array([[1, 1, 1], [1, 0, 0]], np.float32)
    expected = (
        -crf_log_likelihood(emissions, gold, weights > 0, layer.transitions, layer.start_scores).numpy().sum() / 4
    )
    np.testing.assert_allclose(CrfLoss(layer)(gold, emissions, weights).numpy(), expected, rtol=1e-6)


def test_crf_settings_are_checked_with_errors_that_name_them():
    with pytest.raises(ValueError, match="decoder: expected one of softmax, crf, got 'hmm'"):
        HeadConfig(decoder="hmm")
    with pytest.raises(ValueError, match="decoder 'crf' is trained by the CRF's sequence likelihood"):
        HeadConfig(decoder="crf", label_smoothing=0.1)
    sentiment = next(h for h in all_heads() if h.name == "sentiment")
    with pytest.raises(ValueError, match="decoder 'crf': head 'sentiment' \\(sentence\\) has the decoders softmax"):
        sentiment.check_config(HeadConfig(decoder="crf"))
    model = build_model(HEADS, **SIZES)  # built without the CRF, compiled with it
    with pytest.raises(ValueError, match="decoder 'crf' needs the head's output layer to be a CrfDense"):
        compile_for_heads(model, HEADS, keras.optimizers.Adam(), head_configs=CRF_NER)


@pytest.mark.slow
def test_the_pipeline_exports_a_crf_and_spacy_style_encoder_with_core_ops_only(tmp_path):
    """The issue-26 levers on through the real pipeline (the character CNN's codes decoded from the words in the
    datasets and in the serving graph): the pushed SavedModel loads and answers with Keras and TF Text's Python
    package blocked, and its ops are core TF (plus the one TF Text kernel)."""
    workdir = tmp_path / "workdir"
    levers = (
        "heads.ner.decoder=crf",
        "model.embedding_combiner=concat_maxout",
        "model.window_conv_layers=1",
        "model.char_cnn_dim=16",
    )
    lenient = ("heads.ner.gate.lower_bound=0", "heads.pos.gate.lower_bound=0")  # 60 steps: let any model through
    result = run_cli(
        "run",
        "--profile=quick",
        f"--workdir={workdir}",
        "--tasks=tagging",
        "--max-records=200",
        "--train-steps=60",
        *[f"--set={setting}" for setting in levers + lenient],
    )
    assert result.returncode == 0, f"pipeline failed:\n{result.stdout}\n{result.stderr[-5000:]}"
    pushed = json.loads((workdir / "run_summary.json").read_text())["pushed_to"]

    audit = subprocess.run(
        [sys.executable, str(REPO / "tests" / "helpers" / "audit_ops.py"), pushed], capture_output=True, text=True
    )
    assert audit.returncode == 0, audit.stderr[-3000:]
    audit = json.loads(audit.stdout.strip().splitlines()[-1])
    assert audit["unregistered"] == [] and audit["python_ops"] == [] and audit["per_call_initialisation"] == []
    # the words' characters decoded in the serving graph, and the character CNN's convolution (the model's only one)
    assert "UnicodeDecode" in audit["ops"] and any(op.startswith("Conv") for op in audit["ops"])

    # served from a fresh process with Keras and TF Text's Python package blocked, as stock TF Serving has it
    served = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_KERAS, pushed], capture_output=True, text=True)
    assert served.returncode == 0, served.stderr[-3000:]
    tags = json.loads(served.stdout.strip().splitlines()[-1])
    assert len(tags) == 2 and len(tags[0]) == len(tags[1]) > 0
    for row in tags:  # the constrained Viterbi: never I-X without B-X or I-X before it
        words = [t for t in row if t]
        assert all(not t.startswith("I-") or (i and words[i - 1][2:] == t[2:]) for i, t in enumerate(words)), row


SERVE_WITHOUT_KERAS = """
import json, sys
for name in ("keras", "keras_nlp", "keras_hub", "tf_keras", "tensorflow_text"):
    sys.modules[name] = None
import tensorflow as tf
from mtnlp.model.serving_ops import load_text_ops
load_text_ops()
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](text=tf.constant(["Apple sued Samsung in California.", "Hi there!"]))
print(json.dumps([[t.decode() for t in row] for row in out["ner_tags"].numpy().tolist()]))
"""
