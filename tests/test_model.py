"""The network, its losses and the 2-replica CPU strategy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtnlp.model import text
from mtnlp.model.layers import (
    EntityBoundaryPooling,
    MaskedMeanPooling,
    NoneClassDense,
    PairwiseRankingLoss,
    SequenceDecoder,
    SmoothedSparseCrossentropy,
)
from mtnlp.model.network import (
    ENCODER_OUTPUT,
    MASKED_WORD_LABELS,
    MASKED_WORDS,
    TASK_UNCERTAINTY,
    build_model,
    compile_for_heads,
    encoder_input_names,
    inference_model,
)
from mtnlp.model.preprocessing import CHAR_CODES, SUBWORD_INPUTS, TARGET_EOS, WORD_CHARACTERS
from mtnlp.model.tasks import RELATION, TRANSLATION, all_heads
from mtnlp.sections import HeadConfig

HEADS = all_heads()
TARGET_VOCABULARY = 30
SIZES = dict(
    vocabulary_size=50,
    max_length=16,
    embedding_dim=16,
    num_layers=1,
    num_heads=2,
    intermediate_dim=32,
    dropout=0.0,
    target_vocabulary_sizes={"translation": TARGET_VOCABULARY},
    max_target_length=5,
    subword_buckets=100,
)
TRANSLATION_HEAD = TRANSLATION.heads[0]
RELATION_HEAD = RELATION.heads[0]


def batch(batch_size=4, length=6, seed=0, characters=False):
    """A made-up batch of every head's inputs, labels and weights; ``characters``: with the words' character codes,
    the input of a model with a character CNN (Keras matches a dict with extra keys to the inputs by position)."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, 50, size=(batch_size, length))
    token_ids[:, length - 2 :] = 0  # the last two positions are padding
    inputs = {
        "token_ids": token_ids,
        "shape_ids": np.where(token_ids > 0, 5, 0),
        "entity_ids": np.tile([1, 0, 2, 0, 0, 0][:length], (batch_size, 1)),
    }
    for name in SUBWORD_INPUTS:  # hashed subword ids (1..buckets), 0 on padding
        inputs[name] = np.where(token_ids > 0, rng.integers(1, 100, size=token_ids.shape), 0)
    labels, weights = {}, {}
    # rows 0 and 2 are translation examples (words then EOS, 0 padding); rows 1 and 3 have no target
    target = np.array([[5, 6, 7, TARGET_EOS, 0], [0] * 5, [8, TARGET_EOS, 0, 0, 0], [0] * 5])[:batch_size]
    inputs[TRANSLATION_HEAD.label_key] = target
    for head in HEADS:
        if head.kind == "sequence":
            labels[head.name], weights[head.name] = target, (target > 0).astype("float32")
            continue
        shape = (batch_size, length) if head.kind == "token" else (batch_size,)
        labels[head.name] = rng.integers(0, head.num_labels, size=shape)
        weights[head.name] = np.ones(shape, "float32") * (token_ids > 0 if len(shape) == 2 else 1)
    if characters:  # each real word's characters: 1 to 8 lowercase letters (code points + 1)
        lengths = rng.integers(1, 9, size=(*token_ids.shape, 1)) * (token_ids > 0)[..., None]
        letters = rng.integers(ord("a") + 1, ord("z") + 2, size=(*token_ids.shape, WORD_CHARACTERS))
        inputs[CHAR_CODES] = np.where(np.arange(WORD_CHARACTERS) < lengths, letters, 0)
    return inputs, labels, weights


def test_output_shapes_per_head_kind():
    model = build_model(HEADS, **SIZES)
    inputs, _, _ = batch(batch_size=3, length=6)
    outputs = model(inputs)
    assert outputs["sentiment"].shape == (3, 2)
    assert outputs["relation"].shape == (3, 19)
    assert outputs["pos"].shape == (3, 6, 17)
    assert outputs["ner"].shape == (3, 6, 7)
    assert outputs["translation"].shape == (3, 5, TARGET_VOCABULARY)
    # the decoder ran on the translation rows only: the other rows' logits are exactly zero
    assert np.all(outputs["translation"].numpy()[1] == 0) and np.any(outputs["translation"].numpy()[0] != 0)


def test_a_head_without_labels_in_the_batch_gets_no_gradient():
    keras.utils.set_random_seed(1)
    model = build_model(HEADS, **SIZES)
    compile_for_heads(model, HEADS, keras.optimizers.SGD(0.1))
    inputs, labels, weights = batch()
    weights["relation"][:] = 0.0  # no example of the batch is a relation example
    before = {h.name: model.get_layer(h.name).kernel.numpy().copy() for h in HEADS if h.kind != "sequence"}
    losses = model.train_on_batch(inputs, labels, sample_weight=weights, return_dict=True)
    assert losses["relation_loss"] == pytest.approx(0.0)
    assert np.array_equal(model.get_layer("relation").kernel.numpy(), before["relation"])
    assert not np.array_equal(model.get_layer("sentiment").kernel.numpy(), before["sentiment"])


def _decoder_weights(model):
    return [w.numpy().copy() for w in model.get_layer(TRANSLATION_HEAD.decoder_name).weights]


def test_the_decoder_gets_no_loss_or_gradient_without_translation_examples_in_the_batch():
    keras.utils.set_random_seed(1)
    model = build_model(HEADS, **SIZES)
    compile_for_heads(model, HEADS, keras.optimizers.SGD(0.1))
    inputs, labels, weights = batch()
    target = np.zeros_like(inputs["translation_label"])  # no example of the batch has a target
    inputs["translation_label"], labels["translation"], weights["translation"] = (
        target,
        target,
        target.astype("float32"),
    )
    before = _decoder_weights(model)
    losses = model.train_on_batch(inputs, labels, sample_weight=weights, return_dict=True)
    assert losses["translation_loss"] == pytest.approx(0.0)
    assert all(np.array_equal(a, b) for a, b in zip(before, _decoder_weights(model)))

    inputs, labels, weights = batch()  # with translation examples, the decoder learns
    model.train_on_batch(inputs, labels, sample_weight=weights)
    assert not all(np.array_equal(a, b) for a, b in zip(before, _decoder_weights(model)))


def test_a_translation_loss_depends_only_on_the_translation_rows():
    keras.utils.set_random_seed(1)
    model = build_model(HEADS, **SIZES)
    compile_for_heads(model, HEADS, keras.optimizers.SGD(0.0))
    inputs, labels, weights = batch()
    first = model.test_on_batch(inputs, labels, sample_weight=weights, return_dict=True)["translation_loss"]
    labels["translation"] = labels["translation"].copy()
    labels["translation"][0, -1] = 9  # a label under the padding of a translation row
    second = model.test_on_batch(inputs, labels, sample_weight=weights, return_dict=True)["translation_loss"]
    assert first > 0 and first == pytest.approx(second)


def test_greedy_decoding_decodes_each_row_independently_of_its_batch():
    keras.utils.set_random_seed(3)
    model = build_model(HEADS, **SIZES)
    decoder = model.get_layer(TRANSLATION_HEAD.decoder_name)
    encoder = keras.Model({k: model.input[k] for k in encoder_input_names()}, model.get_layer(ENCODER_OUTPUT).output)
    inputs, _, _ = batch(batch_size=4, length=6)
    inputs["token_ids"][1, 2:] = 0  # rows of different lengths
    inputs["shape_ids"] = np.where(inputs["token_ids"] > 0, 5, 0)
    real = inputs["token_ids"] > 0
    encoder_inputs = {k: np.where(real, inputs[k], 0) for k in encoder_input_names()}
    together = decoder.greedy_decode(encoder(encoder_inputs), inputs["token_ids"] > 0, 5).numpy()
    beams_together = decoder.beam_decode(encoder(encoder_inputs), inputs["token_ids"] > 0, 5, 3, 0.6).numpy()
    for row in range(4):
        length = max(int((inputs["token_ids"][row] > 0).sum()), 1)
        alone_inputs = {k: v[row : row + 1, :length] for k, v in encoder_inputs.items()}
        alone = decoder.greedy_decode(encoder(alone_inputs), alone_inputs["token_ids"] > 0, 5).numpy()
        np.testing.assert_array_equal(alone[0], together[row])
        beams_alone = decoder.beam_decode(encoder(alone_inputs), alone_inputs["token_ids"] > 0, 5, 3, 0.6).numpy()
        np.testing.assert_array_equal(beams_alone[0], beams_together[row])
    # width 1 is greedy decoding, and an id in never_emit is never chosen
    np.testing.assert_array_equal(
        decoder.beam_decode(encoder(encoder_inputs), inputs["token_ids"] > 0, 5, 1, 0.0), together
    )
    banned = int(together[0, 0]) if together[0, 0] > TARGET_EOS else 7
    constrained = decoder.greedy_decode(
        encoder(encoder_inputs), inputs["token_ids"] > 0, 5, never_emit=(banned,)
    ).numpy()
    assert banned not in constrained
    after_eos = np.cumsum(together == TARGET_EOS, axis=1) - (together == TARGET_EOS) > 0
    assert np.all(together[after_eos] == 0)  # nothing is generated after EOS
    assert not np.any(np.isin(together[~after_eos], [0, 1]))  # neither padding nor BOS is generated


def test_smoothed_crossentropy_is_keras_sparse_crossentropy_without_smoothing_and_spreads_mass_with_it():
    labels, weights = np.array([[1, 2, 0]]), np.array([[1.0, 1.0, 0.0]])
    logits = np.random.default_rng(0).normal(size=(1, 3, 5)).astype("float32")
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
    expected = float(keras_loss(labels, logits, sample_weight=weights))
    assert float(SmoothedSparseCrossentropy(0.0)(labels, logits, sample_weight=weights)) == pytest.approx(
        expected, rel=1e-6
    )
    log_p = np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))[0]
    by_hand = np.mean([-(0.9 * log_p[i, labels[0, i]] + 0.1 * log_p[i].mean()) for i in (0, 1)])
    assert float(SmoothedSparseCrossentropy(0.1)(labels, logits, sample_weight=weights)) == pytest.approx(
        by_hand, rel=1e-5
    )
    assert SmoothedSparseCrossentropy.from_config(SmoothedSparseCrossentropy(0.2).get_config()).label_smoothing == 0.2


def test_sequence_decoder_config_round_trips():
    layer = SequenceDecoder(30, 5, 2, 2, 32, 0.1, tie_embeddings=True, name="d")
    assert SequenceDecoder.from_config(layer.get_config()).get_config() == layer.get_config()
    assert layer.get_config()["tie_embeddings"] is True


def test_tied_decoder_projects_with_its_target_embedding():
    tied = build_model(HEADS, tie_decoder_embeddings=True, **SIZES)
    untied = build_model(HEADS, **SIZES)
    # tied: no separate output matrix, so V x D fewer parameters
    assert untied.count_params() - tied.count_params() == TARGET_VOCABULARY * SIZES["embedding_dim"]


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
    # per entity: its first word's state, then its last word's
    np.testing.assert_allclose(
        EntityBoundaryPooling()(hidden, entity_ids), [[2, 3, 2, 3, 4, 5, 4, 5], [0, 0, 0, 0, 6, 7, 8, 9]]
    )
    assert EntityBoundaryPooling.from_config(EntityBoundaryPooling(markers=(2,)).get_config()).markers == (2,)


def test_word_splitting_follows_universal_dependencies_style():
    words = text.split_words(tf.constant(["I don't like U.S. café prices: 3.5 $ at 10:30, it's sad!"]))
    assert [w.decode() for w in words.to_list()[0]] == [
        "I",
        "do",
        "n't",
        "like",
        "U.S.",
        "café",
        "prices",
        ":",
        "3.5",
        "$",
        "at",
        "10:30",
        ",",
        "it",
        "'s",
        "sad",
        "!",
    ]


def test_subword_features_of_words_seen_and_unseen():
    words = tf.constant(["Tomás", "McDonald's", "1,000", "ran", "a", "XXXXXXL"])
    assert [w.decode() for w in text.affix(words, 3, from_end=False).numpy()] == [
        "tom",
        "mcd",
        "0,0",
        "ran",
        "a",
        "xxx",
    ]
    assert [w.decode() for w in text.affix(words, 3, from_end=True).numpy()] == ["más", "d's", "000", "ran", "a", "xxl"]
    assert [w.decode() for w in text.shape_patterns(words).numpy()] == [
        "Xxxxx",
        "XxXxxxx'x",
        "d,ddd",
        "xxx",
        "x",
        "XXXX",
    ]
    # hashing needs no vocabulary: a never-seen word gets ids, the same ones every time, 0 stays padding
    from mtnlp.model.preprocessing import _hashed

    ids = _hashed(tf.constant(["zyxwv", "zyxwv", "the"]), 5000).numpy()
    assert ids[0] == ids[1] and 1 <= ids.min() and ids.max() <= 5000


def test_join_words_rejoins_wordpiece_pieces_and_punctuation():
    pieces = tf.constant(
        [["¿", "Dónde", "est", "##á", "la", "esta", "##ción", "?", ""], ["##s", "Hola", "!", "", "", "", "", "", ""]]
    )
    assert [t.decode() for t in text.join_words(pieces).numpy()] == ["¿Dónde está la estación?", "s Hola!"]


def test_spans_are_marked_on_their_words_whatever_their_order():
    sentence = "The company fabricates plastic chairs."
    words, markers = text.split_words_marking_spans(
        tf.constant([sentence, sentence]),
        tf.constant([[4, 11], [31, 37]], tf.int64),
        tf.constant([[31, 37], [4, 11]], tf.int64),
    )
    assert [w.decode() for w in words.to_list()[0]] == ["The", "company", "fabricates", "plastic", "chairs", "."]
    assert markers.to_list() == [[0, 1, 0, 0, 2, 0], [0, 2, 0, 0, 1, 0]]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_two_replica_cpu_strategy_really_trains_on_two_devices():
    result = _python("""
        from mtnlp.model import devices
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
    first, last = map(float, next(line for line in result.stdout.splitlines() if line.startswith("loss")).split()[1:])
    assert last < first


def test_strategy_fails_loudly_instead_of_hanging_when_devices_are_missing():
    result = _python("""
        import tensorflow as tf
        tf.config.list_logical_devices("CPU")  # TensorFlow initializes its devices: too late to split the CPU
        from mtnlp.model import devices
        devices.make_strategy(2)
    """)
    assert result.returncode != 0
    assert "DeviceSetupError" in result.stderr and "logical CPU devices" in result.stderr


def test_a_head_reads_the_encoder_layer_and_dropout_of_its_section():
    keras.utils.set_random_seed(4)
    sizes = {**SIZES, "num_layers": 2}
    model = build_model(HEADS, head_configs={"pos": HeadConfig(encoder_layer=1, dropout=0.3)}, **sizes)
    assert model.get_layer("pos_dropout").rate == 0.3 and model.get_layer("ner_dropout").rate == SIZES["dropout"]
    inputs, _, _ = batch()
    before = model(inputs)
    top = model.get_layer("shared_encoder_1")
    top.set_weights([w * 0.5 for w in top.get_weights()])  # changes what the last layer says, not the first
    after = model(inputs)
    np.testing.assert_allclose(after["pos"], before["pos"], rtol=1e-6)
    assert not np.allclose(after["ner"], before["ner"])
    with pytest.raises(ValueError, match=r"heads.pos.encoder_layer = 3: the encoder has layers 1..2"):
        build_model(HEADS, head_configs={"pos": HeadConfig(encoder_layer=3)}, **sizes)


def _head_kernels(model):
    return {h.name: model.get_layer(h.name).kernel.numpy().copy() for h in HEADS if h.kind != "sequence"}


def test_fixed_loss_weights_scale_each_head_and_zero_turns_one_off():
    keras.utils.set_random_seed(1)
    model = build_model(HEADS, **SIZES)
    compile_for_heads(
        model,
        HEADS,
        keras.optimizers.SGD(0.1),
        head_configs={"sentiment": HeadConfig(loss_weight=0.0), "pos": HeadConfig(loss_weight=2.0)},
    )
    inputs, labels, weights = batch()
    per_head = model.test_on_batch(inputs, labels, sample_weight=weights, return_dict=True)
    expected_total = sum(per_head[f"{h.name}_loss"] * {"sentiment": 0.0, "pos": 2.0}.get(h.name, 1.0) for h in HEADS)
    assert per_head["loss"] == pytest.approx(expected_total, rel=1e-4)
    before = _head_kernels(model)
    model.train_on_batch(inputs, labels, sample_weight=weights)
    assert np.array_equal(model.get_layer("sentiment").kernel.numpy(), before["sentiment"])
    assert not np.array_equal(model.get_layer("pos").kernel.numpy(), before["pos"])


def test_uncertainty_weighting_learns_one_log_variance_per_head():
    keras.utils.set_random_seed(1)
    model = build_model(HEADS, uncertainty_weighting=True, **SIZES)
    compile_for_heads(model, HEADS, keras.optimizers.SGD(0.1), loss_weighting="uncertainty")
    uncertainty = model.get_layer(TASK_UNCERTAINTY)
    assert uncertainty.head_names == tuple(h.name for h in HEADS)
    inputs, labels, weights = batch()
    # at s = 0 the weighted loss is the plain loss: exp(0) * L + 0 / 2
    per_head = model.test_on_batch(inputs, labels, sample_weight=weights, return_dict=True)
    assert per_head["loss"] == pytest.approx(sum(per_head[f"{h.name}_loss"] for h in HEADS), rel=1e-4)
    model.train_on_batch(inputs, labels, sample_weight=weights)
    s = uncertainty.log_variance.numpy()
    # d/ds [exp(-s) L + s/2] = 1/2 - L at s = 0, so one SGD step moves s to 0.1 * (L - 1/2)
    expected = [0.1 * (per_head[f"{h.name}_loss"] - 0.5) for h in HEADS]
    np.testing.assert_allclose(s, expected, rtol=1e-3, atol=1e-5)
    # the identity layer leaves the outputs as they were
    outputs = model(inputs)
    assert outputs["pos"].shape == (4, 6, 17)


def test_uncertainty_weighting_trains_under_two_cpu_replicas():
    result = _python("""
        from mtnlp.model import devices
        devices.configure_cpu_replicas(2)
        import keras, numpy as np
        from tests.test_model import HEADS, SIZES, batch
        from mtnlp.model.network import TASK_UNCERTAINTY, build_model, compile_for_heads
        strategy = devices.make_strategy(2)
        with strategy.scope():
            model = build_model(HEADS, uncertainty_weighting=True, **SIZES)
            compile_for_heads(model, HEADS, keras.optimizers.SGD(0.1), loss_weighting="uncertainty")
        inputs, labels, weights = batch()
        model.fit(inputs, labels, sample_weight=weights, batch_size=4, epochs=2, verbose=0)
        print("s", *model.get_layer(TASK_UNCERTAINTY).log_variance.numpy())
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    s = [float(v) for v in next(line for line in result.stdout.splitlines() if line.startswith("s ")).split()[1:]]
    assert len(s) == len(HEADS) and all(v != 0.0 for v in s)


def test_masked_word_objective_trains_the_encoder_and_is_not_served():
    keras.utils.set_random_seed(4)
    model = build_model(HEADS, masked_words=True, **SIZES)
    compile_for_heads(model, HEADS, keras.optimizers.SGD(0.1))
    inputs, labels, weights = batch()
    # rows 0 and 1 are masked-word examples: two masked words each, labelled with their original ids
    word_labels = np.zeros_like(inputs["token_ids"])
    word_labels[:2, :2] = inputs["token_ids"][:2, :2]
    inputs[MASKED_WORD_LABELS] = word_labels
    labels[MASKED_WORDS], weights[MASKED_WORDS] = np.zeros(4, "float32"), np.array([1, 1, 0, 0], "float32")
    per_example = model(inputs)[MASKED_WORDS].numpy()
    assert per_example.shape == (4,) and np.all(per_example[:2] > 0) and np.all(per_example[2:] == 0)
    # its loss is the weighted mean of the per-example losses, and training lowers it
    first = model.test_on_batch(inputs, labels, sample_weight=weights, return_dict=True)[f"{MASKED_WORDS}_loss"]
    assert first == pytest.approx(per_example[:2].mean(), rel=1e-4)
    for name in labels:  # only the masked-word objective learns
        if name != MASKED_WORDS:
            weights[name] = np.zeros_like(weights[name])
    before = model.get_layer("shared_encoder_0").get_weights()[0].copy()
    for _ in range(5):
        model.train_on_batch(inputs, labels, sample_weight=weights)
    assert model.test_on_batch(inputs, labels, sample_weight=weights, return_dict=True)[f"{MASKED_WORDS}_loss"] < first
    assert not np.array_equal(model.get_layer("shared_encoder_0").get_weights()[0], before)
    # the served model has neither its input nor its output
    served = inference_model(model)
    assert MASKED_WORD_LABELS not in served.input and MASKED_WORDS not in served.output
    assert set(served.output) == {h.name for h in HEADS}


def test_masking_an_example_hides_the_masked_words_and_labels_only_them():
    from mtnlp.model.dataset import MaskedWords

    features = {
        "token_ids": tf.constant([5, 6, 7, 8, 9, 0], tf.int64),
        "words": tf.constant(["Apple", "sued", "Samsung", "in", "court", ""]),
        "shape_ids": tf.constant([4, 5, 5, 5, 1, 0], tf.int64),
        "entity_ids": tf.zeros([6], tf.int64),
        "pos_label": tf.constant([1, 2, 3, 4, 5, 0], tf.int64),
        "pos_weight": tf.constant([1, 1, 1, 1, 1, 0], tf.float32),
        **{name: tf.constant([3, 3, 3, 3, 3, 0], tf.int64) for name in SUBWORD_INPUTS},
    }
    masked = {
        k: v.numpy() for k, v in MaskedWords(share=0.2, rate=0.99, vocabulary_size=50).mask(features, seed=1).items()
    }
    chosen = masked[MASKED_WORD_LABELS] > 0
    assert chosen[:5].sum() >= 4 and not chosen[5]  # padding is never masked
    np.testing.assert_array_equal(masked[MASKED_WORD_LABELS][chosen], features["token_ids"].numpy()[chosen])
    assert np.all(masked["prefix_ids"][chosen] == 0) and np.all(masked["shape_ids"][chosen] == 0)
    # nor its characters (the character CNN's codes are decoded from words)
    assert np.all(masked["words"][chosen] == b"") and masked["words"][~chosen].tolist() == [
        w for w, c in zip(features["words"].numpy().tolist(), chosen) if not c
    ]
    assert np.all(masked["pos_weight"] == 0) and np.all(masked["pos_label"] == 0)  # no head learns from it
    assert masked["masked_words_weight"] == 1.0
    assert set(masked["token_ids"][chosen]) - set(range(1, 50)) <= {50}  # the mask id is one past the vocabulary


def test_uncertainty_layer_is_part_of_a_model_without_a_decoder():
    heads = [h for h in HEADS if h.kind != "sequence"]
    model = build_model(heads, uncertainty_weighting=True, **SIZES)
    assert model.get_layer(TASK_UNCERTAINTY).head_names == tuple(h.name for h in heads)


# ----- CR-CNN's pairwise ranking loss (heads.<name>.loss=ranking) ---------------------------------------------------
RANKED = {"relation": HeadConfig(loss="ranking")}


def test_pairwise_ranking_loss_by_hand():
    def softplus(x):
        return float(np.log1p(np.exp(x)))

    # four classes, class 0 is the none class; gamma 2, m+ 2.5, m- 0.5
    logits = np.array(
        [
            [3.0, 1.0, 0.5, -1.0],  # gold 2: s+ = 0.5; c- = class 1 (1.0), not the none class's 3.0
            [0.0, -0.2, -1.5, 0.3],  # gold none: no first term; c- = class 3 (0.3)
            [0.0, 5.0, -5.0, -5.0],
        ],  # gold 3, weight 0: a large loss that must not count
        "float32",
    )
    labels, weights = np.array([2, 0, 3]), np.array([1.0, 1.0, 0.0], "float32")
    first = softplus(2 * (2.5 - 0.5)) + softplus(2 * (0.5 + 1.0))
    second = softplus(2 * (0.5 + 0.3))
    loss = PairwiseRankingLoss(none_index=0)
    per_example = loss.call(labels, logits).numpy()
    np.testing.assert_allclose(per_example[:2], [first, second], rtol=1e-6)
    assert per_example[2] > 20
    assert float(loss(labels, logits, sample_weight=weights)) == pytest.approx((first + second) / 2, rel=1e-6)
    # without a none class every example has both terms (class 0 is then a real class)
    assert float(PairwiseRankingLoss(none_index=None).call(labels, logits)[1]) == pytest.approx(
        softplus(2 * (2.5 - 0.0)) + softplus(2 * (0.5 + 0.3)), rel=1e-6
    )
    restored = PairwiseRankingLoss.from_config(
        PairwiseRankingLoss(0, gamma=1.0, margin_positive=2.0, margin_negative=0.25).get_config()
    )
    assert (restored.none_index, restored.gamma, restored.margin_positive, restored.margin_negative) == (
        0,
        1.0,
        2.0,
        0.25,
    )


def test_with_the_ranking_loss_the_none_class_logit_is_zero_on_the_plain_heads_weights(tmp_path):
    none = RELATION_HEAD.labels.index(RELATION_HEAD.none_label)
    keras.utils.set_random_seed(2)
    plain = build_model(HEADS, **SIZES)
    ranked = build_model(HEADS, head_configs=RANKED, **SIZES)
    inputs, _, _ = batch()
    assert RELATION_HEAD.none_label == "Other" and none == 0
    assert np.all(ranked(inputs)["relation"].numpy()[:, none] == 0)
    assert np.all(plain(inputs)["relation"].numpy()[:, none] != 0)
    # the same weights as the plain head (warm starts and checkpoints load either way): the other logits are the plain ones
    ranked.set_weights(plain.get_weights())
    np.testing.assert_allclose(
        np.delete(ranked(inputs)["relation"].numpy(), none, axis=1),
        np.delete(plain(inputs)["relation"].numpy(), none, axis=1),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_array_equal(ranked(inputs)["sentiment"], plain(inputs)["sentiment"])
    # the saved model (what a warm start reads) keeps the rule
    ranked.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert isinstance(loaded.get_layer("relation"), NoneClassDense)
    np.testing.assert_allclose(loaded(inputs)["relation"], ranked(inputs)["relation"], rtol=1e-6)
    # a head without a none class cannot have the loss, and the model and the loss must agree
    with pytest.raises(ValueError, match="head 'sentiment' declares no none_label"):
        build_model(HEADS, head_configs={"sentiment": HeadConfig(loss="ranking")}, **SIZES)
    with pytest.raises(
        ValueError, match="heads.relation.loss is 'ranking' here but the model was built with the other"
    ):
        compile_for_heads(plain, HEADS, keras.optimizers.SGD(0.1), head_configs=RANKED)
    with pytest.raises(ValueError, match="heads.relation.loss is 'cross_entropy' here but the model was built with"):
        compile_for_heads(ranked, HEADS, keras.optimizers.SGD(0.1))


def test_a_model_with_the_ranking_loss_trains_a_few_steps():
    keras.utils.set_random_seed(3)
    model = build_model([RELATION_HEAD], head_configs=RANKED, **SIZES)
    compile_for_heads(model, [RELATION_HEAD], keras.optimizers.SGD(0.05), head_configs=RANKED)
    inputs, _, _ = batch()
    inputs = {k: v for k, v in inputs.items() if k in model.input}
    labels = {"relation": np.array([0, 3, 5, 0])}  # two "Other" examples
    weights = {"relation": np.array([1.0, 1.0, 1.0, 0.0], "float32")}  # the last row is another task's
    first = model.test_on_batch(inputs, labels, sample_weight=weights, return_dict=True)["loss"]  # one head: its loss
    # the compiled loss is the ranking loss, averaged over the relation rows only
    expected = PairwiseRankingLoss(0)(labels["relation"], model(inputs)["relation"], sample_weight=weights["relation"])
    assert first == pytest.approx(float(expected), rel=1e-5)
    for _ in range(6):
        model.train_on_batch(inputs, labels, sample_weight=weights)
    assert model.test_on_batch(inputs, labels, sample_weight=weights, return_dict=True)["loss"] < first
    assert np.all(model(inputs)["relation"].numpy()[:, 0] == 0)


@pytest.mark.parametrize(
    "assignments",
    [[], ["heads.relation.loss=ranking", "heads.pos.loss_weight=2", "heads.sentiment.label_smoothing=0.1"]],
)
def test_the_trainers_model_takes_each_heads_settings_from_its_section(assignments):
    import dataclasses

    from mtnlp.model.training import build_training_model
    from mtnlp.pipelines.settings import effective_config

    config = effective_config("quick", assignments=assignments)
    model_config = dataclasses.replace(
        config.model,
        **{k: SIZES[k] for k in ("embedding_dim", "num_layers", "num_heads", "intermediate_dim", "dropout")},
    )
    transform = dataclasses.replace(config.transform, max_length=16, max_target_length=5, subword_buckets=100)
    model = build_training_model(
        HEADS,
        SIZES["vocabulary_size"],
        {"translation": TARGET_VOCABULARY},
        model_config,
        config.training,
        transform,
        config.heads,
        steps=10,
    )
    changed = bool(assignments)
    assert isinstance(model.get_layer("relation"), NoneClassDense) == changed
    assert isinstance(model.loss["relation"], PairwiseRankingLoss) == changed
    assert isinstance(model.loss["sentiment"], SmoothedSparseCrossentropy) == changed
    loss_weights = model.get_compile_config()["loss_weights"]
    assert loss_weights["pos"] == (2.0 if changed else 1.0) and loss_weights["ner"] == 1.0
    assert not isinstance(model.loss["sentiment"], PairwiseRankingLoss)
