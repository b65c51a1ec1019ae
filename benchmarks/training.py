"""Training throughput: the multi-task model (MTL, every head) against each single-task model (STL, one head),
the encoder's achieved FLOP/s against this machine's matmul peak, and the cost of MirroredStrategy on CPU.

    python benchmarks/training.py                  # the quick profile's encoder, 30 timed steps per model
    python benchmarks/training.py --profile full   # the full profile's encoder
    python benchmarks/training.py --quick          # 3 timed steps after 1 warmup step: checks that it runs

Every model is built and compiled exactly as the Trainer builds it (``build_model`` + ``compile_for_heads``,
AdamW with weight decay and gradient clipping) at the profile's encoder size and trained with ``model.fit`` on
one synthetic batch repeated: ``--batch-size`` rows (default 32) of sentences of about ``--length`` words
(default 25, each row 0.6-1.4x that, the batch padded to its longest as the input pipeline cuts it) and
translation targets of about ``--target-length`` words (default 10). The MTL batch mixes the tasks' rows in
equal shares (the quick profile's mix: 3,000 records per task, temperature sampling) with every head's labels
and sample weights as Transform produces them: 0 on other tasks' rows and on padding. An STL batch holds rows
of its own task only. Each step is timed on its own (the first ``--warmup`` steps, tracing included, are not);
the table shows the median.

Also measured: the encoder's forward+backward FLOPs per step counted from the layer shapes (per layer
8·B·T·d² for the attention projections, 4·B·T²·d for scores and weighted sum, 4·B·T·d·f for the feed-forward;
backward = 2x forward) divided by the step time, against the peak of a large float32 matmul timed in the same
run; and the MTL step under a ``--replicas`` (2) replica MirroredStrategy against one device. ``--speedups xla
bf16`` also times the MTL step compiled with XLA (``jit_compile``) and under Keras' ``mixed_bfloat16`` policy
(bfloat16 compute, float32 weights), the two levers a CPU with AVX-512 BF16 may reward.
Prints a table stating the machine and writes benchmarks/training_results.json (``--output``).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Machine, default_output, quiet_tensorflow, table, write_json  # noqa: E402

quiet_tensorflow()
import numpy as np  # noqa: E402

from mtnlp.model.heads import Head  # noqa: E402
from mtnlp.model.tasks import Task, all_heads, registered_tasks, supervised_tasks  # noqa: E402

# Vocabulary sizes of the synthetic model: about what Transform computes on the quick profile's data.
VOCABULARY_SIZE = 8000
TARGET_VOCABULARY_SIZE = 3000


def task_of(head: Head) -> Task:
    return next(t for t in registered_tasks() if head in t.heads)


def synthetic_char_codes(rng: np.random.Generator, real: np.ndarray) -> np.ndarray:
    """Character codes (``preprocessing.char_codes``) of made-up words at the ``real`` positions [B, T] (bool):
    2 to 10 lowercase letters each, as the character CNN would read them. int64 [B, T, WORD_CHARACTERS]."""
    from mtnlp.model.preprocessing import WORD_CHARACTERS

    characters = rng.integers(2, 11, size=(*real.shape, 1)) * real[..., None]
    letters = rng.integers(ord("a") + 1, ord("z") + 2, size=(*real.shape, WORD_CHARACTERS))
    return np.where(np.arange(WORD_CHARACTERS) < characters, letters, 0).astype(np.int64)


def synthetic_batch(
    heads: Sequence[Head],
    row_tasks: Sequence[Task],
    length: int,
    target_length: int,
    spread: float = 0.4,
    seed: int = 0,
    masked_words: bool = False,
):
    """(inputs, labels, sample_weights) as ``model.dataset`` feeds them to ``fit``: row i is an example of
    ``row_tasks[i]``; sentence and target lengths are uniform in (1 ± spread) x the given length, and the batch
    is padded to its longest sentence and longest target. Returns also the number of real words.
    ``masked_words``: for a model with the masked-word objective; 15 % of the words are its labels."""
    from mtnlp.model import text
    from mtnlp.model.network import MASKED_WORD_LABELS, MASKED_WORDS, model_input_names
    from mtnlp.model.preprocessing import SUBWORD_INPUTS
    from mtnlp.sections import TransformConfig

    rng = np.random.default_rng(seed)
    batch_size = len(row_tasks)

    def lengths(mean: int) -> np.ndarray:
        return rng.integers(max(1, round(mean * (1 - spread))), round(mean * (1 + spread)) + 1, size=batch_size)

    words = lengths(length)  # drawn first, so every model of a run sees the same sentence lengths
    targets = lengths(target_length)
    real = np.arange(words.max())[None, :] < words[:, None]
    features = {
        "token_ids": np.where(real, rng.integers(1, VOCABULARY_SIZE, size=real.shape), 0),
        "shape_ids": np.where(real, rng.integers(1, text.NUM_SHAPES, size=real.shape), 0),
        "entity_ids": np.zeros(real.shape, np.int64),
        # hashed subword ids of the default TransformConfig's bucket count
        **{
            name: np.where(real, rng.integers(1, TransformConfig().subword_buckets + 1, size=real.shape), 0)
            for name in SUBWORD_INPUTS
        },
    }
    for i, task in enumerate(row_tasks):
        if task.encoder_input.span_fields:  # a word of e1, later a word of e2
            features["entity_ids"][i, 0], features["entity_ids"][i, words[i] - 1] = 1, 2
    labels, weights = {}, {}
    for head in heads:
        mine = np.array([head in t.heads for t in row_tasks])
        labels[head.name], weights[head.name] = head.synthetic_labels(rng, mine, real, targets, TARGET_VOCABULARY_SIZE)
        for name in head.model_inputs():  # teacher forcing reads the labels
            features[name] = labels[head.name]
    if masked_words:
        chosen = real & (rng.random(real.shape) < 0.15)
        features[MASKED_WORD_LABELS] = np.where(chosen, features["token_ids"], 0)
        labels[MASKED_WORDS], weights[MASKED_WORDS] = np.zeros(batch_size), chosen.any(axis=1).astype("float32")
    inputs = {k: features[k].astype("int64") for k in model_input_names(heads, masked_words)}
    labels = {k: (v if k == MASKED_WORDS else v.astype("int64")) for k, v in labels.items()}
    return (inputs, labels, weights), int(words.sum())


SPEEDUPS = ("xla", "bf16")


def mixed_rows(tasks: Sequence[Task], batch_size: int, seed: int = 0) -> list[Task]:
    """Equal shares of the tasks' rows, in a fixed random order (so that every replica gets a mix)."""
    rows = [tasks[i % len(tasks)] for i in range(batch_size)]
    order = np.random.default_rng(seed).permutation(batch_size)
    return [rows[i] for i in order]


def build_training_model(heads: Sequence[Head], config, strategy):
    """The model, loss and optimizer exactly as the Trainer makes them (synthetic vocabulary sizes)."""
    import keras

    from mtnlp.model import training

    keras.utils.set_random_seed(config.training.seed)
    with strategy.scope():
        return training.build_training_model(
            heads,
            VOCABULARY_SIZE,
            {h.name: TARGET_VOCABULARY_SIZE for h in heads},
            config.model,
            config.training,
            config.transform,
            config.heads,
            config.training.train_steps,
        )


def step_seconds(model, batch, steps: int, warmup: int) -> list[float]:
    """Seconds of each of ``steps`` training steps of ``model.fit`` on ``batch`` repeated, after ``warmup``
    untimed steps (the first one traces the step function)."""
    import keras
    import tensorflow as tf

    class StepEnds(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                float(logs["loss"])  # the step has finished
            self.ends.append(time.perf_counter())

    ends = StepEnds()
    model.fit(
        tf.data.Dataset.from_tensors(batch).repeat(),
        steps_per_epoch=max(1, warmup) + steps,
        epochs=1,
        verbose=0,
        callbacks=[ends],
    )
    return list(np.diff(ends.ends[max(1, warmup) - 1 :]))


def encoder_flops(batch_size: int, length: int, model_config) -> float:
    """Forward + backward FLOPs of the shared encoder's transformer layers for one [B, T] batch."""
    b, t, d, f = batch_size, length, model_config.embedding_dim, model_config.intermediate_dim
    forward = model_config.num_layers * (4 * 2 * b * t * d * d + 2 * 2 * b * t * t * d + 2 * 2 * b * t * d * f)
    return 3.0 * forward


def matmul_peak(size: int, repeats: int) -> dict:
    """GFLOP/s of a float32 [size, size] x [size, size] matmul on this machine: best and median of ``repeats``."""
    import tensorflow as tf

    g = tf.random.Generator.from_seed(0)
    a, b = g.normal([size, size]), g.normal([size, size])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    for _ in range(3):
        matmul().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul().numpy()
        times.append(time.perf_counter() - start)
    flops = 2.0 * size**3
    return {
        "size": size,
        "repeats": repeats,
        "gflops_best": flops / min(times) / 1e9,
        "gflops_median": flops / statistics.median(times) / 1e9,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=("quick", "full"), default="quick", help="whose ModelConfig (encoder size)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (at least 1: tracing)")
    ap.add_argument("--quick", action="store_true", help="--steps 3 --warmup 1, a 1024 matmul: checks that it runs")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--length", type=int, default=25, help="mean sentence length in words")
    ap.add_argument("--target-length", type=int, default=10, help="mean translation target length in words")
    ap.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="MirroredStrategy CPU replicas, compared with one device (the profiles train on 1 on CPU)",
    )
    ap.add_argument("--models", nargs="+", help="only these: mtl and/or head names (default: mtl and every head)")
    ap.add_argument(
        "--speedups",
        nargs="*",
        choices=SPEEDUPS,
        default=[],
        help="also time the MTL step with XLA (xla) and/or mixed bfloat16 (bf16)",
    )
    ap.add_argument("--matmul-size", type=int, default=2048)
    ap.add_argument("--output", type=Path, default=default_output("training"))
    ns = ap.parse_args()
    if ns.quick:
        ns.steps, ns.warmup, ns.matmul_size = 3, 1, 1024

    from mtnlp.pipelines.config import get_config

    config = get_config(ns.profile)
    replicas = ns.replicas
    from mtnlp.model import devices

    devices.configure_cpu_replicas(replicas)  # before TensorFlow initializes its devices
    import keras
    import tensorflow as tf

    machine = Machine()
    mirrored = devices.make_strategy(replicas) if replicas > 1 else None
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    main_strategy = mirrored or single

    heads = all_heads()
    models = {"mtl": (heads, mixed_rows(supervised_tasks(), ns.batch_size))}
    models.update({h.name: ((h,), [task_of(h)] * ns.batch_size) for h in heads})
    if ns.models:
        unknown = set(ns.models) - set(models)
        if unknown:
            ap.error(f"unknown model(s) {sorted(unknown)}; choose from {', '.join(models)}")
        models = {k: v for k, v in models.items() if k in ns.models}

    peak = matmul_peak(ns.matmul_size, 5 if ns.quick else 20)
    results = {}
    runs = [(name, main_strategy) for name in models]
    if mirrored and "mtl" in models:
        runs.append(("mtl_one_device", single))
    runs += [(f"mtl_{speedup}", single) for speedup in ns.speedups]
    for name, strategy in runs:
        speedup = name.removeprefix("mtl_") if name.removeprefix("mtl_") in SPEEDUPS else None
        model_heads, row_tasks = models["mtl" if speedup else name.removesuffix("_one_device")]
        batch, words = synthetic_batch(
            model_heads, row_tasks, ns.length, ns.target_length, masked_words=config.training.masked_word_share > 0
        )
        padded = batch[0]["token_ids"].shape[1]
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if speedup == "bf16" else "float32")
        model = build_training_model(model_heads, config, strategy)
        model.jit_compile = speedup == "xla"
        try:
            times = step_seconds(model, batch, ns.steps, ns.warmup)
        except Exception as e:  # noqa: BLE001 - a lever the model cannot take is a finding, not a crash
            print(f"  {name}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            results[name] = {"failed": f"{type(e).__name__}: {str(e)[:2000]}"}
            continue
        finally:
            keras.mixed_precision.set_global_policy("float32")
        median, flops = statistics.median(times), encoder_flops(ns.batch_size, padded, config.model)
        results[name] = {
            "heads": [h.name for h in model_heads],
            "replicas": strategy.num_replicas_in_sync,
            "parameters": model.count_params(),
            "padded_length": padded,
            "words_per_batch": words,
            "step_ms_median": median * 1e3,
            "step_ms_mean": statistics.fmean(times) * 1e3,
            "examples_per_s": ns.batch_size / median,
            "tokens_per_s": words / median,
            "encoder_gflop_per_step": flops / 1e9,
            "encoder_gflops_achieved": flops / median / 1e9,
            "fraction_of_matmul_peak": flops / median / 1e9 / peak["gflops_best"],
        }
        print(f"  {name}: {median * 1e3:.1f} ms per step", flush=True)
        del model

    failed = {name: r for name, r in results.items() if "failed" in r}
    results = {name: r for name, r in results.items() if "failed" not in r}
    summary = {f"{name}_failed": r["failed"] for name, r in failed.items()}
    reference = results.get("mtl_one_device") or results.get("mtl")  # float32 on one device
    for speedup in ns.speedups:
        if f"mtl_{speedup}" in results and reference:
            summary[f"{speedup}_over_float32_step_time"] = (
                results[f"mtl_{speedup}"]["step_ms_median"] / reference["step_ms_median"]
            )
    if "mtl_one_device" in results:
        summary["mirrored_over_one_device_step_time"] = (
            results["mtl"]["step_ms_median"] / results["mtl_one_device"]["step_ms_median"]
        )

    m = config.model
    print(machine.line())
    print(
        f"Profile {ns.profile}: encoder d={m.embedding_dim} f={m.intermediate_dim} L={m.num_layers} "
        f"heads={m.num_heads}; batch {ns.batch_size}, ~{ns.length}-word sentences, ~{ns.target_length}-word "
        f"targets; {ns.steps} timed steps after {max(1, ns.warmup)} warmup; synthetic data, untrained weights"
    )
    rows = [
        [
            name,
            r["replicas"],
            f"{r['parameters']:,}",
            f"{r['step_ms_median']:.1f}",
            f"{r['step_ms_mean']:.1f}",
            f"{r['examples_per_s']:.0f}",
            f"{r['tokens_per_s']:,.0f}",
            f"{r['encoder_gflops_achieved']:.2f}",
            f"{r['fraction_of_matmul_peak']:.1%}",
        ]
        for name, r in results.items()
    ]
    print(
        table(["model", "replicas", "params", "step ms", "mean ms", "ex/s", "tokens/s", "enc GFLOP/s", "of peak"], rows)
    )
    first = next(iter(results.values()))  # the baseline runs first and does not fail
    print(
        f"encoder: {first['encoder_gflop_per_step']:.2f} GFLOP per step (fwd+bwd, T={first['padded_length']}); "
        f"matmul peak {peak['gflops_best']:.1f} GFLOP/s ({peak['size']}x{peak['size']} float32, best of "
        f"{peak['repeats']}; median {peak['gflops_median']:.1f})"
    )
    if "mirrored_over_one_device_step_time" in summary:
        print(
            f"MirroredStrategy ({replicas} CPU replicas) step time / one device: "
            f"{summary['mirrored_over_one_device_step_time']:.2f}x (MTL)"
        )
    for speedup in ns.speedups:
        if f"{speedup}_over_float32_step_time" in summary:
            print(
                f"{speedup} step time / float32 one device: {summary[f'{speedup}_over_float32_step_time']:.2f}x (MTL)"
            )
        else:
            print(f"{speedup}: failed: {summary.get(f'mtl_{speedup}_failed', 'not run')[:300]}")
    write_json(
        ns.output,
        machine,
        {
            "profile": ns.profile,
            "model_config": dataclasses.asdict(config.model),
            "settings": {
                "batch_size": ns.batch_size,
                "length": ns.length,
                "target_length": ns.target_length,
                "steps": ns.steps,
                "warmup": max(1, ns.warmup),
                "replicas": replicas,
                "speedups": ns.speedups,
                "vocabulary_size": VOCABULARY_SIZE,
                "target_vocabulary_size": TARGET_VOCABULARY_SIZE,
            },
            "matmul_peak": peak,
            "models": results,
            "summary": summary,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
