"""Every option of every `mtnlp` command has help text that says its default; every command has a description."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from mtnlp import cli
from tests.conftest import REPO

Command = tuple[tuple[str, ...], argparse.ArgumentParser]


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[Command]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, path + (name,))
    return found


COMMANDS = _commands(cli.build_parser())
LEAVES = [
    (path, parser)
    for path, parser in COMMANDS
    if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
]


def test_the_commands_are_all_there():
    names = {" ".join(path) for path, _ in LEAVES}
    assert {
        "run",
        "add-data",
        "serve",
        "predict",
        "evaluate",
        "kubeflow compile",
        "kubeflow submit",
        "experiment mtl-vs-stl",
        "checkpoint fetch",
    } <= names


@pytest.mark.parametrize("path, parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_option_has_help_with_its_default(path, parser):
    formatter = parser._get_formatter()
    problems = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        if not action.help:
            problems.append(f"{name}: no help")
        elif action.option_strings and not action.required and "default" not in formatter._get_help_string(action):
            problems.append(f"{name}: the help does not say its default: {action.help!r}")
    assert not problems, f"mtnlp {' '.join(path)}:\n" + "\n".join(problems)
    assert parser.description, f"mtnlp {' '.join(path)} has no description"


def test_help_prints_the_defaults():
    result = subprocess.run(
        [sys.executable, "-m", "mtnlp.cli", "predict", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "seconds per call (default: 30.0)" in text and "sentences per request (default: 32)" in text
