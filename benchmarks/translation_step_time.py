"""Training step time with and without the translation head, on the quick profile's model sizes.

    python benchmarks/translation_step_time.py [--steps 40] [--replicas 2]

Times training steps (global batch 32, 20-word sentences, 12-word targets, rows of the tasks in equal
shares; with ``--replicas 2`` under MirroredStrategy on two logical CPU devices, as the Trainer runs; the
model, optimizer and batches of ``benchmarks/training.py``) for:
the model without the translation head; with it, on a batch whose 8 of 32 examples are translation
examples (about the quick profile's mix); and with it, on a batch without translation examples (the
decoder is skipped; what remains is the optimizer's update of the decoder's variables and a few
empty ops).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Machine, quiet_tensorflow  # noqa: E402

quiet_tensorflow()
import tensorflow as tf  # noqa: E402

from benchmarks.training import build_training_model, mixed_rows, synthetic_batch  # noqa: E402
from mtnlp.model import devices  # noqa: E402
from mtnlp.model.tasks import all_heads, select_tasks  # noqa: E402
from mtnlp.pipelines.config import get_config  # noqa: E402


def _time(heads, row_tasks, steps: int, strategy) -> tuple[float, float]:
    """(fastest, median) seconds per step over 5 rounds of ``steps`` steps; the fastest is the least
    disturbed by other processes."""
    model = build_training_model(heads, get_config("quick"), strategy)
    batch, _ = synthetic_batch(heads, row_tasks, length=20, target_length=12, spread=0.0)
    data = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)  # tracing
    times = []
    for _ in range(5):
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        times.append((time.perf_counter() - start) / steps)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()
    if args.replicas > 1:
        devices.configure_cpu_replicas(args.replicas)
    machine = Machine()
    strategy = devices.make_strategy(args.replicas) if args.replicas > 1 else tf.distribute.get_strategy()
    others, every = select_tasks(["tagging", "sentiment", "relation"]), select_tasks(None)
    base = _time(all_heads(others), mixed_rows(others, 32), args.steps, strategy)
    mixed = _time(all_heads(every), mixed_rows(every, 32), args.steps, strategy)
    none = _time(all_heads(every), mixed_rows(others, 32), args.steps, strategy)
    print(machine.line())
    for label, (fastest, median) in (
        ("without the translation head", base),
        ("with it, 8 of 32 examples translation", mixed),
        ("with it, no translation example in the batch", none),
    ):
        print(
            f"{label:<46} fastest {fastest * 1000:6.1f} ms ({fastest / base[0] - 1:+4.0%}), "
            f"median {median * 1000:6.1f} ms ({median / base[1] - 1:+4.0%})"
        )


if __name__ == "__main__":
    main()
