"""spaCy-style word encoding levers (issue 26): the concatenated embeddings mixed by a maxout layer
(model.embedding_combiner), the window encoder below the transformer layers (model.window_conv_layers) and a
character CNN per word (model.char_cnn_dim)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtnlp.model.layers import CharacterCNN, Maxout, MaxoutWindowBlock
from mtnlp.model.network import (
    ENCODER_OUTPUT,
    WORD_EMBEDDING_LAYERS,
    build_model,
    compile_for_heads,
    encoder_input_names,
)
from mtnlp.model.preprocessing import CHAR_CODES, WORD_CHARACTERS, char_codes
from mtnlp.model.warm_start import KERAS_DIR, save_for_warm_start, warm_start
from mtnlp.sections import ModelConfig
from tests.test_model import HEADS, SIZES, batch


def test_maxout_is_the_largest_of_its_affine_pieces_per_unit():
    rng = np.random.default_rng(0)
    layer = Maxout(units=4, pieces=3)
    inputs = rng.normal(size=(2, 5, 6)).astype("float32")
    outputs = keras.ops.convert_to_numpy(layer(inputs))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.projection.weights)
    pieces = (inputs @ kernel + bias).reshape(2, 5, 4, 3)
    assert outputs.shape == (2, 5, 4)
    np.testing.assert_allclose(outputs, pieces.max(axis=-1), rtol=1e-5, atol=1e-6)
    assert Maxout.from_config(layer.get_config()).get_config() == layer.get_config()


def test_a_window_block_mixes_only_the_neighbours_within_its_window_and_ignores_padding():
    rng = np.random.default_rng(1)
    block = MaxoutWindowBlock(window=1, pieces=2, name="w")
    hidden = rng.normal(size=(1, 6, 8)).astype("float32")
    mask = np.array([[True, True, True, True, False, False]])
    before = keras.ops.convert_to_numpy(block(hidden, mask))

    changed = hidden.copy()
    changed[0, 1] += 1.0  # word 1: only words 0, 1 and 2 see it
    after = keras.ops.convert_to_numpy(block(changed, mask))
    moved = np.abs(after - before).max(axis=-1)[0]
    assert (moved[:3] > 1e-4).all() and (moved[3:] < 1e-6).all()

    repadded = hidden.copy()
    repadded[0, 4:] = rng.normal(size=(2, 8))  # what the padding holds does not reach the last real word
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(repadded, mask))[0, :4], before[0, :4], atol=1e-6)
    assert MaxoutWindowBlock.from_config(block.get_config()).get_config() == block.get_config()


@pytest.mark.parametrize(
    "levers",
    [
        {"embedding_combiner": "concat_maxout"},
        {"window_conv_layers": 2},
        {"char_cnn_dim": 8},
        {"char_cnn_dim": 8, "char_cnn_kernel_size": 5, "embedding_combiner": "concat_maxout"},
    ],
    ids=["concat_maxout", "window", "char_cnn", "char_cnn_concat_maxout"],
)
def test_the_encoder_levers_train_and_reload_with_the_same_outputs(tmp_path, levers):
    model = build_model(HEADS, **levers, **SIZES)
    if "char_cnn_dim" in levers:
        assert model.get_layer("char_cnn").get_config()["kernel_size"] == levers.get("char_cnn_kernel_size", 3)
        summed = levers.get("embedding_combiner", "sum") == "sum"  # projected to the other features' width
        assert summed == ("char_cnn_projection" in {layer.name for layer in model.layers})
    elif "embedding_combiner" in levers:
        assert isinstance(model.get_layer("word_features_maxout"), Maxout)
        assert model.get_layer(WORD_EMBEDDING_LAYERS["concat_maxout"]) is not None
    else:
        assert [layer.name for layer in model.layers if isinstance(layer, MaxoutWindowBlock)] == [
            "window_encoder_0",
            "window_encoder_1",
        ]
    compile_for_heads(model, HEADS, keras.optimizers.Adam(1e-2))
    inputs, labels, weights = batch(characters="char_cnn_dim" in levers)
    first = model.train_on_batch(inputs, labels, weights, return_dict=True)["loss"]
    for _ in range(5):
        last = model.train_on_batch(inputs, labels, weights, return_dict=True)["loss"]
    assert last < first  # gradients reach the new layers' weights
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    for name, output in model.predict(inputs, verbose=0).items():
        np.testing.assert_allclose(reloaded.predict(inputs, verbose=0)[name], output, atol=1e-5)


def test_the_sum_combiner_is_the_default_and_bad_lever_values_are_named():
    assert ModelConfig().embedding_combiner == "sum" and ModelConfig().window_conv_layers == 0
    with pytest.raises(ValueError, match="model.embedding_combiner: expected one of sum, concat_maxout, got 'mean'"):
        ModelConfig(embedding_combiner="mean")
    with pytest.raises(ValueError, match="model.window_conv_layers: -1 is negative"):
        ModelConfig(window_conv_layers=-1)
    assert ModelConfig().char_cnn_dim == 0
    with pytest.raises(ValueError, match="model.char_cnn_dim: -8 is negative"):
        ModelConfig(char_cnn_dim=-8)
    with pytest.raises(ValueError, match="model.char_cnn_kernel_size: 0 characters"):
        ModelConfig(char_cnn_dim=8, char_cnn_kernel_size=0)


def test_a_warm_start_carries_the_concat_maxout_word_rows_over_by_word(tmp_path):
    (tmp_path / "old.txt").write_text("a\nb\nc\n")
    (tmp_path / "new.txt").write_text("c\na\nd\n")
    sizes = {**SIZES, "vocabulary_size": 5}  # padding, three words, one OOV bucket
    old = build_model(HEADS, embedding_combiner="concat_maxout", **sizes)
    save_for_warm_start(old, str(tmp_path / "old.txt"), str(tmp_path / "base" / KERAS_DIR))
    new = build_model(HEADS, embedding_combiner="concat_maxout", **sizes)
    report = warm_start(new, str(tmp_path / "base" / "Format-Serving"), str(tmp_path / "new.txt"))
    assert report.words_carried_over == 2 and report.layers_skipped == []
    name = WORD_EMBEDDING_LAYERS["concat_maxout"]
    old_rows, new_rows = old.get_layer(name).get_weights()[0], new.get_layer(name).get_weights()[0]
    np.testing.assert_array_equal(new_rows[1], old_rows[3])  # "c"
    np.testing.assert_array_equal(new_rows[2], old_rows[1])  # "a"
    np.testing.assert_array_equal(
        new.get_layer("word_features_maxout").get_weights()[0], old.get_layer("word_features_maxout").get_weights()[0]
    )


# -- the character CNN (model.char_cnn_dim) -------------------------------------------------------------------
def test_char_codes_are_each_words_first_characters_as_code_points_plus_one():
    codes = char_codes(tf.constant([["Apple", ""], ["naïve", "internationalization"]])).numpy()
    assert codes.shape == (2, 2, WORD_CHARACTERS) and codes.dtype == np.int64
    assert codes[0, 0].tolist() == [ord(c) + 1 for c in "Apple"] + [0] * (WORD_CHARACTERS - 5)
    assert not codes[0, 1].any()  # "" (padding) has no characters
    assert codes[1, 0, 2] == ord("ï") + 1  # characters, not UTF-8 bytes
    assert codes[1, 1].tolist() == [ord(c) + 1 for c in "internationalization"[:WORD_CHARACTERS]]  # cut


def test_a_character_cnn_reads_only_a_words_own_characters():
    keras.utils.set_random_seed(4)
    layer = CharacterCNN(filters=16, kernel_size=3, char_dim=5, buckets=300, name="chars")
    codes = char_codes(tf.constant([["Apple", "", "apple"], ["Zorblax", "Zorblix", "the"]]))
    vectors = keras.ops.convert_to_numpy(layer(codes))
    assert vectors.shape == (2, 3, 16)
    assert not vectors[0, 1].any()  # a word without characters ("" padding) gets zeros
    assert np.abs(vectors[0, 0] - vectors[0, 2]).max() > 1e-4  # the capital matters
    assert np.abs(vectors[1, 0] - vectors[1, 1]).max() > 1e-4  # one letter apart
    # padding characters are not read: neither what padding's embedding row holds, nor how many there are
    table = layer.embedding.embeddings
    table.assign(keras.ops.concatenate([keras.ops.full((1, 5), 7.0), table[1:]], axis=0))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(codes)), vectors, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(codes[:, :, :8])), vectors, atol=1e-6)
    # a code point above the buckets shares the row of its remainder
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(tf.constant([[[ord("a") + 1 + 300]]]))),
        keras.ops.convert_to_numpy(layer(tf.constant([[[ord("a") + 1]]]))),
    )
    assert CharacterCNN.from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match="CharacterCNN: filters \\(0\\)"):
        CharacterCNN(filters=0)


@pytest.mark.parametrize("char_cnn_dim", [0, 8], ids=["without", "with"])
def test_two_unseen_words_that_differ_only_in_spelling_get_different_vectors_with_the_character_cnn(char_cnn_dim):
    """Both words are the same OOV id with the same shape and (here) the same hashed affixes: only their
    characters tell them apart, and only the character CNN reads those."""
    keras.utils.set_random_seed(5)
    model = build_model(HEADS, char_cnn_dim=char_cnn_dim, **SIZES)
    names = encoder_input_names(characters=bool(char_cnn_dim))
    assert (CHAR_CODES in model.input) == bool(char_cnn_dim)  # only a model with the CNN reads characters
    encoder = keras.Model({k: model.input[k] for k in names}, model.get_layer(ENCODER_OUTPUT).output)
    inputs, _, _ = batch(batch_size=2, length=6)
    inputs = {k: np.repeat(inputs[k][:1], 2, axis=0) for k in encoder_input_names()}  # two identical sentences
    inputs["token_ids"][:, 1] = SIZES["vocabulary_size"] - 1  # word 1: the OOV bucket in both
    inputs[CHAR_CODES] = char_codes(
        tf.constant([["the", "blorf", "sat", "on", "", ""], ["the", "quint", "sat", "on", "", ""]])
    ).numpy()
    states = keras.ops.convert_to_numpy(encoder({k: inputs[k] for k in names}, training=False))
    moved = np.abs(states[0] - states[1]).max(axis=-1)[:4]
    if char_cnn_dim:
        assert moved[1] > 1e-4  # the word itself, and through attention its neighbours
    else:
        assert moved.max() < 1e-6  # without it the model has no character input: the sentences are the same to it
