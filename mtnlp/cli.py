"""The `mtnlp` command. Each subcommand lives with its concern and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

# module -> it defines `register(subparsers)`, adding its subcommands with `set_defaults(func=...)`.
SUBCOMMAND_MODULES = (
    "mtnlp.pipelines.cli",  # run
    "mtnlp.serving.cli",  # serve, predict
    "mtnlp.pipelines.kubeflow_cli",  # kubeflow compile, kubeflow submit
    "mtnlp.experiments.cli",  # experiment mtl-vs-stl
    "mtnlp.model.checkpoints",  # checkpoint fetch
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help unless the help already says what its default is
    (a default that is computed, or None, is described in words instead)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default is None or action.default == []:
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """Every `mtnlp` command's parser (subcommands inherit it): help with defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="mtnlp", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # that concern is not part of this build
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mtnlp.extras import MissingExtraError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MissingExtraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
