"""The network, its losses and the 2-replica CPU strategy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from model import text
from model.layers import EntityStartPooling, MaskedMeanPooling
from model.network import build_model, compile_for_heads
from model.tasks import all_heads

HEADS = all_heads()
SIZES = dict(vocabulary_size=50, max_length=16, embedding_dim=16, num_layers=1, num_heads=2,
             intermediate_dim=32, dropout=0.0)  # fmt: skip


def batch(batch_size=4, length=6, seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, 50, size=(batch_size, length))
    token_ids[:, length - 2:] = 0  # the last two positions are padding
    inputs = {"token_ids": token_ids, "shape_ids": np.where(token_ids > 0, 5, 0),
              "entity_ids": np.tile([1, 0, 2, 0, 0, 0][:length], (batch_size, 1))}  # fmt: skip
    labels, weights = {}, {}
    for head in HEADS:
        shape = (batch_size, length) if head.kind.value == "token" else (batch_size,)
        labels[head.name] = rng.integers(0, head.num_labels, size=shape)
        weights[head.name] = np.ones(shape, "float32") * (token_ids > 0 if len(shape) == 2 else 1)
    return inputs, labels, weights


def test_output_shapes_per_head_kind():
    model = build_model(HEADS, **SIZES)
    inputs, _, _ = batch(batch_size=3, length=6)
    outputs = model(inputs)
    assert outputs["sentiment"].shape == (3, 2)
    assert outputs["relation"].shape == (3, 19)
    assert outputs["pos"].shape == (3, 6, 17)
    assert outputs["ner"].shape == (3, 6, 7)


def test_a_head_without_labels_in_the_batch_gets_no_gradient():
    keras.utils.set_random_seed(1)
    model = build_model(HEADS, **SIZES)
    compile_for_heads(model, HEADS, keras.optimizers.SGD(0.1))
    inputs, labels, weights = batch()
    weights["relation"][:] = 0.0  # no example of the batch is a relation example
    before = {h.name: model.get_layer(h.name).kernel.numpy().copy() for h in HEADS}
    losses = model.train_on_batch(inputs, labels, sample_weight=weights, return_dict=True)
    assert losses["relation_loss"] == pytest.approx(0.0)
    assert np.array_equal(model.get_layer("relation").kernel.numpy(), before["relation"])
    assert not np.array_equal(model.get_layer("sentiment").kernel.numpy(), before["sentiment"])


def test_padding_does_not_count_in_token_losses():
    keras.utils.set_random_seed(1)
    model = build_model(HEADS, **SIZES)
    compile_for_heads(model, HEADS, keras.optimizers.SGD(0.0))
    inputs, labels, weights = batch()
    first = model.test_on_batch(inputs, labels, sample_weight=weights, return_dict=True)
    labels["pos"][:, -2:] = (labels["pos"][:, -2:] + 1) % 17  # change the labels under the padding only
    second = model.test_on_batch(inputs, labels, sample_weight=weights, return_dict=True)
    assert first["pos_loss"] == pytest.approx(second["pos_loss"])


def test_pooling_layers():
    hidden = tf.constant(np.arange(2 * 3 * 2, dtype="float32").reshape(2, 3, 2))
    mask = tf.constant([[True, True, False], [True, False, False]])
    np.testing.assert_allclose(MaskedMeanPooling()(hidden, mask), [[1, 2], [6, 7]])
    entity_ids = tf.constant([[0, 1, 2], [2, 2, 0]])  # second row: e1 absent, e2 starts at 0
    np.testing.assert_allclose(EntityStartPooling()(hidden, entity_ids), [[2, 3, 4, 5], [0, 0, 6, 7]])
    assert EntityStartPooling.from_config(EntityStartPooling(markers=(2,)).get_config()).markers == (2,)


def test_word_splitting_follows_universal_dependencies_style():
    words = text.split_words(tf.constant(["I don't like U.S. café prices: 3.5 $ at 10:30, it's sad!"]))
    assert [w.decode() for w in words.to_list()[0]] == [
        "I", "do", "n't", "like", "U.S.", "café", "prices", ":", "3.5", "$", "at", "10:30", ",", "it", "'s", "sad", "!"]  # fmt: skip


def test_spans_are_marked_on_their_words_whatever_their_order():
    sentence = "The company fabricates plastic chairs."
    words, markers = text.split_words_marking_spans(
        tf.constant([sentence, sentence]), tf.constant([[4, 11], [31, 37]], tf.int64), tf.constant([[31, 37], [4, 11]], tf.int64)
    )
    assert [w.decode() for w in words.to_list()[0]] == ["The", "company", "fabricates", "plastic", "chairs", "."]
    assert markers.to_list() == [[0, 1, 0, 0, 2, 0], [0, 2, 0, 0, 1, 0]]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_two_replica_cpu_strategy_really_trains_on_two_devices():
    result = _python("""
        from model import devices
        devices.configure_cpu_replicas(2)
        import numpy as np, keras, tensorflow as tf
        strategy = devices.make_strategy(2)
        assert strategy.num_replicas_in_sync == 2
        ran_on = strategy.run(lambda: tf.identity(tf.distribute.get_replica_context().replica_id_in_sync_group))
        print("devices", sorted({v.device for v in strategy.experimental_local_results(ran_on)}))
        with strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")
        history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat(), steps_per_epoch=20, epochs=2, verbose=0)
        print("loss", history.history["loss"][0], history.history["loss"][-1])
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    devices_line = next(line for line in result.stdout.splitlines() if line.startswith("devices"))
    assert "CPU:0" in devices_line and "CPU:1" in devices_line
    first, last = map(float, next(l for l in result.stdout.splitlines() if l.startswith("loss")).split()[1:])
    assert last < first


def test_strategy_fails_loudly_instead_of_hanging_when_devices_are_missing():
    result = _python("""
        import tensorflow as tf
        tf.config.list_logical_devices("CPU")  # TensorFlow initializes its devices: too late to split the CPU
        from model import devices
        devices.make_strategy(2)
    """)
    assert result.returncode != 0
    assert "DeviceSetupError" in result.stderr and "logical CPU devices" in result.stderr
