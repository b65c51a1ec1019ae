"""The WordPiece target vocabulary: learned on Beam inside a real tf.Transform analysis, applied in the graph."""

from __future__ import annotations

import tempfile

import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from mtnlp.model import subwords, text

SPANISH = [
    "¿Dónde está la estación?",
    "La estación está cerca.",
    "Hablamos español.",
    "Hablábamos mucho.",
    "Tomás habla con María.",
    "¡Salta!",
] * 3


def _preprocessing_fn(inputs):
    words = text.split_words(inputs["target"])
    vocabulary = subwords.learn_vocabulary(words.flat_values, 60, "target_pieces")
    return {"pieces": subwords.tokenize(words, vocabulary).to_tensor(default_value=-1, shape=[None, 24])}


def test_every_training_word_is_spelled_by_the_learned_pieces_and_joins_back():
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec({"target": tf.io.FixedLenFeature([], tf.string)})
    )
    with tempfile.TemporaryDirectory() as temp_dir, tft_beam.Context(temp_dir=temp_dir, force_tf_compat_v1=False):
        (transformed, _), transform_fn = (
            [{"target": s} for s in SPANISH],
            metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(_preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(temp_dir + "/out")
        output = tft.TFTransformOutput(temp_dir + "/out")
        pieces = [p.decode() if isinstance(p, bytes) else p for p in output.vocabulary_by_name("target_pieces")]
    assert (
        pieces[0] == subwords.UNKNOWN and 40 <= len(pieces) <= 90
    )  # about the size asked for, all characters forced in
    # every character of the training targets is a piece, first and continuing
    assert {"á", "##á", "ñ", "##ñ"} <= set(pieces)
    for sentence, row in zip(SPANISH, transformed):
        ids = [i for i in row["pieces"] if i >= 0]
        assert 0 not in ids, sentence  # no [UNK]: every word is spellable
        joined = text.join_words(tf.constant([[pieces[i] for i in ids]])).numpy()[0].decode()
        assert joined == sentence


def test_no_target_text_gives_a_vocabulary_of_the_unknown_piece(tmp_path):
    learner = subwords._LearnWordpieceVocabulary(60, "target_pieces")
    learner.base_temp_dir = str(tmp_path)
    path = learner._learn_and_write([]).item().decode()
    assert open(path, encoding="utf-8").read() == subwords.UNKNOWN + "\n"
