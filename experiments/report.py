"""The MTL-vs-STL report: ``results.json`` (every run, and the aggregates), ``report.md`` (the table and
what it says) and two plots (``metrics.png``: per-head bars with error bars; ``curves.png``: validation
accuracy per head over training steps)."""

from __future__ import annotations

import json
import math
import os
import statistics
from typing import Any

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
METRICS_PLOT = "metrics.png"
CURVES_PLOT = "curves.png"
STL = "STL"


def _primary_metrics() -> dict[str, str]:
    from mtnlp.model.tasks import all_heads

    return {h.name: h.primary_metric for h in all_heads()}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}  # fmt: skip


def aggregate(results: dict[str, Any]) -> dict[str, Any]:
    """Per configuration and head: mean and std over seeds of each metric; the cost of each configuration."""
    runs = results["runs"]
    primary = _primary_metrics()
    configs = list(dict.fromkeys(r["config"] for r in runs))
    heads = list(dict.fromkeys(h for r in runs for h in r["metrics"]))
    scores: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for config in configs:
        for head in heads:
            done = [r["metrics"][head] for r in runs if r["config"] == config and head in r["metrics"]]
            if done:
                scores.setdefault(config, {})[head] = {m: _mean_std([d[m] for d in done]) for m in done[0]}
    costs = {}
    for config in configs:
        by_seed: dict[int, list[dict]] = {}
        for r in runs:
            if r["config"] == config:
                by_seed.setdefault(r["seed"], []).append(r)
        # STL: what the separate models cost together; MTL: the one model
        costs[config] = {
            "models": max(len(rs) for rs in by_seed.values()),
            "train_seconds": _mean_std([sum(r["train_seconds"] for r in rs) for rs in by_seed.values()]),
            "parameters": max(sum(r["parameters"] for r in rs) for rs in by_seed.values()),
            "steps": max(sum(r["steps"] for r in rs) for rs in by_seed.values()),
        }
    mtl = [c for c in configs if c != STL]
    overall = {c: statistics.fmean(scores[c][h][primary[h]]["mean"] for h in scores[c]) for c in configs}
    best = max(mtl, key=lambda c: overall[c]) if mtl else None
    return {"configs": configs, "heads": heads, "primary_metric": {h: primary[h] for h in heads},
            "scores": scores, "costs": costs, "mean_primary_metric": overall, "best_mtl": best}  # fmt: skip


def _cell(score: dict[str, float], baseline: dict[str, float] | None) -> str:
    text = f"{score['mean']:.4f} ± {score['std']:.4f}"
    if baseline is not None:
        text += f" ({score['mean'] - baseline['mean']:+.4f})"
    return text


def _verdicts(summary: dict[str, Any], config: str) -> dict[str, list[str]]:
    """Heads where ``config`` beats STL by more than the seeds' spread, trails it, or is within it."""
    verdicts: dict[str, list[str]] = {"better": [], "worse": [], "within noise": []}
    for head in summary["heads"]:
        metric = summary["primary_metric"][head]
        stl, mtl = summary["scores"][STL].get(head), summary["scores"][config].get(head)
        if not stl or not mtl:
            continue
        stl, mtl = stl[metric], mtl[metric]
        delta, noise = mtl["mean"] - stl["mean"], math.hypot(stl["std"], mtl["std"])
        kind = "better" if delta > noise else "worse" if delta < -noise else "within noise"
        verdicts[kind].append(f"{head} ({delta:+.4f})")
    return verdicts


def _what_it_says(summary: dict[str, Any]) -> str:
    best = summary["best_mtl"]
    if best is None or STL not in summary["scores"]:
        return "Only one side of the comparison ran; nothing to compare."
    v = _verdicts(summary, best)
    stl_cost, mtl_cost = summary["costs"][STL], summary["costs"][best]
    parts = [f"The best multi-task configuration by mean primary metric is **{best}** "
             f"({summary['mean_primary_metric'][best]:.4f} against {summary['mean_primary_metric'][STL]:.4f} "
             f"for the single-task models)."]  # fmt: skip
    described = [f"{kind} on {', '.join(heads)}" for kind, heads in v.items() if heads]
    parts.append(f"Against STL it is {'; '.join(described)} (difference of means; \"within noise\": "
                 "smaller than the seeds' combined standard deviation).")  # fmt: skip
    parts.append(
        f"One MTL model has {mtl_cost['parameters']:,} parameters and trained in "
        f"{mtl_cost['train_seconds']['mean']:.0f} s; the {stl_cost['models']} STL models together have "
        f"{stl_cost['parameters']:,} parameters ({mtl_cost['parameters'] / stl_cost['parameters']:.2f}x) and "
        f"trained in {stl_cost['train_seconds']['mean']:.0f} s "
        f"({mtl_cost['train_seconds']['mean'] / stl_cost['train_seconds']['mean']:.2f}x)."
    )
    others = sorted(((summary["mean_primary_metric"][c], c) for c in summary["configs"] if c != STL), reverse=True)
    parts.append("Mean primary metric of each MTL configuration: " + ", ".join(f"{c} {m:.4f}" for m, c in others) + ".")
    return " ".join(parts)


def format_table(summary: dict[str, Any]) -> str:
    configs = summary["configs"]
    lines = ["| head (metric) | " + " | ".join(configs) + " |", "|---|" + "---:|" * len(configs)]
    for head in summary["heads"]:
        metric = summary["primary_metric"][head]
        baseline = summary["scores"].get(STL, {}).get(head, {}).get(metric)
        cells = []
        for config in configs:
            score = summary["scores"].get(config, {}).get(head, {}).get(metric)
            cells.append(_cell(score, None if config == STL else baseline) if score else "–")
        lines.append(f"| {head} ({metric}) | " + " | ".join(cells) + " |")
    costs = summary["costs"]
    lines.append("| training time, s (STL: all models) | "
                 + " | ".join(f"{costs[c]['train_seconds']['mean']:.0f} ± {costs[c]['train_seconds']['std']:.0f}"
                              for c in configs) + " |")  # fmt: skip
    lines.append("| parameters (STL: all models) | " + " | ".join(f"{costs[c]['parameters']:,}" for c in configs) + " |")
    lines.append("| optimizer steps (STL: all models) | " + " | ".join(f"{costs[c]['steps']:,}" for c in configs) + " |")
    return "\n".join(lines)


def _curve(run: dict[str, Any], head: str) -> list[tuple[int, float]]:
    key = f"val_{head}_accuracy" if f"val_{head}_accuracy" in run["curves"][0] else "val_accuracy"
    return [(point["step"], point[key]) for point in run["curves"] if key in point]


def write_plots(results: dict[str, Any], summary: dict[str, Any], report_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads, configs = summary["heads"], summary["configs"]
    colors = {c: plt.get_cmap("tab10")(i) for i, c in enumerate(configs)}

    figure, axes = plt.subplots(1, len(heads), figsize=(3.2 * len(heads), 3.6), squeeze=False)
    for ax, head in zip(axes[0], heads):
        metric = summary["primary_metric"][head]
        shown = [c for c in configs if head in summary["scores"].get(c, {})]
        means = [summary["scores"][c][head][metric]["mean"] for c in shown]
        stds = [summary["scores"][c][head][metric]["std"] for c in shown]
        ax.bar(range(len(shown)), means, yerr=stds, capsize=4, color=[colors[c] for c in shown])
        ax.set_xticks(range(len(shown)), shown, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{head}: {metric}", fontsize=9)
    figure.suptitle("Validation score per head (mean ± std over seeds)", fontsize=10)
    figure.tight_layout()
    figure.savefig(os.path.join(report_dir, METRICS_PLOT), dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(1, len(heads), figsize=(3.2 * len(heads), 3.4), squeeze=False)
    for ax, head in zip(axes[0], heads):
        for config in configs:
            curves = [_curve(r, head) for r in results["runs"] if r["config"] == config and head in r["metrics"]]
            curves = [c for c in curves if c]
            if not curves:
                continue
            steps = [s for s, _ in curves[0]]
            mean = [statistics.fmean(c[i][1] for c in curves if len(c) > i) for i in range(len(steps))]
            ax.plot(steps, mean, marker=".", color=colors[config], label=config)
        ax.set_title(f"{head}: validation accuracy", fontsize=9)
        ax.set_xlabel("optimizer steps", fontsize=8)
    axes[0][0].legend(fontsize=6)
    figure.suptitle("Validation accuracy over training (mean over seeds; MTL models take more steps in all)", fontsize=10)
    figure.tight_layout()
    figure.savefig(os.path.join(report_dir, CURVES_PLOT), dpi=110)
    plt.close(figure)


def _setup(results: dict[str, Any]) -> str:
    study, machine = results["study"], results["machine"]
    m = study["model"]
    t = study["training"]
    tasks = len(study["tasks"])
    return "\n".join([
        f"- Data: `{results['data']}` (train split for training, validation split for scoring; "
        f"{study['max_records_per_split'] or 'all'} records per task and split read, "
        f"{study['eval_records'] or 'all'} validation records per task scored).",
        f"- Encoder for every model: {m['num_layers']} transformer layers, d={m['embedding_dim']}, "
        f"{m['num_heads']} attention heads, feed-forward {m['intermediate_dim']}; batch {t['batch_size']}, "
        f"AdamW, peak learning rate {t['learning_rate']}, cosine schedule with warmup, "
        f"{t['cpu_replicas']}-replica MirroredStrategy.",
        f"- Steps: each STL model {study['steps_per_task']}; each MTL model {study['steps_per_task']} x {tasks} tasks "
        f"= {study['steps_per_task'] * tasks}. Seeds: {', '.join(map(str, study['seeds']))}.",
        f"- Scored through the models' serving signatures with the pipeline's metrics (`serving/evaluate.py`). "
        f"Training time: seconds in `model.fit` (graph tracing and validation points included); for STL the sum "
        f"over the separate models.",
        f"- Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB; the whole study took "
        f"{results.get('wall_seconds', 0) / 60:.0f} min (data preparation {results.get('data_seconds', 0):.0f} s).",
    ])  # fmt: skip


def write_report(results: dict[str, Any], report_dir: str) -> dict[str, Any]:
    summary = aggregate(results)
    results["summary"] = summary
    with open(os.path.join(report_dir, RESULTS_FILE), "w") as f:
        json.dump(results, f, indent=2)
    write_plots(results, summary, report_dir)
    text = "\n\n".join([
        "# Does multi-task learning pay? MTL vs single-task models",
        f"Produced by `{results.get('command', 'mtnlp experiment mtl-vs-stl')}`.",
        _setup(results),
        "Validation scores, mean ± std over seeds; in parentheses the difference to STL.\n\n" + format_table(summary),
        "**What the numbers say.** " + _what_it_says(summary),
        f"![per-head scores]({METRICS_PLOT})\n\n![validation curves]({CURVES_PLOT})",
        "Every run (metrics, curves, time, parameters) is in `results.json`.",
    ])  # fmt: skip
    with open(os.path.join(report_dir, REPORT_FILE), "w") as f:
        f.write(text + "\n")
    return summary
