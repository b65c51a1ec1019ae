"""Subword (WordPiece) vocabularies for generated text: learned on Beam inside Transform, applied in the graph.

A word-level target vocabulary cannot spell the words it did not keep, so a translation of "Jump!"
came out as "¡! ¡!". Here the target side is WordPiece: frequent words are one piece, rarer words
are spelled from frequent pieces ("hablábamos" -> "habl ##ába ##mos"), and every single character
of the training targets is a piece of its own (with and without the ``##`` joiner), so every word
of the training data can be written.

- ``learn_vocabulary`` is a tf.Transform analyzer: on Beam it counts the words of the whole
  dataset and runs TF Text's WordPiece learner (``wordpiece_tokenizer_learner_lib.learn``, the
  same learner as ``bert_vocab_from_dataset``) on the counts, and writes the vocabulary as a
  Transform asset named like any tft vocabulary, so ``TFTransformOutput.vocabulary_by_name`` reads it.
- ``tokenize`` runs TF Text's ``WordpieceTokenizer`` over a lookup table of that asset. TF Text
  ops are linked into stock TF Serving, so a SavedModel holding them is servable there; loading one
  in Python needs ``import tensorflow_text`` first.
- ``model.text.join_words`` is the inverse in the serving graph (pieces -> text, core TF ops).
"""

from __future__ import annotations

import contextlib
import os
import uuid

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib

from mtnlp.model import text

JOINER = text.WORDPIECE_JOINER
UNKNOWN = "[UNK]"  # a character never seen in training; the decoder is never allowed to emit it


class _LearnWordpieceVocabulary(tft_beam.experimental.PTransformAnalyzer):
    """Beam side of ``learn_vocabulary``: words [batches] -> the path of a vocabulary file (one piece a line)."""

    def __init__(self, vocabulary_size: int, file_name: str):
        super().__init__()
        self._vocabulary_size, self._file_name = vocabulary_size, file_name

    def _learn_and_write(self, word_counts: list[tuple[bytes, int]]) -> np.ndarray:
        counts = [(word.decode("utf-8"), count) for word, count in word_counts]
        if not counts:  # no target text (a run without the task): a vocabulary of the unknown piece alone
            return self._write([UNKNOWN])
        # lower_thresh 1: rare pieces still compete; the learner's binary search picks the threshold
        # that lands the vocabulary near the requested size. include_joiner_token: every character
        # also as a continuation piece ("##ñ"), so that every word is spellable.
        pieces = wordpiece_tokenizer_learner_lib.learn(
            counts,
            self._vocabulary_size,
            reserved_tokens=[UNKNOWN],
            lower_thresh=1,
            joiner=JOINER,
            include_joiner_token=True,
        )
        return self._write(pieces)

    def _write(self, pieces: list[str]) -> np.ndarray:
        # tf.Transform copies the asset under its base name, the name `vocabulary_by_name` looks for
        directory = os.path.join(self.base_temp_dir, uuid.uuid4().hex)
        tf.io.gfile.makedirs(directory)
        path = os.path.join(directory, self._file_name)
        with tf.io.gfile.GFile(path, "w") as f:
            f.write("".join(piece + "\n" for piece in pieces))
        return np.array(path.encode("utf-8"))

    def expand(self, batches):
        return (
            batches
            | "Words" >> beam.FlatMap(lambda batch: batch[0].tolist())
            | "Count" >> beam.combiners.Count.PerElement()
            | "Gather" >> beam.combiners.ToList()
            | "Learn" >> beam.Map(self._learn_and_write)
        )


def learn_vocabulary(words: tf.Tensor, vocabulary_size: int, file_name: str) -> tf.Tensor:
    """A WordPiece vocabulary of about ``vocabulary_size`` pieces learned from ``words`` (string [N],
    every word of the dataset once per occurrence). Returns the vocabulary file's path (a Transform
    asset named ``file_name``): string []. ``[UNK]`` is line 0."""
    (path,) = tft.experimental.ptransform_analyzer(
        inputs=[words],
        ptransform=_LearnWordpieceVocabulary(vocabulary_size, file_name),
        output_dtypes=[tf.string],
        output_shapes=[[]],
        output_asset_default_values=[file_name.encode()],
        name=f"learn_{file_name}",
    )
    return path


def tokenize(words: tf.RaggedTensor, vocabulary_file: tf.Tensor) -> tf.RaggedTensor:
    """Piece ids (line numbers of ``vocabulary_file``) of words: ragged string [B, (w)] -> int64 [B, (p)].

    A character outside the vocabulary becomes the ``[UNK]`` piece (0) on its own; the rest of its
    word is still spelled. The lookup table is made by ``tft.apply_vocabulary``'s ``lookup_fn``
    hook, which hands it the final asset path when Transform traces the graph it saves."""
    return tft.apply_vocabulary(words, vocabulary_file, lookup_fn=_wordpiece_lookup, name="wordpiece")


def _wordpiece_lookup(words: tf.RaggedTensor, vocabulary_file: tf.Tensor) -> tuple[tf.RaggedTensor, tf.Tensor]:
    """``tft.apply_vocabulary``'s lookup function: words [B, (w)] -> (piece ids [B, (p)], table size)."""
    with contextlib.ExitStack() as scope:
        if not tf.is_symbolic_tensor(vocabulary_file):
            # The saved graph's path is a concrete asset: the table is then made outside the traced function,
            # so Transform tracks it as a resource that the SavedModel initialises once, at load. Made inside,
            # it would be re-initialised from the file on every call (every request of a served model).
            scope.enter_context(tf.init_scope())
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                vocabulary_file,
                tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            default_value=-1,
        )
    tokenizer = tf_text.WordpieceTokenizer(
        table, suffix_indicator=JOINER, token_out_type=tf.int64, unknown_token=UNKNOWN, split_unknown_characters=True
    )
    return tokenizer.tokenize(words).merge_dims(1, 2), table.size()
