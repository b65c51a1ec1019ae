"""The op kernels a served model needs beyond core TensorFlow, loaded without the libraries' Python.

The target side of translation is tokenized by TF Text's WordPiece op inside the Transform graph
(``model/subwords.py``), so the SavedModel holds one TF Text op. Stock TF Serving links TF Text's
kernels; in Python, ``load_text_ops`` registers the same kernels with ``tf.load_op_library`` from the
installed tensorflow-text package without importing its Python package (which imports Keras), so a
process that only serves or scores a model stays as light as TF Serving.
"""

from __future__ import annotations

import importlib.machinery
import os

import tensorflow as tf

# The op libraries whose ops the exported graphs use.
TEXT_OP_LIBRARIES = ("_wordpiece_tokenizer.so",)


def load_text_ops() -> None:
    """Registers TF Text's kernels that the project's SavedModels use (idempotent)."""
    # PathFinder looks at the installed files only, so this works where the package's import is blocked
    spec = importlib.machinery.PathFinder.find_spec("tensorflow_text")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "tensorflow-text is not installed: the model's WordPiece op needs its kernels "
            "(pip install tensorflow-text, the version matching TensorFlow)"
        )
    ops_dir = os.path.join(spec.submodule_search_locations[0], "python", "ops")
    for library in TEXT_OP_LIBRARIES:
        tf.load_op_library(os.path.join(ops_dir, library))
