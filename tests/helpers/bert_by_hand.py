"""BERT by hand, in numpy, from a Hugging Face checkpoint's files: the reference that the loaded backbone is
checked against (tests/test_checkpoints.py). It shares no code with the project or keras-hub: its own
WordPiece tokenizer (BERT's basic tokenizer, then greedy longest-match pieces) and its own forward pass
(post-LayerNorm encoder layers, exact GELU), reading the tensors by their sentence-transformers names.

``python tests/helpers/bert_by_hand.py DIR`` prints the mean-pooled sentence embeddings' cosine
similarities of ``PAIRS`` (the figures tests/test_checkpoints.py holds for all-MiniLM-L6-v2).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import unicodedata

import numpy as np

PAIRS = (
    ("A man is playing a guitar.", "Someone is playing an instrument."),
    ("The new movie is awesome.", "The cat sits outside."),
    ("I drank a coffee at the café.", "Coffee shops are my favourite place."),
    ("The weather is lovely today.", "It's so sunny outside!"),
)


def _is_punctuation(char: str) -> bool:
    code = ord(char)
    return (
        33 <= code <= 47
        or 58 <= code <= 64
        or 91 <= code <= 96
        or 123 <= code <= 126
        or unicodedata.category(char).startswith("P")
    )


def piece_ids(sentence: str, vocabulary: dict[str, int]) -> list[int]:
    """[CLS] pieces [SEP] of an uncased, accent-stripping BERT tokenizer."""
    text = "".join(c for c in unicodedata.normalize("NFD", sentence.lower()) if unicodedata.category(c) != "Mn")
    words = []
    for word in text.split():
        current = ""
        for char in word:
            if _is_punctuation(char):
                words += [current, char] if current else [char]
                current = ""
            else:
                current += char
        words += [current] if current else []
    ids = [vocabulary["[CLS]"]]
    for word in words:
        start, pieces = 0, []
        while start < len(word):
            end = len(word)
            while end > start and (("##" if start else "") + word[start:end]) not in vocabulary:
                end -= 1
            if end == start:
                pieces = [vocabulary["[UNK]"]]
                break
            pieces.append(vocabulary[("##" if start else "") + word[start:end]])
            start = end
        ids += pieces
    return ids + [vocabulary["[SEP]"]]


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


_erf = np.vectorize(math.erf)


def sequence_output(ids: list[int], tensors: dict[str, np.ndarray], config: dict) -> np.ndarray:
    """The last layer's states [P, H] of one sentence (no padding)."""
    t = {k: v.astype(np.float64) for k, v in tensors.items()}
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][: len(ids)]
    x = _layer_norm(
        x + t["embeddings.token_type_embeddings.weight"][0],
        t["embeddings.LayerNorm.weight"],
        t["embeddings.LayerNorm.bias"],
        eps,
    )

    def dense(v: np.ndarray, name: str) -> np.ndarray:
        return v @ t[name + ".weight"].T + t[name + ".bias"]

    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (
            dense(x, f"{p}attention.self.{n}").reshape(len(ids), heads, -1).transpose(1, 0, 2)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        attended = (weights @ v).transpose(1, 0, 2).reshape(len(ids), -1)
        x = _layer_norm(
            x + dense(attended, p + "attention.output.dense"),
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        hidden = dense(x, p + "intermediate.dense")
        hidden = 0.5 * hidden * (1 + _erf(hidden / math.sqrt(2)))
        x = _layer_norm(
            x + dense(hidden, p + "output.dense"), t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps
        )
    return x


def similarities(directory: str) -> list[float]:
    from safetensors.numpy import load_file

    path = pathlib.Path(directory)
    config = json.loads((path / "config.json").read_text())
    vocabulary = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
    tensors = load_file(str(path / "model.safetensors"))
    result = []
    for first, second in PAIRS:
        a, b = (sequence_output(piece_ids(s, vocabulary), tensors, config).mean(0) for s in (first, second))
        result.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    return result


if __name__ == "__main__":
    print(json.dumps([round(s, 6) for s in similarities(sys.argv[1])]))
