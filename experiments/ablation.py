"""What each quality lever costs and buys: the multi-task model trained with one lever changed at a time.

Every model is the pipeline's multi-task model (all heads, temperature sampling, the study's encoder and
training settings) trained with the project's own code on one shared Transform output, and scored through its
serving signatures on the same validation records (the MTL-vs-STL study's machinery:
``experiments/mtl_vs_stl.py``). The baseline is the defaults; each lever is a setting as ``mtnlp run --set``
takes it (e.g. ``training.masked_word_share=0.2``). Every configuration is trained with every seed, so each
lever's effect on a head is reported as mean +- std over seeds, its difference from the baseline, and on how
many seeds it was better (a paired comparison: a seed shares its data order and initial weights with the
baseline's run of that seed).

    mtnlp experiment ablation                                  # the default levers, 3 seeds
    mtnlp experiment ablation --levers "masked words" --seeds 1 2
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

from mtnlp.experiments.mtl_vs_stl import _MODEL, _TRAINING, MtlVariant, PlannedRun, StudyConfig

BASELINE = "baseline"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"


@dataclasses.dataclass(frozen=True)
class Lever:
    """One change against the defaults.

    Args:
        name: how the report names it.
        settings: ``section.key=value`` assignments over the study's model and training settings.
        why: what it is expected to do, for the report.
    """

    name: str
    settings: tuple[str, ...]
    why: str = ""


LEVERS = (
    Lever(
        "no subword features",
        ("model.subword_features=false",),
        "words are represented by their vocabulary id alone: no hashed prefix, suffix and shape embeddings",
    ),
    Lever(
        "masked words",
        ("training.masked_word_share=0.2",),
        "the self-supervised masked-word objective takes 20 % of the training examples",
    ),
    Lever("layered heads", ("heads.pos.encoder_layer=1",), "POS reads the first encoder layer instead of the last"),
    Lever(
        "uncertainty weighting",
        ("training.loss_weighting=uncertainty",),
        "learned per-head loss weights (Kendall et al. 2018) instead of fixed ones",
    ),
    Lever(
        "keep best",
        ("training.keep_best=true",),
        "the weights of the validation point with the best mean validation accuracy are kept",
    ),
)
LEVERS_BY_NAME = {lever.name: lever for lever in LEVERS}

STUDIES = {
    # 1,200 steps per model for four tasks (the quick profile's budget) with its encoder: about 3-4 minutes a
    # model on 2 cores, so the default 6 configurations x 3 seeds take about an hour.
    "full": StudyConfig(
        tasks=None,
        steps_per_task=300,
        seeds=(1, 2, 3),
        variants=(MtlVariant(),),
        model=_MODEL,
        training=_TRAINING,
        max_records_per_split=3000,
        eval_records=1000,
        validation_points=4,
    ),
    # A few minutes: every code path, numbers without meaning.
    "quick": StudyConfig(
        tasks=None,
        steps_per_task=10,
        seeds=(1,),
        variants=(MtlVariant(),),
        model=dataclasses.replace(_MODEL, embedding_dim=32, intermediate_dim=64),
        training=_TRAINING,
        max_records_per_split=120,
        eval_records=60,
        validation_points=2,
        eval_steps=2,
    ),
}


def plan_ablation(config: StudyConfig, levers: Sequence[Lever]) -> list[PlannedRun]:
    """Seed by seed: the baseline, then each lever (all heads, the study's one MTL variant)."""
    from mtnlp.model.tasks import select_tasks, supervised_tasks

    tasks = supervised_tasks(select_tasks(config.tasks))
    heads = tuple(h.name for t in tasks for h in t.heads)
    task_names = tuple(t.name for t in tasks)
    steps = config.steps_per_task * len(task_names)
    (variant,) = config.variants
    return [
        PlannedRun(name, heads, task_names, seed, steps, variant, settings)
        for seed in config.seeds
        for name, settings in [(BASELINE, ())] + [(lever.name, lever.settings) for lever in levers]
    ]


def check_levers(config: StudyConfig, levers: Sequence[Lever]) -> None:
    """Every lever's settings apply to the study's config (a typo fails before hours of training)."""
    from mtnlp.experiments.mtl_vs_stl import with_settings

    for lever in levers:
        with_settings(config.model, config.training, config.heads, lever.settings)


def summarize(results: dict[str, Any], planned: Sequence[PlannedRun]) -> dict[str, Any]:
    """Per configuration and head: the primary metric's mean and std over seeds, and per lever its difference
    from the baseline (mean over seeds of the per-seed difference) and the seeds on which it was higher."""
    from mtnlp.experiments.report import _mean_std, _primary_metrics

    keys = {run.key for run in planned}
    runs = [r for r in results["runs"] if r["key"] in keys]
    primary = _primary_metrics()
    configs = list(dict.fromkeys(run.config for run in planned))
    heads = list(dict.fromkeys(h for r in runs for h in r["metrics"]))
    by_config_seed = {(r["config"], r["seed"]): r for r in runs}
    summary: dict[str, Any] = {
        "configs": configs,
        "heads": heads,
        "primary_metric": {h: primary[h] for h in heads},
        "scores": {},
        "effects": {},
        "train_seconds": {},
    }
    for config in configs:
        done = [r for r in runs if r["config"] == config]
        if not done:
            continue
        summary["train_seconds"][config] = _mean_std([r["train_seconds"] for r in done])
        summary["scores"][config] = {
            h: _mean_std([r["metrics"][h][primary[h]] for r in done if h in r["metrics"]]) for h in heads
        }
        if config == BASELINE:
            continue
        effects = {}
        for head in heads:
            pairs = [
                (
                    r["metrics"][head][primary[head]],
                    by_config_seed[(BASELINE, r["seed"])]["metrics"][head][primary[head]],
                )
                for r in done
                if (BASELINE, r["seed"]) in by_config_seed and head in r["metrics"]
            ]
            if pairs:
                differences = [a - b for a, b in pairs]
                effects[head] = {**_mean_std(differences), "higher_on": sum(d > 0 for d in differences)}
        summary["effects"][config] = effects
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per configuration, one column per head (primary metric), and training seconds."""
    heads = summary["heads"]
    header = "| configuration | " + " | ".join(f"{h} ({summary['primary_metric'][h]})" for h in heads) + " | train s |"
    lines = [header, "|" + "---|" * (len(heads) + 2)]
    for config in summary["configs"]:
        if config not in summary["scores"]:
            continue
        cells = []
        for head in heads:
            score = summary["scores"][config][head]
            cell = f"{score['mean']:.4f} ± {score['std']:.4f}"
            effect = summary["effects"].get(config, {}).get(head)
            if effect:
                cell += f" ({effect['mean']:+.4f}; higher on {effect['higher_on']}/{effect['n']})"
            cells.append(cell)
        seconds = summary["train_seconds"][config]
        lines.append(f"| {config} | " + " | ".join(cells) + f" | {seconds['mean']:.0f} |")
    return "\n".join(lines)


def write_report(results: dict[str, Any], summary: dict[str, Any], levers: Sequence[Lever], report_dir: str) -> None:
    from mtnlp.machine import one_line

    study = results["study"]
    text = [
        "# Ablation: what each lever costs and buys",
        "",
        f"Command: `{results.get('command', 'mtnlp experiment ablation')}`",
        "",
        f"- The pipeline's multi-task model with every head; {study['steps_per_task']} steps per task "
        f"({len(summary['configs'])} configurations x {len(study['seeds'])} seeds); encoder "
        f"{study['model']['num_layers']} layers of {study['model']['embedding_dim']}; records per task and split: "
        f"{study['max_records_per_split'] or 'all'}; scored on {study['eval_records'] or 'all'} validation records "
        "per task through the serving signatures.",
        "- Cells: the head's primary metric, mean ± std over seeds; for a lever, (its mean per-seed difference from "
        "the baseline; on how many seeds it was higher). A difference smaller than the std is noise.",
        f"- Machine: {one_line(results['machine'])}; the whole ablation took {results.get('wall_seconds', 0) / 60:.0f} "
        "min (load from other work inflates it).",
        "",
        format_table(summary),
        "",
        "Levers:",
        "",
        *[f"- **{lever.name}** (`{' '.join(lever.settings)}`): {lever.why}" for lever in levers],
        "",
    ]
    with open(os.path.join(report_dir, REPORT_FILE), "w") as f:
        f.write("\n".join(text))
    with open(os.path.join(report_dir, RESULTS_FILE), "w") as f:
        json.dump({**results, "summary": summary}, f, indent=2)


def run_ablation(
    config: StudyConfig, levers: Sequence[Lever], data_root: str, workdir: str, report_dir: str, command: str = ""
) -> dict[str, Any]:
    """Trains and scores every planned model (resuming an interrupted ablation), then writes the report."""
    from mtnlp.experiments.mtl_vs_stl import Study

    check_levers(config, levers)
    os.makedirs(report_dir, exist_ok=True)
    os.makedirs(workdir, exist_ok=True)
    planned = plan_ablation(config, levers)
    results = Study(config, data_root, workdir, os.path.join(report_dir, RESULTS_FILE), planned).run()
    if command:
        results["command"] = command
    summary = summarize(results, planned)
    write_report(results, summary, levers, report_dir)
    return {**results, "summary": summary}
