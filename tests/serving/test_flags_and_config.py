"""Command line and config files: TF Serving's flags and text protos; bad ones exit non-zero with a message."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf import text_format

from serving.model_server import flags as flagmod
from serving.model_server.batching import BatchOptions
from serving.model_server.config import batching_parameters, model_server_config, monitoring_config
from serving.model_server.errors import ServingError
from serving.model_server.protos import BatchingParameters, MonitoringConfig

from .conftest import REPO, LOCAL_ONLY, server_command


def test_flag_forms_equivalent():
    a = flagmod.parse(["--port=9000", "--model_base_path=/m", "--enable_batching", "--rest_api_port", "9001"])
    b = flagmod.parse(["--port", "9000", "--model_base_path", "/m", "--enable_batching=true", "--rest_api_port=9001"])
    assert a == b
    assert a["port"] == 9000 and a["rest_api_port"] == 9001 and a["enable_batching"] is True


@pytest.mark.parametrize("argv,expected", [
    (["--enable_model_warmup=false"], False), (["--enable_model_warmup=true"], True),
    (["--enable_model_warmup"], True), (["--noenable_model_warmup"], False), ([], True),
    (["--enable_model_warmup", "false"], False),
])
def test_boolean_forms(argv, expected):
    assert flagmod.parse(argv)["enable_model_warmup"] is expected


def test_defaults_match_tensorflow_model_server():
    v = flagmod.parse([])
    assert (v["port"], v["rest_api_port"], v["model_name"], v["file_system_poll_wait_seconds"],
            v["rest_api_timeout_in_ms"], v["enable_batching"], v["saved_model_tags"]) == \
        (8500, 0, "default", 1, 30000, False, "serve")


@pytest.mark.parametrize("argv,fragment", [
    (["--no_such_flag=1"], "unknown command line flag 'no_such_flag'"),
    (["--port=abc"], "--port"),
    (["--enable_batching=maybe"], "--enable_batching"),
    (["--port"], "needs a value"),
    (["stray"], "unknown argument"),
])
def test_bad_flags_rejected(argv, fragment):
    with pytest.raises(flagmod.FlagError, match=None) as e:
        flagmod.parse(argv)
    assert fragment in str(e.value)


@pytest.mark.parametrize("argv,fragment", [
    ([], "--model_base_path"),
    (["--model_base_path=/m", "--port=8500", "--rest_api_port=8500"], "cannot be same as --port"),
    (["--model_base_path=/m", "--batching_parameters_file=/b"], "without --enable_batching"),
    (["--model_base_path=/m", "--grpc_channel_arguments=novalue"], "key=value"),
    (["--model_base_path=/m", "--port=70000"], "not a valid port"),
])
def test_inconsistent_flags_rejected(argv, fragment):
    with pytest.raises(flagmod.FlagError) as e:
        flagmod.check(flagmod.parse(argv))
    assert fragment in str(e.value)


def test_channel_arguments_typed_like_tf_serving():
    assert flagmod.channel_arguments("grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x") == \
        [("grpc.max_connection_age_ms", 2000), ("grpc.primary_user_agent", "x")]


def _run_server(*flags: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(server_command() + list(flags), cwd=str(REPO), capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})


@LOCAL_ONLY
@pytest.mark.parametrize("flags,fragment", [
    (["--bogus_flag=1", "--model_base_path=/x"], "unknown command line flag 'bogus_flag'"),
    (["--port=eighty", "--model_base_path=/x"], "Illegal value 'eighty'"),
    (["--port=8500"], "--model_base_path"),
])
def test_server_exits_nonzero_on_bad_flags(flags, fragment):
    r = _run_server(*flags)
    assert r.returncode != 0
    assert fragment in r.stderr


def test_model_server_config_parses(toy_dir):
    cfg = model_server_config(str(toy_dir / "models.config"))
    names = [c.name for c in cfg.model_config_list.config]
    assert names == ["half_plus_two", "tf1_half_plus_two"]
    assert dict(cfg.model_config_list.config[0].version_labels) == {"stable": 1, "canary": 2}


def test_batching_parameters_parse_and_defaults(tmp_path):
    p = tmp_path / "batching.txt"
    p.write_text("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
                 "num_batch_threads { value: 2 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 32\n"
                 "pad_variable_length_inputs: true\n")
    o = BatchOptions.from_proto(batching_parameters(str(p)))
    assert (o.max_batch_size, o.batch_timeout_micros, o.num_batch_threads, o.allowed_batch_sizes,
            o.pad_variable_length_inputs, o.max_enqueued_batches) == (32, 2000, 2, (8, 32), True, 10)
    d = BatchOptions.from_proto(BatchingParameters())
    assert (d.max_batch_size, d.batch_timeout_micros, d.max_enqueued_batches) == (1000, 0, 10)


def test_allowed_batch_sizes_must_end_at_max():
    bp = text_format.Parse("max_batch_size { value: 16 } allowed_batch_sizes: 4 allowed_batch_sizes: 8",
                           BatchingParameters())
    with pytest.raises(ServingError, match="max_batch_size"):
        BatchOptions.from_proto(bp)


def test_monitoring_config_parses(tmp_path):
    p = tmp_path / "m.config"
    p.write_text('prometheus_config { enable: true, path: "/metrics" }')
    assert monitoring_config(str(p)).prometheus_config.path == "/metrics"
    assert isinstance(MonitoringConfig(), type(monitoring_config(str(p))))


@pytest.mark.parametrize("reader,text,fragment", [
    (model_server_config, "model_config_list { config { name: 'x' base_path: '/x' } ", "Expected"),
    (model_server_config, "model_config_list { config { nme: 'x' } }", "nme"),
    (batching_parameters, "max_batch_size: 3", 'Expected "{"'),
    (monitoring_config, "prometheus_config { enable: maybe }", "enable"),
])
def test_malformed_config_rejected_with_parser_message(tmp_path, reader, text, fragment):
    p = tmp_path / "bad.config"
    p.write_text(text)
    with pytest.raises(ServingError) as e:
        reader(str(p))
    assert e.value.code_name == "INVALID_ARGUMENT"
    assert "Invalid protobuf file" in e.value.message and fragment in e.value.message


@LOCAL_ONLY
@pytest.mark.parametrize("kind", ["model_config_file", "batching_parameters_file", "monitoring_config_file"])
def test_server_exits_on_malformed_config(tmp_path, kind):
    bad = tmp_path / "bad.txt"
    bad.write_text("this is { not a valid text proto")
    flags = [f"--{kind}={bad}"]
    if kind != "model_config_file":
        flags.append("--model_base_path=/nonexistent")
    if kind == "batching_parameters_file":
        flags.append("--enable_batching")
    r = _run_server(*flags, "--port=0")
    assert r.returncode != 0
    assert "Invalid protobuf file" in r.stderr and str(bad) in r.stderr


@LOCAL_ONLY
def test_server_rejects_duplicate_model_names(tmp_path):
    cfg = tmp_path / "dup.config"
    cfg.write_text("model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }")
    r = _run_server(f"--model_config_file={cfg}")
    assert r.returncode != 0 and "Illegal to list model a 2 times" in r.stderr


def test_console_script_declared():
    text = (REPO / "pyproject.toml").read_text()
    assert 'mtnlp-model-server = "serving.model_server.main:main"' in text
    assert sys.version_info >= (3, 10)
