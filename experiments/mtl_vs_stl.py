"""Does multi-task learning pay? The multi-task model (MTL) against single-task models (STL), each trained as
well as this machine allows.

Every model is trained with the project's own code (``model/training.py``: the Trainer's model, optimizer,
schedule and input pipeline) on the same Transform output (ingest -> validation -> Transform, run once as a
TFX pipeline), and scored with ``serving/evaluate.py`` through its serving signatures on the same
validation records, with the pipeline's metrics.

The protocol (the ``full`` study):
- every model trains to convergence: at each validation point its heads are scored through its serving
  signatures on their own primary metrics (``experiments/convergence.py``); training stops after
  ``patience`` points in which no head improved, the best point's weights are kept, and a cap of steps per model
  bounds the rest (the report states it);
- STL: one model per head, plus one per task with several heads (pos + ner: tagging); MTL: the pipeline's
  default and the chosen variants (task sampling, loss weighting, or settings such as the masked-word
  objective); optionally STL models with the masked-word objective on their own text, which separates
  *sharing across tasks* from *having an auxiliary loss*;
- at equal compute: the default MTL model once more, stopped when it has used the wall-clock time that the
  seed's single-head STL models took together (recorded as the default's run when that one already fits);
- every configuration with every seed; a head's difference from STL is paired by seed;
- what each model costs: parameters, training time, peak memory of its process, serving latency of one
  one-example request per signature it answers with.

Each model trains and is scored in a process of its own (so its peak memory is its own); runs are recorded
in ``results.json`` as they finish, so an interrupted study resumes where it stopped when started again with
the same settings. The ablation (``experiments/ablation.py``) uses the same machinery with fixed steps.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mtnlp.pipelines.config import get_config
from mtnlp.sections import HeadConfig, ModelConfig, TrainingConfig

log = logging.getLogger("mtnlp")

SAMPLINGS = ("proportional", "temperature", "uniform")
WEIGHTINGS = ("fixed", "uncertainty")
STL = "STL"
MASKED_WORDS = ("training.masked_word_share=0.2",)  # the ablation's "masked words" lever
WEIGHT_AVERAGING = "training.ema_momentum=0.998"


@dataclasses.dataclass(frozen=True)
class MtlVariant:
    """One multi-task configuration: how batches mix the tasks, how the heads' losses are summed, and
    settings over the study's model and training (as ``mtnlp run --set`` takes them).

    Args:
        sampling: "proportional", "temperature" or "uniform" (see ``model/dataset.py``).
        weighting: "fixed" or "uncertainty" (learned loss weights).
        temperature: T of temperature sampling.
        settings: ``section.key=value`` assignments, e.g. the masked-word objective.
        label: how the report names it (default: from sampling and weighting).
        distill: every head learns also from the seed's STL model of it (its teacher, ``heads.<name>.teacher``;
            ``model/distillation.py``), annealed from the teacher to the gold labels; it trains after them.
    """

    sampling: str = "temperature"
    weighting: str = "fixed"
    temperature: float = 2.0
    settings: tuple[str, ...] = ()
    label: str = ""
    distill: bool = False

    def __post_init__(self):
        if self.sampling not in SAMPLINGS:
            raise ValueError(
                f"unknown task sampling {self.sampling!r}: use one of {', '.join(SAMPLINGS)}, "
                f"or a named variant: {', '.join(NAMED_VARIANTS)}"
            )
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {self.weighting!r}: use one of {', '.join(WEIGHTINGS)}")

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        sampling = f"T={self.temperature:g}" if self.sampling == "temperature" else self.sampling
        return f"MTL {sampling}, {self.weighting}"

    @classmethod
    def parse(cls, spec: str) -> MtlVariant:
        """A named variant (``masked-words``, ``layered-heads``, ``distill``) or ``SAMPLING[=T]:WEIGHTING``, e.g.
        ``temperature=2:uncertainty``, ``uniform:fixed``, ``proportional``."""
        if spec in NAMED_VARIANTS:
            return NAMED_VARIANTS[spec]
        sampling, _, weighting = spec.partition(":")
        sampling, _, temperature = sampling.partition("=")
        return cls(sampling, weighting or "fixed", float(temperature) if temperature else 2.0)


NAMED_VARIANTS = {
    "masked-words": MtlVariant(settings=MASKED_WORDS, label="MTL + masked words"),
    "layered-heads": MtlVariant(settings=("heads.pos.encoder_layer=1",), label="MTL + layered heads"),
    "distill": MtlVariant(distill=True, label="MTL + distillation"),
    # weight averaging over about the last 500 steps (training.ema_momentum): sized for the distill-small study's
    # 2,400 MTL steps; a study with much shorter runs averages in its early weights
    "ema": MtlVariant(settings=(WEIGHT_AVERAGING,), label="MTL + weight averaging"),
    "distill-ema": MtlVariant(
        settings=(WEIGHT_AVERAGING,), distill=True, label="MTL + distillation + weight averaging"
    ),
}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What a study trains and how.

    Args:
        tasks: tasks to include (None: every registered task).
        steps_per_task: optimizer steps of an STL model (its cap when ``patience`` is set).
        seeds: every configuration trains once per seed.
        variants: the MTL configurations; the first is the reference for ``equal_compute``.
        model, training: the settings of every model (a variant's settings go on top).
        heads: head sections that differ from the heads' declared defaults (``heads.<name>``).
        max_records_per_split: records per task and split read at ingest (None: all).
        eval_records: validation records per task scored at the end of each run (None: all).
        validation_points: with fixed steps, the validation points along training (the curves).
        eval_steps: batches of Keras' own validation at each point.
        mtl_steps: optimizer steps of an MTL model (None: ``steps_per_task`` x tasks).
        patience: early stopping: validation points in which no head beats its own best primary metric
            before the model stops (None: fixed steps, no early stopping).
        validation_every: with ``patience``, steps between validation points.
        selection_records: with ``patience``, validation records per task scored at each point.
        stl_per_task: also one STL model per task with several heads (tagging: pos + ner).
        stl_masked_words: also STL models with the masked-word objective on their own task's text.
        equal_compute: also the first MTL variant within the wall-clock time of the seed's STL models.
        beam_width, length_penalty: decoding of sequence heads in the final scores (the pipeline's
            serving settings); validation points decode greedily.
    """

    tasks: tuple[str, ...] | None
    steps_per_task: int
    seeds: tuple[int, ...]
    variants: tuple[MtlVariant, ...]
    model: ModelConfig
    training: TrainingConfig
    max_records_per_split: int | None
    eval_records: int | None
    validation_points: int = 8
    eval_steps: int = 10
    mtl_steps: int | None = None
    patience: int | None = None
    validation_every: int | None = None
    selection_records: int | None = 500
    stl_per_task: bool = False
    stl_masked_words: bool = False
    equal_compute: bool = False
    beam_width: int = 1
    length_penalty: float = 0.0
    heads: dict[str, HeadConfig] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.patience is None:
            if self.steps_per_task % self.validation_points:
                # Keras runs whole epochs: otherwise STL models would get fewer steps than they are owed
                raise ValueError(
                    f"steps_per_task ({self.steps_per_task}) must be a multiple of validation_points "
                    f"({self.validation_points})"
                )
            return
        if not self.validation_every:
            raise ValueError("early stopping (patience) needs validation_every: the steps between validation points")
        for name in ("steps_per_task", "mtl_steps"):
            value = getattr(self, name)
            if value is not None and value % self.validation_every:
                raise ValueError(f"{name} ({value}) must be a multiple of validation_every ({self.validation_every})")

    def epochs(self, steps: int) -> int:
        """Validation points of a model that may train ``steps`` steps."""
        return steps // self.validation_every if self.patience is not None else self.validation_points

    def to_json_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples as lists, as results.json holds them


# The quick profile's encoder (d=128, 2 layers) and optimizer settings (the ablation's models).
_MODEL = ModelConfig(embedding_dim=128, num_layers=2, num_heads=4, intermediate_dim=256)
_TRAINING = TrainingConfig(batch_size=32, learning_rate=2e-3)
_FULL = get_config("full")

STUDIES = {
    # The full profile's model, every model to convergence: STL caps 3,000 steps, MTL the full profile's
    # 5,500; a validation point every 250 steps (16,000 examples), patience 3. About 2 hours per seed
    # on 2 CPU cores (measured: see the report), so variants beyond the pipeline's default are opt-in (--variants).
    "full": StudyConfig(
        tasks=None,
        steps_per_task=3000,
        mtl_steps=_FULL.training.train_steps,
        seeds=(1, 2, 3),
        variants=(MtlVariant(),),
        model=_FULL.model,
        training=_FULL.training,
        max_records_per_split=None,
        eval_records=2000,
        eval_steps=10,
        patience=3,
        validation_every=250,
        selection_records=500,
        stl_per_task=True,
        equal_compute=True,
        beam_width=_FULL.serving.beam_width,
        length_penalty=_FULL.serving.length_penalty,
        heads=_FULL.heads,
    ),
    # A few minutes: every code path, numbers without meaning.
    "quick": StudyConfig(
        tasks=None,
        steps_per_task=20,
        seeds=(1, 2),
        variants=(MtlVariant(),),
        model=dataclasses.replace(_MODEL, embedding_dim=32, intermediate_dim=64, num_layers=1),
        training=_TRAINING,
        max_records_per_split=120,
        eval_records=60,
        eval_steps=2,
        patience=1,
        validation_every=10,
        selection_records=30,
        stl_per_task=True,
        equal_compute=True,
    ),
    # Distillation (issue #27) at a small size: the quick profile's encoder (d=128, 2 layers), 3,000 records per
    # task and split, fixed steps (600 per STL model, 2,400 per MTL model: about the same examples of each task);
    # per seed the default MTL model, the 5 single-head STL models (the teachers), MTL + distillation, and both MTL
    # models with weight averaging (the single model that keeps each head's best, issue #27 item 2). About 23 minutes
    # for one seed without the averaging variants on 2 cores under load 2.5-5 (measured: README, "Distillation").
    "distill-small": StudyConfig(
        tasks=None,
        steps_per_task=600,
        seeds=(1, 2, 3),
        variants=(MtlVariant(), *(NAMED_VARIANTS[name] for name in ("distill", "ema", "distill-ema"))),
        model=_MODEL,
        training=_TRAINING,
        max_records_per_split=3000,
        eval_records=1000,
        validation_points=6,
        eval_steps=5,
    ),
}

EQUAL_COMPUTE_SUFFIX = " at STL's compute"


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    config: str  # "STL", "STL <task>", "STL + masked words" or an MTL variant's name
    heads: tuple[str, ...]
    tasks: tuple[str, ...]
    seed: int
    steps: int  # the cap when the study stops early
    variant: MtlVariant | None = None
    # settings over the study's model and training, as `mtnlp run --set` takes them (the ablation's levers)
    settings: tuple[str, ...] = ()
    # equal compute: train within the summed training time of this configuration's runs of the same seed
    budget_of: str | None = None
    # distillation: this configuration's models of the same seed are the teachers of the run's heads
    teachers_of: str | None = None

    @property
    def key(self) -> str:
        return f"{self.config} | {'+'.join(self.heads)} | seed {self.seed}"

    @property
    def waits_for(self) -> str | None:
        """The configuration whose runs of the same seed must be recorded before this one can start."""
        return self.budget_of or self.teachers_of


def plan_runs(config: StudyConfig) -> list[PlannedRun]:
    """Seed by seed (a partial study still compares every configuration): each MTL variant, the single-head
    STL models (the cheap ones first: translation's decoder makes its model the slowest), the distilled MTL
    variants (the STL models are their teachers) and the equal-compute MTL model (which needs their times). The optional STL models (per task, with masked words) come after every
    seed's main runs, so that an interrupted study has its verdicts first."""
    from mtnlp.model.tasks import get_head, select_tasks, supervised_tasks

    tasks = supervised_tasks(select_tasks(config.tasks))
    heads = [(task.name, head.name) for task in tasks for head in task.heads]
    all_heads, task_names = tuple(h for _, h in heads), tuple(t.name for t in tasks)
    mtl_steps = config.mtl_steps or config.steps_per_task * len(task_names)
    runs = []
    for seed in config.seeds:
        runs += [
            PlannedRun(v.name, all_heads, task_names, seed, mtl_steps, v, v.settings)
            for v in config.variants
            if not v.distill
        ]
        runs += [
            PlannedRun(STL, (head,), (task,), seed, config.steps_per_task)
            for task, head in sorted(heads, key=lambda th: not get_head(th[1]).needs_logits)
        ]
        runs += [  # after the STL models of the seed: its teachers
            PlannedRun(v.name, all_heads, task_names, seed, mtl_steps, v, v.settings, teachers_of=STL)
            for v in config.variants
            if v.distill
        ]
        if config.equal_compute:
            reference = config.variants[0]
            runs.append(
                PlannedRun(
                    reference.name + EQUAL_COMPUTE_SUFFIX,
                    all_heads,
                    task_names,
                    seed,
                    mtl_steps,
                    reference,
                    reference.settings,
                    budget_of=STL,
                )
            )
    for seed in config.seeds:
        if config.stl_per_task:
            runs += [
                PlannedRun(f"{STL} {t.name}", tuple(h.name for h in t.heads), (t.name,), seed, config.steps_per_task)
                for t in tasks
                if len(t.heads) > 1
            ]
        if config.stl_masked_words:
            runs += [
                PlannedRun(
                    f"{STL} + masked words", (head,), (task,), seed, config.steps_per_task, settings=MASKED_WORDS
                )
                for task, head in heads
            ]
    return runs


@dataclasses.dataclass(frozen=True)
class TransformedData:
    transform_graph: str
    train_files: list[str]
    eval_files: list[str]


def _pipeline_config(config: StudyConfig):
    """Ingest and Transform settings of the study's data pipeline (and of the models that read its output)."""
    return get_config("quick", tasks=config.tasks, max_records_per_split=config.max_records_per_split)


def prepare_data(config: StudyConfig, data_root: str, workdir: str) -> TransformedData:
    """Ingest, validation and Transform as a TFX pipeline (cached when the data and settings are unchanged)."""
    from tfx import v1 as tfx

    from mtnlp.pipelines.local_runner import LOCAL_BEAM_ARGS
    from mtnlp.pipelines.pipeline import create_data_pipeline
    from mtnlp.pipelines.summary import latest_transform_outputs

    pipeline_config = _pipeline_config(config)
    metadata_path = os.path.join(workdir, "metadata.sqlite")
    pipeline = create_data_pipeline(
        "mtnlp-experiment",
        os.path.join(workdir, "pipeline_root"),
        os.path.abspath(data_root),
        pipeline_config,
        tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path),
        beam_pipeline_args=list(LOCAL_BEAM_ARGS),
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    outputs = latest_transform_outputs(metadata_path)
    examples = outputs["transformed_examples"]
    return TransformedData(outputs["transform_graph"], [f"{examples}/Split-train/*"], [f"{examples}/Split-eval/*"])


def with_settings(
    model: ModelConfig, training: TrainingConfig, heads: Mapping[str, HeadConfig], settings: Sequence[str]
) -> tuple[ModelConfig, TrainingConfig, dict[str, HeadConfig]]:
    """``model``, ``training`` and the head sections ``heads`` (each head's declared defaults where absent) with
    ``settings`` (``section.key=value``, as ``mtnlp run --set``) applied, checked against the typed config."""
    from mtnlp.pipelines.settings import apply_mapping, parse_assignment

    config = dataclasses.replace(get_config("quick"), model=model, training=training, heads=dict(heads))
    for assignment in settings:
        config = apply_mapping(config, parse_assignment(assignment), source=assignment)
    return config.model, config.training, config.heads


@dataclasses.dataclass(frozen=True)
class _Job:
    """Everything one model's process needs (picklable)."""

    run: PlannedRun
    config: StudyConfig
    data_root: str
    data: TransformedData
    task_weights: dict[str, float]
    budget_seconds: float | None
    log_prefix: str
    verbose: bool
    # where STL models are kept as teachers (``teacher_dir``); None: the study distils nothing, keeps no model
    models_dir: str | None = None
    # the seed's STL runs as recorded (their training time is a distilled run's cost)
    teacher_runs: tuple[dict[str, Any], ...] = ()


class Study:
    """Runs the planned models (default: ``plan_runs(config)``) one after another, each in a process of its
    own, and records each as it finishes."""

    def __init__(
        self,
        config: StudyConfig,
        data_root: str,
        workdir: str,
        results_path: str,
        planned: Sequence[PlannedRun] | None = None,
        verbose: bool = False,
        hours: float | None = None,
    ):
        self.config, self.data_root, self.workdir, self.results_path = config, data_root, workdir, results_path
        self._default_plan = planned is None
        self.planned = list(planned) if planned is not None else plan_runs(config)
        self.verbose, self.hours = verbose, hours
        self.results = self._load_results()

    def _load_results(self) -> dict[str, Any]:
        from mtnlp import machine

        fresh = {
            "study": self.config.to_json_dict(),
            "data": os.path.abspath(self.data_root),
            "machine": machine.describe(),
            "runs": [],
        }
        if os.path.exists(self.results_path):
            with open(self.results_path) as f:
                earlier = json.load(f)
            earlier["study"] = with_later_defaults(earlier.get("study", {}))
            if earlier["study"] == fresh["study"] and earlier.get("data") == fresh["data"]:
                return earlier
            if earlier.get("data") == fresh["data"] and self._add_variants(earlier):
                return earlier
            log.warning("%s holds a study with other settings: starting over", self.results_path)
        return fresh

    def _add_variants(self, earlier: dict[str, Any]) -> bool:
        """A recorded study that differs from this one only in its MTL variants goes on with both sets (the
        recorded ones first, so the equal-compute reference stays): its runs are kept and only the new variants
        train. Returns whether ``earlier`` is such a study (it is then updated to the joined settings)."""
        recorded = earlier.get("study", {})
        if {k: v for k, v in recorded.items() if k != "variants"} != {
            k: v for k, v in self.config.to_json_dict().items() if k != "variants"
        }:
            return False
        variants = tuple(MtlVariant(**{**v, "settings": tuple(v["settings"])}) for v in recorded.get("variants", ()))
        added = tuple(v for v in self.config.variants if v not in variants)
        if added:
            log.warning(
                "%s holds this study with the variants %s: adding %s (the recorded runs are kept)",
                self.results_path,
                ", ".join(v.name for v in variants),
                ", ".join(v.name for v in added),
            )
        self.config = dataclasses.replace(self.config, variants=variants + added)
        self.planned = plan_runs(self.config) if self._default_plan else self.planned
        earlier["study"] = self.config.to_json_dict()
        return True

    def _save(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.results_path)), exist_ok=True)
        partial = self.results_path + ".partial"
        with open(partial, "w") as f:
            json.dump(self.results, f, indent=2)
        os.replace(partial, self.results_path)

    def run(self) -> dict[str, Any]:
        import tensorflow_transform as tft

        from mtnlp.model import dataset

        start = time.time()
        log.warning("Preparing the data (ingest, validation, Transform) on %s", self.data_root)
        data = prepare_data(self.config, self.data_root, self.workdir)
        self.results["data_seconds"] = round(time.time() - start, 1)
        counts = dataset.count_examples_per_task(data.train_files, tft.TFTransformOutput(data.transform_graph))
        self.results["planned"] = [run.key for run in self.planned]

        done = {r["key"] for r in self.results["runs"]}
        todo = [run for run in self.planned if run.key not in done]
        if done:
            log.warning(
                "Resuming: %d of %d runs already in %s",
                len(self.planned) - len(todo),
                len(self.planned),
                self.results_path,
            )
        steps_left = sum(r.steps for r in todo)
        seconds_per_step = _seconds_per_step(self.results["runs"])
        deadline = start + self.hours * 3600 if self.hours else None
        context = multiprocessing.get_context("spawn")
        while todo:
            run = next_run(todo, self.planned, self.results["runs"], deadline - time.time() if deadline else None)
            if run is None:
                log.warning(
                    "Stopping: none of the %d runs left is expected to finish within --hours %g; the same "
                    "command resumes the study",
                    len(todo),
                    self.hours,
                )
                break
            todo.remove(run)
            prefix = f"[{len(self.planned) - len(todo)}/{len(self.planned)}] "
            eta = f", ETA at most {seconds_per_step * steps_left / 60:.0f} min" if seconds_per_step else ""
            log.warning(
                "%s%s: %s, seed %d, %s%d steps%s",
                prefix,
                run.config,
                "+".join(run.heads),
                run.seed,
                "at most " if self.config.patience is not None else "",
                run.steps,
                eta,
            )
            run_start = time.time()
            if run.variant is None:
                weights = {run.tasks[0]: 1.0}
            else:
                weights = dataset.task_weights(
                    {t: counts[t] for t in run.tasks}, run.variant.sampling, run.variant.temperature
                )
            budget = time_budget(run, self.results["runs"])
            record = self._equal_compute(run, budget) if budget is not None else None
            if record is None:
                job = _Job(
                    run,
                    self.config,
                    self.data_root,
                    data,
                    weights,
                    budget,
                    prefix,
                    self.verbose,
                    os.path.join(self.workdir, "models") if any(v.distill for v in self.config.variants) else None,
                    tuple(_recorded(self.results["runs"], run.teachers_of, run.seed)) if run.teachers_of else (),
                )
                # a fresh process per model: its peak memory is its own, and TensorFlow's state does not pile up
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as process:
                    record = process.submit(train_and_score, job).result()
            self.results["runs"].append(record)
            self._save()
            steps_left -= run.steps
            seconds_per_step = _seconds_per_step(self.results["runs"])
            log.warning(
                "%sdone in %.0f s (%d steps): %s",
                prefix,
                time.time() - run_start,
                record["steps"],
                "  ".join(f"{h}={m[next(iter(m))]:.4f}" for h, m in record["metrics"].items()),
            )
        self.results["wall_seconds"] = round(time.time() - start, 1)
        self._save()
        return self.results

    def _equal_compute(self, run: PlannedRun, budget: float) -> dict[str, Any] | None:
        """The reference MTL run of the seed, recorded as this run, when it trained within the budget (training
        it again under the budget would repeat it); None when it must train under the budget."""
        reference = reference_within_budget(run, self.results["runs"])
        if reference is None:
            return None
        log.warning(
            "%s, seed %d: the reference trained in %.0f s, within the %.0f s of the seed's %s models: "
            "recorded as the same run",
            run.config,
            run.seed,
            reference["train_seconds"],
            budget,
            run.budget_of,
        )
        return {
            **reference,
            "key": run.key,
            "config": run.config,
            "same_as": reference["key"],
            "time_budget": round(budget, 1),
        }


def with_later_defaults(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded study's settings (``StudyConfig.to_json_dict``) with the model and training settings added to
    the code since it ran, at their defaults: a new setting's default keeps the behaviour from before it, so
    such a study still resumes."""
    filled = dict(recorded)
    for section, defaults in (("model", ModelConfig()), ("training", TrainingConfig())):
        if section in recorded:
            filled[section] = {**json.loads(json.dumps(dataclasses.asdict(defaults))), **recorded[section]}
    return filled


def _recorded(runs: Sequence[dict[str, Any]], config: str, seed: int) -> list[dict[str, Any]]:
    return [r for r in runs if r["config"] == config and r["seed"] == seed]


def time_budget(run: PlannedRun, runs: Sequence[dict[str, Any]]) -> float | None:
    """Equal compute: the summed training seconds of ``run.budget_of``'s runs of the seed (None: no budget)."""
    if run.budget_of is None:
        return None
    return sum(r["train_seconds"] for r in _recorded(runs, run.budget_of, run.seed))


def reference_within_budget(run: PlannedRun, runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """An equal-compute run's reference MTL run of the seed, when it trained within the run's time budget."""
    budget = time_budget(run, runs)
    reference = _recorded(runs, run.config.removesuffix(EQUAL_COMPUTE_SUFFIX), run.seed)
    if budget is not None and reference and reference[0]["train_seconds"] <= budget:
        return reference[0]
    return None


def trained_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs that trained a model (an equal-compute run recorded as its reference's trained nothing)."""
    return [r for r in runs if "wall_seconds" in r and not r.get("same_as")]


def _seconds_per_step(runs: Sequence[dict[str, Any]]) -> float | None:
    trained = trained_runs(runs)
    return sum(r["wall_seconds"] for r in trained) / sum(r["steps"] for r in trained) if trained else None


def expected_seconds(run: PlannedRun, runs: Sequence[dict[str, Any]]) -> float | None:
    """Wall seconds ``run`` is expected to take: the longest earlier seed of the same model (10 % margin), else
    its step cap at the study's mean seconds per step; None before anything has trained. An equal-compute run
    that its reference already answers takes none."""
    if reference_within_budget(run, runs) is not None:
        return 0.0
    same_model = [
        r["wall_seconds"] for r in trained_runs(runs) if r["config"] == run.config and tuple(r["heads"]) == run.heads
    ]
    if same_model:
        return 1.1 * max(same_model)
    seconds_per_step = _seconds_per_step(runs)
    return seconds_per_step * run.steps if seconds_per_step else None


def next_run(
    todo: Sequence[PlannedRun],
    planned: Sequence[PlannedRun],
    runs: Sequence[dict[str, Any]],
    seconds_left: float | None,
) -> PlannedRun | None:
    """The first run of ``todo`` that can go now: an equal-compute run once its seed's budget runs are all
    recorded, a distilled run once its seed's teachers are, and, with a time limit, one expected to finish in ``seconds_left`` (a later, shorter run goes
    before a long one that would not finish); None when none can."""
    done = {r["key"] for r in runs}
    for run in todo:
        if run.waits_for and any(
            p.key not in done for p in planned if p.config == run.waits_for and p.seed == run.seed
        ):
            continue
        expected = expected_seconds(run, runs)
        if seconds_left is None or expected is None or expected <= seconds_left:
            return run
    return None


def train_and_score(job: _Job) -> dict[str, Any]:
    """Trains one planned model and scores it; runs in the model's own process."""
    from mtnlp import logs

    logs.quiet_environment(job.verbose)
    from mtnlp.model import devices

    devices.configure_cpu_replicas(job.config.training.cpu_replicas)  # before TensorFlow initializes
    import tensorflow as tf
    import tensorflow_transform as tft

    from mtnlp.experiments.convergence import (
        EarlyStoppingOnPrimaryMetrics,
        TimeBudget,
        peak_memory_mb,
        serving_latency_ms,
    )
    from mtnlp.model import contract
    from mtnlp.model.preprocessing import WORDS_VOCABULARY
    from mtnlp.model.signatures import ServingModule
    from mtnlp.model.tasks import select_tasks
    from mtnlp.model.training import train_model
    from mtnlp.model.warm_start import save_for_warm_start
    from mtnlp.serving.evaluate import evaluate_signatures, read_task_data

    logs.configure_logging(job.verbose)
    start = time.time()
    run, config = job.run, job.config
    tasks = tuple(
        dataclasses.replace(t, heads=tuple(h for h in t.heads if h.name in run.heads)) for t in select_tasks(run.tasks)
    )
    heads = [h for t in tasks for h in t.heads]
    tft_output = tft.TFTransformOutput(job.data.transform_graph)
    eval_data = read_task_data(job.data_root, tasks, config.eval_records, splits=["validation"])
    training = dataclasses.replace(config.training, seed=run.seed)
    if run.variant is not None:
        training = dataclasses.replace(training, loss_weighting=run.variant.weighting)
    model, training, head_configs = with_settings(config.model, training, config.heads, run.settings)
    if run.teachers_of:
        head_configs = {
            **head_configs,
            **{
                h: dataclasses.replace(head_configs[h], teacher=teacher_dir(job.models_dir, run.seed, h))
                for h in run.heads
            },
        }
    # the request signatures that answer the model's heads: scored, and timed for serving latency
    answering = {contract.signature_for(t, h) for t in tasks for h in t.heads}
    callbacks, stopping, budget = [], None, None
    if config.patience is not None:
        selection = {
            name: dataclasses.replace(d, records=d.records[: config.selection_records]) for name, d in eval_data.items()
        }
        per_step = {task: training.batch_size * weight for task, weight in job.task_weights.items()}
        stopping = EarlyStoppingOnPrimaryMetrics(
            lambda: ServingModule(stopping.model, tft_output, tasks).signatures(answering),
            selection,
            per_step,
            config.patience,
            log_prefix=job.log_prefix,
        )
        callbacks.append(stopping)
    if job.budget_seconds is not None:
        budget = TimeBudget(job.budget_seconds, job.log_prefix)
        callbacks.append(budget)
    trained = train_model(
        heads,
        tft_output,
        job.data.train_files,
        job.data.eval_files,
        job.task_weights,
        model,
        training,
        _pipeline_config(config).transform,
        head_configs,
        run.steps,
        config.eval_steps,
        devices.make_strategy(training.cpu_replicas),
        epochs=config.epochs(run.steps),
        callbacks=callbacks,
        log_prefix=job.log_prefix,
        teacher_cache_dir=os.path.join(job.models_dir, f"seed-{run.seed}", "teacher_cache")
        if run.teachers_of
        else None,
    )
    if job.models_dir and run.config == STL:  # a teacher of the seed's distilled runs
        save_for_warm_start(
            trained.model,
            tft_output.vocabulary_file_by_name(WORDS_VOCABULARY),
            teacher_dir(job.models_dir, run.seed, run.heads[0]),
        )
    signatures = ServingModule(trained.model, tft_output, tasks, config.beam_width, config.length_penalty).signatures(
        answering
    )
    scored, _ = evaluate_signatures(signatures, eval_data)
    requests = {}
    for task in tasks:
        for head in task.heads:
            name = contract.signature_for(task, head)
            if name not in requests and task.name in eval_data and eval_data[task.name].records:
                one = contract.request(task, eval_data[task.name].records[:1])
                requests[name] = {k: tf.constant(v) for k, v in one.items()}
    record = {
        "key": run.key,
        "config": run.config,
        "heads": list(run.heads),
        "seed": run.seed,
        "steps": trained.steps,
        "max_steps": run.steps,
        "settings": list(run.settings),
        "task_weights": job.task_weights,
        "train_seconds": round(trained.seconds, 1),
        "parameters": trained.parameters,
        "metrics": {r.head: r.metrics for r in scored},
        "eval_examples": {r.head: r.examples for r in scored},
        "curves": trained.history,
        "serving_ms": serving_latency_ms(signatures, list(requests.items())),
        "peak_rss_mb": peak_memory_mb(),
    }
    if stopping is not None:
        record.update(points=stopping.points, best_step=stopping.best_step, stopped_early=stopping.stopped_early)
    if budget is not None:
        record.update(time_budget=round(budget.seconds, 1), budget_spent=budget.spent)
    if run.teachers_of:
        # the distilled model's cost includes its teachers' training and the pass that caches their predictions
        teacher_seconds = round(sum(r["train_seconds"] for r in job.teacher_runs) + trained.teacher_seconds, 1)
        record.update(
            own_train_seconds=record["train_seconds"],
            teacher_seconds=teacher_seconds,
            # the sum of the two figures as recorded (rounding the unrounded sum could differ from it by 0.1)
            train_seconds=round(record["train_seconds"] + teacher_seconds, 1),
        )
    record["wall_seconds"] = round(time.time() - start, 1)
    return record


def teacher_dir(models_dir: str, seed: int, head: str) -> str:
    """Where the study keeps the seed's STL model of ``head`` (the Trainer's Format-Keras layout), a teacher."""
    return os.path.join(models_dir, f"seed-{seed}", head, "Format-Keras")


def study_config(name: str, studies: dict[str, StudyConfig] | None = None, **overrides: Any) -> StudyConfig:
    """``studies[name]`` (default: this study's) with the overrides that are not None."""
    config = (studies or STUDIES)[name]
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def run_study(
    config: StudyConfig,
    data_root: str,
    workdir: str,
    report_dir: str,
    command: str = "",
    verbose: bool = False,
    hours: float | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the study and writes its report. ``hours`` limits this invocation: no run starts that is
    not expected to finish within it (``expected_seconds``), so a study can be fitted into a machine's free time."""
    from mtnlp.experiments import report

    os.makedirs(report_dir, exist_ok=True)
    os.makedirs(workdir, exist_ok=True)
    results_path = os.path.join(report_dir, report.RESULTS_FILE)
    results = Study(config, data_root, workdir, results_path, verbose=verbose, hours=hours).run()
    if command:
        results["command"] = command
    report.write_report(results, report_dir)
    return results


def variants_from(specs: Sequence[str] | None) -> tuple[MtlVariant, ...] | None:
    return tuple(MtlVariant.parse(s) for s in specs) if specs else None
