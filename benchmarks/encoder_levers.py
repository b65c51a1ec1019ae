"""The issue-26 levers (spaCy-style word encoding, window encoder, CRF for NER, static length buckets with XLA)
on a small fixed recipe.

    python benchmarks/encoder_levers.py                       # every lever, one run each (~4 min a run on 2 cores)
    python benchmarks/encoder_levers.py --levers baseline crf # some of them

Each lever is one ``mtnlp run`` of the quick profile on the tagging task (POS and NER), ``--max-records``
(3,000) records per split, ``--train-steps`` (600) steps, in a workdir of its own under ``--workdir-base``,
with the lever's ``--set`` settings over the defaults. Recorded per run: the Evaluator's validation figures
(POS token accuracy, NER entity F1; the whole capped validation split, 2,001 sentences), the pipeline's wall
time, the Trainer's ``model.fit`` seconds for the steps (from its progress log, tracing included) and steps
per second, and the 1-minute load average before and after. A run whose workdir already holds
``run_summary.json`` and ``run.log`` is read back instead of run again (``--rerun`` runs it anyway).

One seed and a small budget: a quick screen of which lever to take to the full profile, not a verdict.
Prints a table and writes benchmarks/encoder_levers_results.json (``--output``).

``--step-times`` runs no pipeline: it builds each lever's model as the Trainer does (quick profile, tagging heads)
and times its training step on one fixed batch, the models in turn, so that load affects them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, Machine, default_output, table, write_json  # noqa: E402

LEVERS = {
    "baseline": (),
    "concat_maxout": ("model.embedding_combiner=concat_maxout",),
    "window_conv_4": ("model.window_conv_layers=4",),
    # lever 2: a character CNN per word (64 filters of 3 characters), alone and under the window encoder
    "char_cnn": ("model.char_cnn_dim=64",),
    "char_cnn_window_conv_4": ("model.char_cnn_dim=64", "model.window_conv_layers=4"),
    "crf_ner": ("heads.ner.decoder=crf",),
    "all_three": (
        "model.embedding_combiner=concat_maxout",
        "model.window_conv_layers=4",
        "heads.ner.decoder=crf",
    ),
    # lever 5: batches padded to a few static lengths, without and with the XLA-compiled step
    "length_buckets": ("training.length_buckets=[16, 32, 64, 128]",),
    "length_buckets_xla": ("training.length_buckets=[16, 32, 64, 128]", "training.jit_compile=true"),
}
# the Trainer's last progress line: "train step 600/600 ... (71s, ETA 0s)"
PROGRESS = re.compile(r"train step (\d+)/\d+ .*\((\d+)s, ETA")


def run_lever(name: str, settings: tuple[str, ...], args: argparse.Namespace) -> dict:
    workdir = args.workdir_base / name
    summary_file, log_file, meta_file = workdir / "run_summary.json", workdir / "run.log", workdir / "run_meta.json"
    if args.rerun or not (summary_file.exists() and log_file.exists()):
        shutil.rmtree(workdir, ignore_errors=True)  # a fresh workdir: no warm start from an earlier run's model
        command = [
            *shlex.split(args.mtnlp),
            "run",
            "--profile",
            "quick",
            "--tasks",
            "tagging",
            "--max-records",
            str(args.max_records),
            "--train-steps",
            str(args.train_steps),
            "--data",
            str(args.data),
            "--workdir",
            str(workdir),
            *[f"--set={s}" for s in settings],
        ]
        load_before, start = os.getloadavg()[0], time.time()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        workdir.mkdir(parents=True, exist_ok=True)
        log_file.write_text(done.stdout + done.stderr)
        meta_file.write_text(
            json.dumps(
                {
                    "command": " ".join(command),
                    "process_seconds": round(time.time() - start, 1),
                    "load_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                }
            )
        )
        if done.returncode != 0:
            raise SystemExit(f"{name}: mtnlp run failed; see {log_file}")
    summary = json.loads(summary_file.read_text())
    steps, seconds = [(int(s), int(t)) for s, t in PROGRESS.findall(log_file.read_text())][-1]
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    return {
        "lever": name,
        "settings": list(settings),
        "pos_token_accuracy": summary["metrics"]["pos"]["token_accuracy"],
        "ner_entity_f1": summary["metrics"]["ner"]["entity_f1"],
        "pipeline_wall_seconds": summary["wall_seconds"],
        "fit_seconds": seconds,
        "steps": steps,
        "steps_per_second": round(steps / seconds, 2),
        **meta,
    }


# what each lever changes in the Trainer's model (``--step-times``), as its --set settings do
STEP_TIME_BUILDS = {
    "baseline": ({}, {}, {}),
    "concat_maxout": ({"embedding_combiner": "concat_maxout"}, {}, {}),
    "window_conv_1": ({"window_conv_layers": 1}, {}, {}),
    "window_conv_2": ({"window_conv_layers": 2}, {}, {}),
    "window_conv_4": ({"window_conv_layers": 4}, {}, {}),
    "char_cnn": ({"char_cnn_dim": 64}, {}, {}),
    "char_cnn_window_conv_4": ({"char_cnn_dim": 64, "window_conv_layers": 4}, {}, {}),
    "concat_maxout_window_conv_2": ({"embedding_combiner": "concat_maxout", "window_conv_layers": 2}, {}, {}),
    "crf_ner": ({}, {"ner": {"decoder": "crf"}}, {}),
    "all_three": ({"embedding_combiner": "concat_maxout", "window_conv_layers": 4}, {"ner": {"decoder": "crf"}}, {}),
    "length_buckets_xla": ({}, {}, {"jit_compile": True}),
}


def step_times(profile_name: str, builds: list[str], rounds: int, steps: int, length: int) -> dict[str, float]:
    """Median ms per training step of each lever's tagging model at ``profile_name``'s sizes on one fixed batch
    (the profile's batch size, sentences of ``length`` words), the levers' models timed in turn for ``rounds``
    rounds of ``steps`` steps, so that they share the machine's load alike (the pipeline runs above ran at
    different loads)."""
    import dataclasses
    import statistics

    import numpy as np

    from benchmarks.training import synthetic_char_codes
    from mtnlp.model.preprocessing import CHAR_CODES, SUBWORD_INPUTS
    from mtnlp.model.tasks import get_task
    from mtnlp.model.text import NUM_SHAPES
    from mtnlp.model.training import build_training_model
    from mtnlp.pipelines.config import PROFILES
    from mtnlp.sections import HeadConfig

    profile = PROFILES[profile_name]
    batch = profile.training.batch_size
    heads = get_task("tagging").heads
    rng = np.random.default_rng(0)
    inputs = {name: rng.integers(1, 90, size=(batch, length)) for name in ("token_ids", *SUBWORD_INPUTS)}
    inputs["shape_ids"] = rng.integers(1, NUM_SHAPES, size=(batch, length))
    inputs["entity_ids"] = np.zeros((batch, length), np.int64)
    inputs[CHAR_CODES] = synthetic_char_codes(rng, np.ones((batch, length), bool))
    labels = {h.name: rng.integers(0, h.num_labels, size=(batch, length)) for h in heads}
    weights = {h.name: np.ones((batch, length), np.float32) for h in heads}
    models = {}

    def model_inputs(model) -> dict:  # Keras matches a dict with extra keys to its inputs by position
        return {k: v for k, v in inputs.items() if k in model.input}

    for name in builds:
        model_settings, head_settings, training_settings = STEP_TIME_BUILDS[name]
        configs = {
            h.name: dataclasses.replace(profile.heads.get(h.name, HeadConfig()), **head_settings.get(h.name, {}))
            for h in heads
        }
        models[name] = build_training_model(
            heads,
            100,
            {},
            dataclasses.replace(profile.model, **model_settings),
            dataclasses.replace(profile.training, **training_settings),
            profile.transform,
            configs,
            600,
        )
        for _ in range(3):  # tracing (and XLA's compilation)
            models[name].train_on_batch(model_inputs(models[name]), labels, weights)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            for _ in range(steps):
                start = time.perf_counter()
                model.train_on_batch(model_inputs(model), labels, weights)
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: round(statistics.median(t), 1) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS))
    parser.add_argument("--max-records", type=int, default=3000)
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--workdir-base", type=Path, default=Path("/tmp/encoder_levers"))
    parser.add_argument("--rerun", action="store_true", help="run levers whose workdir already holds a run")
    parser.add_argument(
        "--mtnlp", default=f"{sys.executable} -m mtnlp.cli", help="the command that runs the CLI (default: %(default)s)"
    )
    parser.add_argument("--output", type=Path, default=default_output("encoder_levers"))
    parser.add_argument(
        "--step-times", action="store_true", help="only time each lever's training step, interleaved (no pipeline runs)"
    )
    parser.add_argument(
        "--step-times-profile", choices=["quick", "full"], default="quick", help="whose model sizes --step-times builds"
    )
    parser.add_argument(
        "--step-times-builds",
        nargs="+",
        choices=list(STEP_TIME_BUILDS),
        default=list(STEP_TIME_BUILDS),
        help="which models --step-times builds",
    )
    args = parser.parse_args()
    machine = Machine()
    if args.step_times:
        times = step_times(args.step_times_profile, args.step_times_builds, rounds=5, steps=10, length=25)
        print(table(["lever", "ms/step (median)"], list(times.items())))
        print(machine.line())
        from mtnlp.pipelines.config import PROFILES

        sentences = PROFILES[args.step_times_profile].training.batch_size
        batch = {"profile": args.step_times_profile, "sentences": sentences, "words": 25}
        write_json(args.output, machine, {"step_ms_median": times, "batch": batch})
        return
    rows = [run_lever(name, LEVERS[name], args) for name in args.levers]
    print(
        table(
            ["lever", "POS acc", "NER F1", "wall s", "fit s", "steps/s", "load before/after"],
            [
                [r["lever"], r["pos_token_accuracy"], r["ner_entity_f1"], r["pipeline_wall_seconds"], r["fit_seconds"]]
                + [r["steps_per_second"], "/".join(map(str, r.get("load_before_after", ["?"])))]
                for r in rows
            ],
        )
    )
    print(machine.line())
    recipe = {"profile": "quick", "tasks": ["tagging"], "max_records": args.max_records, "steps": args.train_steps}
    write_json(args.output, machine, {"recipe": recipe, "runs": rows})


if __name__ == "__main__":
    main()
