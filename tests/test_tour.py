"""The README's ten-minute tour, command by command.

The commands are read from README.md (between the ``<!-- tour -->`` markers) and run as written: the pipeline step is
the tests' ``pipeline_run`` (``mtnlp run`` on a small slice; ``make run`` is checked to be that command), ``mtnlp
serve`` starts on free loopback ports (the tour's ``localhost:8500``/``8501`` are pointed there), and the Python
snippet runs in a folder whose ``workdir`` is the run's workdir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.serving.conftest import ServerProcess, free_port

VENV_BIN = Path(sys.executable).parent
README = REPO / "README.md"
TOUR_START, TOUR_END = "<!-- tour", "<!-- /tour -->"


def tour_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the tour."""
    text = README.read_text(encoding="utf-8")
    start = text.index(TOUR_START)
    tour = text[start : text.index(TOUR_END, start)]
    return re.findall(r"^```(\w*)\n(.*?)^```", tour, flags=re.S | re.M)


def shell_commands() -> list[str]:
    """Every command of the tour's shell blocks, without its trailing comment."""
    commands = []
    for language, code in tour_blocks():
        if language == "sh":
            commands += [re.sub(r"\s+#\s.*$", "", line).strip() for line in code.splitlines() if line.strip()]
    return commands


def python_snippet() -> str:
    [snippet] = [code for language, code in tour_blocks() if language == "python"]
    return snippet


def tour_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        **extra,
    }


# ----- fast: the tour is what these tests run --------------------------------------------------------------------
def test_every_tour_command_is_one_these_tests_run():
    """A new command in the tour fails here until a test runs it."""
    setup, queries = (
        ["git clone", "make run", "source .venv/bin/activate", "mtnlp serve"],
        ["mtnlp predict", "printf", "curl", "tensorboard"],
    )
    commands = shell_commands()
    assert commands[:4] == [c for c in commands[:4] if any(c.startswith(s) for s in setup)] and len(commands) >= 8
    for command in commands[4:]:
        assert any(command.startswith(q) for q in queries), f"the tour's {command!r} is not run by tests/test_tour.py"
    assert "tfdv.load_stats_binary" in python_snippet() and "tfma.load_eval_result" in python_snippet()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_is_the_quick_pipeline_in_workdir():
    # -n: print the commands only. The pipeline_run fixture runs the same command on a smaller slice.
    result = subprocess.run(["make", "-n", "run"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert ".venv/bin/mtnlp run --profile quick --workdir workdir" in result.stdout


def test_activating_the_venv_puts_mtnlp_on_the_path():
    activate = VENV_BIN / "activate"
    if not activate.exists():
        pytest.skip("not running from a virtual environment")
    result = subprocess.run(
        ["bash", "-c", f"source {activate} && command -v mtnlp && mtnlp --help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(VENV_BIN / "mtnlp") and "predict" in result.stdout


# ----- slow: the tour on a real run -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tour_dir(pipeline_run, tmp_path_factory) -> Path:
    """A folder laid out like a clone after `make run`: its `workdir` is the tests' pipeline run."""
    folder = tmp_path_factory.mktemp("tour")
    (folder / "workdir").symlink_to(pipeline_run.workdir, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def served(tour_dir, tmp_path_factory):
    """The tour's `mtnlp serve`, as written, on free ports."""
    [serve] = [c for c in shell_commands() if c.startswith("mtnlp serve")]
    grpc_port, rest_port = free_port(), free_port()
    log_path = tmp_path_factory.mktemp("tour-logs") / "mtnlp-serve.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {serve} --port {grpc_port} --rest-port {rest_port}"],
        cwd=tour_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=tour_env(),
    )
    server = ServerProcess.__new__(ServerProcess)  # its readiness checks, on this process
    server.proc, server.grpc_port, server.rest_port, server._log, server.log_path = (
        proc,
        grpc_port,
        rest_port,
        log,
        log_path,
    )
    server.wait_ready(timeout=180)
    yield server
    server.stop()


def run_tour_command(command: str, tour_dir: Path, served: ServerProcess) -> subprocess.CompletedProcess:
    command = command.replace("localhost:8500", served.grpc).replace("localhost:8501", served.rest)
    return subprocess.run(
        ["bash", "-c", command],
        cwd=tour_dir,
        capture_output=True,
        text=True,
        timeout=120,
        env=tour_env(MTNLP_SERVING_GRPC=served.grpc, MTNLP_SERVING_REST=served.rest),
    )


@pytest.mark.slow
def test_tour_queries_over_grpc_and_rest(tour_dir, served):
    queries = [c for c in shell_commands() if c.startswith(("mtnlp predict", "printf", "curl"))]
    assert len(queries) >= 4
    for command in queries:
        started = time.monotonic()
        result = run_tour_command(command, tour_dir, served)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        seconds = time.monotonic() - started
        print(f"{seconds:5.1f} s  {command}")
        if command.startswith("mtnlp predict") and "--json" not in command:  # gRPC, human-readable
            assert "Text:      Apple sued Samsung in California." in result.stdout
            assert "Relation:" in result.stdout and "e1='company' e2='chairs'" in result.stdout
        elif command.startswith("mtnlp predict"):  # REST, JSON
            doc = json.loads(result.stdout)
            assert doc["text"] == "Apple sued Samsung in California." and len(doc["ner"]["tags"]) == 6
        elif command.startswith("printf"):  # stdin, JSON Lines, translation
            docs = [json.loads(line) for line in result.stdout.splitlines()]
            assert [d["text"] for d in docs] == ["I loved this film.", "Where is the station?"]
            assert all(
                d["sentiment"]["label"] in ("negative", "positive") and isinstance(d["translation"], str) for d in docs
            )
        else:  # curl: TF Serving's REST API, row format
            [prediction] = json.loads(result.stdout)["predictions"]
            assert prediction["sentiment_label"] in ("negative", "positive") and "ner_tags" in prediction


@pytest.mark.slow
def test_tour_tensorboard_shows_the_training_runs(tour_dir):
    [tensorboard] = [c for c in shell_commands() if c.startswith("tensorboard")]
    port = free_port()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {tensorboard} --port {port} --host 127.0.0.1"],
        cwd=tour_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=tour_env(),
    )
    try:
        deadline, runs = time.monotonic() + 180, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as response:
                    runs = json.loads(response.read())
                if runs:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert runs and any("train" in run for run in runs), runs
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_tour_python_snippet_opens_statistics_evaluation_lineage_and_settings(tour_dir):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", python_snippet()],
        cwd=tour_dir,
        capture_output=True,
        text=True,
        timeout=600,
        env=tour_env(TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stderr[-5000:]
    print(f"snippet: {time.monotonic() - started:.1f} s\n{result.stdout}")
    lines = result.stdout.splitlines()
    # (other tests may rerun the pipeline in this workdir first: "newest" is then that run's)
    assert int(re.search(r"^training examples: (\d+)$", result.stdout, re.M).group(1)) > 0
    metrics = {line.split()[0]: line for line in lines if "{'" in line}
    assert set(metrics) == {"pos", "ner", "sentiment", "relation", "translation"}
    assert "'entity_f1'" in metrics["ner"] and "'bleu'" in metrics["translation"]
    lineage = {
        line.split()[0]
        for line in lines
        if line.split() and line.split()[0] in ("Examples", "TransformGraph", "Schema", "Model")
    }
    assert {"Examples", "TransformGraph", "Schema"} <= lineage
    settings = json.loads(lines[-1])
    assert (
        settings["profile"] == "quick"
        and settings["model"]["num_layers"] > 0
        and "learning_rate" in settings["training"]
    )
