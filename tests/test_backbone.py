"""A pretrained keras-hub backbone as the shared encoder (``transform.backbone_preset``).

No downloads: a tiny randomly initialised BERT preset (and, for the pipeline, the same kind of BERT
as a zipped Hugging Face checkpoint) is written to a temporary directory, with a
WordPiece vocabulary of the bundled data's frequent words plus every letter, digit and punctuation
mark (alone and as a ``##`` continuation), so that it can spell any English word.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import pathlib
import string
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import DATA, REPO, run_cli
from tests.helpers import tiny_checkpoints

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_PIECES = 64  # the backbone's max_sequence_length: long sentences lose their last words


def _frequent_words(limit: int) -> list[str]:
    counts: collections.Counter = collections.Counter()
    for task, field in (("tagging", "tokens"), ("sentiment", "text")):
        with gzip.open(DATA / task / "train.jsonl.gz", "rt", encoding="utf-8") as f:
            for _, line in zip(range(300), f):
                value = json.loads(line)[field]
                counts.update(w.lower() for w in (value if isinstance(value, list) else value.split()) if w.isalpha())
    return [w for w, _ in counts.most_common(limit)]


def _vocabulary() -> list[str]:
    characters = string.ascii_lowercase + string.digits
    vocabulary = SPECIAL + list(characters + string.punctuation) + ["##" + c for c in characters]
    return vocabulary + [w for w in _frequent_words(300) if w not in vocabulary]


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> pathlib.Path:
    import keras_hub

    vocabulary = _vocabulary()
    directory = tmp_path_factory.mktemp("preset") / "tiny_bert"
    keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(str(directory))
    keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary),
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=MAX_PIECES,
    ).save_to_preset(str(directory))
    return directory


def test_word_pieces_match_the_preset_tokenizer_and_first_pieces_point_at_words(preset):
    import keras_hub
    import tensorflow as tf

    from mtnlp.model import backbone

    tokenizer = backbone.preset_tokenizer(str(preset))
    assert (tokenizer.start_id, tokenizer.end_id, tokenizer.max_pieces) == (2, 3, MAX_PIECES)
    reference = keras_hub.tokenizers.Tokenizer.from_preset(str(preset))
    sentences = [["Hello", "world!", "U.S.", "don't", "Zürich", "co-operate", "1,000"], ["the", "movie"], []]
    pieces = backbone.word_pieces(tf.ragged.constant(sentences, dtype=tf.string), tokenizer).to_list()
    for words, word_pieces in zip(sentences, pieces):
        for word, ids in zip(words, word_pieces):
            # the graph's core-op pre-tokenization spells each word as keras-hub's own tokenizer does
            assert ids == reference(word).numpy().tolist(), word

    keep, piece_ids, first_piece = backbone.piece_features(
        tf.ragged.constant(sentences, dtype=tf.string), tokenizer, 128
    )
    counts = [[len(p) for p in row] for row in pieces]
    for row, (words, ids, first) in enumerate(zip(sentences, piece_ids.to_list(), first_piece.to_list())):
        flat = [i + 1 for word in pieces[row] for i in word]  # ids + 1: 0 is padding
        assert ids == [tokenizer.start_id + 1, *flat, tokenizer.end_id + 1]
        assert first == [1 + sum(counts[row][:w]) for w in range(len(words))]
        assert all(ids[f] == pieces[row][w][0] + 1 for w, f in enumerate(first))
    assert keep.to_list() == [[True] * 7, [True, True], []]

    # words whose pieces do not fit (start and end pieces included) are dropped from the end, and
    # max_words caps them as max_length does
    short = dataclasses.replace(tokenizer, max_pieces=2 + sum(counts[0][:3]))
    keep, piece_ids, first_piece = backbone.piece_features(tf.ragged.constant(sentences, dtype=tf.string), short, 128)
    assert keep.to_list()[0] == [True] * 3 + [False] * 4
    assert len(piece_ids.to_list()[0]) == short.max_pieces and first_piece.to_list()[0] == [
        1,
        1 + counts[0][0],
        1 + sum(counts[0][:2]),
    ]
    keep, _, first_piece = backbone.piece_features(tf.ragged.constant(sentences, dtype=tf.string), tokenizer, 1)
    assert keep.to_list() == [[True] + [False] * 6, [True, False], []] and first_piece.to_list() == [[1], [1], []]


def test_backbone_model_reads_first_pieces_and_saves_and_loads(preset, tmp_path):
    import keras

    from mtnlp.model.layers import FirstPieceGather
    from mtnlp.model.network import build_model, has_backbone, model_input_names
    from mtnlp.model.tasks import all_heads, select_tasks
    from mtnlp.model.warm_start import keras_dir_for, save_for_warm_start, warm_start
    from mtnlp.pipelines.config import get_config
    from mtnlp.sections import HeadConfig

    heads = all_heads(select_tasks(["tagging", "sentiment"]))
    sizes = dict(
        vocabulary_size=50, max_length=16, embedding_dim=8, num_layers=1, num_heads=2, intermediate_dim=16, dropout=0.0
    )
    model = build_model(heads, backbone_preset=str(preset), **sizes)
    assert has_backbone(model) and set(model.input) == set(model_input_names(heads, backbone=True))
    rng = np.random.default_rng(0)
    pieces = np.zeros([2, 10], np.int64)
    pieces[0, :7], pieces[1, :4] = rng.integers(5, 60, size=7), rng.integers(5, 60, size=4)
    first = np.array([[1, 2, 4, 5, 0], [1, 2, 0, 0, 0]], np.int64)
    inputs = {"piece_ids": pieces, "first_piece": first, "entity_ids": np.zeros_like(first)}
    outputs = model(inputs, training=False)
    assert outputs["pos"].shape == (2, 5, len(heads[0].labels)) and outputs["sentiment"].shape == (2, 2)
    # each word reads its first piece's state
    states = rng.normal(size=[2, 10, 3]).astype("float32")
    gathered = np.asarray(FirstPieceGather()(states, first))
    np.testing.assert_array_equal(gathered, states[np.arange(2)[:, None], first])

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(loaded(inputs, training=False)["pos"], outputs["pos"], atol=1e-5)

    # warm start: a new backbone model takes every layer of the saved one (the backbone as one layer)
    vocabulary = tmp_path / "words.txt"
    vocabulary.write_text("the\nmovie\n")
    save_for_warm_start(model, str(vocabulary), keras_dir_for(str(tmp_path / "Format-Serving")))
    fresh = build_model(heads, backbone_preset=str(preset), **sizes)
    projection = fresh.get_layer("backbone_projection")
    projection.set_weights([np.zeros_like(w) for w in projection.get_weights()])  # differs from the base
    report = warm_start(fresh, str(tmp_path / "Format-Serving"), str(vocabulary))
    assert report.layers_skipped == [] and report.layers_restored == sum(1 for layer in model.layers if layer.weights)
    np.testing.assert_allclose(fresh(inputs, training=False)["pos"], outputs["pos"], atol=1e-5)

    layered = {"pos": HeadConfig(encoder_layer=1)}
    with pytest.raises(
        ValueError, match=r"transform.backbone_preset: the masked-word objective and heads.pos.encoder_layer"
    ):
        build_model(heads, backbone_preset=str(preset), head_configs=layered, **sizes)
    with pytest.raises(
        ValueError, match=r"heads.pos.encoder_layer \(1\) cannot be combined with transform.backbone_preset"
    ):
        get_config(
            "quick",
            transform=dataclasses.replace(get_config("quick").transform, backbone_preset=str(preset)),
            heads=layered,
        )


@pytest.fixture(scope="module")
def huggingface_zip(tmp_path_factory) -> pathlib.Path:
    """The same kind of tiny BERT as a zipped sentence-transformers checkpoint (model/checkpoints.py)."""
    vocabulary = _vocabulary()
    config = tiny_checkpoints.bert_config(len(vocabulary), max_position_embeddings=MAX_PIECES)
    root = tmp_path_factory.mktemp("huggingface")
    model = tiny_checkpoints.write_sentence_transformers(
        root / "model", config, tiny_checkpoints.bert_tensors(config, np.random.default_rng(0)), vocabulary
    )
    return tiny_checkpoints.zip_directory(model, root / "model.zip")


@pytest.mark.slow
# the zipped Hugging Face checkpoint runs with the word-shape features beside the backbone (both are uncased)
@pytest.mark.parametrize("checkpoint, shape_features", [("preset", False), ("huggingface_zip", True)])
def test_pipeline_with_a_backbone_trains_pushes_and_serves_raw_text(checkpoint, shape_features, request, tmp_path):
    preset = request.getfixturevalue(checkpoint)
    workdir = tmp_path / "workdir"
    result = run_cli(
        "run",
        "--profile",
        "quick",
        "--workdir",
        str(workdir),
        "--max-records",
        "60",
        "--train-steps",
        "30",
        "--tasks",
        "tagging",
        "sentiment",
        "--set",
        f"transform.backbone_preset={preset}",
        "--set",
        f"model.shape_features_beside_backbone={str(shape_features).lower()}",
        # the tiny random backbone learns nothing in 30 steps: every gate lets it through
        "--set",
        "heads.pos.gate.lower_bound=0",
        "--set",
        "heads.sentiment.gate.lower_bound=0",
        timeout=600,
    )
    assert result.returncode == 0, f"pipeline failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert "pretrained backbone" in result.stdout + result.stderr  # the masked-word objective is off, and said so
    summary = json.loads((workdir / "run_summary.json").read_text())
    pushed = pathlib.Path(summary["pushed_to"])
    assert (pushed / "saved_model.pb").exists()

    # in a fresh process, as TF Serving runs it: no Keras, no TF Text Python package, raw text in
    script = (
        "import json, os, sys\n"
        "for name in ('keras', 'keras_nlp', 'keras_hub', 'tf_keras', 'tensorflow_text'):\n"
        "    sys.modules[name] = None\n"
        "os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
        "import tensorflow as tf\n"
        "from mtnlp.model.serving_ops import load_text_ops\n"
        "load_text_ops()\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "texts = ['Apple sued Samsung in California.', 'I really love this wonderful movie!', 'Hi',\n"
        "         'I REALLY LOVE THIS WONDERFUL MOVIE!']\n"
        "out = model.signatures['serving_default'](text=tf.constant(texts))\n"
        "print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}, default=lambda b: b.decode()))\n"
    )
    served = subprocess.run(
        [sys.executable, "-c", script, str(pushed)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert served.returncode == 0, served.stderr[-3000:]
    out = json.loads(served.stdout.strip().splitlines()[-1])
    longest = max(out["length"])
    assert out["length"][0] == 6 and out["length"][2] == 1
    assert out["tokens"][0][:6] == ["Apple", "sued", "Samsung", "in", "California", "."]
    for name in ("tokens", "pos_tags", "ner_tags"):  # batched on axis 0, T the longest sentence
        assert [len(row) for row in out[name]] == [longest] * 4, name
    assert all(out["pos_tags"][0][:6]) and out["pos_tags"][2][1:] == [""] * (longest - 1)
    assert set(out["sentiment_label"]) <= {"negative", "positive"} and np.shape(out["sentiment_probabilities"]) == (
        4,
        2,
    )
    # the uncased backbone reads the same pieces in capitals; only the shape features beside it tell them apart
    same_in_capitals = np.allclose(out["sentiment_probabilities"][1], out["sentiment_probabilities"][3], atol=1e-6)
    assert same_in_capitals != shape_features

    audit = subprocess.run(
        [sys.executable, str(REPO / "tests" / "helpers" / "audit_ops.py"), str(pushed)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert audit.returncode == 0, audit.stderr[-3000:]
    ops = json.loads(audit.stdout.strip().splitlines()[-1])
    assert ops["unregistered"] == [] and ops["python_ops"] == []  # core TF + the one TF Text op
    assert ops["per_call_initialisation"] == []  # the vocabulary and accent tables are filled once, at load
    assert ops["text_ops"] == ["WordpieceTokenizeWithOffsets"]
