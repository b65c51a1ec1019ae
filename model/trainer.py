"""The TFX Trainer entry point ``run_fn``: train the multi-task model under MirroredStrategy, export
the serving SavedModel with its signatures and warmup requests."""

from __future__ import annotations

import json
import logging
import os
import time

import keras
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from model import dataset, devices
from model.network import build_model, compile_for_heads
from model.signatures import export_serving_model
from model.tasks import HeadKind, all_heads, select_tasks
from model.warmup import write_warmup_requests
from model.preprocessing import WORDS_VOCABULARY

log = logging.getLogger(__name__)


class _ProgressLog(keras.callbacks.Callback):
    """One line per epoch with step count, losses and time, instead of Keras' progress bars."""

    def __init__(self, total_steps: int):
        super().__init__()
        self._total_steps, self._start = total_steps, time.time()

    def on_epoch_end(self, epoch, logs=None):
        steps = (epoch + 1) * self.params["steps"]
        shown = {k: v for k, v in (logs or {}).items() if k == "loss" or k == "val_loss" or k.endswith("accuracy")}
        elapsed = time.time() - self._start
        eta = elapsed / steps * (self._total_steps - steps)
        log.warning("train step %d/%d  %s  (%.0fs, ETA %.0fs)", steps, self._total_steps,
                    "  ".join(f"{k}={v:.3f}" for k, v in sorted(shown.items())), elapsed, eta)  # fmt: skip


def _vocabulary_size(tf_transform_output: tft.TFTransformOutput, num_oov_buckets: int) -> int:
    # ids: 0 padding, 1..V the vocabulary, then the OOV buckets
    return tf_transform_output.vocabulary_size_by_name(WORDS_VOCABULARY) + num_oov_buckets + 1


def run_fn(fn_args: FnArgs) -> None:
    config = fn_args.custom_config
    model_cfg, training, transform_cfg = config["model"], config["training"], config["transform"]
    tasks = select_tasks(config["tasks"])
    heads = all_heads(tasks)
    keras.utils.set_random_seed(training["seed"])
    strategy = devices.make_strategy(training["cpu_replicas"])

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    counts = dataset.count_examples_per_task(fn_args.train_files, tf_transform_output)
    weights = dataset.task_weights(counts, training["task_sampling"], training["sampling_temperature"])
    log.warning("Task mixing (%s): %s", training["task_sampling"], dataset.describe_weights(weights, counts))
    train_data = dataset.training_dataset(
        fn_args.train_files, tf_transform_output, heads, training["batch_size"], weights, training["seed"]
    )
    eval_data = dataset.evaluation_dataset(fn_args.eval_files, tf_transform_output, heads, training["batch_size"])

    total_steps = fn_args.train_steps
    epochs = max(1, min(10, total_steps // 100))
    with strategy.scope():
        model = build_model(
            heads,
            vocabulary_size=_vocabulary_size(tf_transform_output, transform_cfg["num_oov_buckets"]),
            max_length=transform_cfg["max_length"],
            **model_cfg,
        )
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            warmup_target=training["learning_rate"],
            warmup_steps=int(total_steps * training["warmup_fraction"]),
            decay_steps=total_steps - int(total_steps * training["warmup_fraction"]),
        )
        compile_for_heads(model, heads, keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.01, clipnorm=1.0))
    log.warning("Training %s parameters for %d steps on %d replica(s), global batch %d",
                f"{model.count_params():,}", total_steps, strategy.num_replicas_in_sync, training["batch_size"])  # fmt: skip
    model.fit(
        train_data,
        epochs=epochs,
        steps_per_epoch=total_steps // epochs,
        validation_data=eval_data,
        validation_steps=fn_args.eval_steps,
        verbose=0,
        callbacks=[
            keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch"),
            _ProgressLog(total_steps // epochs * epochs),
        ],
    )

    export_serving_model(model, tf_transform_output, tasks, fn_args.serving_model_dir)
    relation_signatures = [t.name for t in tasks if any(h.kind is HeadKind.ENTITY_PAIR for h in t.heads)]
    write_warmup_requests(fn_args.serving_model_dir, relation_signatures)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "training_config.json"), "w") as f:
        f.write(json.dumps({"task_counts": counts, "task_weights": weights, **config}, indent=2))
    log.warning("Exported the serving model to %s", fn_args.serving_model_dir)
