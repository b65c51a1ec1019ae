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


def _lookup(tmp_path, serving_dir, tasks, metadata_connection=None) -> standard_artifacts.Model:
    from google.protobuf import json_format

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "baseline")
    os.makedirs(model.uri, exist_ok=True)
    exec_properties = {"serving_model_dir": serving_dir, "custom_config": json.dumps({"tasks": tasks})}
    if metadata_connection is not None:
        exec_properties["metadata_connection_config"] = json_format.MessageToJson(metadata_connection)
    served_baseline.Executor().Do({"examples": []}, {"model": [model]}, exec_properties)
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
    assert model.get_string_custom_property(served_baseline.BASELINE_FROM) == os.path.join(serving_dir, "2")
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


# --- where nothing is served: the newest blessed model in ML Metadata ------------------------------------------


def _store_with_models(tmp_path, models: list[tuple[str, bool]]):
    """A SQLite ML Metadata store in which TFX's Evaluator judged each (model folder, blessed?) in turn, as the
    local runner records it (ModelBlessing with ``blessed`` and ``current_model_id``); returns its connection."""
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata

    connection = metadata.sqlite_metadata_connection_config(str(tmp_path / "metadata.sqlite"))
    store = mlmd.MetadataStore(connection)
    if not models:
        return connection  # as before any Evaluator ran: not even the types exist
    model_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="Model"))
    blessing_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="ModelBlessing"))
    for uri, blessed in models:
        [model_id] = store.put_artifacts(
            [metadata_store_pb2.Artifact(type_id=model_type, uri=uri, state=metadata_store_pb2.Artifact.LIVE)]
        )
        blessing = metadata_store_pb2.Artifact(type_id=blessing_type, uri=f"{uri}-blessing")
        blessing.custom_properties["blessed"].int_value = int(blessed)
        blessing.custom_properties["current_model_id"].int_value = model_id
        store.put_artifacts([blessing])
    return connection


def test_with_nothing_served_the_newest_blessed_model_in_ml_metadata_is_the_baseline(tmp_path):
    older, newest, rejected = (tmp_path / name for name in ("older", "newest", "rejected"))
    for folder in (older, newest, rejected):
        _trained_model(folder, ["sentiment"])
    connection = _store_with_models(tmp_path, [(str(older), True), (str(newest), True), (str(rejected), False)])

    model = _lookup(tmp_path, str(tmp_path / "serving" / "mtnlp"), ["sentiment"], connection)
    assert served_baseline.has_model(model)
    assert model.get_string_custom_property(served_baseline.BASELINE_FROM) == str(newest)
    assert model.get_int_custom_property(served_baseline.SERVED_VERSION) == 0
    # copied in the Trainer's layout, warm-start files included
    assert tf.saved_model.load(os.path.join(model.uri, "Format-Serving")).signatures.keys() >= {"serving_tf_example"}
    assert (tmp_path / "baseline" / KERAS_DIR / VOCABULARY_FILE).read_text() == VOCABULARY_FILE


def test_the_served_model_wins_over_ml_metadata(tmp_path):
    _trained_model(tmp_path / "blessed", ["sentiment"])
    connection = _store_with_models(tmp_path, [(str(tmp_path / "blessed"), True)])
    serving_dir = str(tmp_path / "serving" / "mtnlp")
    publish_version(_trained_model(tmp_path / "served", ["sentiment"]), serving_dir)

    model = _lookup(tmp_path, serving_dir, ["sentiment"], connection)
    assert model.get_string_custom_property(served_baseline.BASELINE_FROM) == os.path.join(serving_dir, "1")


def test_a_store_without_a_blessed_model_for_these_tasks_gives_no_baseline(tmp_path, caplog):
    _trained_model(tmp_path / "unblessed", ["sentiment"])
    _trained_model(tmp_path / "other_tasks", ["relation"])
    empty = _store_with_models(tmp_path / "empty", [])
    unblessed = _store_with_models(tmp_path, [(str(tmp_path / "unblessed"), False)])
    other_tasks = _store_with_models(tmp_path / "other", [(str(tmp_path / "other_tasks"), True)])
    serving_dir = str(tmp_path / "serving" / "mtnlp")
    with caplog.at_level(logging.WARNING):
        for connection in (empty, unblessed, other_tasks):
            assert not served_baseline.has_model(_lookup(tmp_path, serving_dir, ["sentiment"], connection))
    assert caplog.text.count("or blessed in ML Metadata yet (a first run)") == 2
    assert "the newest blessed model" in caplog.text and "lacks the output(s) sentiment" in caplog.text


@pytest.mark.slow
def test_a_pipeline_runs_own_store_gives_the_model_it_blessed_and_pushed(pipeline_run, tmp_path):
    """The route against what TFX's Evaluator really records: the shared run blessed and pushed its model, so
    with its serving folder out of the picture its ML Metadata names that model, warm-start files and all."""
    from tfx.orchestration import metadata

    from tests.conftest import FIXTURE_TASKS

    connection = metadata.sqlite_metadata_connection_config(str(pipeline_run.workdir / "metadata.sqlite"))
    model = _lookup(tmp_path, str(tmp_path / "nothing_served"), list(FIXTURE_TASKS), connection)
    assert served_baseline.has_model(model)
    blessed = model.get_string_custom_property(served_baseline.BASELINE_FROM)
    assert blessed.startswith(str(pipeline_run.workdir / "pipeline_root" / "Trainer" / "model"))
    copied = tmp_path / "baseline" / "Format-Serving" / "saved_model.pb"
    assert copied.read_bytes() == (pipeline_run.pushed_model_dir / "saved_model.pb").read_bytes()
    assert (tmp_path / "baseline" / KERAS_DIR / VOCABULARY_FILE).is_file()
