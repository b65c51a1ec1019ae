"""Quiet, readable logs: TensorFlow/Beam/absl noise off by default, one line per pipeline step.

``quiet_environment`` must run before TensorFlow is imported (it sets the C++ log level);
``configure_logging`` after the imports (absl and Beam install their own handlers).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

PROJECT_LOGGERS = ("mtnlp", "model", "components", "pipelines", "serving", "experiments")
_PROGRESS = re.compile(r"Component (\S+) is (running|finished)\.")


def quiet_environment(verbose: bool = False) -> None:
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # also hides oneDNN "errors" that are notices
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # also for Beam's worker processes
    for category in (FutureWarning, DeprecationWarning, UserWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)


class _ComponentProgress(logging.Filter):
    """Lets through, reworded, only the runner's "Component X is running/finished" lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        match = _PROGRESS.fullmatch(record.getMessage())
        if not match:
            return record.levelno >= logging.ERROR
        node, state = match.groups()
        record.msg, record.args = ("▶ %s" if state == "running" else "✔ %s"), (node,)
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def configure_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    if verbose:
        return
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)  # INFO so the progress lines reach the filter
    absl = logging.getLogger("absl")
    absl.setLevel(logging.INFO)
    absl.addFilter(_ComponentProgress())
    for noisy in (
        "apache_beam",
        "tensorflow",
        "tfx",
        "ml_metadata",
        "tensorflow_transform",
        "tensorflow_model_analysis",
    ):
        logging.getLogger(noisy).setLevel(logging.ERROR)
