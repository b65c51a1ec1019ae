"""tensorflow_model_server's command-line flags, parsed the same way (plus the forms users expect).

Accepted forms: `--flag=value`, `--flag value`, booleans as `--flag`, `--flag=true|false` (also `--noflag`). Flags
that real TF Serving has but that mean nothing here (TPU, GPU memory, profiler, ...) are accepted and ignored with a
note, so the same command line works on both servers. Anything else is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence


class FlagError(Exception):
    """A command-line error; the message names the flag."""


@dataclass(frozen=True)
class Flag:
    name: str
    kind: type  # bool, int, float or str
    default: Any
    help: str
    supported: bool = True


_CPU = os.cpu_count() or 1

FLAGS: tuple[Flag, ...] = (
    Flag("port", int, 8500, "Port to listen on for gRPC API"),
    Flag("grpc_socket_path", str, "", "If non-empty, listen to a UNIX socket for gRPC API on the given path."),
    Flag("rest_api_port", int, 0, "Port to listen on for HTTP/REST API. 0: no REST API. Must differ from --port."),
    Flag("rest_api_num_threads", int, 4 * _CPU, "Number of threads for HTTP/REST API processing.", supported=False),
    Flag("rest_api_timeout_in_ms", int, 30000, "Timeout for HTTP/REST API calls."),
    Flag("enable_batching", bool, False, "enable batching"),
    Flag("allow_version_labels_for_unavailable_models", bool, False,
         "If true, allows assigning unused version labels to models that are not available yet."),
    Flag("batching_parameters_file", str, "", "If non-empty, read an ascii BatchingParameters protobuf from it."),
    Flag("model_config_file", str, "", "If non-empty, read an ascii ModelServerConfig protobuf from it and serve "
                                       "those models (--model_name and --model_base_path are then ignored)."),
    Flag("model_config_file_poll_wait_seconds", int, 0,
         "Interval in seconds between each poll of the model config file; 0: read once at startup."),
    Flag("model_name", str, "default", "name of model (ignored if --model_config_file flag is set)"),
    Flag("model_base_path", str, "", "path to export (ignored if --model_config_file flag is set, otherwise required)"),
    Flag("max_num_load_retries", int, 5, "maximum number of times it retries loading a model after the first failure"),
    Flag("load_retry_interval_micros", int, 60_000_000, "The interval, in microseconds, between each servable load "
                                                         "retry."),
    Flag("file_system_poll_wait_seconds", int, 1, "Interval in seconds between each poll of the filesystem for new "
                                                  "model version. If set to zero poll will be exactly done once."),
    Flag("num_load_threads", int, 0, "The number of threads in the thread-pool used to load servables (0: 2)."),
    Flag("num_unload_threads", int, 0, "The number of threads used to unload servables.", supported=False),
    Flag("flush_filesystem_caches", bool, True, "Flush filesystem caches after loads.", supported=False),
    Flag("tensorflow_session_parallelism", int, 0, "Threads for a TensorFlow session; 0: auto."),
    Flag("tensorflow_intra_op_parallelism", int, 0, "Intra-op thread pool size; 0: auto (overrides session "
                                                    "parallelism)."),
    Flag("tensorflow_inter_op_parallelism", int, 0, "Inter-op thread pool size; 0: auto (overrides session "
                                                    "parallelism)."),
    Flag("ssl_config_file", str, "", "If non-empty, read an ascii SSLConfig protobuf and serve gRPC over TLS."),
    Flag("platform_config_file", str, "", "PlatformConfigMap file.", supported=False),
    Flag("per_process_gpu_memory_fraction", float, 0.0, "GPU memory fraction.", supported=False),
    Flag("saved_model_tags", str, "serve", "Comma-separated set of tags of the meta graph def to load."),
    Flag("grpc_channel_arguments", str, "", "A comma separated list of arguments to be passed to the grpc server. "
                                            "(e.g. grpc.max_connection_age_ms=2000)"),
    Flag("grpc_max_threads", int, 4 * _CPU, "Max grpc server threads to handle grpc messages."),
    Flag("enable_model_warmup", bool, True, "Enables model warmup (replays assets.extra/tf_serving_warmup_requests)."),
    Flag("num_request_iterations_for_warmup", int, 1, "Number of times each warmup request is replayed.",
         supported=False),
    Flag("monitoring_config_file", str, "", "If non-empty, read an ascii MonitoringConfig protobuf from it."),
    Flag("enable_signature_method_name_check", bool, False, "Check signature method names on Predict.",
         supported=False),
    Flag("xla_cpu_compilation_enabled", bool, False, "XLA on CPU.", supported=False),
    Flag("enable_profiler", bool, True, "Enable the profiler service.", supported=False),
    Flag("remove_unused_fields_from_bundle_metagraph", bool, True, "Memory optimisation.", supported=False),
    Flag("prefer_tflite_model", bool, False, "Prefer a TFLite model.", supported=False),
    Flag("use_tflite_model", bool, False, "Use a TFLite model.", supported=False),
    Flag("skip_initialize_tpu", bool, False, "TPU.", supported=False),
    Flag("thread_pool_factory_config_file", str, "", "Thread pool factory.", supported=False),
    Flag("mixed_precision", str, "", "Mixed precision.", supported=False),
    Flag("enable_per_model_batching_params", bool, False, "Per-model batching_params.pbtxt.", supported=False),
    Flag("tensorflow_session_config_file", str, "", "SessionConfig file.", supported=False),
    Flag("enable_grpc_healthcheck_service", bool, False, "gRPC health checking service.", supported=False),
    Flag("version", bool, False, "Display version"),
    # Our extensions (not in tensorflow_model_server):
    Flag("bind_address", str, "0.0.0.0", "[mtnlp extension] Address the gRPC and REST servers bind to. TF Serving "
                                        "always uses all interfaces (0.0.0.0), as does this default."),
    Flag("verbose", bool, False, "[mtnlp extension] Log load, reload and request details."),
)
_BY_NAME = {f.name: f for f in FLAGS}

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _convert(flag: Flag, raw: str) -> Any:
    if flag.kind is bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise FlagError(f"Illegal value '{raw}' for boolean flag --{flag.name} (use true or false)")
    try:
        return flag.kind(raw)
    except ValueError:
        kind = {int: "integer", float: "number", str: "string"}[flag.kind]
        raise FlagError(f"Illegal value '{raw}' for flag --{flag.name}: expected an {kind}") from None


def parse(argv: Sequence[str]) -> dict[str, Any]:
    """argv (without the program name) -> {flag name: value}, every flag present with its default."""
    values = {f.name: f.default for f in FLAGS}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"unknown argument: {arg}")
        body = arg.lstrip("-")
        name, eq, raw = body.partition("=")
        flag = _BY_NAME.get(name)
        if flag is None and name.startswith("no") and name[2:] in _BY_NAME and _BY_NAME[name[2:]].kind is bool \
                and not eq:
            values[name[2:]] = False
            i += 1
            continue
        if flag is None:
            raise FlagError(f"unknown command line flag '{name}'")
        if eq:
            values[name] = _convert(flag, raw)
        elif flag.kind is bool:
            # `--flag` alone is true; `--flag true|false` is also accepted when the next word is a bool literal.
            if i + 1 < len(args) and args[i + 1].lower() in _TRUE | _FALSE:
                values[name] = _convert(flag, args[i + 1])
                i += 1
            else:
                values[name] = True
        else:
            if i + 1 >= len(args):
                raise FlagError(f"flag --{name} needs a value")
            values[name] = _convert(flag, args[i + 1])
            i += 1
        i += 1
    return values


def check(values: dict[str, Any]) -> None:
    """Cross-flag rules, as tensorflow_model_server enforces them."""
    if values["version"]:
        return
    if not values["model_base_path"] and not values["model_config_file"]:
        raise FlagError("Both --model_base_path and --model_config_file are empty: give one of them")
    for name in ("port", "rest_api_port"):
        if not 0 <= values[name] <= 65535:
            raise FlagError(f"--{name}={values[name]} is not a valid port")
    if values["rest_api_port"] and values["rest_api_port"] == values["port"]:
        raise FlagError("--rest_api_port cannot be same as --port. Please use a different port for HTTP/REST API.")
    if values["batching_parameters_file"] and not values["enable_batching"]:
        raise FlagError("You supplied --batching_parameters_file without --enable_batching")
    for name in ("rest_api_timeout_in_ms", "grpc_max_threads", "rest_api_num_threads"):
        if values[name] <= 0:
            raise FlagError(f"--{name} must be positive")
    for name in ("max_num_load_retries", "load_retry_interval_micros", "tensorflow_intra_op_parallelism",
                 "tensorflow_inter_op_parallelism", "tensorflow_session_parallelism", "num_load_threads"):
        if values[name] < 0:
            raise FlagError(f"--{name} must not be negative")
    channel_arguments(values["grpc_channel_arguments"])


def channel_arguments(spec: str) -> list[tuple[str, Any]]:
    """`k=v,k2=v2` -> gRPC options; integer-looking values are passed as ints, like TF Serving does."""
    out: list[tuple[str, Any]] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise FlagError(f"Illegal --grpc_channel_arguments entry '{item}': expected key=value")
        try:
            out.append((key, int(value)))
        except ValueError:
            out.append((key, value))
    return out


def usage(prog: str = "mtnlp-model-server") -> str:
    lines = [f"usage: {prog} --model_base_path=PATH [--model_name=NAME] | --model_config_file=FILE [flags]", "Flags:"]
    for f in FLAGS:
        note = "" if f.supported else " (accepted for compatibility; ignored)"
        lines.append(f"  --{f.name}={f.default!r:<12} {f.kind.__name__:5}  {f.help}{note}")
    return "\n".join(lines)
