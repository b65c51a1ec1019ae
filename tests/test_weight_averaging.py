"""Weight averaging (``training.ema_momentum``, ``model/training.py``): validation points, the callbacks that read
the model at epoch end and the model after training see the moving average of the weights, computed here by hand
from the raw weights of every step; the steps themselves are those of a run without averaging."""

from __future__ import annotations

import numpy as np
import pytest

MOMENTUM, STEPS_PER_EPOCH, EPOCHS = 0.8, 3, 3


def _data():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1)) + 0.5).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    return train, (x[:16], y[:16])


def _fit(strategy_kind: str, momentum: float, stop_after_epoch: int | None = None):
    """Fits a linear model; returns the raw weights after every step, the model's weights and Keras' val_loss at
    every epoch end (as the callbacks after the averaging one see them) and the weights after ``fit``."""
    import keras
    import tensorflow as tf

    from mtnlp.model.training import AveragedWeightsAtValidation, GroupedAdamW

    keras.utils.set_random_seed(1)
    strategy = (
        tf.distribute.MirroredStrategy(["/cpu:0"]) if strategy_kind == "mirrored" else tf.distribute.get_strategy()
    )
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        optimizer = GroupedAdamW(learning_rate=0.05, use_ema=momentum > 0, ema_momentum=momentum or 0.99)
        model.compile(optimizer=optimizer, loss="mse")
    steps, epoch_ends = [], []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append([v.numpy().copy() for v in self.model.trainable_variables])

        def on_epoch_end(self, epoch, logs=None):
            epoch_ends.append(([v.numpy().copy() for v in self.model.trainable_variables], logs["val_loss"]))
            if stop_after_epoch is not None and epoch + 1 == stop_after_epoch:
                self.model.stop_training = True

    train, validation = _data()
    averaging = [AveragedWeightsAtValidation()] if momentum else []
    model.fit(
        train,
        epochs=EPOCHS,
        steps_per_epoch=STEPS_PER_EPOCH,
        validation_data=validation,
        verbose=0,
        callbacks=[*averaging, Record()],
    )
    return steps, epoch_ends, [v.numpy() for v in model.trainable_variables], validation


def _moving_average(steps: list[list[np.ndarray]], momentum: float) -> list[list[np.ndarray]]:
    """Keras' average after each step: the first step's weights, then momentum * average + (1 - momentum) * w."""
    averages, average = [], None
    for weights in steps:
        average = (
            [w.copy() for w in weights]
            if average is None
            else [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
        )
        averages.append(average)
    return averages


@pytest.mark.parametrize("strategy_kind", ["default", "mirrored"])
def test_validation_and_the_trained_model_see_the_average_while_the_steps_stay_those_without_it(strategy_kind):
    steps, epoch_ends, final, (x, y) = _fit(strategy_kind, MOMENTUM)
    plain_steps, _, plain_final, _ = _fit(strategy_kind, 0.0)
    # the averaged weights put in the model at each validation point are taken out again before the next step
    for averaged, plain in zip(steps, plain_steps):
        for a, p in zip(averaged, plain):
            np.testing.assert_allclose(a, p, rtol=0, atol=1e-6)
    averages = _moving_average(steps, MOMENTUM)
    for epoch, (weights, val_loss) in enumerate(epoch_ends):
        expected = averages[(epoch + 1) * STEPS_PER_EPOCH - 1]
        for w, e in zip(weights, expected):
            np.testing.assert_allclose(w, e, rtol=0, atol=1e-5)
        kernel, bias = expected
        assert val_loss == pytest.approx(float(np.mean((x @ kernel + bias - y) ** 2)), rel=1e-4)
        assert not np.allclose(weights[0], steps[(epoch + 1) * STEPS_PER_EPOCH - 1][0])  # not the raw weights
    for w, e in zip(final, averages[-1]):
        np.testing.assert_allclose(w, e, rtol=0, atol=1e-5)
    assert not np.allclose(final[0], plain_final[0])


def test_a_run_stopped_early_ends_with_the_average_of_its_last_step():
    # Keras' SwapEMAWeights(swap_on_epoch=True) would leave the raw weights here: fit copies the optimizer's
    # slot into the model after the last epoch, and swapping had put the raw weights in that slot
    steps, epoch_ends, final, _ = _fit("default", MOMENTUM, stop_after_epoch=2)
    assert len(steps) == 2 * STEPS_PER_EPOCH and len(epoch_ends) == 2
    for w, e in zip(final, _moving_average(steps, MOMENTUM)[-1]):
        np.testing.assert_allclose(w, e, rtol=0, atol=1e-5)


def test_the_momentum_is_a_fraction_below_one():
    from mtnlp.pipelines.settings import SettingsError, effective_config

    assert effective_config("quick", assignments=["training.ema_momentum=0.998"]).training.ema_momentum == 0.998
    with pytest.raises(SettingsError, match=r"training.ema_momentum: 1.0 is not in \[0, 1\)"):
        effective_config("quick", assignments=["training.ema_momentum=1"])


@pytest.mark.slow
def test_the_training_loop_keeps_an_averaged_validation_point_on_the_pipelines_data(pipeline_run):
    """``train_model`` with ``training.ema_momentum`` and ``keep_best`` on the shared pipeline's Transform output:
    the weights it ends with are the average of one validation point (what ``keep_best`` compared), never a
    step's raw weights."""
    import dataclasses

    import keras
    import tensorflow_transform as tft

    from mtnlp.model import dataset
    from mtnlp.model.devices import make_strategy
    from mtnlp.model.tasks import select_tasks
    from mtnlp.model.training import train_model
    from mtnlp.pipelines.config import get_config
    from mtnlp.pipelines.summary import latest_transform_outputs

    transform = latest_transform_outputs(str(pipeline_run.workdir / "metadata.sqlite"))
    tft_output = tft.TFTransformOutput(transform["transform_graph"])
    train_files = [f"{transform['transformed_examples']}/Split-train/*"]
    eval_files = [f"{transform['transformed_examples']}/Split-eval/*"]
    heads = [h for t in select_tasks(["tagging", "sentiment"]) for h in t.heads]
    counts = dataset.count_examples_per_task(train_files, tft_output)
    config = get_config("quick")
    raw, averaged = [], []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raw.append([v.numpy().copy() for v in self.model.trainable_variables])

        def on_epoch_end(self, epoch, logs=None):
            averaged.append([v.numpy().copy() for v in self.model.trainable_variables])

    trained = train_model(
        heads,
        tft_output,
        train_files,
        eval_files,
        dataset.task_weights({t: counts[t] for t in ("tagging", "sentiment")}, "uniform"),
        dataclasses.replace(config.model, embedding_dim=16, intermediate_dim=32, num_layers=1, num_heads=2),
        dataclasses.replace(config.training, ema_momentum=0.9, keep_best=True),
        config.transform,
        {h.name: config.heads[h.name] for h in heads},
        steps=12,
        eval_steps=2,
        strategy=make_strategy(1),
        epochs=3,
        callbacks=[Record()],
    )
    final = [v.numpy() for v in trained.model.trainable_variables]
    assert trained.steps == 12 and len(averaged) == 3 and len(raw) == 12
    assert any(all(np.array_equal(f, a) for f, a in zip(final, point)) for point in averaged)
    assert not any(all(np.allclose(f, r) for f, r in zip(final, step)) for step in raw)
