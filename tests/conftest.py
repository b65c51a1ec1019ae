"""Shared fixtures. ``pipeline_run`` runs the real pipeline once per session on a tiny slice of the
bundled data, in a subprocess exactly as a user runs ``mtnlp run``."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = REPO / "data"
# Small enough for a ~2 minute run, large enough that every head beats the quick profile's gates and
# the translation decoder says more than "." (at 60 steps it has not yet learned any word).
FIXTURE_RECORDS = 200
FIXTURE_STEPS = 250
# Every task, translation included (also the rerun in test_pipeline_e2e passes these).
FIXTURE_TASKS = ("tagging", "sentiment", "relation", "translation")


def run_cli(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtnlp.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@dataclasses.dataclass
class PipelineRun:
    workdir: pathlib.Path
    summary: dict
    stdout: str
    model_name: str = "mtnlp"

    @property
    def serving_model_base(self) -> pathlib.Path:
        return self.workdir / "serving_model" / self.model_name

    @property
    def pushed_model_dir(self) -> pathlib.Path:
        return pathlib.Path(self.summary["pushed_to"])


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> PipelineRun:
    workdir = tmp_path_factory.mktemp("pipeline") / "workdir"
    result = run_cli(
        "run",
        "--profile",
        "quick",
        "--workdir",
        str(workdir),
        "--max-records",
        str(FIXTURE_RECORDS),
        "--train-steps",
        str(FIXTURE_STEPS),
        "--tasks",
        *FIXTURE_TASKS,
    )
    assert result.returncode == 0, f"pipeline failed:\n{result.stdout}\n{result.stderr[-5000:]}"
    summary = json.loads((workdir / "run_summary.json").read_text())
    return PipelineRun(workdir=workdir, summary=summary, stdout=result.stdout)
