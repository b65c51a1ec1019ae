"""Training step time with and without the translation head, on the quick profile's model sizes.

    python benchmarks/translation_step_time.py [--steps 40] [--replicas 2]

Times training steps (global batch 32, 20-word sentences, 12-word targets; with ``--replicas 2``
under MirroredStrategy on two logical CPU devices, as the Trainer runs) for:
the model without the translation head; with it, on a batch whose 8 of 32 examples are translation
examples (about the quick profile's mix); and with it, on a batch without translation examples (the
decoder is skipped; what remains is the optimizer's update of the decoder's variables and a few
empty ops).
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from model import devices
from model.network import build_model, compile_for_heads
from model.preprocessing import TARGET_EOS
from model.tasks import HeadKind, all_heads, select_tasks
from pipelines.config import get_config


def _batch(heads, translation_rows: int, batch_size=32, length=20, target_length=12, vocabulary=8000, targets=3000):
    rng = np.random.default_rng(0)
    if not translation_rows:
        target_length = 1  # the input pipeline cuts targets to the batch's longest: none -> 1
    token_ids = rng.integers(1, vocabulary, size=(batch_size, length))
    inputs = {"token_ids": token_ids, "shape_ids": np.full_like(token_ids, 5), "entity_ids": np.zeros_like(token_ids)}
    labels, weights = {}, {}
    for head in heads:
        if head.kind is HeadKind.SEQUENCE:
            target = rng.integers(3, targets, size=(batch_size, target_length))
            target[:, -1] = TARGET_EOS
            target[translation_rows:] = 0
            inputs[head.label_key] = labels[head.name] = target
            weights[head.name] = (target > 0).astype("float32")
        elif head.kind is HeadKind.TOKEN:
            labels[head.name] = rng.integers(0, head.num_labels, size=(batch_size, length))
            weights[head.name] = np.ones((batch_size, length), "float32")
        else:
            labels[head.name] = rng.integers(0, head.num_labels, size=(batch_size,))
            weights[head.name] = np.ones((batch_size,), "float32")
    return inputs, labels, weights


def _time(heads, translation_rows: int, steps: int, strategy) -> tuple[float, float]:
    """(fastest, median) seconds per step over 5 rounds of ``steps`` steps; the fastest is the least
    disturbed by other processes."""
    config = get_config("quick")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model(heads, vocabulary_size=8000, max_length=config.transform.max_length,
                            target_vocabulary_sizes={"translation": 3000},
                            max_target_length=config.transform.max_target_length, **config.to_json_dict()["model"])  # fmt: skip
        compile_for_heads(model, heads, keras.optimizers.AdamW(1e-3))
    data = tf.data.Dataset.from_tensors(_batch(heads, translation_rows)).repeat()
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
    strategy = devices.make_strategy(args.replicas) if args.replicas > 1 else tf.distribute.get_strategy()
    without = all_heads(select_tasks(["tagging", "sentiment", "relation"]))
    with_translation = all_heads(select_tasks(["tagging", "sentiment", "relation", "translation"]))
    base = _time(without, 0, args.steps, strategy)
    mixed = _time(with_translation, 8, args.steps, strategy)
    none = _time(with_translation, 0, args.steps, strategy)
    for label, (fastest, median) in (("without the translation head", base),
                                     ("with it, 8 of 32 examples translation", mixed),
                                     ("with it, no translation example in the batch", none)):  # fmt: skip
        print(f"{label:<46} fastest {fastest * 1000:6.1f} ms ({fastest / base[0] - 1:+4.0%}), "
              f"median {median * 1000:6.1f} ms ({median / base[1] - 1:+4.0%})")


if __name__ == "__main__":
    main()
