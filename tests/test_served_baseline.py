"""ServedBaseline's executor: the newest served version becomes the baseline (Trainer's layout, warm-start files
included) when its signatures fit the current tasks; a first run, or a model for other tasks, gives an empty
baseline and a log line, never a crash. The pipeline runs that use it: tests/test_retraining.py (a new span
warm-starts from and is gated against the served version) and tests/test_pipeline_e2e.py (a worse candidate is
not pushed)."""

from __future__ import annotations

import json
import logging
import os

import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from mtnlp.components import served_baseline
from mtnlp.components.versioned_pusher import publish_version
from mtnlp.model.warm_start import KERAS_DIR, MODEL_FILE, VOCABULARY_FILE


def _saved_model(path: str, outputs: dict[str, set[str]]) -> str:
    """A SavedModel whose signatures return the given output keys (each a batch of zeros)."""
    module = tf.Module()
    signatures = {}
    for name, keys in outputs.items():
        sorted_keys = tuple(sorted(keys))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def answer(examples, keys=sorted_keys):
            return {key: tf.zeros_like(examples, tf.float32) for key in keys}

        setattr(module, name, answer)
        signatures[name] = answer
    tf.saved_model.save(module, path, signatures=signatures)
    return path


def _trained_model(folder, tasks) -> str:
    """A Trainer's model artifact: Format-Serving with the tasks' signatures, and the warm-start files beside it."""
    serving = _saved_model(str(folder / "Format-Serving"), served_baseline.required_outputs(tasks))
    os.makedirs(folder / KERAS_DIR)
    for name in (MODEL_FILE, VOCABULARY_FILE):
        (folder / KERAS_DIR / name).write_text(name)
    return serving


def _lookup(tmp_path, serving_dir, tasks) -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "baseline")
    os.makedirs(model.uri, exist_ok=True)
    served_baseline.Executor().Do(
        {"examples": []},
        {"model": [model]},
        {"serving_model_dir": serving_dir, "custom_config": json.dumps({"tasks": tasks})},
    )
    return model


def test_a_first_run_has_no_baseline(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        model = _lookup(tmp_path, str(tmp_path / "serving" / "mtnlp"), ["sentiment"])
    assert not served_baseline.has_model(model) and os.listdir(model.uri) == []
    assert "No baseline: no model is served under" in caplog.text


def test_the_newest_served_version_is_the_baseline_with_its_warm_start_files(tmp_path):
    serving_dir = str(tmp_path / "serving" / "mtnlp")
    old = _saved_model(str(tmp_path / "old"), served_baseline.required_outputs(["sentiment"]))
    publish_version(old, serving_dir)  # version 1: no warm-start files
    publish_version(
        _trained_model(tmp_path / "trained", ["sentiment"]), serving_dir, str(tmp_path / "trained" / KERAS_DIR)
    )
    assert (tmp_path / "serving" / "mtnlp" / "2" / served_baseline.WARM_START_ASSETS / MODEL_FILE).is_file()

    model = _lookup(tmp_path, serving_dir, ["sentiment"])
    assert model.get_int_custom_property(served_baseline.SERVED_VERSION) == 2
    assert model.get_string_custom_property(served_baseline.SERVED_FROM) == os.path.join(serving_dir, "2")
    # the Trainer's layout: fn_args.base_model is Format-Serving, warm start reads Format-Keras beside it
    assert tf.saved_model.load(os.path.join(model.uri, "Format-Serving")).signatures.keys() >= {"serving_tf_example"}
    assert (tmp_path / "baseline" / KERAS_DIR / VOCABULARY_FILE).read_text() == VOCABULARY_FILE


@pytest.mark.parametrize("tasks_now", [["sentiment", "relation"], ["relation"]])
def test_a_served_model_for_other_tasks_is_no_baseline(tmp_path, caplog, tasks_now):
    serving_dir = str(tmp_path / "serving" / "mtnlp")
    publish_version(_trained_model(tmp_path / "trained", ["sentiment"]), serving_dir)
    with caplog.at_level(logging.WARNING):
        model = _lookup(tmp_path, serving_dir, tasks_now)
    assert not served_baseline.has_model(model) and os.listdir(model.uri) == []
    assert (
        "does not fit the current tasks" in caplog.text
        and "'serving_tf_example' lacks the output(s) relation" in caplog.text
    )


def test_an_unreadable_served_model_is_no_baseline(tmp_path, caplog):
    version = tmp_path / "serving" / "mtnlp" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"not a SavedModel")
    with caplog.at_level(logging.WARNING):
        model = _lookup(tmp_path, str(tmp_path / "serving" / "mtnlp"), ["sentiment"])
    assert not served_baseline.has_model(model)
    assert "cannot read its signatures" in caplog.text
