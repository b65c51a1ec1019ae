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
from model.warm_start import keras_dir_for, save_for_warm_start, warm_start
from model.warmup import write_warmup_requests
from model.preprocessing import FIRST_TARGET_WORD, WORDS_VOCABULARY

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


def _target_vocabulary_sizes(tf_transform_output: tft.TFTransformOutput, heads, num_oov_buckets: int) -> dict[str, int]:
    # target ids: 0 padding, BOS, EOS, then the vocabulary, then the OOV buckets
    return {h.name: tf_transform_output.vocabulary_size_by_name(h.vocabulary_name) + num_oov_buckets + FIRST_TARGET_WORD
            for h in heads if h.kind is HeadKind.SEQUENCE}  # fmt: skip


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

    vocabulary_file = tf_transform_output.vocabulary_file_by_name(WORDS_VOCABULARY)
    base_model = fn_args.base_model if training["warm_start"] else None
    total_steps = fn_args.train_steps
    if base_model:  # continuing from a trained model needs fewer steps
        total_steps = max(1, round(total_steps * training["warm_start_step_fraction"]))
    epochs = max(1, min(10, total_steps // 100))
    with strategy.scope():
        model = build_model(
            heads,
            vocabulary_size=_vocabulary_size(tf_transform_output, transform_cfg["num_oov_buckets"]),
            max_length=transform_cfg["max_length"],
            target_vocabulary_sizes=_target_vocabulary_sizes(tf_transform_output, heads, transform_cfg["num_oov_buckets"]),
            max_target_length=transform_cfg["max_target_length"],
            **model_cfg,
        )
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            warmup_target=training["learning_rate"],
            warmup_steps=int(total_steps * training["warmup_fraction"]),
            decay_steps=total_steps - int(total_steps * training["warmup_fraction"]),
        )
        report = warm_start(model, base_model, vocabulary_file) if base_model else None
        log.warning("%s", report or "Training from scratch (no blessed model to start from yet)")
        compile_for_heads(model, heads, keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.01, clipnorm=1.0),
                          sequence_label_smoothing=training["sequence_label_smoothing"])
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
    save_for_warm_start(model, vocabulary_file, keras_dir_for(fn_args.serving_model_dir))
    relation_signatures = [t.name for t in tasks if any(h.kind is HeadKind.ENTITY_PAIR for h in t.heads)]
    translate_signatures = [h.signature for h in heads if h.kind is HeadKind.SEQUENCE]
    write_warmup_requests(fn_args.serving_model_dir, relation_signatures, translate_signatures)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "training_config.json"), "w") as f:
        f.write(json.dumps({"task_counts": counts, "task_weights": weights, "train_steps": total_steps,
                            "warm_start": str(report) if report else None, **config}, indent=2))
    log.warning("Exported the serving model to %s", fn_args.serving_model_dir)
