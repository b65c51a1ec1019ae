"""The MTL-vs-STL report: ``results.json`` (every run, and the aggregates), ``report.md`` (the tables and
what they say) and three plots (``metrics.png``: per-head scores with error bars; ``curves.png``: each head's
validation metric against the examples *of its task* seen; ``cost.png``: quality against training time and
serving latency)."""

from __future__ import annotations

import json
import math
import os
import statistics
from typing import Any

from mtnlp.experiments.mtl_vs_stl import STL, trained_runs

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
METRICS_PLOT = "metrics.png"
CURVES_PLOT = "curves.png"
COST_PLOT = "cost.png"
# A head's difference from STL counts as real only when every seed agrees on its sign and the mean is more
# than this many standard errors of the per-seed differences from zero; with fewer seeds there is no verdict.
MIN_SEEDS_FOR_VERDICT = 3
STANDARD_ERRORS = 2.0


def _primary_metrics() -> dict[str, str]:
    from mtnlp.model.tasks import all_heads

    return {h.name: h.primary_metric for h in all_heads()}


def _head_tasks() -> dict[str, str]:
    from mtnlp.model.tasks import registered_tasks

    return {h.name: t.name for t in registered_tasks() for h in t.heads}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def _is_stl(config: str) -> bool:
    return config == STL or config.startswith(STL + " ")


def verdict(differences: list[float]) -> str:
    """ "better", "worse" or "within noise" for per-seed paired differences (see ``STANDARD_ERRORS``)."""
    if len(differences) < MIN_SEEDS_FOR_VERDICT:
        return f"no verdict ({len(differences)} seed{'s' if len(differences) != 1 else ''})"
    mean = statistics.fmean(differences)
    error = statistics.stdev(differences) / math.sqrt(len(differences))
    if all(d > 0 for d in differences) and mean > STANDARD_ERRORS * error:
        return "better"
    if all(d < 0 for d in differences) and mean < -STANDARD_ERRORS * error:
        return "worse"
    return "within noise"


def _effects(runs: list[dict[str, Any]], config: str, heads: list[str], primary: dict[str, str]) -> dict[str, Any]:
    """Per head: ``config``'s difference from STL, paired by seed."""
    effects = {}
    for head in heads:
        metric = primary[head]
        stl = {r["seed"]: r["metrics"][head][metric] for r in runs if r["config"] == STL and head in r["metrics"]}
        differences = [
            r["metrics"][head][metric] - stl[r["seed"]]
            for r in runs
            if r["config"] == config and head in r["metrics"] and r["seed"] in stl
        ]
        if differences:
            effects[head] = {
                **_mean_std(differences),
                "higher_on": sum(d > 0 for d in differences),
                "verdict": verdict(differences),
                "differences": differences,
            }
    return effects


def _copies(runs: list[dict[str, Any]], configs: list[str]) -> dict[str, str]:
    """Configurations every run of which is a recorded copy of another configuration's run (an equal-compute
    run whose reference already trained within the budget), mapped to that configuration: they add no column
    or plot series of their own."""
    config_of = {r["key"]: r["config"] for r in runs}
    copies = {}
    for config in configs:
        references = {config_of.get(r.get("same_as")) for r in runs if r["config"] == config}
        if len(references) == 1 and None not in references:
            copies[config] = references.pop()
    return copies


def aggregate(results: dict[str, Any]) -> dict[str, Any]:
    """Per configuration and head: mean and std over seeds of each metric, the paired difference from STL,
    and what each configuration costs (STL: its separate models together)."""
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
        seeds = list(by_seed.values())
        costs[config] = {
            "models": max(len(rs) for rs in seeds),
            "train_seconds": _mean_std([sum(r["train_seconds"] for r in rs) for rs in seeds]),
            "parameters": max(sum(r["parameters"] for r in rs) for rs in seeds),
            "steps": _mean_std([sum(r["steps"] for r in rs) for rs in seeds]),
            # the models train one after another: the largest process is the peak
            "peak_rss_mb": max((r.get("peak_rss_mb", 0) for rs in seeds for r in rs), default=0),
            # one one-example request per signature of every model, one model after another
            "serving_ms": _mean_std([sum(sum(r.get("serving_ms", {}).values()) for r in rs) for rs in seeds]),
            "reached_cap": sum(1 for rs in seeds for r in rs if r.get("points") and not r.get("stopped_early")),
            # equal compute: seeds on which the reference MTL run already fit the budget (the same run)
            "same_as_reference": sum(1 for rs in seeds for r in rs if r.get("same_as")),
            "seeds": len(seeds),
        }
    effects = {c: _effects(runs, c, heads, primary) for c in configs if c != STL}
    copies = _copies(runs, configs)
    # STL and the MTL configurations, compared on the heads they all have (all of them once STL is complete)
    compared = [c for c in configs if c == STL or not _is_stl(c)]
    compared_heads = [h for h in heads if all(h in scores[c] for c in compared)]
    overall = {
        c: statistics.fmean(scores[c][h][primary[h]]["mean"] for h in compared_heads)
        for c in compared
        if compared_heads
    }
    mtl = [c for c in overall if not _is_stl(c) and c not in copies]
    planned = results.get("planned") or [r["key"] for r in runs]
    return {
        "configs": configs,
        "heads": heads,
        "primary_metric": {h: primary[h] for h in heads},
        "scores": scores,
        "effects": effects,
        "costs": costs,
        "mean_primary_metric": overall,
        "compared_heads": compared_heads,
        "copies": copies,
        "best_mtl": max(mtl, key=lambda c: overall[c]) if mtl else None,
        "progress": {"done": sum(1 for r in runs if r["key"] in set(planned)), "planned": len(planned)},
    }


def _cell(score: dict[str, float], effect: dict[str, Any] | None) -> str:
    text = f"{score['mean']:.4f} ± {score['std']:.4f}"
    if effect is not None:
        text += f" ({effect['mean']:+.4f}; higher on {effect['higher_on']}/{effect['n']})"
    return text


def shown_configs(summary: dict[str, Any]) -> list[str]:
    """The configurations with runs of their own (not recorded copies of another's)."""
    return [c for c in summary["configs"] if c not in summary["copies"]]


def _label(summary: dict[str, Any], config: str) -> str:
    """A plot label: the configuration, and those recorded as copies of it."""
    also = [c for c, reference in summary["copies"].items() if reference == config]
    return config + "".join(f"\n(= {c})" for c in also)


def format_differences(summary: dict[str, Any]) -> str:
    """Markdown: per head, each configuration's per-seed paired difference from STL and its verdict."""
    configs = [c for c in shown_configs(summary) if c in summary["effects"]]
    lines = [
        "| head (metric) | " + " | ".join(f"{c} − STL, per seed" for c in configs) + " |",
        "|---|" + "---:|" * len(configs),
    ]
    for head in summary["heads"]:
        cells = []
        for config in configs:
            effect = summary["effects"][config].get(head)
            cells.append(
                "–"
                if effect is None
                else " / ".join(f"{d:+.4f}" for d in effect["differences"]) + f" → **{effect['verdict']}**"
            )
        lines.append(f"| {head} ({summary['primary_metric'][head]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per head (its primary metric, with the paired difference from STL) and per cost."""
    configs = shown_configs(summary)
    lines = ["| head (metric) | " + " | ".join(configs) + " |", "|---|" + "---:|" * len(configs)]
    for head in summary["heads"]:
        metric = summary["primary_metric"][head]
        cells = []
        for config in configs:
            score = summary["scores"].get(config, {}).get(head, {}).get(metric)
            cells.append(_cell(score, summary["effects"].get(config, {}).get(head)) if score else "–")
        lines.append(f"| {head} ({metric}) | " + " | ".join(cells) + " |")
    costs = summary["costs"]
    rows = [
        ("models", lambda c: f"{c['models']}"),
        ("parameters (all models)", lambda c: f"{c['parameters']:,}"),
        (
            "training time, s (all models)",
            lambda c: f"{c['train_seconds']['mean']:.0f} ± {c['train_seconds']['std']:.0f}",
        ),
        ("optimizer steps (all models)", lambda c: f"{c['steps']['mean']:,.0f}"),
        ("peak memory, MB (largest process)", lambda c: f"{c['peak_rss_mb']:,}"),
        ("serving latency, ms (one request per signature, all models)", lambda c: f"{c['serving_ms']['mean']:.1f}"),
        ("runs that reached the step cap", lambda c: f"{c['reached_cap']}"),
    ]
    for title, cell in rows:
        lines.append(f"| {title} | " + " | ".join(cell(costs[c]) for c in configs) + " |")
    return "\n".join(lines)


def _what_it_says(summary: dict[str, Any]) -> str:
    best = summary["best_mtl"]
    if best is None or STL not in summary["mean_primary_metric"]:
        return "Only one side of the comparison has finished; nothing to compare yet."
    effects = summary["effects"][best]
    by_verdict: dict[str, list[str]] = {}
    for head, effect in effects.items():
        by_verdict.setdefault(effect["verdict"], []).append(f"{head} ({effect['mean']:+.4f})")
    stl_cost, mtl_cost = summary["costs"][STL], summary["costs"][best]
    parts = [
        f"The best multi-task configuration by mean primary metric is **{best}** "
        f"({summary['mean_primary_metric'][best]:.4f} against {summary['mean_primary_metric'][STL]:.4f} for the "
        f"single-task models{_over(summary)}). Against STL, paired by seed, it is "
        + "; ".join(f"{kind} on {', '.join(heads)}" for kind, heads in sorted(by_verdict.items()))
        + ".",
        f"One MTL model has {mtl_cost['parameters']:,} parameters, trained in {mtl_cost['train_seconds']['mean']:.0f} s "
        f"with a peak of {mtl_cost['peak_rss_mb']:,} MB and answers all its signatures in "
        f"{mtl_cost['serving_ms']['mean']:.1f} ms; the {stl_cost['models']} STL models together have "
        f"{stl_cost['parameters']:,} parameters, trained in {stl_cost['train_seconds']['mean']:.0f} s with a peak of "
        f"{stl_cost['peak_rss_mb']:,} MB and answer in {stl_cost['serving_ms']['mean']:.1f} ms. MTL over STL: "
        f"{mtl_cost['parameters'] / stl_cost['parameters']:.2f}x the parameters, "
        f"{mtl_cost['train_seconds']['mean'] / stl_cost['train_seconds']['mean']:.2f}x the training time, "
        f"{mtl_cost['serving_ms']['mean'] / max(stl_cost['serving_ms']['mean'], 1e-9):.2f}x the serving latency.",
    ]
    for config in summary["configs"]:
        cost = summary["costs"][config]
        if config in summary["copies"]:
            parts.append(
                f"{config}: on every seed the reference MTL model already trained within the single-head "
                f"STL models' total time, so its figures are those of {summary['copies'][config]}."
            )
        elif cost["same_as_reference"]:
            parts.append(
                f"{config}: on {cost['same_as_reference']} of {cost['seeds']} seeds the reference MTL model "
                "already trained within the single-head STL models' total time, so that run is its figure."
            )
    capped = [c for c in shown_configs(summary) if summary["costs"][c]["reached_cap"]]
    if capped:
        parts.append(
            "Runs that reached their step cap without converging (their figure is a lower bound): "
            + ", ".join(f"{c} ({summary['costs'][c]['reached_cap']})" for c in capped)
            + "."
        )
    progress = summary["progress"]
    if progress["done"] < progress["planned"]:
        parts.append(
            f"**Partial study:** {progress['done']} of {progress['planned']} planned runs have finished; "
            "running the same command again resumes it."
        )
    return " ".join(parts)


def _over(summary: dict[str, Any]) -> str:
    """How the mean primary metric was taken, when not over every head."""
    if summary["compared_heads"] == summary["heads"]:
        return ""
    return f", mean over the heads both have: {', '.join(summary['compared_heads'])}"


def _curve(run: dict[str, Any], head: str, tasks: dict[str, str]) -> tuple[list[float], list[float]]:
    """(examples of the head's task seen, primary metric) at each validation point; runs without points
    (fixed steps): (steps, Keras validation accuracy)."""
    if run.get("points"):
        points = [p for p in run["points"] if head in p["primary"]]
        return [p["examples"].get(tasks[head], 0) for p in points], [p["primary"][head] for p in points]
    key = f"val_{head}_accuracy" if f"val_{head}_accuracy" in run["curves"][0] else "val_accuracy"
    points = [p for p in run["curves"] if key in p]
    return [p["step"] for p in points], [p[key] for p in points]


def write_plots(results: dict[str, Any], summary: dict[str, Any], report_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads, configs = summary["heads"], shown_configs(summary)
    colors = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(configs)}
    tasks = _head_tasks()

    # points, not bars from zero: the differences that matter are a fraction of a point
    figure, axes = plt.subplots(1, len(heads), figsize=(3.2 * len(heads), 3.8), squeeze=False)
    for ax, head in zip(axes[0], heads):
        metric = summary["primary_metric"][head]
        shown = [c for c in configs if head in summary["scores"].get(c, {})]
        for x, config in enumerate(shown):
            seeds = [
                r["metrics"][head][metric] for r in results["runs"] if r["config"] == config and head in r["metrics"]
            ]
            ax.scatter([x] * len(seeds), seeds, color=colors[config], alpha=0.45, s=14)
            score = summary["scores"][config][head][metric]
            ax.errorbar(x, score["mean"], yerr=score["std"], fmt="_", markersize=16, capsize=5, color=colors[config])
        ax.set_xticks(range(len(shown)), [_label(summary, c) for c in shown], rotation=60, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(shown) - 0.4)
        ax.set_title(f"{head}: {metric}", fontsize=9)
    figure.suptitle("Validation score per head (each seed a dot; mean ± std)", fontsize=10)
    figure.tight_layout()
    figure.savefig(os.path.join(report_dir, METRICS_PLOT), dpi=110)
    plt.close(figure)

    with_points = any(r.get("points") for r in results["runs"])
    figure, axes = plt.subplots(1, len(heads), figsize=(3.2 * len(heads), 3.4), squeeze=False)
    for ax, head in zip(axes[0], heads):
        for config in configs:
            curves = [_curve(r, head, tasks) for r in results["runs"] if r["config"] == config and head in r["metrics"]]
            curves = [c for c in curves if c[0]]
            if not curves:
                continue
            length = max(len(x) for x, _ in curves)
            xs = [statistics.fmean(x[i] for x, _ in curves if len(x) > i) for i in range(length)]
            ys = [statistics.fmean(y[i] for _, y in curves if len(y) > i) for i in range(length)]
            ax.plot(xs, ys, marker=".", color=colors[config], label=_label(summary, config))
        ax.set_title(f"{head}: {summary['primary_metric'][head] if with_points else 'validation accuracy'}", fontsize=9)
        ax.set_xlabel(f"{tasks[head]} examples seen" if with_points else "optimizer steps", fontsize=8)
    axes[0][0].legend(fontsize=6)
    figure.suptitle(
        "Validation metric over training, against the examples of the head's own task seen "
        "(mean over the seeds that reached each point)"
        if with_points
        else "Validation accuracy over training (mean over seeds)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(os.path.join(report_dir, CURVES_PLOT), dpi=110)
    plt.close(figure)

    overall = summary["mean_primary_metric"]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, (cost, label) in zip(
        axes, (("train_seconds", "training time, s (all models)"), ("serving_ms", "serving latency, ms (all models)"))
    ):
        for config in (c for c in configs if c in overall):
            ax.scatter(
                summary["costs"][config][cost]["mean"],
                overall[config],
                color=colors[config],
                label=_label(summary, config),
                s=40,
            )
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("mean primary metric over the heads", fontsize=8)
    axes[0].legend(fontsize=6)
    figure.suptitle("Quality against cost (configurations that cover every head)", fontsize=10)
    figure.tight_layout()
    figure.savefig(os.path.join(report_dir, COST_PLOT), dpi=110)
    plt.close(figure)


def _setup(results: dict[str, Any]) -> str:
    from mtnlp.machine import one_line

    study = results["study"]
    m, t = study["model"], study["training"]
    trained = trained_runs(results["runs"])
    progress = results["summary"]["progress"]
    so_far = " so far" if progress["done"] < progress["planned"] else ""
    lines = [
        f"- Data: `{results['data']}` (train split for training, validation split for scoring; "
        f"{study['max_records_per_split'] or 'all'} records per task and split read, "
        f"{study['eval_records'] or 'all'} validation records per task scored at the end).",
        f"- Encoder for every model: {m['num_layers']} transformer layers, d={m['embedding_dim']}, "
        f"{m['num_heads']} attention heads, feed-forward {m['intermediate_dim']}, subword features "
        f"{'on' if m['subword_features'] else 'off'}; batch {t['batch_size']}, AdamW, peak learning rate "
        f"{t['learning_rate']}, cosine schedule with warmup over the cap, {t['cpu_replicas']}-replica MirroredStrategy.",
    ]
    if study.get("patience") is not None:
        lines.append(
            f"- Convergence: a validation point every {study['validation_every']} steps scores each model's heads on "
            f"their primary metric ({study['selection_records']} validation records per task, through the model's "
            f"serving signatures, greedy decoding); training stops once none of the model's heads has beaten its own "
            f"best for {study['patience']} points, and the weights of the best point by the mean over its heads are "
            f"kept. Caps: "
            f"{study['steps_per_task']:,} steps per STL model, {study.get('mtl_steps') or 'steps x tasks'} per MTL model."
        )
    else:
        lines.append(f"- Fixed steps: each STL model {study['steps_per_task']}, each MTL model that times the tasks.")
    distilled = sorted({r["config"] for r in results["runs"] if "teacher_seconds" in r})
    if distilled:
        lines.append(
            f"- Distillation ({', '.join(distilled)}): every head also learns from the seed's STL model of it, the "
            "target annealed linearly from the teacher's distribution to the gold label over the run "
            "(`model/distillation.py`); its training time counts its teachers' training and the pass that caches "
            "their predictions (in `results.json`: `own_train_seconds`, `teacher_seconds`)."
        )
    with_settings = [v for v in study.get("variants", ()) if v.get("settings")]
    if with_settings:
        lines.append(
            "- Settings over every model's, per variant: "
            + "; ".join(f"{v['label'] or v['sampling']}: `{' '.join(v['settings'])}`" for v in with_settings)
            + "."
        )
    lines += [
        f"- Final scores through the serving signatures with the pipeline's metrics (`serving/evaluate.py`), beam "
        f"width {study.get('beam_width', 1)}. Seeds: {', '.join(map(str, study['seeds']))}; differences from STL "
        f"are paired by seed: *better*/*worse* when every seed agrees and the mean is more than "
        f"{STANDARD_ERRORS:g} standard errors from zero, else *within noise* (no verdict below "
        f"{MIN_SEEDS_FOR_VERDICT} seeds).",
        "- Training time: seconds in `model.fit` (validation points included); peak memory: the peak resident "
        "memory of the process that trained and scored the model; serving latency: median of 20 one-example "
        "requests to each signature that answers the model's heads, in process.",
        f"- Machine: {one_line(results['machine'])}; the {len(trained)} models trained{so_far} took "
        f"{sum(r['wall_seconds'] for r in trained) / 3600:.1f} h of wall time (each in a process of its own: "
        f"training, validation points, final scores, latency); data preparation took "
        f"{results.get('data_seconds', 0):.0f} s in the last invocation (Transform's output is reused on resume).",
    ]
    return "\n".join(lines)


def write_report(results: dict[str, Any], report_dir: str) -> dict[str, Any]:
    summary = aggregate(results)
    results["summary"] = summary
    with open(os.path.join(report_dir, RESULTS_FILE), "w") as f:
        json.dump(results, f, indent=2)
    write_plots(results, summary, report_dir)
    text = "\n\n".join(
        [
            "# Does multi-task learning pay? MTL vs single-task models",
            f"Produced by `{results.get('command', 'mtnlp experiment mtl-vs-stl')}`.",
            _setup(results),
            "Validation scores, mean ± std over seeds; in parentheses the mean per-seed difference from STL and on "
            "how many seeds the configuration was higher.\n\n" + format_table(summary),
            "Each head's difference from STL, seed by seed, and its verdict.\n\n" + format_differences(summary),
            "**What the numbers say.** " + _what_it_says(summary),
            f"![per-head scores]({METRICS_PLOT})\n\n![validation curves]({CURVES_PLOT})\n\n![quality against cost]({COST_PLOT})",
            "Every run (metrics, validation points, time, memory, latency, parameters) is in `results.json`.",
        ]
    )
    with open(os.path.join(report_dir, REPORT_FILE), "w") as f:
        f.write(text + "\n")
    return summary
