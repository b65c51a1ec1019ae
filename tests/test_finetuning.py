"""The fine-tuning recipe (``model/training.py``): learning-rate groups for a pretrained backbone and per head,
no weight decay on LayerNorm scales and offsets or on biases, under a distribution strategy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.test_backbone import preset  # noqa: F401  (the tiny keras-hub BERT preset fixture)

LEARNING_RATE, WEIGHT_DECAY = 0.01, 0.1


@pytest.mark.parametrize("strategy_kind", ["default", "mirrored"])
def test_each_group_steps_at_its_own_rate_and_decay_spares_layer_norm_and_biases(strategy_kind):
    import keras
    import tensorflow as tf

    from mtnlp.model.training import NO_WEIGHT_DECAY, GroupedAdamW

    strategy = (
        tf.distribute.MirroredStrategy(["/cpu:0"]) if strategy_kind == "mirrored" else tf.distribute.get_strategy()
    )
    with strategy.scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.LayerNormalization()])
        dense, norm = model.layers
        multipliers = {dense.kernel.path: 0.1, norm.gamma.path: 0.5}
        optimizer = GroupedAdamW(multipliers, learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
        optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    before = [v.numpy() for v in model.trainable_variables]
    # Adam's first step moves each weight by its learning rate times sign(gradient), whatever the gradient's size
    gradients = [np.where(rng.random(v.shape) < 0.5, -3.0, 2.0).astype("float32") for v in before]

    def step():
        optimizer.apply_gradients(zip([tf.constant(g) for g in gradients], model.trainable_variables))

    strategy.run(step) if strategy_kind == "mirrored" else step()

    expected = {  # path -> (multiplier, decayed)
        dense.kernel.path: (0.1, True),
        dense.bias.path: (1.0, False),
        norm.gamma.path: (0.5, False),
        norm.beta.path: (1.0, False),
    }
    for variable, old, gradient in zip(model.trainable_variables, before, gradients):
        multiplier, decayed = expected[variable.path]
        decay = LEARNING_RATE * WEIGHT_DECAY * old if decayed else 0.0  # decoupled, at the schedule's rate
        hand = old - decay - LEARNING_RATE * multiplier * np.sign(gradient)
        np.testing.assert_allclose(variable.numpy(), hand, rtol=0, atol=1e-6, err_msg=variable.path)


def test_groups_are_the_backbone_each_heads_own_layers_and_the_rest(preset):  # noqa: F811
    import keras_hub

    from mtnlp.model.tasks import all_heads, select_tasks
    from mtnlp.model.training import build_training_model, learning_rate_multipliers
    from mtnlp.sections import ModelConfig, TrainingConfig, TransformConfig

    heads = all_heads(select_tasks(["tagging", "sentiment", "translation"]))
    configs = {h.name: h.default_config for h in heads}
    configs["ner"] = dataclasses.replace(configs["ner"], learning_rate_multiplier=2.0)
    configs["translation"] = dataclasses.replace(configs["translation"], learning_rate_multiplier=3.0)
    model = build_training_model(
        heads,
        50,
        {"translation": 40},
        ModelConfig(embedding_dim=8, num_layers=1, num_heads=2, intermediate_dim=16),
        TrainingConfig(backbone_learning_rate_multiplier=0.05),
        TransformConfig(backbone_preset=str(preset), max_length=16),
        configs,
        steps=10,
    )
    groups = learning_rate_multipliers(model, heads, configs, 0.05)
    assert model.optimizer.learning_rate_multipliers == groups
    # found by type: its name is uniquified ("bert_backbone_2") once other tests have built backbones
    (backbone_layer,) = [layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone)]
    backbone = {v.path for v in backbone_layer.trainable_variables}
    for variable in model.trainable_variables:
        path = variable.path
        if path in backbone:
            assert groups[path] == 0.05, path
        elif path.startswith("ner/"):
            assert groups[path] == 2.0, path
        elif path.startswith("translation_decoder/"):
            assert groups[path] == 3.0, path
        else:  # the projection, entity markers, the other heads: the schedule's rate
            assert path not in groups, path
    assert any(p.startswith("translation_decoder/") for p in groups) and any(p.startswith("ner/") for p in groups)


def test_shape_features_sit_beside_the_backbone_and_change_what_an_uncased_model_sees(preset):  # noqa: F811
    from mtnlp.model import text
    from mtnlp.model.network import BACKBONE_SHAPE_DIM, build_model, model_input_names
    from mtnlp.model.tasks import all_heads, select_tasks

    heads = all_heads(select_tasks(["tagging"]))
    sizes = dict(vocabulary_size=50, max_length=16, embedding_dim=8, num_layers=1, num_heads=2, intermediate_dim=16)
    model = build_model(heads, dropout=0.0, backbone_preset=str(preset), shape_features_beside_backbone=True, **sizes)
    assert set(model.input) == set(model_input_names(heads, backbone=True, shape_features=True)) >= {"shape_ids"}
    assert model.get_layer("backbone_projection").kernel.shape[0] == 16 + BACKBONE_SHAPE_DIM
    pieces = np.array([[3, 20, 21, 4]], np.int64)  # the same pieces, as an uncased tokenizer gives "apple"/"Apple"
    first = np.array([[1, 2, 3]], np.int64)
    inputs = {"piece_ids": pieces, "first_piece": first, "entity_ids": np.zeros_like(first)}
    lower = model({**inputs, "shape_ids": np.full_like(first, text.SHAPE_OTHER)})["ner"]
    capitalised = model({**inputs, "shape_ids": np.full_like(first, text.SHAPE_CAPITALIZED)})["ner"]
    assert not np.allclose(lower, capitalised)
    plain = build_model(heads, dropout=0.0, backbone_preset=str(preset), **sizes)
    assert "shape_ids" not in plain.input


def test_finetune_profile_without_the_fetched_checkpoint_says_how_to_fetch_it(tmp_path):
    from tests.conftest import run_cli

    workdir = tmp_path / "workdir"
    result = run_cli(
        "run", "--profile", "finetune", "--workdir", str(workdir), env={"MTNLP_CHECKPOINTS": str(tmp_path / "none")}
    )
    assert result.returncode == 2
    assert "all-minilm-l6-v2" in result.stderr and "make checkpoints" in result.stderr, result.stderr[-2000:]
    assert not workdir.exists()  # refused before anything ran
