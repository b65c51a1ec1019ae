"""Static length buckets (training.length_buckets) and the XLA-compiled training step (training.jit_compile)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtnlp.model.preprocessing import batch_length, trim_to_longest
from mtnlp.model.tasks import all_heads
from mtnlp.model.training import build_training_model
from mtnlp.sections import ModelConfig, TrainingConfig, TransformConfig
from tests.test_model import batch


def padded(longest: int, width: int = 64) -> dict[str, tf.Tensor]:
    token_ids = np.zeros([2, width], np.int64)
    token_ids[0, :longest] = 7
    token_ids[1, :2] = 7
    return {"token_ids": tf.constant(token_ids), "shape_ids": tf.constant(token_ids)}


@pytest.mark.parametrize(("longest", "expected"), [(5, 16), (16, 16), (17, 32), (40, 64), (64, 64)])
def test_a_batch_is_cut_to_the_smallest_bucket_that_holds_its_longest_sentence(longest, expected):
    features = padded(longest)
    assert int(batch_length(features, (16, 32))) == expected  # beyond the largest bucket: the padded width
    assert int(batch_length(features)) == longest  # without buckets: the longest sentence
    trimmed = trim_to_longest(features, ("token_ids", "shape_ids"), (16, 32))
    assert trimmed["token_ids"].shape == (2, expected) and int(tf.reduce_sum(trimmed["token_ids"])) == 7 * (longest + 2)


def test_bad_buckets_are_named():
    with pytest.raises(ValueError, match=r"training.length_buckets: \[32, 16\] must be positive word counts"):
        TrainingConfig(length_buckets=(32, 16))
    with pytest.raises(ValueError, match="training.length_buckets"):
        TrainingConfig(length_buckets=(0, 16))


@pytest.mark.parametrize("char_cnn_dim", [0, 8], ids=["without_char_cnn", "with_char_cnn"])
def test_the_trainers_model_takes_jit_compile_and_trains_the_tagging_heads_under_xla_on_two_bucket_shapes(char_cnn_dim):
    """The character CNN too: it reads int codes (decoded from the words outside the step), and XLA has no strings."""
    heads = [h for h in all_heads() if h.name in ("pos", "ner")]
    training = TrainingConfig(jit_compile=True, length_buckets=(4, 6))
    model_config = ModelConfig(
        embedding_dim=16, num_layers=1, num_heads=2, intermediate_dim=32, char_cnn_dim=char_cnn_dim
    )
    model = build_training_model(
        heads, 50, {}, model_config, training, TransformConfig(max_length=16, subword_buckets=100), {}, 10
    )
    assert model.jit_compile
    losses = []
    for length in (4, 6, 4, 6):  # two static shapes: one XLA compilation each
        inputs, labels, weights = batch(length=length, characters=bool(char_cnn_dim))
        inputs = {k: v for k, v in inputs.items() if k in model.input}
        losses.append(
            model.train_on_batch(
                inputs, {h.name: labels[h.name] for h in heads}, {h.name: weights[h.name] for h in heads}
            )
        )
    assert np.isfinite(losses).all()
