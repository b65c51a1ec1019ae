"""mtnlp: multi-task NLP as a production system (TFX pipeline, shared Keras encoder, TF Serving)."""

__version__ = "0.1.0"


def require_import_name(imported_as: str, package: str) -> None:
    """Refuses a project folder imported under any name but its package's (``model`` for ``mtnlp.model``).

    From the repository root ``model/`` is also importable as a top-level ``model``; that second import
    would be a second copy of every module (a second task registry, second Keras classes). Each project
    folder's ``__init__.py`` calls this, so the second name fails at once, naming the right one.
    """
    if imported_as != package:
        raise ImportError(
            f"{imported_as!r} is the project's folder {imported_as.replace('.', '/')}/, which is the "
            f"package {package!r}: import {package} (and {package}.<module>) instead"
        )
