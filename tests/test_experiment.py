"""`mtnlp experiment mtl-vs-stl`: the plan, the aggregation and report, and a real quick study."""

from __future__ import annotations

import json

import pytest

from mtnlp.experiments import report
from mtnlp.experiments.mtl_vs_stl import STUDIES, MtlVariant, plan_runs, study_config
from tests.conftest import run_cli


def test_variants_parse_and_name_themselves():
    assert MtlVariant.parse("temperature=3:uncertainty") == MtlVariant("temperature", "uncertainty", 3.0)
    assert MtlVariant.parse("uniform") == MtlVariant("uniform", "fixed")
    assert MtlVariant("temperature").name == "MTL T=2, fixed"
    with pytest.raises(ValueError, match="unknown task sampling 'random'"):
        MtlVariant.parse("random:fixed")
    with pytest.raises(ValueError, match="unknown loss weighting 'learned'"):
        MtlVariant.parse("uniform:learned")


def test_every_model_gets_the_same_steps_per_task_and_every_seed():
    config = study_config("full", tasks=("tagging", "sentiment"), seeds=(1, 2, 3), steps_per_task=96)
    runs = plan_runs(config)
    stl = [r for r in runs if r.config == "STL"]
    mtl = [r for r in runs if r.config != "STL"]
    assert sorted({r.heads for r in stl}) == [("ner",), ("pos",), ("sentiment",)]
    assert all(r.steps == 96 for r in stl)
    assert all(r.steps == 192 and r.heads == ("pos", "ner", "sentiment") for r in mtl)  # 96 x 2 tasks
    assert len(stl) == 3 * 3 and len(mtl) == len(STUDIES["full"].variants) * 3
    assert len({r.key for r in runs}) == len(runs)
    assert [r.seed for r in runs][: len(runs) // 3] == [1] * (len(runs) // 3)  # seed by seed


def _run(config, seed, metrics, seconds=10.0, parameters=1000):
    return {"key": f"{config}|{sorted(metrics)}|{seed}", "config": config, "seed": seed, "heads": list(metrics),
            "steps": 100, "train_seconds": seconds, "parameters": parameters,
            "metrics": {h: {report._primary_metrics()[h]: v} for h, v in metrics.items()},
            "curves": [{"step": 50, **{f"val_{h}_accuracy": v / 2 for h, v in metrics.items()}},
                       {"step": 100, **{f"val_{h}_accuracy": v for h, v in metrics.items()}}]}  # fmt: skip


def test_aggregate_gives_mean_and_std_over_seeds_and_what_the_models_cost():
    runs = []
    for seed, (s, p) in enumerate([(0.80, 0.90), (0.82, 0.92)]):
        runs += [_run("STL", seed, {"sentiment": s}), _run("STL", seed, {"pos": p})]
        runs.append(_run("MTL T=2, fixed", seed, {"sentiment": s + 0.05, "pos": p - 0.001}, seconds=15, parameters=1200))
    summary = report.aggregate({"runs": runs})
    stl = summary["scores"]["STL"]["sentiment"]["accuracy"]
    assert stl["mean"] == pytest.approx(0.81) and stl["std"] == pytest.approx(0.014142, abs=1e-5) and stl["n"] == 2
    assert summary["costs"]["STL"] == {"models": 2, "train_seconds": {"mean": 20.0, "std": 0.0, "n": 2},
                                       "parameters": 2000, "steps": 200}  # fmt: skip
    assert summary["best_mtl"] == "MTL T=2, fixed"
    verdicts = report._verdicts(summary, "MTL T=2, fixed")
    assert verdicts["better"] == ["sentiment (+0.0500)"] and verdicts["within noise"] == ["pos (-0.0010)"]
    table = report.format_table(summary)
    assert "| sentiment (accuracy) | 0.8100 ± 0.0141 | 0.8600 ± 0.0141 (+0.0500) |" in table
    assert "| parameters (STL: all models) | 2,000 | 1,200 |" in table


@pytest.mark.slow
def test_quick_study_writes_the_report_and_resumes(tmp_path):
    out, workdir = tmp_path / "report", tmp_path / "work"
    # learned loss weighting: the MTL variant with the most machinery of its own
    args = ("experiment", "mtl-vs-stl", "--quick", "--tasks", "sentiment", "relation",
            "--variants", "temperature=2:uncertainty", "--out", str(out), "--workdir", str(workdir))  # fmt: skip
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-5000:]
    results = json.loads((out / "results.json").read_text())
    # 2 seeds x (STL sentiment, STL relation, the MTL variant)
    assert len(results["runs"]) == 6
    assert {r["config"] for r in results["runs"]} == {"STL", "MTL T=2, uncertainty"}
    for run in results["runs"]:
        assert set(run["metrics"]) == set(run["heads"]), run["key"]
        assert all(0.0 <= v <= 1.0 for m in run["metrics"].values() for v in m.values())
        assert len(run["curves"]) == 2 and run["train_seconds"] > 0 and run["parameters"] > 0
    mtl = next(r for r in results["runs"] if r["config"] == "MTL T=2, uncertainty")
    assert mtl["steps"] == 2 * next(r for r in results["runs"] if r["config"] == "STL")["steps"]
    text = (out / "report.md").read_text()
    assert "| sentiment (accuracy) |" in text and "| relation (semeval_macro_f1) |" in text
    assert "**What the numbers say.**" in text and "mtl-vs-stl --quick" in text
    for plot in ("metrics.png", "curves.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[1/6] STL: sentiment, seed 1" in first.stderr and "ETA" in first.stderr

    again = run_cli(*args)  # every run is recorded: nothing is trained again
    assert again.returncode == 0, again.stderr[-5000:]
    assert "Resuming: 6 of 6 runs" in again.stderr and "Training" not in again.stderr
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 6


def test_steps_must_fill_whole_validation_intervals():
    with pytest.raises(ValueError, match="multiple of validation_points"):
        study_config("full", steps_per_task=500)
