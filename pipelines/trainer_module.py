"""The TFX Trainer's module, ``run_fn``: the pipeline's typed config from the component's ``custom_config``,
then the model code's training loop (``model/training.py``) under MirroredStrategy, and the serving SavedModel
with its signatures and warmup requests. It lives with the pipeline because it reads the pipeline's config;
the model code takes the config's typed sections (``mtnlp/sections.py``) and imports nothing from here."""

from __future__ import annotations

import json
import logging
import os

import keras
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from mtnlp.model import dataset, distribution
from mtnlp.model.preprocessing import WORDS_VOCABULARY
from mtnlp.model.signatures import export_serving_model
from mtnlp.model.tasks import all_heads, select_tasks
from mtnlp.model.training import masked_word_objective, train_model
from mtnlp.model.warm_start import keras_dir_for, save_for_warm_start
from mtnlp.model.warmup import write_warmup_requests
from mtnlp.pipelines.settings import as_dict, config_from_json

log = logging.getLogger(__name__)


def run_fn(fn_args: FnArgs) -> None:
    config = config_from_json(distribution.training_settings(fn_args.custom_config))  # the typed PipelineConfig
    # first: a multi-worker strategy must exist before any other TensorFlow op runs in this process
    strategy = distribution.make_strategy(config.training.strategy, config.training.cpu_replicas)
    training = config.training
    tasks = select_tasks(config.tasks)
    heads = all_heads(tasks)

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    counts = dataset.count_examples_per_task(fn_args.train_files, tf_transform_output)
    weights = dataset.task_weights(counts, training.task_sampling, training.sampling_temperature)
    log.warning("Task mixing (%s): %s", training.task_sampling, dataset.describe_weights(weights, counts))
    for name, n in dataset.raw_text_counts(counts).items():
        if masked_word_objective(training, config.transform):
            log.warning("%s: %d examples of raw text, drawn by the masked-word objective only", name, n)
        else:
            log.warning(
                "%s: %d examples of raw text are not learned from (they only add to the word vocabulary): the "
                "masked-word objective is off; --set training.masked_word_share=0.2 turns it on",
                name,
                n,
            )

    base_model = fn_args.base_model if config.training.warm_start else None
    if base_model and not tf.io.gfile.exists(base_model):  # the baseline is empty: nothing is served yet
        base_model = None
    total_steps = fn_args.train_steps
    if base_model:  # continuing from a trained model needs fewer steps
        total_steps = max(1, round(total_steps * config.training.warm_start_step_fraction))
    else:
        log.warning("Training from scratch (no blessed model to start from yet)")
    # every worker of a multi-worker run trains and saves; only the chief into the artifacts (model/distribution.py)
    with distribution.output_dirs(strategy, [fn_args.serving_model_dir, fn_args.model_run_dir]) as (
        serving_dir,
        run_dir,
    ):
        trained = train_model(
            heads,
            tf_transform_output,
            fn_args.train_files,
            fn_args.eval_files,
            weights,
            config.model,
            training,
            config.transform,
            config.heads,
            total_steps,
            fn_args.eval_steps,
            strategy,
            base_model=base_model,
            callbacks=[keras.callbacks.TensorBoard(log_dir=run_dir, update_freq="epoch")],
        )
        model, report = trained.model, trained.warm_start_report

        export_serving_model(
            model,
            tf_transform_output,
            tasks,
            serving_dir,
            beam_width=config.serving.beam_width,
            length_penalty=config.serving.length_penalty,
        )
        vocabulary_file = tf_transform_output.vocabulary_file_by_name(WORDS_VOCABULARY)
        save_for_warm_start(model, vocabulary_file, keras_dir_for(serving_dir))
        write_warmup_requests(serving_dir, tasks)
        with tf.io.gfile.GFile(os.path.join(run_dir, "training_config.json"), "w") as f:
            f.write(
                json.dumps(
                    {
                        "task_counts": counts,
                        "task_weights": weights,
                        "train_steps": trained.steps,
                        "train_seconds": round(trained.seconds, 1),
                        "warm_start": str(report) if report else None,
                        "replicas": strategy.num_replicas_in_sync,
                        **as_dict(config),
                    },
                    indent=2,
                )
            )
    distribution.barrier(strategy)  # the chief has written the model
    if distribution.is_chief(strategy):
        log.warning("Exported the serving model to %s", fn_args.serving_model_dir)
