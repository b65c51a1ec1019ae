"""The generated schema matches the tasks; schema anomalies stop the run naming the feature;
pushed versions appear atomically and count up."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

from mtnlp.components.anomalies_gate import DataAnomaliesError, check_anomalies
from mtnlp.components.versioned_pusher import next_version, publish_version
from mtnlp.model.tasks import SEMEVAL_RELATIONS, UPOS_TAGS
from mtnlp.pipelines.schema import build_schema, load_schema


def test_committed_schema_is_the_one_the_tasks_imply():
    assert load_schema() == build_schema(), "run `python -m mtnlp.pipelines.schema` and commit the result"


def test_schema_carries_the_label_domains():
    domains = {d.name: list(d.value) for d in load_schema().string_domain}
    assert domains["pos"] == list(UPOS_TAGS)
    assert domains["relation"] == list(SEMEVAL_RELATIONS)
    assert domains["task"] == ["tagging", "sentiment", "relation", "translation", "unlabeled"]
    assert "source" in {f.name for f in load_schema().feature} and "target" not in domains  # free text


def _write_anomalies(frame: pd.DataFrame, root: str) -> str:
    stats = tfdv.generate_statistics_from_dataframe(frame)
    anomalies = tfdv.validate_statistics(stats, load_schema())
    os.makedirs(os.path.join(root, "Split-eval"))
    with open(os.path.join(root, "Split-eval", "SchemaDiff.pb"), "wb") as f:
        f.write(anomalies.SerializeToString())
    return root


def test_anomalies_stop_the_run_naming_feature_and_reason(tmp_path):
    frame = pd.DataFrame(
        {"task": ["relation", "relation"], "text": ["a b", "c d"], "relation": ["Other", "Likes(e1,e2)"]}
    )
    uri = _write_anomalies(frame, str(tmp_path / "anomalies"))
    with pytest.raises(DataAnomaliesError) as error:
        check_anomalies(uri, ["eval"])
    message = str(error.value)
    assert "feature 'relation'" in message and "Likes(e1,e2)" in message
    assert "split 'eval'" in message


def test_clean_data_passes_the_gate(tmp_path):
    frame = pd.DataFrame({"task": ["sentiment"], "text": ["fine"], "label": ["positive"]})
    check_anomalies(_write_anomalies(frame, str(tmp_path / "anomalies")), ["eval"])


def _saved_model(path):
    os.makedirs(os.path.join(path, "variables"))
    for name, content in (("saved_model.pb", b"graph"), ("variables/variables.index", b"index")):
        with open(os.path.join(path, name), "wb") as f:
            f.write(content)
    return path


def test_versions_count_up_and_appear_complete(tmp_path):
    model = _saved_model(str(tmp_path / "model"))
    base = str(tmp_path / "serving" / "mtnlp")
    assert next_version(base) == 1
    first, v1 = publish_version(model, base)
    os.makedirs(os.path.join(base, "not-a-version"))  # ignored, as TF Serving ignores it
    second, v2 = publish_version(model, base)
    assert (v1, v2) == (1, 2)
    assert sorted(os.listdir(base)) == ["1", "2", "not-a-version"]  # no half-copied folder left behind
    assert open(os.path.join(second, "saved_model.pb"), "rb").read() == b"graph"
    assert os.path.exists(os.path.join(second, "variables", "variables.index"))
