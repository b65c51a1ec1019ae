"""Command line and config files: TF Serving's flags and text protos; bad ones exit non-zero with a message."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf import text_format

from mtnlp.serving.model_server import flags as flagmod
from mtnlp.serving.model_server.batching import BatchOptions
from mtnlp.serving.model_server.config import batching_parameters, model_server_config, monitoring_config
from mtnlp.serving.model_server.errors import ServingError
from mtnlp.serving.model_server.protos import BatchingParameters, MonitoringConfig

from .conftest import LOCAL_ONLY, REPO, server_command


def test_flag_forms_equivalent():
    a, _ = flagmod.parse(["--port=9000", "--model_base_path=/m", "--enable_batching", "--rest_api_port", "9001"])
    b, _ = flagmod.parse(
        ["--port", "9000", "--model_base_path", "/m", "--enable_batching=true", "--rest_api_port=9001"]
    )
    assert a == b
    assert a.port == 9000 and a.rest_api_port == 9001 and a.enable_batching is True


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--enable_model_warmup=false"], False),
        (["--enable_model_warmup=true"], True),
        (["--enable_model_warmup"], True),
        (["--noenable_model_warmup"], False),
        ([], True),
        (["--enable_model_warmup", "false"], False),
    ],
)
def test_boolean_forms(argv, expected):
    assert flagmod.parse(argv)[0].enable_model_warmup is expected


def test_defaults_match_tensorflow_model_server():
    v, _ = flagmod.parse([])
    assert v.enable_signature_method_name_check is False and v.rest_api_num_threads > 0
    assert (
        v.port,
        v.rest_api_port,
        v.model_name,
        v.file_system_poll_wait_seconds,
        v.rest_api_timeout_in_ms,
        v.enable_batching,
        v.saved_model_tags,
    ) == (8500, 0, "default", 1, 30000, False, "serve")


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--port=abc"], "Couldn't interpret value abc for flag port."),
        (["--enable_batching=maybe"], "Couldn't interpret value maybe for flag enable_batching."),
        (["--port"], "for flag port"),
    ],
)
def test_bad_flag_values_rejected_with_tf_message(argv, fragment):
    with pytest.raises(flagmod.FlagError) as e:
        flagmod.parse(argv)
    assert fragment in str(e.value)


def test_unknown_arguments_are_reported_not_fatal():
    # tensorflow::Flags leaves unknown arguments alone; tensorflow_model_server prints them and starts anyway.
    values, unknown = flagmod.parse(["--no_such_flag=1", "stray", "--port=9"])
    assert unknown == ["--no_such_flag=1", "stray"] and values.port == 9


@pytest.mark.parametrize(
    "argv,fragment",
    [
        ([], "Both server_options.model_base_path and server_options.model_config_file are empty!"),
        (["--model_base_path=/m", "--port=0"], "server_options.grpc_port is not set."),
        (
            ["--model_base_path=/m", "--batching_parameters_file=/b"],
            "server_options.batching_parameters_file is set without setting server_options.enable_batching to true.",
        ),
        (
            [
                "--model_base_path=/m",
                "--tensorflow_intra_op_parallelism=1",
                "--tensorflow_inter_op_parallelism=1",
                "--tensorflow_session_parallelism=1",
            ],
            "You cannot configure all.",
        ),
        (["--model_base_path=/m", "--grpc_channel_arguments=novalue"], "key=value"),
        (["--model_base_path=/m", "--port=70000"], "Failed to BuildAndStart gRPC server"),
    ],
)
def test_inconsistent_flags_rejected(argv, fragment):
    with pytest.raises(flagmod.StartupError) as e:
        flagmod.check(flagmod.parse(argv)[0])
    assert fragment in str(e.value)


def test_same_rest_and_grpc_port_is_not_a_startup_error():
    # TF Serving logs it and skips the REST API.
    flagmod.check(flagmod.parse(["--model_base_path=/m", "--port=8500", "--rest_api_port=8500"])[0])


def test_channel_arguments_typed_like_tf_serving():
    assert flagmod.channel_arguments("grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x") == [
        ("grpc.max_connection_age_ms", 2000),
        ("grpc.primary_user_agent", "x"),
    ]


def _run_server(*flags: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        server_command() + list(flags),
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )


@LOCAL_ONLY
@pytest.mark.parametrize(
    "flags,stream,fragment",
    [
        (["--port=eighty", "--model_base_path=/x"], "stderr", "Couldn't interpret value eighty for flag port."),
        (
            ["--port=8500"],
            "stdout",
            "Failed to start server. Error: INVALID_ARGUMENT: Both "
            "server_options.model_base_path and server_options.model_config_file are empty!",
        ),
    ],
)
def test_server_exits_255_on_bad_flags(flags, stream, fragment):
    r = _run_server(*flags)
    assert r.returncode == 255  # main() returns -1
    assert fragment in getattr(r, stream)
    assert "usage:" in r.stdout or stream == "stdout"


def test_model_server_config_parses(toy_dir):
    cfg = model_server_config(str(toy_dir / "models.config"))
    names = [c.name for c in cfg.model_config_list.config]
    assert names == ["half_plus_two", "tf1_half_plus_two", "tf2_padded", "tf1_half_plus_three"]
    assert dict(cfg.model_config_list.config[0].version_labels) == {"stable": 1, "canary": 2}


def test_batching_parameters_parse_and_defaults(tmp_path):
    p = tmp_path / "batching.txt"
    p.write_text(
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
        "num_batch_threads { value: 2 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 32\n"
        "pad_variable_length_inputs: true\n"
    )
    o = BatchOptions.from_proto(batching_parameters(str(p)))
    assert (
        o.max_batch_size,
        o.batch_timeout_micros,
        o.num_batch_threads,
        o.allowed_batch_sizes,
        o.pad_variable_length_inputs,
        o.max_enqueued_batches,
    ) == (32, 2000, 2, (8, 32), True, 10)
    d = BatchOptions.from_proto(BatchingParameters())
    assert (d.max_batch_size, d.batch_timeout_micros, d.max_enqueued_batches) == (1000, 0, 10)


def test_allowed_batch_sizes_must_end_at_max():
    bp = text_format.Parse(
        "max_batch_size { value: 16 } allowed_batch_sizes: 4 allowed_batch_sizes: 8", BatchingParameters()
    )
    with pytest.raises(ServingError, match="max_batch_size"):
        BatchOptions.from_proto(bp)


def test_monitoring_config_parses(tmp_path):
    p = tmp_path / "m.config"
    p.write_text('prometheus_config { enable: true, path: "/metrics" }')
    assert monitoring_config(str(p)).prometheus_config.path == "/metrics"
    assert isinstance(MonitoringConfig(), type(monitoring_config(str(p))))


@pytest.mark.parametrize(
    "reader,text,message_type,fragment",
    [
        (
            model_server_config,
            "model_config_list { config { name: 'x' base_path: '/x' } ",
            "ModelServerConfig",
            "Expected",
        ),
        (model_server_config, "model_config_list { config { nme: 'x' } }", "ModelServerConfig", "nme"),
        (batching_parameters, "max_batch_size: 3", "BatchingParameters", 'Expected "{"'),
        (monitoring_config, "prometheus_config { enable: maybe }", "MonitoringConfig", "enable"),
    ],
)
def test_malformed_config_rejected_as_tf_serving(tmp_path, caplog, reader, text, message_type, fragment):
    p = tmp_path / "bad.config"
    p.write_text(text)
    with pytest.raises(ServingError) as e:
        reader(str(p))
    assert e.value.code_name == "INVALID_ARGUMENT"
    assert e.value.message == f"Invalid protobuf file: '{p}'"  # ParseProtoTextFile's status
    logged = caplog.text
    assert f"Error parsing text-format tensorflow.serving.{message_type}: " in logged and fragment in logged


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
    r = _run_server(*flags)
    assert r.returncode == 255
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{bad}'" in r.stdout
    assert "Error parsing text-format tensorflow.serving." in r.stderr


@LOCAL_ONLY
def test_server_rejects_duplicate_model_names(tmp_path):
    cfg = tmp_path / "dup.config"
    cfg.write_text("model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }")
    r = _run_server(f"--model_config_file={cfg}")
    assert r.returncode == 255 and "Illegal to list model a 2 times" in r.stdout


def test_console_script_declared():
    text = (REPO / "pyproject.toml").read_text()
    assert 'mtnlp-model-server = "mtnlp.serving.model_server.main:main"' in text
    assert sys.version_info >= (3, 10)
