"""The training loop shared by the TFX Trainer (``pipelines/trainer_module.py``) and the MTL-vs-STL study
(``experiments/mtl_vs_stl.py``): the same model, optimizer, schedule and input pipeline for both.

``train_model`` builds the model for the given heads inside a distribution strategy, optionally warm
starts it, and fits it on Transform's output with the given task sampling weights and loss weighting.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf
import tensorflow_transform as tft

from mtnlp.model import dataset, distillation, distribution
from mtnlp.model.heads import Head
from mtnlp.model.network import ENCODER_OUTPUT, build_model, compile_for_heads, head_configs_for
from mtnlp.model.preprocessing import WORDS_VOCABULARY
from mtnlp.model.warm_start import warm_start
from mtnlp.sections import HeadConfig, ModelConfig, TrainingConfig, TransformConfig

log = logging.getLogger(__name__)


class ProgressLog(keras.callbacks.Callback):
    """One line per epoch with step count, losses and time, instead of Keras' progress bars."""

    def __init__(self, total_steps: int, prefix: str = ""):
        super().__init__()
        self._total_steps, self._prefix, self._start = total_steps, prefix, time.time()

    def on_epoch_end(self, epoch, logs=None):
        steps = (epoch + 1) * self.params["steps"]
        shown = {k: v for k, v in (logs or {}).items() if k == "loss" or k == "val_loss" or k.endswith("accuracy")}
        elapsed = time.time() - self._start
        eta = elapsed / steps * (self._total_steps - steps)
        log.warning(
            "%strain step %d/%d  %s  (%.0fs, ETA %.0fs)",
            self._prefix,
            steps,
            self._total_steps,
            "  ".join(f"{k}={v:.3f}" for k, v in sorted(shown.items())),
            elapsed,
            eta,
        )


class KeepBestWeights(keras.callbacks.Callback):
    """Early stopping's other half: remembers the weights of the epoch with the best validation score
    and restores them when training ends, so a model that over-fits late (relation) is kept at its peak.

    The score is the mean over heads of Keras' validation accuracy (``val_<head>_accuracy``; teacher
    forced for sequence heads), a cheap stand-in for the heads' primary metrics that moves with them.
    """

    def __init__(self, head_names: Sequence[str], log_prefix: str = ""):
        super().__init__()
        self._keys = [f"val_{name}_accuracy" for name in head_names]
        self._prefix = log_prefix
        self.best_score, self.best_epoch, self._best_weights = -1.0, -1, None

    def on_epoch_end(self, epoch, logs=None):
        values = [logs[k] for k in self._keys if k in (logs or {})]
        if not values:
            return
        score = sum(values) / len(values)
        if score > self.best_score:
            self.best_score, self.best_epoch, self._best_weights = score, epoch, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self._best_weights is not None and self.best_epoch != self.params["epochs"] - 1:
            log.warning(
                "%skeeping the weights of epoch %d (mean validation accuracy %.4f), not the last epoch's",
                self._prefix,
                self.best_epoch + 1,
                self.best_score,
            )
            self.model.set_weights(self._best_weights)


class AveragedWeightsAtValidation(keras.callbacks.Callback):
    """With weight averaging (the optimizer's ``use_ema``), puts the averaged weights in the model for each
    validation point: Keras' validation, the other callbacks' ``on_epoch_end`` (what the study scores, what
    ``KeepBestWeights`` keeps) and the model after training all see the average; training steps see the
    raw weights again. Put it before the callbacks that read the model at epoch end.

    Keras' own ``SwapEMAWeights(swap_on_epoch=True)`` swaps the two sets, so when a callback stops training early
    the end of ``fit`` (which copies the optimizer's average into the model) copies back the raw weights; this
    one copies the average into the model and keeps the raw weights aside instead.
    """

    def __init__(self):
        super().__init__()
        self._raw_weights: list | None = None

    def _averaged_in(self) -> None:
        if self._raw_weights is None:
            variables = self.model.trainable_variables
            self._raw_weights = [v.numpy() for v in variables]
            for variable, average in zip(variables, self.model.optimizer._model_variables_moving_average):
                variable.assign(average)

    def _raw_in(self) -> None:
        if self._raw_weights is not None:
            for variable, value in zip(self.model.trainable_variables, self._raw_weights):
                variable.assign(value)
            self._raw_weights = None

    def on_test_begin(self, logs=None):
        self._averaged_in()

    def on_epoch_end(self, epoch, logs=None):
        self._averaged_in()

    def on_epoch_begin(self, epoch, logs=None):
        self._raw_in()

    def on_train_end(self, logs=None):
        self._raw_weights = None  # fit has copied the average into the model


def vocabulary_size(tf_transform_output: tft.TFTransformOutput, num_oov_buckets: int) -> int:
    # ids: 0 padding, 1..V the vocabulary, then the OOV buckets
    return tf_transform_output.vocabulary_size_by_name(WORDS_VOCABULARY) + num_oov_buckets + 1


def target_vocabulary_sizes(
    tf_transform_output: tft.TFTransformOutput, heads: Sequence[Head], num_oov_buckets: int
) -> dict[str, int]:
    """The vocabulary size of each head that generates from a vocabulary of its own (sequence heads)."""
    sizes = {h.name: h.output_vocabulary_size(tf_transform_output, num_oov_buckets) for h in heads}
    return {name: size for name, size in sizes.items() if size is not None}


def masked_word_objective(training: TrainingConfig, transform: TransformConfig) -> bool:
    """Whether the model learns the masked-word objective: ``masked_word_share`` > 0 and no pretrained
    backbone (the objective predicts the from-scratch encoder's word ids; a backbone is pretrained)."""
    return training.masked_word_share > 0 and not transform.backbone_preset


# AdamW's decoupled weight decay, and the variables it leaves alone (matched by name as Keras'
# exclude_from_weight_decay does): LayerNormalization's scale and offset, and every bias.
WEIGHT_DECAY = 0.01
NO_WEIGHT_DECAY = ("gamma", "beta", "bias")


@keras.saving.register_keras_serializable(package="mtnlp")
class GroupedAdamW(keras.optimizers.AdamW):
    """Keras' AdamW with learning-rate groups: each variable's step uses the schedule's rate times its
    multiplier (``learning_rate_multipliers``, variable path -> multiplier; 1 for the others), so a pretrained
    backbone and the new heads train in one ``fit`` with one optimizer, under any distribution strategy
    (Keras calls ``update_step`` per variable inside the strategy's update).

    Args:
        learning_rate_multipliers: ``{variable.path: multiplier}``.
        **kwargs: ``keras.optimizers.AdamW``'s arguments. Its decoupled weight decay keeps the schedule's rate:
            Keras applies it to every variable at once, before the grouped steps.
    """

    def __init__(self, learning_rate_multipliers: Mapping[str, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.learning_rate_multipliers = dict(learning_rate_multipliers or {})
        self._multipliers: list[float] = []

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # by position, as Keras indexes its slots: update_step may receive the strategy's tf.Variable
        self._multipliers = [self.learning_rate_multipliers.get(v.path, 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multipliers[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate * multiplier if multiplier != 1.0 else learning_rate)

    def get_config(self):
        return {**super().get_config(), "learning_rate_multipliers": self.learning_rate_multipliers}


def learning_rate_multipliers(
    model: keras.Model, heads: Sequence[Head], head_configs: Mapping[str, HeadConfig], backbone_multiplier: float
) -> dict[str, float]:
    """The learning-rate groups of a model from ``build_model`` (variable path -> multiplier):

    - a pretrained backbone's variables (a keras-hub ``Backbone`` layer): ``backbone_multiplier``;
    - each head's own variables, those its output depends on beyond the shared encoder's output (a sequence
      head's decoder and target embeddings included): ``heads.<name>.learning_rate_multiplier``;
    - the rest (the from-scratch encoder, the backbone's projection, the entity-marker embedding): 1.
    """
    import keras_hub

    multipliers = {}
    for layer in model.layers:
        if isinstance(layer, keras_hub.models.Backbone):
            multipliers.update({v.path: backbone_multiplier for v in layer.trainable_variables})
    shared = {v.path for v in keras.Model(model.input, model.get_layer(ENCODER_OUTPUT).output).trainable_variables}
    for head in heads:
        head_output = keras.Model(model.input, model.output[head.name])
        for variable in head_output.trainable_variables:
            if variable.path not in shared:
                multipliers[variable.path] = head_configs[head.name].learning_rate_multiplier
    return {path: m for path, m in multipliers.items() if m != 1.0}


def build_training_model(
    heads: Sequence[Head],
    vocabulary_size: int,
    target_vocabulary_sizes: Mapping[str, int],
    model_config: ModelConfig,
    training: TrainingConfig,
    transform: TransformConfig,
    head_configs: Mapping[str, HeadConfig],
    steps: int,
) -> keras.Model:
    """The model compiled with the project's loss and optimizer: AdamW with learning-rate groups
    (``learning_rate_multipliers``), warmup then cosine decay over ``steps``, no weight decay on LayerNorm
    scales and offsets or biases, and with ``training.ema_momentum`` a moving average of the weights. Call it
    inside the distribution strategy's scope."""
    model = build_model(
        heads,
        vocabulary_size=vocabulary_size,
        max_length=transform.max_length,
        target_vocabulary_sizes=dict(target_vocabulary_sizes),
        max_target_length=transform.max_target_length,
        uncertainty_weighting=training.loss_weighting == "uncertainty",
        subword_buckets=transform.subword_buckets,
        masked_words=masked_word_objective(training, transform),
        backbone_preset=transform.backbone_preset,
        head_configs=head_configs,
        **dataclasses.asdict(model_config),
    )
    warmup_steps = int(steps * training.warmup_fraction)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        warmup_target=training.learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=max(1, steps - warmup_steps),
    )
    configs = head_configs_for(heads, head_configs)
    optimizer = GroupedAdamW(
        learning_rate_multipliers(model, heads, configs, training.backbone_learning_rate_multiplier),
        learning_rate=schedule,
        weight_decay=WEIGHT_DECAY,
        clipnorm=1.0,
        use_ema=training.ema_momentum > 0,
        ema_momentum=training.ema_momentum or 0.99,
    )
    optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    compile_for_heads(
        model,
        heads,
        optimizer,
        loss_weighting=training.loss_weighting,
        head_configs=head_configs,
        total_steps=steps,
        teacher_annealing=training.teacher_annealing,
    )
    model.jit_compile = training.jit_compile
    return model


@dataclasses.dataclass
class TrainedModel:
    model: keras.Model
    # per epoch: the step reached and Keras' logs (losses, accuracies, their val_ versions)
    history: list[dict[str, float]]
    steps: int
    seconds: float  # in model.fit, tracing included
    warm_start_report: Any = None
    teacher_seconds: float = 0.0  # running the teachers over the training records (distillation), before fit

    @property
    def parameters(self) -> int:
        return self.model.count_params()


def train_model(
    heads: Sequence[Head],
    tf_transform_output: tft.TFTransformOutput,
    train_files: Sequence[str],
    eval_files: Sequence[str],
    task_weights: Mapping[str, float],
    model_config: ModelConfig,
    training: TrainingConfig,
    transform: TransformConfig,
    head_configs: Mapping[str, HeadConfig],
    steps: int,
    eval_steps: int,
    strategy: tf.distribute.Strategy,
    epochs: int | None = None,
    base_model: str | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    log_prefix: str = "",
    teacher_cache_dir: str | None = None,
) -> TrainedModel:
    """Fits a model with ``heads`` for ``steps`` optimizer steps, batches mixed by ``task_weights``.

    ``head_configs``: the heads' settings (the config's ``heads`` section); ``epochs`` is the number of
    validation points (default: one per 100 steps, at most 10). Heads with a teacher (``heads.<name>.teacher``)
    are distilled: the teachers' predictions are written with the training records to ``teacher_cache_dir``
    (default: a temporary folder, removed after training) before training (``model/distillation.py``).
    """
    keras.utils.set_random_seed(training.seed)
    words = vocabulary_size(tf_transform_output, transform.num_oov_buckets)
    target_sizes = target_vocabulary_sizes(tf_transform_output, heads, transform.num_oov_buckets)
    distilled, teacher_seconds, own_cache_dir = {}, 0.0, None
    if distillation.distilled_heads(heads, head_configs):
        start = time.time()
        if not teacher_cache_dir:
            own_cache_dir = tempfile.mkdtemp(prefix="mtnlp-teachers-")
        output_sizes = {h.name: target_sizes.get(h.name, h.num_labels) for h in heads}
        train_files = distillation.cache_teacher_predictions(
            heads,
            head_configs,
            tf_transform_output,
            train_files,
            output_sizes,
            tf_transform_output.vocabulary_file_by_name(WORDS_VOCABULARY),
            teacher_cache_dir or own_cache_dir,
        )
        distilled = {
            h.name: distillation.top_k(h, output_sizes[h.name])
            for h in distillation.distilled_heads(heads, head_configs)
        }
        teacher_seconds = time.time() - start
    masked_words = None
    if transform.backbone_preset:
        log.warning(
            "%sEncoder: the pretrained backbone %s (transform.backbone_preset); off with it: the masked-word "
            "objective (training.masked_word_share=%s), model.subword_features, model.num_layers",
            log_prefix,
            transform.backbone_preset,
            training.masked_word_share,
        )
    shape_features = bool(transform.backbone_preset) and model_config.shape_features_beside_backbone
    characters = not transform.backbone_preset and model_config.char_cnn_dim > 0
    if masked_word_objective(training, transform):
        masked_words = dataset.MaskedWords(training.masked_word_share, training.masked_word_rate, words)
    train_data = dataset.training_dataset(
        train_files,
        tf_transform_output,
        heads,
        training.batch_size,
        dict(task_weights),
        training.seed,
        masked_words,
        training.length_buckets,
        shape_features,
        characters,
        distilled,
    )
    eval_data = dataset.evaluation_dataset(
        eval_files,
        tf_transform_output,
        heads,
        training.batch_size,
        masked_words is not None,
        training.length_buckets,
        shape_features,
        characters,
        distilled,
    )
    train_data, eval_data = distribution.shard_by_example(train_data), distribution.shard_by_example(eval_data)
    if training.ema_momentum and 1 / (1 - training.ema_momentum) > steps / 4:
        log.warning(
            "%straining.ema_momentum=%g averages over about %.0f steps, more than a quarter of this run's %d: the "
            "average (which starts at the first step's weights) still holds much of the early weights",
            log_prefix,
            training.ema_momentum,
            1 / (1 - training.ema_momentum),
            steps,
        )
    epochs = epochs or max(1, min(10, steps // 100))
    steps_per_epoch = max(1, steps // epochs)
    with strategy.scope():
        model = build_training_model(
            heads,
            words,
            target_sizes,
            model_config,
            training,
            transform,
            head_configs,
            steps,
        )
        report = None
        if base_model:
            report = warm_start(model, base_model, tf_transform_output.vocabulary_file_by_name(WORDS_VOCABULARY))
            log.warning("%s%s", log_prefix, report)
    log.warning(
        "%sTraining %s parameters for %d steps on %d replica(s), global batch %d",
        log_prefix,
        f"{model.count_params():,}",
        steps_per_epoch * epochs,
        strategy.num_replicas_in_sync,
        training.batch_size,
    )
    distribution.prepare_fit(model, strategy, train_data)
    start = time.time()
    fitted = model.fit(
        train_data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=eval_data,
        validation_steps=eval_steps,
        verbose=0,
        callbacks=[
            *([AveragedWeightsAtValidation()] if training.ema_momentum else []),
            *callbacks,
            ProgressLog(steps_per_epoch * epochs, log_prefix),
            *([KeepBestWeights([h.name for h in heads], log_prefix)] if training.keep_best else []),
        ],
    )
    if own_cache_dir:
        shutil.rmtree(own_cache_dir, ignore_errors=True)
    # a callback may stop training early (the studies' early stopping and time budget)
    history = [
        {"step": (epoch + 1) * steps_per_epoch, **{k: float(v[epoch]) for k, v in fitted.history.items()}}
        for epoch in range(len(fitted.history.get("loss", [])))
    ]
    return TrainedModel(
        model, history, int(model.optimizer.iterations.numpy()), time.time() - start, report, teacher_seconds
    )
