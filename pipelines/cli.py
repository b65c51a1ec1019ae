"""``mtnlp run``: the pipeline, end to end, on this machine."""

from __future__ import annotations

import argparse
import logging
import os
import textwrap
import time

log = logging.getLogger("mtnlp")


def register(subparsers: argparse._SubParsersAction) -> None:
    from mtnlp.data_location import DATA_HELP, default_data_dir
    from mtnlp.pipelines.config import PROFILES
    from mtnlp.pipelines.settings import add_settings_arguments

    run = subparsers.add_parser(
        "run",
        help="run the TFX pipeline locally (ingest ... push)",
        description="Run the TFX pipeline on this machine: ingest, validate, transform, "
        "train, evaluate, bless and push. Settings: the profile, then --config "
        "files, then --tasks/--train-steps/--max-records, then --set.",
    )
    run.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default="quick",
        help="quick: capped data and a small model (<= 10 min on 2 cores); full: all data; finetune: the "
        "pretrained all-MiniLM-L6-v2 encoder fine-tuned on every task (fetch it first: make checkpoints)",
    )
    run.add_argument("--data", default=default_data_dir(), help=DATA_HELP)
    run.add_argument("--workdir", default="workdir", help="artifacts, ML Metadata, serving_model/")
    run.add_argument(
        "--tasks", nargs="+", help="train only these tasks (default: every registered task); same as --set tasks=..."
    )
    run.add_argument(
        "--train-steps", type=int, help="training steps (default: the profile's); same as --set training.train_steps=N"
    )
    run.add_argument(
        "--max-records",
        type=int,
        help="records per task and split (default: the profile's); same as --set max_records_per_split=N",
    )
    add_settings_arguments(run)
    run.add_argument("--no-cache", action="store_true", help="re-execute every component")
    run.add_argument(
        "--verbose", action="store_true", help="print the effective settings; show TensorFlow, Beam and TFX logs"
    )
    run.set_defaults(func=run_command)

    add = subparsers.add_parser(
        "add-data",
        help="add a file of new labelled records as the next data span",
        description="Check a JSON Lines file of one task's records with the ingest rules and "
        "add it to the data folder as the next span "
        "(<data>/spans/<N>/<task>/train.jsonl and validation.jsonl). The next "
        "`mtnlp run` with the same --data trains on it (warm-started from the "
        "latest blessed model).",
    )
    add.add_argument("file", help="JSON Lines records of one task (same fields as data/<task>/)")
    add.add_argument("--task", required=True, help="the task, or one of its heads (ner -> tagging)")
    add.add_argument("--data", default=default_data_dir(), help=DATA_HELP)
    add.add_argument("--validation", help="validation records (default: a deterministic 10 %% of FILE's records)")
    add.add_argument("--force", action="store_true", help="add the file even if some records are malformed")
    add.set_defaults(func=add_data_command)


def run_command(args: argparse.Namespace) -> int:
    from mtnlp import logs
    from mtnlp.data_location import missing_data_message

    logs.quiet_environment(args.verbose)
    from mtnlp.pipelines.config import get_config
    from mtnlp.pipelines.local_runner import Workdir, run_locally
    from mtnlp.pipelines.settings import SettingsError, as_dict, config_changes, config_from_args, format_config
    from mtnlp.pipelines.summary import format_summary, record_config, summarize_latest_run, write_summary

    logs.configure_logging(args.verbose)
    try:
        config = config_from_args(args, shortcuts=_shortcut_settings(args))
    except SettingsError as e:
        log.error("error: %s", e)
        return 2
    if missing := missing_data_message(args.data):
        log.error("error: %s", missing)
        return 2
    if config.transform.backbone_preset:  # not fetched yet: say so now, not when Transform starts
        from mtnlp.model.checkpoints import locate

        try:
            locate(config.transform.backbone_preset)
        except ValueError as e:
            log.error("error: %s", e)
            return 2
    changes = config_changes(get_config(args.profile), config)
    if args.verbose:
        print(
            f"Effective settings (profile {config.profile}; pass them back with --config FILE):\n"
            + textwrap.indent(format_config(config), "  ")
        )

    workdir = Workdir(os.path.abspath(args.workdir))
    log.info(
        "Running the %s pipeline on %s (tasks: %s); workdir %s",
        config.profile,
        args.data,
        ", ".join(config.task_names),
        workdir.root,
    )
    start = time.time()
    error = None
    try:
        run_locally(config, args.data, workdir, enable_cache=not args.no_cache)
    except Exception as e:  # noqa: BLE001 - reported in the summary, with the component's own message
        error = f"{type(e).__name__}: {e}"
    if os.path.exists(workdir.metadata_path):
        record_config(workdir.metadata_path, as_dict(config), started=start)
        summary = summarize_latest_run(workdir.metadata_path)
    else:
        summary = {"components": []}
    summary.update(
        status="failed" if error else "succeeded",
        wall_seconds=round(time.time() - start, 1),
        profile=config.profile,
        data=os.path.abspath(args.data),
        config=as_dict(config),
        config_changes=changes,
        config_sources={"files": [os.path.abspath(f) for f in args.config_files], "set": list(args.assignments)},
    )
    if error:
        summary["error"] = error
    write_summary(summary, workdir.summary_path)
    print(format_summary(summary))
    print(f"  summary: {workdir.summary_path}")
    return 1 if error else 0


def _shortcut_settings(args: argparse.Namespace) -> dict:
    """--tasks, --train-steps and --max-records as settings (they come after --config, before --set)."""
    shortcuts: dict = {}
    if args.tasks:
        shortcuts["tasks"] = list(args.tasks)
    if args.train_steps:
        shortcuts["training"] = {"train_steps": args.train_steps}
    if args.max_records:
        shortcuts["max_records_per_split"] = args.max_records
    return shortcuts


def add_data_command(args: argparse.Namespace) -> int:
    from mtnlp import logs

    logs.quiet_environment()
    from mtnlp.pipelines.add_data import BadDataError, add_span

    logs.configure_logging()
    try:
        added = add_span(args.data, args.task, args.file, args.validation, force=args.force)
    except (BadDataError, KeyError, OSError) as e:
        print(f"error: {e}")
        return 1
    print(
        f"Added span {added.span}: {added.train_records} training and {added.validation_records} validation "
        f"records in {added.folder}"
        + (f" ({len(added.rejected)} malformed, kept for ingest to reject)" if added.rejected else "")
    )
    print("Run `mtnlp run` (with the same --data) to train on it.")
    return 0
