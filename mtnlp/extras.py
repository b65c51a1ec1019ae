"""Optional parts of the install: ``pip install 'mtnlp[kubeflow]'`` (Kubeflow Pipelines SDK),
``'mtnlp[study]'`` (the plots of the MTL-vs-STL study) and ``'mtnlp[checkpoints]'`` (Hugging Face
checkpoints as the pretrained backbone). The commands that need one say so."""

from __future__ import annotations

import importlib

# extra -> (the module it brings, what needs it)
EXTRAS = {
    "kubeflow": ("kfp", "mtnlp kubeflow (compiling and submitting Kubeflow pipelines)"),
    "study": ("matplotlib", "mtnlp experiment (the study's plots)"),
    "checkpoints": ("safetensors", "transform.backbone_preset with a Hugging Face checkpoint (its model.safetensors)"),
}


class MissingExtraError(RuntimeError):
    """A command needs an optional dependency that this install lacks; the message says what to install."""


def require_extra(extra: str) -> None:
    """Raises ``MissingExtraError`` unless the module that ``extra`` brings imports."""
    module, needed_by = EXTRAS[extra]
    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{needed_by} needs {module!r}, which this install lacks: pip install 'mtnlp[{extra}]'"
        ) from None
