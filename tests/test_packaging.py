"""The install: one `mtnlp.` namespace (a user's own model.py cannot shadow ours), a wheel that carries the
package data, an explicit data location, and optional extras that say when they are missing."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO

SCRIPT = os.path.join(os.path.dirname(sys.executable), "mtnlp")


def _mtnlp(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def test_a_users_own_model_and_serving_modules_do_not_shadow_the_project(tmp_path):
    (tmp_path / "model.py").write_text('raise ImportError("the user\'s model.py was imported")\n')
    for name in ("serving", "pipelines", "components"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f'raise ImportError("the user\'s {name}/ was imported")\n')
    code = "import mtnlp.pipelines.schema, mtnlp.serving.cli, mtnlp.model.tasks, mtnlp.components.versioned_pusher; print('ok')"
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
    assert _mtnlp("run", "--help", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("folder", ["model", "pipelines", "serving", "components", "experiments"])
def test_a_project_folder_has_one_import_path(folder):
    """From the repository root a folder is also importable by its bare name: that second copy of its modules
    (a second task registry) is refused, naming the package to import."""
    code = (
        f"import importlib, sys\ntry:\n    importlib.import_module({folder!r})\nexcept ImportError as e:\n    print(e)\n"
        f"else:\n    sys.exit('imported twice')\nimport mtnlp.{folder}, mtnlp.model.tasks\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('model', 'pipelines', 'serving', 'components', "
        "'experiments')))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:] + run.stdout
    refused, modules = run.stdout.strip().splitlines()[-2:]
    assert f"import mtnlp.{folder} (and mtnlp.{folder}.<module>) instead" in refused
    assert modules == "[]"  # nothing of the project stayed imported under a bare name


def test_the_wheel_installs_everything_under_the_mtnlp_namespace(tmp_path):
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("mtnlp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"mtnlp"}, top_level
    for path in (
        "mtnlp/cli.py",
        "mtnlp/model/tasks.py",
        "mtnlp/pipelines/schema/schema.pbtxt",
        "mtnlp/serving/model_server/main.py",
        "mtnlp/components/jsonl_example_gen/executor.py",
        "mtnlp/experiments/mtl_vs_stl.py",
    ):
        assert path in names, path
    assert not any(n.startswith(("tests/", "data/")) for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Provides-Extra: kubeflow" in text and "Provides-Extra: study" in text
    assert "Requires-Dist: tfx==1.16.0\n" in text and "keras-hub" in text and "keras-nlp" not in text


def test_the_data_location_is_explicit(tmp_path):
    missing = _mtnlp("run", cwd=tmp_path)  # no ./data here and no MTNLP_DATA
    assert missing.returncode == 2
    assert f"no data folder at {tmp_path / 'data'}" in missing.stderr and "MTNLP_DATA" in missing.stderr

    env_path = tmp_path / "elsewhere"
    from_env = _mtnlp("run", cwd=tmp_path, env={"MTNLP_DATA": str(env_path)})
    assert from_env.returncode == 2 and f"no data folder at {env_path}" in from_env.stderr


def test_a_missing_extra_is_named_with_its_install_command(tmp_path):
    code = (
        "import sys; sys.modules['kfp'] = None; from mtnlp import cli; "
        "sys.exit(cli.main(['kubeflow', 'compile', '--output', 'p.json']))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "pip install 'mtnlp[kubeflow]'" in run.stderr
    assert not (tmp_path / "p.json").exists()
