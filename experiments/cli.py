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
    from mtnlp.experiments.mtl_vs_stl import STUDIES

    experiment = subparsers.add_parser("experiment", help="run a study on the project's model code")
    studies = experiment.add_subparsers(dest="study", required=True, metavar="STUDY")
    study = studies.add_parser(
        "mtl-vs-stl",
        help="multi-task model vs single-task models, each to convergence (report with tables and plots)",
        description="Trains STL models (one per head, and one per task with several heads) and MTL variants with "
        "the full profile's model, each until its own validation primary metrics stop improving "
        "(best point kept, a cap per model), plus the MTL model within the STL models' training time; "
        "every configuration with every seed, each model in a process of its own. Scores them through "
        "their serving signatures, measures parameters, training time, peak memory and serving latency, "
        "and writes report.md, results.json and plots. Resumes an interrupted study with the same settings.",
    )
    study.add_argument("--quick", action="store_true", help="a few minutes, tiny model and data: checks the machinery")
    study.add_argument(
        "--study",
        choices=sorted(STUDIES),
        help="the study's settings: full (default), quick (as --quick), distill-small (the quick profile's encoder "
        "on 3,000 records per task, fixed steps, MTL with and without distillation from the seed's STL models; "
        "report in reports/mtl-vs-stl-distill-small)",
    )
    study.add_argument("--data", default=default_data_dir(), help=DATA_HELP)
    study.add_argument("--out", help="report folder (default reports/mtl-vs-stl, or reports/mtl-vs-stl-quick)")
    study.add_argument("--workdir", help="pipeline artifacts and ML Metadata (default workdir/experiments/<out name>)")
    study.add_argument("--tasks", nargs="+", help="tasks to include (default: all)")
    study.add_argument("--seeds", type=int, nargs="+", help="seeds (default 1 2 3; quick: 1 2)")
    study.add_argument("--steps-per-task", type=int, help="step cap of each STL model (default 3000; quick: 20)")
    study.add_argument("--mtl-steps", type=int, help="step cap of each MTL model (default 5500, the full profile's)")
    study.add_argument(
        "--patience", type=int, help="validation points without improvement before a model stops (default 3; quick: 1)"
    )
    study.add_argument(
        "--variants",
        nargs="+",
        metavar="VARIANT",
        help="MTL variants: the pipeline's default (temperature=2:fixed), named ones (masked-words, "
        "layered-heads, distill: every head also learns from the seed's STL model of it, annealed to the gold "
        "labels; ema: weight averaging, training.ema_momentum=0.998; distill-ema: both) or SAMPLING[=T]:WEIGHTING, "
        "e.g. uniform:fixed temperature=2:uncertainty; the first is the equal-compute reference (default: "
        "temperature=2:fixed); naming more variants than a recorded study has adds them and keeps its runs",
    )
    study.add_argument(
        "--stl-masked-words",
        action="store_true",
        help="also STL models with the masked-word objective on their own task's text",
    )
    study.add_argument(
        "--max-records", type=int, help="records per task and split read at ingest (default: all; quick: 120)"
    )
    study.add_argument("--eval-records", type=int, help="validation records per task scored (default 2000; quick: 60)")
    study.add_argument(
        "--hours",
        type=float,
        help="time limit of this invocation: start no run that is not expected to finish within it "
        "(from the same model's earlier seeds, else its step cap at the study's mean time per "
        "step); a later run that fits goes first; the same command without it resumes the rest (default: none, run everything left)",
    )
    study.add_argument(
        "--report-only",
        action="store_true",
        help="write report.md and the plots again from --out's results.json (e.g. of a study still "
        "running or stopped part-way) without training",
    )
    study.add_argument("--verbose", action="store_true", help="show TensorFlow, Beam and TFX logs")
    study.set_defaults(func=mtl_vs_stl_command)

    from mtnlp.experiments.ablation import LEVERS

    ablation = studies.add_parser(
        "ablation",
        help="the multi-task model with one quality lever changed at a time, several seeds each",
        description="Trains the multi-task model with the defaults (the baseline) and with each lever changed "
        "(one `--set`-style setting each), with every seed, on one shared Transform output; scores them "
        "through their serving signatures and writes report.md and results.json: per head the mean and "
        "std over seeds and each lever's paired difference from the baseline. Resumes an interrupted "
        "ablation with the same settings.",
    )
    ablation.add_argument(
        "--quick", action="store_true", help="a few minutes, tiny model and data: checks the machinery"
    )
    ablation.add_argument(
        "--levers",
        nargs="+",
        metavar="NAME",
        choices=[lever.name for lever in LEVERS],
        help="levers to compare with the baseline (default: all: "
        + ", ".join(repr(lever.name) for lever in LEVERS)
        + ")",
    )
    ablation.add_argument("--data", default=default_data_dir(), help=DATA_HELP)
    ablation.add_argument("--out", help="report folder (default reports/ablation, or reports/ablation-quick)")
    ablation.add_argument(
        "--workdir", help="pipeline artifacts and ML Metadata (default workdir/experiments/<out name>)"
    )
    ablation.add_argument("--tasks", nargs="+", help="tasks to include (default: all)")
    ablation.add_argument("--seeds", type=int, nargs="+", help="seeds (default 1 2 3; quick: 1)")
    ablation.add_argument("--steps-per-task", type=int, help="steps per task of every model (default 300; quick: 10)")
    ablation.add_argument("--max-records", type=int, help="records per task and split (default 3000; quick: 120)")
    ablation.add_argument(
        "--eval-records", type=int, help="validation records per task scored (default 1000; quick: 60)"
    )
    ablation.add_argument("--verbose", action="store_true", help="show TensorFlow, Beam and TFX logs")
    ablation.set_defaults(func=ablation_command)


def _study_folders(args: argparse.Namespace, report_name: str) -> tuple[str, str] | None:
    """A study's report folder (``--out``, default reports/<name>[-quick]) and work folder (``--workdir``,
    default workdir/experiments/<report folder name>); None, after saying why, when the data folder is missing."""
    from mtnlp.data_location import missing_data_message

    if missing := missing_data_message(args.data):
        log.error("error: %s", missing)
        return None
    out = os.path.abspath(args.out or os.path.join("reports", report_name + ("-quick" if args.quick else "")))
    return out, os.path.abspath(args.workdir or os.path.join("workdir", "experiments", os.path.basename(out)))


def _study_name(args: argparse.Namespace) -> str:
    """Which of the study's settings (``STUDIES``): ``--study``, else quick with ``--quick``, else full."""
    return args.study or ("quick" if args.quick else "full")


def _report_name(args: argparse.Namespace) -> str:
    """The report folder's name under reports/ before ``_study_folders`` adds --quick's suffix: mtl-vs-stl, or
    mtl-vs-stl-<study> for a study other than full and quick."""
    name = _study_name(args)
    return "mtl-vs-stl" if name in ("full", "quick") else f"mtl-vs-stl-{name}"


def mtl_vs_stl_command(args: argparse.Namespace) -> int:
    from mtnlp import logs
    from mtnlp.extras import require_extra

    require_extra("study")
    if args.report_only:
        return _rewrite_report(args)
    logs.quiet_environment(args.verbose)
    from mtnlp.experiments.mtl_vs_stl import study_config, variants_from
    from mtnlp.model import devices

    name = _study_name(args)
    config = study_config(
        name,
        tasks=tuple(args.tasks) if args.tasks else None,
        seeds=tuple(args.seeds) if args.seeds else None,
        steps_per_task=args.steps_per_task,
        mtl_steps=args.mtl_steps,
        patience=args.patience,
        variants=variants_from(args.variants),
        stl_masked_words=args.stl_masked_words or None,
        max_records_per_split=args.max_records,
        eval_records=args.eval_records,
    )
    devices.configure_cpu_replicas(config.training.cpu_replicas)  # before TensorFlow initializes
    from mtnlp.experiments.mtl_vs_stl import run_study
    from mtnlp.experiments.report import REPORT_FILE, format_table

    logs.configure_logging(args.verbose)
    if not (folders := _study_folders(args, _report_name(args))):
        return 2
    out, workdir = folders
    log.warning(
        "MTL vs STL (%s): %d seeds, caps %d steps per STL model and %s per MTL model, report in %s",
        name,
        len(config.seeds),
        config.steps_per_task,
        config.mtl_steps or "that x tasks",
        out,
    )
    start = time.time()
    results = run_study(
        config,
        args.data,
        workdir,
        out,
        command="mtnlp " + shlex.join(sys.argv[1:]),
        verbose=args.verbose,
        hours=args.hours,
    )
    print(format_table(results["summary"]))
    print(
        f"\n{len(results['runs'])} models in {(time.time() - start) / 60:.1f} min; report: {os.path.join(out, REPORT_FILE)}"
    )
    return 0


def _rewrite_report(args: argparse.Namespace) -> int:
    import json

    from mtnlp.experiments.report import REPORT_FILE, RESULTS_FILE, format_table, write_report

    out = os.path.abspath(args.out or os.path.join("reports", _report_name(args)))
    path = os.path.join(out, RESULTS_FILE)
    try:
        with open(path) as f:
            results = json.load(f)
    except FileNotFoundError:
        log.error("error: %s does not exist: run the study first (without --report-only)", path)
        return 2
    except json.JSONDecodeError as e:
        log.error("error: %s is not valid JSON (line %d): %s", path, e.lineno, e.msg)
        return 2
    print(format_table(write_report(results, out)))
    print(f"\nreport: {os.path.join(out, REPORT_FILE)} ({len(results['runs'])} runs)")
    return 0


def ablation_command(args: argparse.Namespace) -> int:
    from mtnlp import logs

    logs.quiet_environment(args.verbose)
    from mtnlp.experiments.ablation import LEVERS, LEVERS_BY_NAME, STUDIES, format_table, run_ablation
    from mtnlp.experiments.mtl_vs_stl import study_config
    from mtnlp.model import devices

    name = "quick" if args.quick else "full"
    config = study_config(
        name,
        STUDIES,
        tasks=tuple(args.tasks) if args.tasks else None,
        seeds=tuple(args.seeds) if args.seeds else None,
        steps_per_task=args.steps_per_task,
        max_records_per_split=args.max_records,
        eval_records=args.eval_records,
    )
    levers = [LEVERS_BY_NAME[n] for n in args.levers] if args.levers else list(LEVERS)
    devices.configure_cpu_replicas(config.training.cpu_replicas)  # before TensorFlow initializes
    logs.configure_logging(args.verbose)
    if not (folders := _study_folders(args, "ablation")):
        return 2
    out, workdir = folders
    log.warning(
        "Ablation (%s): baseline + %d levers x %d seeds, %d steps per task, report in %s",
        name,
        len(levers),
        len(config.seeds),
        config.steps_per_task,
        out,
    )
    start = time.time()
    results = run_ablation(config, levers, args.data, workdir, out, command="mtnlp " + shlex.join(sys.argv[1:]))
    print(format_table(results["summary"]))
    print(
        f"\n{len(results['summary']['configs']) * len(config.seeds)} models in {(time.time() - start) / 60:.1f} min; "
        f"report: {os.path.join(out, 'report.md')}"
    )
    return 0
