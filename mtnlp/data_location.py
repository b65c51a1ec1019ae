"""Where the task data is, when a command is not given ``--data DIR``.

The installed package carries no data (a wheel has no ``data/`` folder), so the location is explicit:
``$MTNLP_DATA`` when set, else ``data`` in the current directory, which in a clone of the repository
is the bundled data.
"""

from __future__ import annotations

import os

DATA_ENV = "MTNLP_DATA"
DATA_HELP = f"folder with one sub-folder per task (default: ${DATA_ENV}, else ./data, the bundled data in a clone)"


def default_data_dir() -> str:
    """``$MTNLP_DATA``, else ``data`` (relative to the current directory)."""
    return os.environ.get(DATA_ENV) or "data"


def missing_data_message(path: str) -> str | None:
    """None when ``path`` is a folder, else an error that says how to point a command at the data."""
    if os.path.isdir(path):
        return None
    return (
        f"no data folder at {os.path.abspath(path)}: pass --data DIR (a folder with one sub-folder per task) "
        f"or set {DATA_ENV}; a clone of the repository has the bundled data in its data/ folder"
    )
