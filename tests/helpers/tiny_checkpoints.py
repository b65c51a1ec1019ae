"""Tiny random Hugging Face BERT checkpoints, written with ``safetensors`` in the layouts users have
(tests/test_checkpoints.py, tests/test_backbone.py)."""

from __future__ import annotations

import json
import pathlib
import zipfile

import numpy as np


def bert_config(vocabulary_size: int, max_position_embeddings: int = 40) -> dict:
    """config.json of a 2-layer BERT of hidden size 16, as transformers writes it."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocabulary_size,
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": max_position_embeddings,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "position_embedding_type": "absolute",
    }


def bert_tensors(config: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random tensors of ``config``'s BERT, named as sentence-transformers saves them (no prefix, weight/bias)."""
    h, i = config["hidden_size"], config["intermediate_size"]

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.3, size=shape).astype("float32")

    t = {
        "embeddings.word_embeddings.weight": normal(config["vocab_size"], h),
        "embeddings.position_embeddings.weight": normal(config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": normal(config["type_vocab_size"], h),
        "embeddings.position_ids": np.arange(config["max_position_embeddings"])[None],  # unused, as in real ones
        "pooler.dense.weight": normal(h, h),
        "pooler.dense.bias": normal(h),
    }
    norms = ["embeddings.LayerNorm"]
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        for name in ("query", "key", "value"):
            t[f"{p}attention.self.{name}.weight"], t[f"{p}attention.self.{name}.bias"] = normal(h, h), normal(h)
        t[p + "attention.output.dense.weight"], t[p + "attention.output.dense.bias"] = normal(h, h), normal(h)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = normal(i, h), normal(i)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = normal(h, i), normal(h)
        norms += [p + "attention.output.LayerNorm", p + "output.LayerNorm"]
    for norm in norms:
        t[norm + ".weight"], t[norm + ".bias"] = 1 + normal(h), normal(h)
    return t


def tokenizer_json(vocabulary: list[str], lowercase: bool, strip_accents: bool | None) -> dict:
    """A ``tokenizers`` library JSON of a BERT WordPiece tokenizer (BertNormalizer, [CLS] A [SEP])."""
    return {
        "version": "1.0",
        "model": {
            "type": "WordPiece",
            "unk_token": "[UNK]",
            "continuing_subword_prefix": "##",
            "vocab": {piece: i for i, piece in enumerate(vocabulary)},
        },
        "normalizer": {
            "type": "BertNormalizer",
            "clean_text": True,
            "handle_chinese_chars": True,
            "strip_accents": strip_accents,
            "lowercase": lowercase,
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
            ],
        },
    }


def write_transformers(
    directory: pathlib.Path, config: dict, tensors: dict[str, np.ndarray], vocabulary: list[str], tokenizer_config: dict
) -> pathlib.Path:
    """transformers' layout of the original BERTs: tensors under ``bert.`` with LayerNorm gamma/beta,
    ``vocab.txt`` and ``tokenizer_config.json``."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    save_file(
        {
            "bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
            for k, v in tensors.items()
        },
        str(directory / "model.safetensors"),
    )
    (directory / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory


def write_sentence_transformers(
    directory: pathlib.Path, config: dict, tensors: dict[str, np.ndarray], vocabulary: list[str], folder: str = ""
) -> pathlib.Path:
    """A sentence-transformers model directory: the BERT in ``folder`` (no pooler tensors, an uncased
    ``tokenizer.json``), a pooling module, ``modules.json``."""
    from safetensors.numpy import save_file

    model = directory / folder
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps(config))
    save_file({k: v for k, v in tensors.items() if not k.startswith("pooler.")}, str(model / "model.safetensors"))
    (model / "tokenizer.json").write_text(json.dumps(tokenizer_json(vocabulary, lowercase=True, strip_accents=None)))
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (directory / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": folder, "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    return directory


def zip_directory(directory: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as z:
        for path in sorted(directory.rglob("*")):
            z.write(path, path.relative_to(directory).as_posix())
    return target
