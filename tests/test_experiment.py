"""`mtnlp experiment mtl-vs-stl`: the plan, the aggregation and report, and a real quick study."""

from __future__ import annotations

import dataclasses
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


# -- mtnlp experiment ablation ----------------------------------------------------------------------------------


def test_the_ablation_trains_the_baseline_and_each_lever_with_every_seed():
    from mtnlp.experiments.ablation import BASELINE, LEVERS, STUDIES, check_levers, plan_ablation

    config = dataclasses.replace(STUDIES["full"], tasks=("tagging", "sentiment"), seeds=(1, 2))
    runs = plan_ablation(config, LEVERS)
    assert [r.config for r in runs[: len(LEVERS) + 1]] == [BASELINE] + [lever.name for lever in LEVERS]
    assert [r.seed for r in runs] == [1] * (len(LEVERS) + 1) + [2] * (len(LEVERS) + 1)
    assert {r.heads for r in runs} == {("pos", "ner", "sentiment")} and {r.steps for r in runs} == {600}
    assert runs[0].settings == () and runs[1].settings == LEVERS[0].settings
    assert len({r.key for r in runs}) == len(runs)
    check_levers(config, LEVERS)  # every default lever is a valid setting


def test_a_misspelt_lever_setting_fails_before_training():
    from mtnlp.experiments.ablation import STUDIES, Lever, check_levers
    from mtnlp.pipelines.settings import SettingsError

    with pytest.raises(SettingsError, match="masked_word_shar"):
        check_levers(STUDIES["quick"], [Lever("typo", ("training.masked_word_shar=0",))])


def test_the_ablation_reports_each_levers_paired_difference_from_the_baseline():
    from mtnlp.experiments.ablation import BASELINE, PlannedRun, format_table, summarize

    runs, planned = [], []
    for seed, (base, lever) in enumerate([(0.80, 0.83), (0.82, 0.81), (0.78, 0.82)]):
        for config, value in ((BASELINE, base), ("masked words", lever)):
            plan = PlannedRun(config, ("sentiment",), ("sentiment",), seed, 100)
            planned.append(plan)
            runs.append({**_run(config, seed, {"sentiment": value}), "key": plan.key})
    runs.append({**_run("dropped lever", 0, {"sentiment": 0.1}), "key": "not planned"})
    summary = summarize({"runs": runs}, planned)
    effect = summary["effects"]["masked words"]["sentiment"]
    assert effect["mean"] == pytest.approx(0.02) and effect["higher_on"] == 2 and effect["n"] == 3
    assert summary["configs"] == [BASELINE, "masked words"]
    table = format_table(summary)
    assert "| masked words | 0.8200 ± 0.0100 (+0.0200; higher on 2/3) | 10 |" in table
    assert "| baseline | 0.8000 ± 0.0200 | 10 |" in table


@pytest.mark.slow
def test_quick_ablation_writes_its_report(tmp_path):
    out = tmp_path / "report"
    result = run_cli("experiment", "ablation", "--quick", "--tasks", "sentiment", "--levers", "masked words",
                     "--out", str(out), "--workdir", str(tmp_path / "work"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    results = json.loads((out / "results.json").read_text())
    assert [(r["config"], r["settings"]) for r in results["runs"]] == [
        ("baseline", []), ("masked words", ["training.masked_word_share=0.2"])]
    assert set(results["summary"]["effects"]["masked words"]) == {"sentiment"}
    text = (out / "report.md").read_text()
    assert "| masked words | " in text and "`training.masked_word_share=0.2`" in text
