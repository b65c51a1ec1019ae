"""Warm start: begin training from the latest blessed model instead of from scratch.

The vocabulary is recomputed on every run, so it *grows* with new data rather than being frozen at the
first run: a frozen vocabulary would send every word that first appears in a new span (new names, new
topics) to the OOV bucket forever, which is exactly the data a retrain is for. Warm start stays intact
because embeddings are carried over *by word*: each word of the new vocabulary that the base model knew
gets its learned vector, new words start from a fresh initialization, and padding and OOV rows are
copied. Every other layer is copied by name when its shapes match (a changed architecture is partially
restored, and the log says which layers were not).

The Trainer keeps, beside its serving SavedModel, ``Format-Keras/`` with the Keras model and the
vocabulary it was trained with; that is what a later warm start reads.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import keras
import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

KERAS_DIR = "Format-Keras"
MODEL_FILE = "model.keras"
VOCABULARY_FILE = "words.txt"


def keras_dir_for(serving_model_dir: str) -> str:
    """The Format-Keras folder beside a Trainer's Format-Serving folder."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), KERAS_DIR)


def _read_vocabulary(path: str) -> list[str]:
    with tf.io.gfile.GFile(path, "r") as f:
        return [line.rstrip("\n") for line in f]


def save_for_warm_start(model: keras.Model, vocabulary_file: str, directory: str) -> None:
    """The model's weights (not its optimizer's slots: these files travel with every pushed version, see
    components/served_baseline.py) and the vocabulary they were trained with."""
    from mtnlp.model.network import inference_model  # the uncompiled view; network imports much of model/

    tf.io.gfile.makedirs(directory)
    inference_model(model).save(os.path.join(directory, MODEL_FILE))
    tf.io.gfile.copy(vocabulary_file, os.path.join(directory, VOCABULARY_FILE), overwrite=True)


@dataclasses.dataclass
class WarmStartReport:
    base: str
    layers_restored: int
    layers_skipped: list[str]
    words_carried_over: int
    new_words: int

    def __str__(self) -> str:
        skipped = f"; not restored (shape changed): {', '.join(self.layers_skipped)}" if self.layers_skipped else ""
        return (
            f"warm-started from {self.base}: {self.layers_restored} layers restored, embeddings of "
            f"{self.words_carried_over} known words carried over, {self.new_words} new words{skipped}"
        )


def _map_word_rows(
    new: np.ndarray, old: np.ndarray, new_vocabulary: list[str], old_vocabulary: list[str]
) -> tuple[np.ndarray, int]:
    """Rows: 0 padding, 1..V words in vocabulary order, then OOV buckets (see model/preprocessing.py)."""
    matrix = new.copy()
    matrix[0] = old[0]
    old_index = {word: i for i, word in enumerate(old_vocabulary)}
    carried = 0
    for i, word in enumerate(new_vocabulary):
        j = old_index.get(word)
        if j is not None:
            matrix[i + 1] = old[j + 1]
            carried += 1
    new_oov, old_oov = matrix[len(new_vocabulary) + 1 :], old[len(old_vocabulary) + 1 :]
    n = min(len(new_oov), len(old_oov))
    matrix[len(new_vocabulary) + 1 : len(new_vocabulary) + 1 + n] = old_oov[:n]
    return matrix, carried


def warm_start(model: keras.Model, base_serving_model_dir: str, vocabulary_file: str) -> WarmStartReport | None:
    """Copies the base model's weights into ``model``; None when the base has no Format-Keras folder."""
    from mtnlp.model.network import WORD_EMBEDDING_LAYERS  # here, as in save_for_warm_start

    base = keras_dir_for(base_serving_model_dir)
    if not tf.io.gfile.exists(os.path.join(base, MODEL_FILE)):
        log.warning("No warm start: %s has no %s (trained by an older version?)", base, MODEL_FILE)
        return None
    old_model = keras.saving.load_model(os.path.join(base, MODEL_FILE), compile=False)
    old_layers = {layer.name: layer for layer in old_model.layers}
    new_vocabulary = _read_vocabulary(vocabulary_file)
    old_vocabulary = _read_vocabulary(os.path.join(base, VOCABULARY_FILE))
    restored, skipped, carried = 0, [], 0
    for layer in model.layers:
        old_layer = old_layers.get(layer.name)
        if not layer.weights or old_layer is None:
            continue
        new_weights, old_weights = layer.get_weights(), old_layer.get_weights()
        if layer.name in WORD_EMBEDDING_LAYERS.values():  # [word embeddings(, position embeddings)]
            new_weights[0], carried = _map_word_rows(new_weights[0], old_weights[0], new_vocabulary, old_vocabulary)
            old_weights = [new_weights[0]] + old_weights[1:]
        if [w.shape for w in new_weights] != [w.shape for w in old_weights]:
            skipped.append(layer.name)
            continue
        layer.set_weights(old_weights)
        restored += 1
    return WarmStartReport(base_serving_model_dir, restored, skipped, carried, len(new_vocabulary) - carried)
