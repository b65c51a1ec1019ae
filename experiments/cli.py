"""``mtnlp experiment mtl-vs-stl``: the multi-task model against one single-task model per head."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time

log = logging.getLogger("mtnlp")


def register(subparsers: argparse._SubParsersAction) -> None:
    from mtnlp.data_location import DATA_HELP, default_data_dir

    experiment = subparsers.add_parser("experiment", help="run a study on the project's model code")
    studies = experiment.add_subparsers(dest="study", required=True, metavar="STUDY")
    study = studies.add_parser(
        "mtl-vs-stl", help="multi-task model vs one single-task model per head (report with table and plots)",
        description="Trains STL models (one per head) and MTL variants with the same encoder and steps per task, "
                    "several seeds each, scores them through their serving signatures, and writes report.md, "
                    "results.json and plots. Resumes an interrupted study with the same settings.",
    )  # fmt: skip
    study.add_argument("--quick", action="store_true", help="a few minutes, tiny model and data: checks the machinery")
    study.add_argument("--data", default=default_data_dir(), help=DATA_HELP)
    study.add_argument("--out", help="report folder (default reports/mtl-vs-stl, or reports/mtl-vs-stl-quick)")
    study.add_argument("--workdir", help="pipeline artifacts and ML Metadata (default workdir/experiments/<out name>)")
    study.add_argument("--tasks", nargs="+", help="tasks to include (default: all)")
    study.add_argument("--seeds", type=int, nargs="+", help="seeds (default 1 2 3; quick: 1 2)")
    study.add_argument("--steps-per-task", type=int,
                       help="optimizer steps of each STL model; MTL: this x tasks (default 480; quick: 20)")
    study.add_argument("--variants", nargs="+", metavar="SAMPLING[=T]:WEIGHTING",
                       help="MTL variants, e.g. proportional:fixed temperature=2:fixed uniform:fixed "
                            "temperature=2:uncertainty (the default set)")  # fmt: skip
    study.add_argument("--max-records", type=int,
                       help="records per task and split read at ingest (default: all; quick: 120)")
    study.add_argument("--eval-records", type=int, help="validation records per task scored (default 2000; quick: 60)")
    study.add_argument("--verbose", action="store_true", help="show TensorFlow, Beam and TFX logs")
    study.set_defaults(func=mtl_vs_stl_command)


def mtl_vs_stl_command(args: argparse.Namespace) -> int:
    from mtnlp import logs
    from mtnlp.extras import require_extra

    require_extra("study")
    logs.quiet_environment(args.verbose)
    from mtnlp.experiments.mtl_vs_stl import study_config, variants_from
    from mtnlp.model import devices

    name = "quick" if args.quick else "full"
    config = study_config(
        name, tasks=tuple(args.tasks) if args.tasks else None, seeds=tuple(args.seeds) if args.seeds else None,
        steps_per_task=args.steps_per_task, variants=variants_from(args.variants),
        max_records_per_split=args.max_records, eval_records=args.eval_records,
    )  # fmt: skip
    devices.configure_cpu_replicas(config.training.cpu_replicas)  # before TensorFlow initializes
    from mtnlp.data_location import missing_data_message
    from mtnlp.experiments.mtl_vs_stl import run_study
    from mtnlp.experiments.report import REPORT_FILE, format_table

    logs.configure_logging(args.verbose)
    out = os.path.abspath(args.out or os.path.join("reports", "mtl-vs-stl" + ("-quick" if args.quick else "")))
    workdir = os.path.abspath(args.workdir or os.path.join("workdir", "experiments", os.path.basename(out)))
    if missing := missing_data_message(args.data):
        log.error("error: %s", missing)
        return 2
    log.warning("MTL vs STL (%s): %d seeds, %d steps per task, report in %s", name, len(config.seeds),
                config.steps_per_task, out)  # fmt: skip
    start = time.time()
    results = run_study(config, args.data, workdir, out, command="mtnlp " + shlex.join(sys.argv[1:]))
    print(format_table(results["summary"]))
    print(f"\n{len(results['runs'])} models in {(time.time() - start) / 60:.1f} min; report: {os.path.join(out, REPORT_FILE)}")
    return 0
