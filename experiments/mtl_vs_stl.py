"""Does multi-task learning pay? The multi-task model (MTL) against one single-task model per head (STL).

Every model is trained with the project's own code (``model/training.py``: the Trainer's model, optimizer,
schedule and input pipeline) on the same Transform output (ingest -> validation -> Transform, run once as a
TFX pipeline), and scored with ``serving/evaluate.py`` through its serving signatures on the same
validation records, with the pipeline's metrics.

Fair comparison:
- the same encoder size and training settings for every model;
- the same number of optimizer steps per task: an STL model trains ``steps_per_task`` steps on its task's
  examples; an MTL model trains ``steps_per_task`` x (number of tasks) steps on batches that mix the tasks
  (with uniform sampling each task gets ``steps_per_task`` batches' worth of examples on average);
- every configuration is trained with each seed; results are mean +- std over seeds.

The MTL side varies task sampling (proportional, temperature T, uniform) and loss weighting (fixed, or
learned uncertainty weighting, Kendall et al. 2018). Runs are recorded in ``results.json`` as they finish,
so an interrupted study resumes where it stopped when started again with the same settings.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import time
from typing import Any, Sequence

from mtnlp.pipelines.config import ModelConfig, TrainingConfig

log = logging.getLogger("mtnlp")

SAMPLINGS = ("proportional", "temperature", "uniform")
WEIGHTINGS = ("fixed", "uncertainty")


@dataclasses.dataclass(frozen=True)
class MtlVariant:
    """One multi-task configuration: how batches mix the tasks and how the heads' losses are summed."""

    sampling: str = "temperature"
    weighting: str = "fixed"
    temperature: float = 2.0

    def __post_init__(self):
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown task sampling {self.sampling!r}: use one of {', '.join(SAMPLINGS)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {self.weighting!r}: use one of {', '.join(WEIGHTINGS)}")

    @property
    def name(self) -> str:
        sampling = f"T={self.temperature:g}" if self.sampling == "temperature" else self.sampling
        return f"MTL {sampling}, {self.weighting}"

    @classmethod
    def parse(cls, spec: str) -> "MtlVariant":
        """``SAMPLING[=T]:WEIGHTING``, e.g. ``temperature=2:uncertainty``, ``uniform:fixed``, ``proportional``."""
        sampling, _, weighting = spec.partition(":")
        sampling, _, temperature = sampling.partition("=")
        return cls(sampling, weighting or "fixed", float(temperature) if temperature else 2.0)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    tasks: tuple[str, ...] | None  # None: every registered task
    steps_per_task: int
    seeds: tuple[int, ...]
    variants: tuple[MtlVariant, ...]
    model: ModelConfig
    training: TrainingConfig
    # records per task and split read at ingest (None: all the data)
    max_records_per_split: int | None
    # validation records per task scored at the end of each run (None: all)
    eval_records: int | None
    # validation points along training (the curves); each on eval_steps batches of the validation split
    validation_points: int = 8
    eval_steps: int = 10

    def __post_init__(self):
        if self.steps_per_task % self.validation_points:
            # Keras runs whole epochs: otherwise STL models would get fewer steps than they are owed
            raise ValueError(f"steps_per_task ({self.steps_per_task}) must be a multiple of validation_points "
                             f"({self.validation_points})")

    def to_json_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples as lists, as results.json holds them


_VARIANTS = (MtlVariant("proportional"), MtlVariant("temperature"), MtlVariant("uniform"),
             MtlVariant("temperature", "uncertainty"))  # fmt: skip
# The quick profile's encoder (d=128, 2 layers) and optimizer settings for every model.
_MODEL = ModelConfig(embedding_dim=128, num_layers=2, num_heads=4, intermediate_dim=256)
_TRAINING = TrainingConfig(batch_size=32, learning_rate=2e-3)

STUDIES = {
    # Sized to finish within 2 hours on 2 CPU cores (measured: see the report).
    "full": StudyConfig(tasks=None, steps_per_task=480, seeds=(1, 2, 3), variants=_VARIANTS, model=_MODEL,
                        training=_TRAINING, max_records_per_split=None, eval_records=2000),  # fmt: skip
    # A few minutes: every code path, numbers without meaning.
    "quick": StudyConfig(tasks=None, steps_per_task=20, seeds=(1, 2),
                         variants=(MtlVariant("temperature"), MtlVariant("temperature", "uncertainty")),
                         model=dataclasses.replace(_MODEL, embedding_dim=32, intermediate_dim=64, num_layers=1),
                         training=_TRAINING, max_records_per_split=120, eval_records=60, validation_points=2,
                         eval_steps=2),  # fmt: skip
}


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    config: str  # "STL" or an MTL variant's name
    heads: tuple[str, ...]
    tasks: tuple[str, ...]
    seed: int
    steps: int
    variant: MtlVariant | None = None
    # settings over the study's model and training, as `mtnlp run --set` takes them (the ablation's levers)
    settings: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.config} | {'+'.join(self.heads)} | seed {self.seed}"


def plan_runs(config: StudyConfig) -> list[PlannedRun]:
    """Seed by seed (a partial study still compares every configuration): each STL model, then each MTL variant."""
    from mtnlp.model.tasks import select_tasks, supervised_tasks

    tasks = supervised_tasks(select_tasks(config.tasks))
    heads = [(task.name, head.name) for task in tasks for head in task.heads]
    task_names = tuple(t.name for t in tasks)
    runs = []
    for seed in config.seeds:
        runs += [PlannedRun("STL", (head,), (task,), seed, config.steps_per_task) for task, head in heads]
        runs += [PlannedRun(v.name, tuple(h for _, h in heads), task_names, seed,
                            config.steps_per_task * len(task_names), v) for v in config.variants]  # fmt: skip
    return runs


@dataclasses.dataclass(frozen=True)
class TransformedData:
    transform_graph: str
    train_files: list[str]
    eval_files: list[str]


def _pipeline_config(config: StudyConfig):
    """Ingest and Transform settings of the study's data pipeline (and of the models that read its output)."""
    from mtnlp.pipelines.config import get_config

    return get_config("quick", tasks=config.tasks, max_records_per_split=config.max_records_per_split)


def prepare_data(config: StudyConfig, data_root: str, workdir: str) -> TransformedData:
    """Ingest, validation and Transform as a TFX pipeline (cached when the data and settings are unchanged)."""
    from tfx import v1 as tfx

    from mtnlp.pipelines.pipeline import create_data_pipeline
    from mtnlp.pipelines.summary import latest_transform_outputs

    pipeline_config = _pipeline_config(config)
    metadata_path = os.path.join(workdir, "metadata.sqlite")
    pipeline = create_data_pipeline(
        "mtnlp-experiment", os.path.join(workdir, "pipeline_root"), os.path.abspath(data_root), pipeline_config,
        tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    )  # fmt: skip
    tfx.orchestration.LocalDagRunner().run(pipeline)
    outputs = latest_transform_outputs(metadata_path)
    examples = outputs["transformed_examples"]
    return TransformedData(outputs["transform_graph"], [f"{examples}/Split-train/*"], [f"{examples}/Split-eval/*"])


def with_settings(model: ModelConfig, training: TrainingConfig, settings: Sequence[str]) -> tuple[ModelConfig, TrainingConfig]:
    """``model`` and ``training`` with ``settings`` (``section.key=value``, as ``mtnlp run --set``) applied,
    checked against the typed config."""
    from mtnlp.pipelines.config import get_config
    from mtnlp.pipelines.settings import apply_mapping, parse_assignment

    config = dataclasses.replace(get_config("quick"), model=model, training=training)
    for assignment in settings:
        config = apply_mapping(config, parse_assignment(assignment), source=assignment)
    return config.model, config.training


class Study:
    """Runs the planned models (default: ``plan_runs(config)``) one after another and records each as it finishes."""

    def __init__(self, config: StudyConfig, data_root: str, workdir: str, results_path: str,
                 planned: Sequence[PlannedRun] | None = None):  # fmt: skip
        self.config, self.data_root, self.workdir, self.results_path = config, data_root, workdir, results_path
        self.planned = list(planned) if planned is not None else plan_runs(config)
        self.results = self._load_results()

    def _load_results(self) -> dict[str, Any]:
        from mtnlp import machine

        fresh = {"study": self.config.to_json_dict(), "data": os.path.abspath(self.data_root),
                 "machine": machine.describe(), "runs": []}  # fmt: skip
        if os.path.exists(self.results_path):
            with open(self.results_path) as f:
                earlier = json.load(f)
            if earlier.get("study") == fresh["study"] and earlier.get("data") == fresh["data"]:
                return earlier
            log.warning("%s holds a study with other settings: starting over", self.results_path)
        return fresh

    def _save(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.results_path)), exist_ok=True)
        partial = self.results_path + ".partial"
        with open(partial, "w") as f:
            json.dump(self.results, f, indent=2)
        os.replace(partial, self.results_path)

    def run(self) -> dict[str, Any]:
        import tensorflow_transform as tft

        from mtnlp.model import dataset, devices
        from mtnlp.model.tasks import select_tasks, supervised_tasks
        from mtnlp.serving.evaluate import read_task_data

        start = time.time()
        log.warning("Preparing the data (ingest, validation, Transform) on %s", self.data_root)
        data = prepare_data(self.config, self.data_root, self.workdir)
        self.results["data_seconds"] = round(time.time() - start, 1)
        tft_output = tft.TFTransformOutput(data.transform_graph)
        counts = dataset.count_examples_per_task(data.train_files, tft_output)
        tasks = supervised_tasks(select_tasks(self.config.tasks))
        eval_data = read_task_data(self.data_root, tasks, self.config.eval_records, splits=["validation"])
        strategy = devices.make_strategy(self.config.training.cpu_replicas)

        planned = self.planned
        done = {r["key"] for r in self.results["runs"]}
        todo = [run for run in planned if run.key not in done]
        if done:
            log.warning("Resuming: %d of %d runs already in %s", len(done), len(planned), self.results_path)
        steps_left = sum(r.steps for r in todo)
        seconds_per_step = None
        for number, run in enumerate(todo, start=len(planned) - len(todo) + 1):
            eta = f", ETA {seconds_per_step * steps_left / 60:.0f} min" if seconds_per_step else ""
            log.warning("[%d/%d] %s: %s, seed %d, %d steps%s", number, len(planned), run.config,
                        "+".join(run.heads), run.seed, run.steps, eta)  # fmt: skip
            run_start = time.time()
            record = self._run_one(run, data, tft_output, counts, eval_data, strategy, f"[{number}/{len(planned)}] ")
            self.results["runs"].append(record)
            self._save()
            steps_left -= run.steps
            finished = [r for r in self.results["runs"] if "wall_seconds" in r]
            seconds_per_step = sum(r["wall_seconds"] for r in finished) / max(1, sum(r["steps"] for r in finished))
            log.warning("[%d/%d] done in %.0f s: %s", number, len(planned), time.time() - run_start,
                        "  ".join(f"{h}={m[next(iter(m))]:.4f}" for h, m in record["metrics"].items()))  # fmt: skip
        self.results["wall_seconds"] = round(time.time() - start, 1)
        self._save()
        return self.results

    def _run_one(self, run: PlannedRun, data: TransformedData, tft_output, counts, eval_data, strategy, prefix: str):
        import keras

        from mtnlp.model import dataset
        from mtnlp.model.signatures import ServingModule
        from mtnlp.model.tasks import select_tasks
        from mtnlp.model.training import train_model
        from mtnlp.serving.evaluate import evaluate_signatures

        start = time.time()
        tasks = tuple(dataclasses.replace(t, heads=tuple(h for h in t.heads if h.name in run.heads))
                      for t in select_tasks(run.tasks))  # fmt: skip
        heads = [h for t in tasks for h in t.heads]
        if run.variant is None:
            weights = {run.tasks[0]: 1.0}
            training = dataclasses.replace(self.config.training, seed=run.seed)
        else:
            weights = dataset.task_weights({t: counts[t] for t in run.tasks}, run.variant.sampling,
                                           run.variant.temperature)  # fmt: skip
            training = dataclasses.replace(self.config.training, seed=run.seed, loss_weighting=run.variant.weighting)
        model, training = with_settings(self.config.model, training, run.settings)
        trained = train_model(
            heads, tft_output, data.train_files, data.eval_files, weights, dataclasses.asdict(model),
            dataclasses.asdict(training), dataclasses.asdict(_pipeline_config(self.config).transform), run.steps, self.config.eval_steps, strategy,
            epochs=self.config.validation_points, log_prefix=prefix,
        )  # fmt: skip
        module = ServingModule(trained.model, tft_output, tasks)
        scored, _ = evaluate_signatures(module.signatures(), {t.name: eval_data[t.name] for t in tasks if t.name in eval_data})
        record = {
            "key": run.key, "config": run.config, "heads": list(run.heads), "seed": run.seed, "steps": trained.steps,
            "settings": list(run.settings),
            "task_weights": weights, "train_seconds": round(trained.seconds, 1), "parameters": trained.parameters,
            "metrics": {r.head: r.metrics for r in scored},
            "eval_examples": {r.head: r.examples for r in scored},
            "curves": trained.history,
            "wall_seconds": round(time.time() - start, 1),
        }  # fmt: skip
        del module, trained
        keras.backend.clear_session()
        gc.collect()
        return record


def study_config(name: str, studies: dict[str, StudyConfig] | None = None, **overrides: Any) -> StudyConfig:
    """``studies[name]`` (default: this study's) with the overrides that are not None."""
    config = (studies or STUDIES)[name]
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def run_study(config: StudyConfig, data_root: str, workdir: str, report_dir: str, command: str = "") -> dict[str, Any]:
    from mtnlp.experiments import report

    os.makedirs(report_dir, exist_ok=True)
    os.makedirs(workdir, exist_ok=True)
    results = Study(config, data_root, workdir, os.path.join(report_dir, report.RESULTS_FILE)).run()
    if command:
        results["command"] = command
    report.write_report(results, report_dir)
    return results


def variants_from(specs: Sequence[str] | None) -> tuple[MtlVariant, ...] | None:
    return tuple(MtlVariant.parse(s) for s in specs) if specs else None
