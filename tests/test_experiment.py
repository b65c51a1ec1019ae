"""`mtnlp experiment mtl-vs-stl`: the plan, the aggregation and report, and a real quick study."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mtnlp.experiments import report
from mtnlp.experiments.mtl_vs_stl import STUDIES, MtlVariant, expected_seconds, next_run, plan_runs, study_config
from tests.conftest import run_cli


def test_variants_parse_and_name_themselves():
    assert MtlVariant.parse("temperature=3:uncertainty") == MtlVariant("temperature", "uncertainty", 3.0)
    assert MtlVariant.parse("uniform") == MtlVariant("uniform", "fixed")
    assert MtlVariant("temperature").name == "MTL T=2, fixed"
    masked = MtlVariant.parse("masked-words")
    assert masked.name == "MTL + masked words" and masked.settings == ("training.masked_word_share=0.2",)
    with pytest.raises(ValueError, match="unknown task sampling 'random'.*masked-words"):
        MtlVariant.parse("random:fixed")
    with pytest.raises(ValueError, match="unknown loss weighting 'learned'"):
        MtlVariant.parse("uniform:learned")


def test_the_study_plans_mtl_stl_per_head_and_mtl_at_stls_compute_seed_by_seed_then_the_optional_stl_models():
    config = study_config("full", tasks=("tagging", "sentiment"), seeds=(1, 2, 3), stl_masked_words=True)
    runs = plan_runs(config)
    seed_one = [(r.config, r.heads, r.steps, r.budget_of) for r in runs if r.seed == 1]
    assert seed_one == [
        ("MTL T=2, fixed", ("pos", "ner", "sentiment"), 5500, None),  # the full profile's steps
        ("STL", ("pos",), 3000, None),
        ("STL", ("ner",), 3000, None),
        ("STL", ("sentiment",), 3000, None),
        ("MTL T=2, fixed at STL's compute", ("pos", "ner", "sentiment"), 5500, "STL"),
        ("STL tagging", ("pos", "ner"), 3000, None),
        ("STL + masked words", ("pos",), 3000, None),
        ("STL + masked words", ("ner",), 3000, None),
        ("STL + masked words", ("sentiment",), 3000, None),
    ]
    assert [r.settings for r in runs if r.config == "STL + masked words"][0] == ("training.masked_word_share=0.2",)
    # every seed's verdict runs first (seed by seed), then the optional STL models, seed by seed
    assert [r.seed for r in runs] == [1] * 5 + [2] * 5 + [3] * 5 + [1] * 4 + [2] * 4 + [3] * 4
    assert {r.config for r in runs[:15]} == {"MTL T=2, fixed", "STL", "MTL T=2, fixed at STL's compute"}
    everything = [r.heads for r in plan_runs(study_config("full")) if r.seed == 1 and r.config == "STL"]
    assert everything[-1] == ("translation",)  # the slowest STL model last
    assert len({r.key for r in runs}) == len(runs)
    assert config.model == STUDIES["full"].model and config.model.num_layers == 3  # the full profile's encoder
    assert config.epochs(3000) == 12 and config.epochs(5500) == 22  # a validation point every 250 steps


def _run(config, seed, metrics, seconds=10.0, parameters=1000, **extra):
    return {
        "key": f"{config}|{sorted(metrics)}|{seed}",
        "config": config,
        "seed": seed,
        "heads": list(metrics),
        "steps": 100,
        "train_seconds": seconds,
        "parameters": parameters,
        "peak_rss_mb": 500,
        "serving_ms": {"analyze": 2.0},
        "metrics": {h: {report._primary_metrics()[h]: v} for h, v in metrics.items()},
        "curves": [
            {"step": 50, **{f"val_{h}_accuracy": v / 2 for h, v in metrics.items()}},
            {"step": 100, **{f"val_{h}_accuracy": v for h, v in metrics.items()}},
        ],
        **extra,
    }


def test_a_distilled_variant_trains_after_the_seeds_stl_models_its_teachers():
    config = study_config("distill-small", tasks=("sentiment", "relation"), seeds=(1, 2))
    runs = plan_runs(config)
    assert [(r.config, r.heads, r.teachers_of) for r in runs if r.seed == 1] == [
        ("MTL T=2, fixed", ("sentiment", "relation"), None),
        ("MTL + weight averaging", ("sentiment", "relation"), None),
        ("STL", ("sentiment",), None),
        ("STL", ("relation",), None),
        ("MTL + distillation", ("sentiment", "relation"), "STL"),
        ("MTL + distillation + weight averaging", ("sentiment", "relation"), "STL"),
    ]
    distilled = runs[4]
    assert distilled.variant.distill and distilled.steps == 1200  # the MTL steps: 600 per task
    assert runs[5].settings == runs[1].settings == ("training.ema_momentum=0.998",)
    recorded = [
        {"key": r.key, "config": r.config, "heads": list(r.heads), "seed": 1, "steps": r.steps, "wall_seconds": 60}
        for r in runs[:4]
    ]
    assert next_run([distilled], runs, recorded[:3], seconds_left=None) is None  # STL relation not recorded yet
    assert next_run([distilled], runs, recorded, seconds_left=None) == distilled
    assert MtlVariant.parse("distill").name == "MTL + distillation"
    assert config.model.embedding_dim == 128 and config.max_records_per_split == 3000 and config.patience is None


def test_a_recorded_study_gains_variants_and_keeps_its_runs_even_from_before_newer_settings(tmp_path, caplog):
    from mtnlp.experiments.mtl_vs_stl import NAMED_VARIANTS, Study

    before = study_config("distill-small", tasks=("sentiment",), seeds=(1,), variants=(MtlVariant(),))
    recorded = before.to_json_dict()
    del recorded["training"]["ema_momentum"]  # a study recorded before the setting existed ran without averaging
    run = plan_runs(before)[0]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"study": recorded, "data": str(tmp_path), "runs": [{"key": run.key}]}))

    grown = dataclasses.replace(before, variants=(NAMED_VARIANTS["ema"],))
    study = Study(grown, str(tmp_path), str(tmp_path / "work"), str(results))
    assert study.results["runs"] == [{"key": run.key}]
    assert [v.name for v in study.config.variants] == ["MTL T=2, fixed", "MTL + weight averaging"]
    assert [r.config for r in study.planned] == ["MTL T=2, fixed", "MTL + weight averaging", "STL"]
    assert "adding MTL + weight averaging (the recorded runs are kept)" in caplog.text
    assert study.results["study"]["variants"][1]["settings"] == ["training.ema_momentum=0.998"]

    other = dataclasses.replace(grown, steps_per_task=1200)
    assert Study(other, str(tmp_path), str(tmp_path / "work"), str(results)).results["runs"] == []
    assert "holds a study with other settings: starting over" in caplog.text


def test_a_time_limit_starts_only_runs_expected_to_finish_and_a_shorter_later_one_goes_first():
    planned = plan_runs(study_config("full", tasks=("tagging", "sentiment"), seeds=(1, 2)))
    mtl, stl_pos, stl_ner, stl_sentiment, equal, *rest = planned
    seed_one = [
        {
            "key": run.key,
            "config": run.config,
            "heads": list(run.heads),
            "seed": 1,
            "steps": run.steps,
            "wall_seconds": seconds,
            "train_seconds": seconds - 10,
        }
        for run, seconds in [(mtl, 3000), (stl_pos, 1000), (stl_ner, 500), (stl_sentiment, 500)]
    ]
    todo = [run for run in planned if run.seed == 2 or run.config == "STL tagging"]
    assert [r.seed for r in todo[:4]] == [2, 2, 2, 2] and todo[-2].config == "STL tagging"

    assert expected_seconds(todo[0], seed_one) == pytest.approx(3300)  # the same model's earlier seed, +10 %
    assert next_run(todo, planned, seed_one, seconds_left=None) == todo[0]  # no limit: the plan's order
    assert next_run(todo, planned, seed_one, seconds_left=3400) == todo[0]
    # 1,200 s left: seed 2's MTL (3,300 s) and STL pos (1,100 s) ... STL pos fits
    assert next_run(todo, planned, seed_one, seconds_left=1200).config == "STL"
    assert next_run(todo, planned, seed_one, seconds_left=1200).heads == ("pos",)
    # 600 s: STL ner (550 s); seed 2's equal-compute run waits for seed 2's STL runs
    assert next_run(todo, planned, seed_one, seconds_left=600).heads == ("ner",)
    # STL tagging has no earlier seed: its 3,000-step cap at the study's mean time per step (5,000 s / 14,500 steps)
    tagging = next(r for r in todo if r.config == "STL tagging")
    assert expected_seconds(tagging, seed_one) == pytest.approx(3000 * 5000 / 14_500)
    assert next_run(todo, planned, seed_one, seconds_left=100) is None
    assert expected_seconds(mtl, []) is None  # nothing trained yet: no estimate

    # seed 1's equal-compute run goes once the seed's STL runs are recorded; the MTL model took longer than their
    # 1,970 s of training, so it trains again (its cap at the mean time per step) ...
    assert next_run([equal], planned, seed_one[:3], seconds_left=None) is None  # STL sentiment not recorded yet
    assert next_run([equal], planned, seed_one, seconds_left=None) == equal
    assert expected_seconds(equal, seed_one) == pytest.approx(5500 * 5000 / 14_500)
    within = [dict(seed_one[0], train_seconds=1500)] + seed_one[1:]
    assert expected_seconds(equal, within) == 0  # the reference trained within the STL time: recorded, not trained


def test_aggregate_pairs_each_head_with_stl_by_seed_and_adds_up_what_the_stl_models_cost():
    runs = []
    for seed, (s, p) in enumerate([(0.80, 0.90), (0.82, 0.92), (0.81, 0.91)]):
        runs += [_run("STL", seed, {"sentiment": s}), _run("STL", seed, {"pos": p}, seconds=20)]
        # sentiment higher on every seed by 0.05; pos higher on one seed, lower on two
        runs.append(
            _run(
                "MTL T=2, fixed",
                seed,
                {"sentiment": s + 0.05, "pos": p + (0.002 if seed else -0.004)},
                seconds=15,
                parameters=1200,
                peak_rss_mb=700,
            )
        )
    summary = report.aggregate({"runs": runs})
    stl = summary["scores"]["STL"]["sentiment"]["accuracy"]
    assert stl["mean"] == pytest.approx(0.81) and stl["std"] == pytest.approx(0.01) and stl["n"] == 3
    costs = summary["costs"]["STL"]
    assert costs["models"] == 2 and costs["train_seconds"]["mean"] == 30.0 and costs["parameters"] == 2000
    assert costs["serving_ms"]["mean"] == 4.0 and costs["peak_rss_mb"] == 500  # two models' requests; one at a time
    assert summary["best_mtl"] == "MTL T=2, fixed"
    effects = summary["effects"]["MTL T=2, fixed"]
    assert effects["sentiment"]["verdict"] == "better" and effects["sentiment"]["higher_on"] == 3
    assert effects["pos"]["verdict"] == "within noise" and effects["pos"]["higher_on"] == 2
    table = report.format_table(summary)
    assert "| sentiment (accuracy) | 0.8100 ± 0.0100 | 0.8600 ± 0.0100 (+0.0500; higher on 3/3) |" in table
    assert "| parameters (all models) | 2,000 | 1,200 |" in table
    assert "| peak memory, MB (largest process) | 500 | 700 |" in table
    text = report._what_it_says(summary)
    assert "better on sentiment (+0.0500)" in text and "within noise on pos" in text and "Partial" not in text


def test_an_equal_compute_run_recorded_as_its_reference_on_every_seed_is_no_column_of_its_own(tmp_path):
    runs = []
    for seed, (stl, mtl) in enumerate([(0.80, 0.83), (0.82, 0.84), (0.81, 0.82)], start=1):
        runs += [_run("STL", seed, {"sentiment": stl}), _run("MTL T=2, fixed", seed, {"sentiment": mtl})]
        runs.append(
            {
                **runs[-1],
                "key": f"equal|{seed}",
                "config": "MTL T=2, fixed at STL's compute",
                "same_as": runs[-1]["key"],
            }
        )
    summary = report.aggregate({"runs": runs})
    assert summary["copies"] == {"MTL T=2, fixed at STL's compute": "MTL T=2, fixed"}
    assert report.shown_configs(summary) == ["STL", "MTL T=2, fixed"] and summary["best_mtl"] == "MTL T=2, fixed"
    assert "at STL's compute" not in report.format_table(summary)
    differences = report.format_differences(summary)
    assert "| sentiment (accuracy) | +0.0300 / +0.0200 / +0.0100 → **better** |" in differences
    assert "at STL's compute: on every seed the reference MTL model" in report._what_it_says(summary)

    report.write_plots({"runs": runs}, summary, str(tmp_path))  # the copy's series drawn once, labelled with both
    assert all((tmp_path / plot).read_bytes()[:4] == b"\x89PNG" for plot in ("metrics.png", "curves.png", "cost.png"))

    # a copy on only some seeds trained on the others: it keeps its column
    runs[-1] = {**runs[-1], "same_as": None, "train_seconds": 8.0}
    assert report.aggregate({"runs": runs})["copies"] == {}


def test_a_partial_study_compares_on_the_heads_both_sides_have():
    runs = [_run("MTL T=2, fixed", seed, {"sentiment": 0.82, "pos": 0.90}) for seed in (1, 2, 3)]
    runs += [_run("STL", seed, {"sentiment": 0.80}) for seed in (1, 2, 3)]  # STL pos not trained yet
    summary = report.aggregate({"runs": runs, "planned": [r["key"] for r in runs] + ["STL | pos | seed 1"]})
    assert summary["compared_heads"] == ["sentiment"]
    assert summary["mean_primary_metric"] == {"MTL T=2, fixed": pytest.approx(0.82), "STL": pytest.approx(0.80)}
    text = report._what_it_says(summary)
    assert "mean over the heads both have: sentiment" in text and "6 of 7 planned runs" in text


def test_a_difference_needs_three_seeds_that_agree_to_count():
    assert report.verdict([0.01, 0.02]) == "no verdict (2 seeds)"
    assert report.verdict([0.01, 0.02, 0.015]) == "better"
    assert report.verdict([-0.01, -0.02, -0.015]) == "worse"
    assert report.verdict([0.05, 0.04, -0.001]) == "within noise"  # one seed disagrees
    assert report.verdict([0.001, 0.1, 0.0005]) == "within noise"  # same sign, but the spread swamps the mean


def test_the_curves_count_the_examples_of_each_heads_own_task():
    run = _run(
        "MTL T=2, fixed",
        1,
        {"pos": 0.9},
        points=[
            {
                "step": 250,
                "examples": {"tagging": 4000, "sentiment": 12000},
                "primary": {"pos": 0.8},
                "mean_primary": 0.8,
            },
            {
                "step": 500,
                "examples": {"tagging": 8000, "sentiment": 24000},
                "primary": {"pos": 0.85},
                "mean_primary": 0.85,
            },
        ],
    )
    assert report._curve(run, "pos", report._head_tasks()) == ([4000, 8000], [0.8, 0.85])


def test_early_stopping_stops_after_patience_points_and_keeps_the_best_weights(monkeypatch):
    import keras
    import numpy as np

    from mtnlp.experiments import convergence

    scores = iter([0.5, 0.7, 0.69, 0.6, 0.9])
    monkeypatch.setattr(convergence, "primary_scores", lambda signatures, data: {"sentiment": next(scores)})
    model = keras.Sequential([keras.Input([2]), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    weights_seen = []

    class RecordWeights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights_seen.append(self.model.get_weights()[0].copy())

    stopping = convergence.EarlyStoppingOnPrimaryMetrics(lambda: {}, {}, {"sentiment": 8.0}, patience=2)
    x, y = np.random.default_rng(0).normal(size=(16, 2)), np.ones((16, 1))
    model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[RecordWeights(), stopping])
    assert [p["step"] for p in stopping.points] == [2, 4, 6, 8]  # stopped after 2 points without improvement
    assert stopping.stopped_early and stopping.best_step == 4
    assert stopping.points[1]["examples"] == {"sentiment": 32}
    np.testing.assert_array_equal(model.get_weights()[0], weights_seen[1])  # the best point's weights


def test_a_multi_task_model_stops_only_when_no_head_improves_any_more(monkeypatch):
    import keras
    import numpy as np

    from mtnlp.experiments import convergence

    # ner peaks early on a noisy point, translation keeps climbing: the mean stalls, the model must go on
    scores = iter(
        [
            {"ner": 0.50, "translation": 0.01},
            {"ner": 0.60, "translation": 0.02},
            {"ner": 0.45, "translation": 0.03},
            {"ner": 0.46, "translation": 0.04},
            {"ner": 0.47, "translation": 0.05},
            {"ner": 0.47, "translation": 0.05},
            {"ner": 0.47, "translation": 0.05},
        ]
    )
    monkeypatch.setattr(convergence, "primary_scores", lambda signatures, data: next(scores))
    model = keras.Sequential([keras.Input([2]), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    stopping = convergence.EarlyStoppingOnPrimaryMetrics(lambda: {}, {}, {}, patience=2)
    model.fit(np.zeros((16, 2)), np.ones((16, 1)), batch_size=8, epochs=7, verbose=0, callbacks=[stopping])
    assert [p["step"] for p in stopping.points] == [2, 4, 6, 8, 10, 12, 14]  # translation improved up to step 10
    assert stopping.stopped_early and stopping.best_step == 4  # the best mean (0.31) is what is kept


def test_a_time_budget_stops_training_after_the_step_that_spends_it():
    import keras
    import numpy as np

    from mtnlp.experiments.convergence import TimeBudget

    model = keras.Sequential([keras.Input([2]), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    budget = TimeBudget(0.0)
    model.fit(np.zeros((64, 2)), np.zeros((64, 1)), batch_size=8, epochs=3, verbose=0, callbacks=[budget])
    assert budget.spent and int(model.optimizer.iterations.numpy()) == 1


@pytest.mark.slow
def test_quick_study_writes_the_report_and_resumes(tmp_path):
    out, workdir = tmp_path / "report", tmp_path / "work"
    args = (
        "experiment",
        "mtl-vs-stl",
        "--quick",
        "--tasks",
        "sentiment",
        "relation",
        "--out",
        str(out),
        "--workdir",
        str(workdir),
        "--variants",
        "temperature=2:fixed",
        "distill",
    )
    first = run_cli(*args, timeout=1800)  # 10 models on a shared 2-core machine
    assert first.returncode == 0, first.stderr[-5000:]
    results = json.loads((out / "results.json").read_text())
    # 2 seeds x (STL sentiment, STL relation, MTL, MTL + distillation, MTL at STL's compute)
    assert len(results["runs"]) == 10
    assert {r["config"] for r in results["runs"]} == {
        "STL",
        "MTL T=2, fixed",
        "MTL + distillation",
        "MTL T=2, fixed at STL's compute",
    }
    for run in results["runs"]:
        assert set(run["metrics"]) == set(run["heads"]), run["key"]
        assert all(0.0 <= v <= 1.0 for m in run["metrics"].values() for v in m.values())
        assert run["train_seconds"] > 0 and run["parameters"] > 0 and run["peak_rss_mb"] > 100
        assert run["points"] and 0 < run["steps"] <= run["max_steps"] and run["best_step"] <= run["steps"]
        assert all(set(p["primary"]) == set(run["heads"]) for p in run["points"])
    mtl = next(r for r in results["runs"] if r["config"] == "MTL T=2, fixed")
    assert mtl["max_steps"] == 40 and set(mtl["serving_ms"]) == {"analyze", "relation"}
    assert {t for p in mtl["points"] for t in p["examples"]} == {"sentiment", "relation"}
    equal = next(r for r in results["runs"] if r["config"] == "MTL T=2, fixed at STL's compute")
    stl_seconds = sum(r["train_seconds"] for r in results["runs"] if r["config"] == "STL" and r["seed"] == 1)
    assert equal["time_budget"] == pytest.approx(stl_seconds, abs=0.2)
    # recorded as the reference, or trained again until the budget was spent or its own early stopping stopped it
    assert equal.get("same_as") == mtl["key"] or equal["train_seconds"] >= stl_seconds or equal["stopped_early"]
    # the distilled model learnt from the seed's STL models (kept in the work folder) and its cost counts theirs
    distilled = next(r for r in results["runs"] if r["config"] == "MTL + distillation" and r["seed"] == 1)
    assert distilled["teacher_seconds"] > stl_seconds
    assert distilled["train_seconds"] == pytest.approx(distilled["own_train_seconds"] + distilled["teacher_seconds"])
    for head in ("sentiment", "relation"):
        assert (workdir / "models" / "seed-1" / head / "Format-Keras" / "model.keras").exists()
    assert "Teacher predictions cached for" in first.stderr and "sentiment " in first.stderr
    text = (out / "report.md").read_text()
    assert "| sentiment (accuracy) |" in text and "| relation (semeval_macro_f1) |" in text
    assert "**What the numbers say.**" in text and "mtl-vs-stl --quick" in text and "serving latency" in text
    assert "- Distillation (MTL + distillation): every head also learns from the seed's STL model" in text
    for plot in ("metrics.png", "curves.png", "cost.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[1/10] MTL T=2, fixed: sentiment+relation, seed 1" in first.stderr and "ETA" in first.stderr

    again = run_cli(*args)  # every run is recorded: nothing is trained again
    assert again.returncode == 0, again.stderr[-5000:]
    assert "Resuming: 10 of 10 runs" in again.stderr and "Training" not in again.stderr
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 10

    # one more variant: only its runs train, the recorded ones stay
    added = run_cli(*args, "ema")
    assert added.returncode == 0, added.stderr[-5000:]
    assert "adding MTL + weight averaging (the recorded runs are kept)" in added.stderr
    assert (
        "Resuming: 10 of 12 runs" in added.stderr
        and "training.ema_momentum=0.998 averages over about 500" in added.stderr
    )
    results = json.loads((out / "results.json").read_text())
    averaged = [r for r in results["runs"] if r["config"] == "MTL + weight averaging"]
    assert len(results["runs"]) == 12 and [r["settings"] for r in averaged] == [["training.ema_momentum=0.998"]] * 2
    assert all(0.0 <= v <= 1.0 for r in averaged for m in r["metrics"].values() for v in m.values())
    assert "MTL + weight averaging: `training.ema_momentum=0.998`" in (out / "report.md").read_text()

    (out / "report.md").unlink()
    rewritten = run_cli("experiment", "mtl-vs-stl", "--report-only", "--out", str(out))
    assert rewritten.returncode == 0, rewritten.stderr[-5000:]
    assert "| relation (semeval_macro_f1) |" in (out / "report.md").read_text() and "(12 runs)" in rewritten.stdout

    # seed 2's STL runs lost: under a time limit they fit in none, and the equal-compute and distilled runs wait;
    # the variant added above stays in the study though this command does not name it
    results["runs"] = [r for r in results["runs"] if r["seed"] == 1 or r["config"] == "MTL T=2, fixed"]
    (out / "results.json").write_text(json.dumps(results))
    limited = run_cli(*args, "--hours", "0.001")
    assert limited.returncode == 0, limited.stderr[-5000:]
    assert "Stopping: none of the 5 runs left is expected to finish within --hours 0.001" in limited.stderr
    assert "Training" not in limited.stderr and len(json.loads((out / "results.json").read_text())["runs"]) == 7


def test_report_only_names_a_missing_results_file(tmp_path):
    result = run_cli("experiment", "mtl-vs-stl", "--report-only", "--out", str(tmp_path))
    assert result.returncode == 2 and f"{tmp_path}/results.json does not exist" in result.stderr


def test_caps_must_fill_whole_validation_intervals():
    with pytest.raises(ValueError, match=r"steps_per_task \(3100\) must be a multiple of validation_every \(250\)"):
        study_config("full", steps_per_task=3100)
    from mtnlp.experiments import ablation

    with pytest.raises(ValueError, match="multiple of validation_points"):  # fixed steps (the ablation)
        study_config("full", ablation.STUDIES, steps_per_task=301)


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
    result = run_cli(
        "experiment",
        "ablation",
        "--quick",
        "--tasks",
        "sentiment",
        "--levers",
        "masked words",
        "--out",
        str(out),
        "--workdir",
        str(tmp_path / "work"),
    )
    assert result.returncode == 0, result.stderr[-5000:]
    results = json.loads((out / "results.json").read_text())
    assert [(r["config"], r["settings"]) for r in results["runs"]] == [
        ("baseline", []),
        ("masked words", ["training.masked_word_share=0.2"]),
    ]
    assert set(results["summary"]["effects"]["masked words"]) == {"sentiment"}
    text = (out / "report.md").read_text()
    assert "| masked words | " in text and "`training.masked_word_share=0.2`" in text
