"""``mtnlp run``: the pipeline, end to end, on this machine."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time

log = logging.getLogger("mtnlp")

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="run the TFX pipeline locally (ingest ... push)")
    run.add_argument("--profile", choices=("quick", "full"), default="quick",
                     help="quick: capped data and a small model (<= 10 min on 2 cores); full: all data")  # fmt: skip
    run.add_argument("--data", default=DEFAULT_DATA, help="folder with one sub-folder per task (default: bundled data)")
    run.add_argument("--workdir", default="workdir", help="artifacts, ML Metadata, serving_model/ (default ./workdir)")
    run.add_argument("--tasks", nargs="+", help="train only these tasks (default: the profile's)")
    run.add_argument("--train-steps", type=int, help="override the profile's number of training steps")
    run.add_argument("--max-records", type=int, help="override the profile's records per task and split")
    run.add_argument("--no-cache", action="store_true", help="re-execute every component")
    run.add_argument("--verbose", action="store_true", help="show TensorFlow, Beam and TFX logs")
    run.set_defaults(func=run_command)

    add = subparsers.add_parser("add-data", help="add a file of new labelled records as the next data span")
    add.add_argument("file", help="JSON Lines records of one task (same fields as data/<task>/)")
    add.add_argument("--task", required=True, help="the task, or one of its heads (ner -> tagging)")
    add.add_argument("--data", default=DEFAULT_DATA, help="the data folder (default: the bundled data)")
    add.add_argument("--validation", help="validation records (default: a deterministic 10 %% of FILE)")
    add.add_argument("--force", action="store_true", help="add the file even if some records are malformed")
    add.set_defaults(func=add_data_command)


def run_command(args: argparse.Namespace) -> int:
    from mtnlp import logs

    logs.quiet_environment(args.verbose)
    from pipelines.config import get_config
    from pipelines.local_runner import Workdir, run_locally
    from pipelines.summary import format_summary, summarize_latest_run, write_summary

    logs.configure_logging(args.verbose)
    config = get_config(args.profile)
    if args.tasks:
        config = dataclasses.replace(config, tasks=tuple(args.tasks))
    if args.train_steps:
        config = dataclasses.replace(config, training=dataclasses.replace(config.training, train_steps=args.train_steps))
    if args.max_records:
        config = dataclasses.replace(config, max_records_per_split=args.max_records)
    if not os.path.isdir(args.data):
        log.error("error: data folder %s does not exist", args.data)
        return 2

    workdir = Workdir(os.path.abspath(args.workdir))
    log.info("Running the %s pipeline on %s (tasks: %s); workdir %s",
             config.profile, args.data, ", ".join(config.tasks), workdir.root)  # fmt: skip
    start = time.time()
    error = None
    try:
        run_locally(config, args.data, workdir, enable_cache=not args.no_cache)
    except Exception as e:  # noqa: BLE001 - reported in the summary, with the component's own message
        error = f"{type(e).__name__}: {e}"
    summary = summarize_latest_run(workdir.metadata_path) if os.path.exists(workdir.metadata_path) else {"components": []}
    summary.update(status="failed" if error else "succeeded", wall_seconds=round(time.time() - start, 1),
                   profile=config.profile, data=os.path.abspath(args.data))  # fmt: skip
    if error:
        summary["error"] = error
    write_summary(summary, workdir.summary_path)
    print(format_summary(summary))
    print(f"  summary: {workdir.summary_path}")
    return 1 if error else 0


def add_data_command(args: argparse.Namespace) -> int:
    from mtnlp import logs

    logs.quiet_environment()
    from pipelines.add_data import BadDataError, add_span

    logs.configure_logging()

    try:
        added = add_span(args.data, args.task, args.file, args.validation, force=args.force)
    except (BadDataError, KeyError, OSError) as e:
        print(f"error: {e}")
        return 1
    print(f"Added span {added.span}: {added.train_records} training and {added.validation_records} validation "
          f"records in {added.folder}" + (f" ({len(added.rejected)} malformed, kept for ingest to reject)"
                                          if added.rejected else ""))  # fmt: skip
    print("Run `mtnlp run` (with the same --data) to train on it.")
    return 0
