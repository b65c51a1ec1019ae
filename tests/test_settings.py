"""Settings without editing code: ``--set`` and ``--config`` over a profile, checked against the typed config."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Literal

import pytest
import yaml

from mtnlp.model.tasks import get_head
from mtnlp.pipelines.config import get_config
from mtnlp.pipelines.settings import (
    SettingsError,
    apply_mapping,
    config_changes,
    effective_config,
    format_config,
    load_settings_file,
    parse_assignment,
)
from mtnlp.sections import HeadConfig, HeadGate
from tests.conftest import REPO


def test_set_changes_typed_values_and_keeps_the_rest():
    config = effective_config(
        "quick",
        assignments=[
            "training.learning_rate=5e-4",
            "model.num_layers=4",
            "training.warm_start=false",
            "model_name=mymodel",
        ],
    )
    assert config.training.learning_rate == 5e-4 and isinstance(config.training.learning_rate, float)
    assert config.model.num_layers == 4 and isinstance(config.model.num_layers, int)
    assert config.training.warm_start is False
    assert config.model_name == "mymodel"
    quick = get_config("quick")
    assert config.training.batch_size == quick.training.batch_size
    assert config.model.embedding_dim == quick.model.embedding_dim
    assert config.heads == quick.heads


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tasks=tagging,sentiment", ("tagging", "sentiment")),
        ("tasks=[relation, translation]", ("relation", "translation")),
        ("tasks=sentiment", ("sentiment",)),
    ],
)
def test_tuples_from_text(text, expected):
    assert effective_config("quick", assignments=[text]).tasks == expected


def test_optional_fields_take_none_and_values():
    assert effective_config("quick", assignments=["max_records_per_split=none"]).max_records_per_split is None
    assert effective_config("full", assignments=["max_records_per_split=500"]).max_records_per_split == 500


def test_head_sections_merge_key_by_key():
    quick = get_config("quick")
    config = effective_config(
        "quick", assignments=["heads.pos.loss_weight=2", "heads.ner.loss_weight=0.5", "heads.ner.gate.lower_bound=0.3"]
    )
    assert (config.heads["pos"].loss_weight, config.heads["ner"].loss_weight) == (2.0, 0.5)
    assert config.heads["ner"].gate == HeadGate(lower_bound=0.3, tolerance=quick.heads["ner"].gate.tolerance)
    assert config.heads["pos"] == dataclasses.replace(quick.heads["pos"], loss_weight=2.0)
    assert config.heads["sentiment"] == quick.heads["sentiment"]
    whole = effective_config("quick", assignments=["heads.ner.gate={lower_bound: 0.1, tolerance: 0.2}"])
    assert whole.heads["ner"].gate == HeadGate(0.1, 0.2)
    assert effective_config("quick", assignments=["heads.ner.gate=null"]).heads["ner"].gate is None


def test_every_head_has_its_section_with_its_declared_defaults():
    """A profile sets only what differs (the gates); the rest of each head's section is what the head declares."""
    quick = get_config("quick")
    assert list(quick.heads) == ["pos", "ner", "sentiment", "relation", "translation"]
    for name, section in quick.heads.items():
        assert section == dataclasses.replace(get_head(name).default_config, gate=section.gate)
        assert section.gate is not None
    assert get_config("full").heads["translation"].label_smoothing == 0.1
    # a config built without head sections gets the declared defaults
    assert get_config("quick", heads={}).heads["ner"] == get_head("ner").default_config == HeadConfig()


def test_the_ranking_loss_needs_a_head_with_a_none_class():
    assert get_config("quick").heads["relation"].loss == "cross_entropy"  # off by default
    assert effective_config("quick", assignments=["heads.relation.loss=ranking"]).heads["relation"].loss == "ranking"
    with pytest.raises(
        SettingsError,
        match=r"heads.sentiment: loss 'ranking' \(the pairwise ranking loss\) needs a none "
        r"class, and head 'sentiment' declares no none_label",
    ):
        effective_config("quick", assignments=["heads.sentiment.loss=ranking"])
    with pytest.raises(
        SettingsError, match=r"label_smoothing \(0.1\) smooths the cross-entropy; the ranking loss has none"
    ):
        effective_config("quick", assignments=["heads.relation.loss=ranking", "heads.relation.label_smoothing=0.1"])


@pytest.mark.parametrize(
    "assignment, new",
    [
        ("gates.ner.lower_bound=0.3", "heads.ner.gate.lower_bound=0.3"),
        ("gates.chunk={lower_bound: 0.5, tolerance: 0.05}", "heads.chunk.gate={lower_bound: 0.5, tolerance: 0.05}"),
        ("training.loss_weights.pos=2", "heads.pos.loss_weight=2"),
        ("training.loss_weights={pos: 2, ner: 1}", "heads.pos.loss_weight=2, heads.ner.loss_weight=1"),
        ("training.ranking_loss_heads=relation", "heads.relation.loss=ranking"),
        ("training.ranking_loss_heads=[relation]", "heads.relation.loss=ranking"),
        ("model.head_layers={pos: 1}", "heads.pos.encoder_layer=1"),
        ("model.head_dropout=0.3", "heads.<head>.dropout=0.3 for each head"),
        ("training.sequence_label_smoothing=0.1", "heads.<head>.label_smoothing=0.1 for each head"),
    ],
)
def test_a_moved_key_names_its_new_place(assignment, new):
    old = (
        assignment.partition("=")[0].rsplit(".", 1)[0]
        if assignment.startswith(("gates.", "training.loss_weights."))
        else assignment.partition("=")[0]
    )
    old = "gates" if old.startswith("gates") else old
    with pytest.raises(SettingsError) as raised:
        effective_config("quick", assignments=[assignment])
    assert f"{old!r} has moved to each head's own section" in str(raised.value)
    assert str(raised.value).endswith(f"use {new}")


def test_a_moved_key_in_a_settings_file_names_its_new_place(tmp_path):
    (tmp_path / "old.yaml").write_text("training:\n  loss_weights: {pos: 2}\n")
    with pytest.raises(
        SettingsError, match=r"old.yaml: 'training.loss_weights' has moved .*use heads.pos.loss_weight=2"
    ):
        effective_config("quick", files=[str(tmp_path / "old.yaml")])
    (tmp_path / "new.yaml").write_text("heads:\n  pos: {loss_weight: 2, encoder_layer: 1}\n")
    config = effective_config("quick", files=[str(tmp_path / "new.yaml")])
    assert (config.heads["pos"].loss_weight, config.heads["pos"].encoder_layer) == (2.0, 1)
    assert config.heads["pos"].gate == get_config("quick").heads["pos"].gate  # merged into the profile's section


def test_later_settings_win_and_set_comes_after_files(tmp_path):
    settings = tmp_path / "s.yaml"
    settings.write_text("training:\n  learning_rate: 1.0e-4\n  train_steps: 77\nmodel:\n  num_layers: 3\n")
    config = effective_config(
        "quick", files=[str(settings)], assignments=["training.train_steps=5", "training.train_steps=6"]
    )
    assert (config.training.learning_rate, config.training.train_steps, config.model.num_layers) == (1e-4, 6, 3)


def test_yaml_and_json_files_give_the_same_config(tmp_path):
    settings = {
        "training": {"learning_rate": 0.0005, "task_sampling": "uniform"},
        "model": {"num_layers": 4},
        "heads": {"pos": {"gate": {"lower_bound": 0.5}}},
        "tasks": ["tagging", "relation"],
    }
    (tmp_path / "s.json").write_text(json.dumps(settings))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(settings))
    from_json = effective_config("quick", files=[str(tmp_path / "s.json")])
    assert from_json == effective_config("quick", files=[str(tmp_path / "s.yaml")])
    assert from_json.tasks == ("tagging", "relation") and from_json.heads["pos"].gate.lower_bound == 0.5


def test_yaml_exponent_without_a_dot_is_still_a_float(tmp_path):
    # YAML 1.1 reads 5e-4 as a string; the field's type decides.
    (tmp_path / "s.yaml").write_text("training:\n  learning_rate: 5e-4\n")
    assert effective_config("quick", files=[str(tmp_path / "s.yaml")]).training.learning_rate == 5e-4


def test_the_printed_effective_config_reads_back(tmp_path):
    config = effective_config("full", assignments=["training.learning_rate=3e-4", "tasks=tagging,sentiment"])
    (tmp_path / "effective.yaml").write_text(format_config(config))
    assert effective_config("full", files=[str(tmp_path / "effective.yaml")]) == config
    with pytest.raises(SettingsError, match="is for profile 'full'.*--profile full"):
        effective_config("quick", files=[str(tmp_path / "effective.yaml")])


def test_config_changes_lists_what_differs_from_the_profile():
    base = get_config("quick")
    config = effective_config("quick", assignments=["training.learning_rate=5e-4", "heads.ner.gate.lower_bound=0.3"])
    assert config_changes(base, config) == {
        "heads.ner.gate.lower_bound": {"profile": 0.0, "effective": 0.3},
        "training.learning_rate": {"profile": 0.002, "effective": 0.0005},
    }
    assert config_changes(base, base) == {}


# ----- errors -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "assignment, message",
    [
        (
            "training.learnin_rate=1",
            r"unknown setting 'training.learnin_rate' \(did you mean learning_rate\?\); "
            r"valid keys of training: batch_size, train_steps, .*learning_rate",
        ),
        (
            "modle.num_layers=2",
            r"unknown setting 'modle' \(did you mean model\?\); valid keys of the top level: .*model",
        ),
        ("training.learning_rate=fast", r"training.learning_rate: expected float, got 'fast' \(str\)"),
        ("model.num_layers=2.5", r"model.num_layers: expected int, got '2.5'"),
        ("training.warm_start=maybe", r"training.warm_start: expected bool, got 'maybe'"),
        ("max_records_per_split=lots", r"max_records_per_split: expected int or None, got 'lots'"),
        ("heads.pos.loss_weight=heavy", r"heads.pos.loss_weight: expected float, got 'heavy'"),
        (
            "heads.nerr.loss_weight=2",
            r"heads names head 'nerr', which no task has \(did you mean ner\?\); heads: pos, ner",
        ),
        ("heads.ner.gate.lower=0.3", r"unknown setting 'heads.ner.gate.lower' \(did you mean lower_bound\?\)"),
        ("heads.ner.loss=rank", r"heads.ner.loss: expected one of 'cross_entropy', 'ranking', got 'rank'"),
        ("heads.ner.encoder_layer=0", r"heads.ner: encoder_layer: 0 is no layer"),
        (
            "heads.translation.encoder_layer=1",
            r"heads.translation: head 'translation' \(sequence\) reads the encoder's last",
        ),
        ("heads.pos.learning_rate_multiplier=0", r"heads.pos: learning_rate_multiplier: 0.0 is not positive"),
        (
            "training.backbone_learning_rate_multiplier=-1",
            r"training.backbone_learning_rate_multiplier: -1.0 is not positive",
        ),
        ("model=4", r"model: expected ModelConfig \(a mapping with keys embedding_dim, num_layers"),
        ("profile=full", r"'profile' cannot be set \(choose the profile with --profile\)"),
        ("training.learning_rate", r"--set expects SECTION.KEY=VALUE"),
        ("=4", r"--set expects SECTION.KEY=VALUE"),
        ("training..x=4", r"--set expects SECTION.KEY=VALUE"),
    ],
)
def test_bad_assignments_name_the_key_and_the_problem(assignment, message):
    with pytest.raises(SettingsError, match=message):
        effective_config("quick", assignments=[assignment])


def test_the_message_names_its_source(tmp_path):
    with pytest.raises(SettingsError, match=r"^--set model.num_layers=x: model.num_layers: expected int"):
        effective_config("quick", assignments=["model.num_layers=x"])
    (tmp_path / "s.yaml").write_text("model:\n  num_layers: four\n")
    with pytest.raises(SettingsError, match=r"s.yaml: model.num_layers: expected int, got 'four'"):
        effective_config("quick", files=[str(tmp_path / "s.yaml")])


@pytest.mark.parametrize(
    "content, message",
    [
        ("model: [1, 2\n", "is not valid YAML"),
        ("- a\n- b\n", "must hold a mapping of sections"),
        ("training:\n  warm_start: 1\n", r"training.warm_start: expected bool, got 1 \(int\)"),
        ("model_name: 5\n", r"model_name: expected str, got 5 \(int\)"),
        ("training:\n  batch_size: true\n", r"training.batch_size: expected int, got True"),
    ],
)
def test_bad_files(tmp_path, content, message):
    (tmp_path / "s.yaml").write_text(content)
    with pytest.raises(SettingsError, match=message):
        effective_config("quick", files=[str(tmp_path / "s.yaml")])


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(SettingsError, match="settings file .*nope.yaml does not exist"):
        load_settings_file(str(tmp_path / "nope.yaml"))
    (tmp_path / "s.json").write_text("{training: 1}")
    with pytest.raises(SettingsError, match="is not valid JSON"):
        load_settings_file(str(tmp_path / "s.json"))
    (tmp_path / "empty.yaml").write_text("")
    assert load_settings_file(str(tmp_path / "empty.yaml")) == {}


def test_parse_assignment_keeps_the_value_as_text():
    assert parse_assignment("a.b.c= x=y ") == {"a": {"b": {"c": "x=y"}}}


# ----- any fields: the module reads the dataclasses' type hints --------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Inner:
    ratio: float = 0.5
    mode: Literal["a", "b"] = "a"


@dataclasses.dataclass(frozen=True)
class _Outer:
    profile: str = "x"
    inner: _Inner = _Inner()
    sizes: tuple[int, int] = (1, 2)
    names: list[str] = dataclasses.field(default_factory=list)
    limit: int | None = None
    scale: int | float = 1


def test_generic_over_any_dataclass():
    outer = apply_mapping(
        _Outer(),
        {"inner": {"ratio": "0.25", "mode": "b"}, "sizes": "3,4", "names": "p,q", "limit": "7", "scale": "2.5"},
    )
    assert outer == _Outer(inner=_Inner(ratio=0.25, mode="b"), sizes=(3, 4), names=["p", "q"], limit=7, scale=2.5)
    assert apply_mapping(_Outer(), {"scale": "3"}).scale == 3
    with pytest.raises(SettingsError, match=r"inner.mode: expected one of 'a', 'b', got 'c'"):
        apply_mapping(_Outer(), {"inner": {"mode": "c"}})
    with pytest.raises(SettingsError, match=r"sizes: expected 2 values"):
        apply_mapping(_Outer(), {"sizes": "1,2,3"})
    with pytest.raises(SettingsError, match=r"sizes\[1\]: expected int, got 'x'"):
        apply_mapping(_Outer(), {"sizes": [1, "x"]})


# ----- the commands -------------------------------------------------------------------------------------------------
def _mtnlp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtnlp.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_run_refuses_a_bad_setting_before_running(tmp_path):
    result = _mtnlp("run", "--workdir", str(tmp_path / "w"), "--set", "training.learnin_rate=1")
    assert result.returncode == 2
    assert "unknown setting 'training.learnin_rate'" in result.stderr and "valid keys of training" in result.stderr
    assert not (tmp_path / "w").exists()


def test_kubeflow_compile_applies_settings(tmp_path):
    settings = tmp_path / "s.yaml"
    settings.write_text("model:\n  num_layers: 5\n")
    output = tmp_path / "pipeline.json"
    result = _mtnlp(
        "kubeflow",
        "compile",
        "--pipeline-root",
        "gs://bucket/mtnlp",
        "--output",
        str(output),
        "--config",
        str(settings),
        "--set",
        "training.learning_rate=7e-4",
        "--verbose",
    )
    assert result.returncode == 0, result.stderr
    assert "learning_rate: 0.0007" in result.stdout and "num_layers: 5" in result.stdout
    # The Trainer's custom_config in the spec is the effective config: what the pods (and ML Metadata) get.
    trainer = json.loads(output.read_text())["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"]
    recorded = json.loads(trainer["inputs"]["parameters"]["custom_config"]["runtimeValue"]["constant"])
    assert recorded["training"]["learning_rate"] == 7e-4 and recorded["model"]["num_layers"] == 5
    bad = _mtnlp(
        "kubeflow",
        "compile",
        "--pipeline-root",
        "gs://bucket/mtnlp",
        "--output",
        str(output),
        "--set",
        "model.num_layers=many",
    )
    assert bad.returncode == 2 and "model.num_layers: expected int, got 'many'" in bad.stderr


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_every_setting_of_the_config_can_be_given_as_text(profile):
    """Each leaf of the real config, written as --set text, reads back as the same value (new fields included)."""
    from mtnlp.pipelines.settings import _flatten, as_dict

    config = get_config(profile)
    for key, value in _flatten(as_dict(config)).items():
        if key == "profile":
            continue
        if value is None:
            text = "none"
        elif isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value)
        assert effective_config(profile, assignments=[f"{key}={text}"]) == config, key


def test_run_prints_and_records_the_effective_settings(tmp_path, monkeypatch, capsys):
    """`mtnlp run --verbose` with the pipeline itself stubbed out: what it prints and what the summary keeps."""
    import mtnlp.pipelines.local_runner as local_runner
    from mtnlp import cli as mtnlp_cli

    def stopped_run(config, data_root, workdir, enable_cache=True):
        os.makedirs(workdir.root, exist_ok=True)
        raise RuntimeError(f"stopped by the test (learning rate {config.training.learning_rate})")

    monkeypatch.setattr(local_runner, "run_locally", stopped_run)
    settings = tmp_path / "s.yaml"
    settings.write_text("model:\n  num_layers: 3\n")
    workdir = tmp_path / "w"
    rc = mtnlp_cli.main(
        [
            "run",
            "--workdir",
            str(workdir),
            "--verbose",
            "--config",
            str(settings),
            "--set",
            "training.learning_rate=5e-4",
            "--train-steps",
            "7",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1 and "stopped by the test (learning rate 0.0005)" in out
    assert "Effective settings (profile quick; pass them back with --config FILE):" in out
    assert "    learning_rate: 0.0005" in out and "    train_steps: 7" in out and "    num_layers: 3" in out
    assert (
        "settings changed from the quick profile: model.num_layers=3, training.learning_rate=0.0005, "
        "training.train_steps=7" in out
    )
    summary = json.loads((workdir / "run_summary.json").read_text())
    assert summary["config"]["training"] == {**summary["config"]["training"], "learning_rate": 5e-4, "train_steps": 7}
    assert summary["config_changes"]["model.num_layers"] == {
        "profile": get_config("quick").model.num_layers,
        "effective": 3,
    }
    assert summary["config_sources"] == {"files": [str(settings)], "set": ["training.learning_rate=5e-4"]}


@pytest.mark.slow
def test_the_pipeline_run_records_its_settings_in_the_summary_and_ml_metadata(pipeline_run):
    from mtnlp.pipelines.summary import recorded_config
    from tests.conftest import FIXTURE_STEPS

    summary = pipeline_run.summary
    assert summary["config"]["training"]["train_steps"] == FIXTURE_STEPS
    assert summary["config_changes"]["training.train_steps"] == {
        "profile": get_config("quick").training.train_steps,
        "effective": FIXTURE_STEPS,
    }
    assert "settings changed from the quick profile:" in pipeline_run.stdout
    metadata = str(pipeline_run.workdir / "metadata.sqlite")
    assert recorded_config(metadata, summary["run_id"]) == summary["config"]
