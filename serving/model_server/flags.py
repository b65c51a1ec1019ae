"""tensorflow_model_server's command-line flags, parsed the same way (plus the forms users expect).

Accepted forms: `--flag=value`, `--flag value`, booleans as `--flag`, `--flag=true|false` (also `--noflag`). Flags
that real TF Serving has but that mean nothing here (TPU, GPU memory, profiler, ...) are accepted and ignored with a
note, so the same command line works on both servers. As in TF Serving (tensorflow::Flags): a value that does not
parse is an error ("Couldn't interpret value ..."), while an unknown argument is reported ("unknown argument: ...")
and skipped.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class FlagError(Exception):
    """A flag value that does not parse; the message names the flag (TF's wording)."""


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
    Flag("rest_api_num_threads", int, 4 * _CPU, "Number of threads for HTTP/REST API processing."),
    Flag("rest_api_timeout_in_ms", int, 30000, "Timeout for HTTP/REST API calls."),
    Flag("enable_batching", bool, False, "enable batching"),
    Flag(
        "allow_version_labels_for_unavailable_models",
        bool,
        False,
        "If true, allows assigning unused version labels to models that are not available yet.",
    ),
    Flag("batching_parameters_file", str, "", "If non-empty, read an ascii BatchingParameters protobuf from it."),
    Flag(
        "model_config_file",
        str,
        "",
        "If non-empty, read an ascii ModelServerConfig protobuf from it and serve "
        "those models (--model_name and --model_base_path are then ignored).",
    ),
    Flag(
        "model_config_file_poll_wait_seconds",
        int,
        0,
        "Interval in seconds between each poll of the model config file; 0: read once at startup.",
    ),
    Flag("model_name", str, "default", "name of model (ignored if --model_config_file flag is set)"),
    Flag("model_base_path", str, "", "path to export (ignored if --model_config_file flag is set, otherwise required)"),
    Flag("max_num_load_retries", int, 5, "maximum number of times it retries loading a model after the first failure"),
    Flag(
        "load_retry_interval_micros",
        int,
        60_000_000,
        "The interval, in microseconds, between each servable load retry.",
    ),
    Flag(
        "file_system_poll_wait_seconds",
        int,
        1,
        "Interval in seconds between each poll of the filesystem for new "
        "model version. If set to zero poll will be exactly done once.",
    ),
    Flag("num_load_threads", int, 0, "The number of threads in the thread-pool used to load servables (0: 2)."),
    Flag("num_unload_threads", int, 0, "The number of threads used to unload servables.", supported=False),
    Flag("flush_filesystem_caches", bool, True, "Flush filesystem caches after loads.", supported=False),
    Flag("tensorflow_session_parallelism", int, 0, "Threads for a TensorFlow session; 0: auto."),
    Flag(
        "tensorflow_intra_op_parallelism", int, 0, "Intra-op thread pool size; 0: auto (overrides session parallelism)."
    ),
    Flag(
        "tensorflow_inter_op_parallelism", int, 0, "Inter-op thread pool size; 0: auto (overrides session parallelism)."
    ),
    Flag("ssl_config_file", str, "", "If non-empty, read an ascii SSLConfig protobuf and serve gRPC over TLS."),
    Flag("platform_config_file", str, "", "PlatformConfigMap file.", supported=False),
    Flag("per_process_gpu_memory_fraction", float, 0.0, "GPU memory fraction.", supported=False),
    Flag("saved_model_tags", str, "serve", "Comma-separated set of tags of the meta graph def to load."),
    Flag(
        "grpc_channel_arguments",
        str,
        "",
        "A comma separated list of arguments to be passed to the grpc server. (e.g. grpc.max_connection_age_ms=2000)",
    ),
    Flag("grpc_max_threads", int, 4 * _CPU, "Max grpc server threads to handle grpc messages."),
    Flag("enable_model_warmup", bool, True, "Enables model warmup (replays assets.extra/tf_serving_warmup_requests)."),
    Flag(
        "num_request_iterations_for_warmup", int, 1, "Number of times each warmup request is replayed.", supported=False
    ),
    Flag("monitoring_config_file", str, "", "If non-empty, read an ascii MonitoringConfig protobuf from it."),
    Flag(
        "enable_signature_method_name_check",
        bool,
        False,
        "Require Classify/Regress signatures to carry the classify/regress method name (TF2 SavedModels always "
        "say predict, so this is off by default, as in TF Serving).",
    ),
    Flag("xla_cpu_compilation_enabled", bool, False, "XLA on CPU.", supported=False),
    Flag(
        "enable_profiler",
        bool,
        True,
        "Enable TensorFlow's profiler service on the gRPC port (TensorBoard's profile capture).",
    ),
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
    Flag(
        "bind_address",
        str,
        "0.0.0.0",
        "[mtnlp extension] Comma-separated addresses the gRPC and REST servers bind "
        "to. The default, 0.0.0.0, is TF Serving's: every interface, IPv4 and IPv6. "
        "mtnlp serve uses 127.0.0.1,::1 (loopback only).",
    ),
    Flag("verbose", bool, False, "[mtnlp extension] Log load, reload and request details."),
    Flag(
        "max_request_tensor_elements",
        int,
        2**31 - 1,
        "[mtnlp extension] Most elements the input tensors of one request may hold once decoded (a TensorProto's "
        "last value repeats to fill its shape); beyond: RESOURCE_EXHAUSTED.",
    ),
    Flag(
        "max_request_tensor_bytes",
        int,
        2**31 - 1,
        "[mtnlp extension] Most bytes the input tensors of one request may take once decoded (strings: 24 bytes "
        "each plus their length); beyond: RESOURCE_EXHAUSTED. Default: TF Serving's largest gRPC message.",
    ),
    Flag(
        "max_request_batch_size",
        int,
        2**31 - 1,
        "[mtnlp extension] Most rows (first dimension) any input tensor of one request may have: sentences per "
        "request; beyond: RESOURCE_EXHAUSTED. mtnlp serve derives it from the model.",
    ),
    Flag(
        "max_request_string_bytes",
        int,
        2**31 - 1,
        "[mtnlp extension] Longest string element an input may hold, in bytes: characters per sentence; beyond: "
        "RESOURCE_EXHAUSTED. mtnlp serve derives it from the model.",
    ),
    Flag(
        "rest_api_max_body_bytes",
        int,
        256 * 1024 * 1024,
        "[mtnlp extension] Largest REST request body; beyond: HTTP 413 and the connection is closed.",
    ),
    Flag(
        "rest_api_read_timeout_in_ms",
        int,
        30000,
        "[mtnlp extension] Time a REST client has to send a request's headers (also the keep-alive idle time) and, "
        "separately, its body.",
    ),
    Flag(
        "rest_api_max_connections",
        int,
        1000,
        "[mtnlp extension] Most open REST connections; more are answered 503 and closed.",
    ),
    Flag(
        "allowed_model_roots",
        str,
        "",
        "[mtnlp extension] Comma-separated directories; when set, every model base path (from flags, config file or "
        "the ReloadConfig RPC) and every version directory it resolves to must lie inside one of them "
        "(PERMISSION_DENIED otherwise). Empty (default): any path, as TF Serving.",
    ),
    Flag(
        "disable_reload_config_rpc",
        bool,
        False,
        "[mtnlp extension] Refuse ModelService/HandleReloadConfigRequest (PERMISSION_DENIED). Off by default, as "
        "TF Serving; mtnlp serve turns it on.",
    ),
)
_BY_NAME = {f.name: f for f in FLAGS}

# Every flag as a typed, read-only attribute (`options.port`, `options.enable_batching`), generated from FLAGS so a
# new flag is declared once.
ServerOptions = dataclasses.make_dataclass(
    "ServerOptions", [(f.name, f.kind, dataclasses.field(default=f.default)) for f in FLAGS], frozen=True
)
ServerOptions.__doc__ = "The parsed command line of mtnlp-model-server: one typed attribute per flag in FLAGS."

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _convert(flag: Flag, raw: str) -> Any:
    if flag.kind is bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    else:
        try:
            return flag.kind(raw)
        except ValueError:
            pass
    raise FlagError(f"Couldn't interpret value {raw} for flag {flag.name}.")


def parse(argv: Sequence[str]) -> tuple[Any, list[str]]:
    """argv (without the program name) -> (ServerOptions, unknown arguments), every flag not given at its default.
    Raises FlagError for a value that does not parse."""
    values = {f.name: f.default for f in FLAGS}
    unknown: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            unknown.append(arg)
            continue
        body = arg.lstrip("-")
        name, eq, raw = body.partition("=")
        flag = _BY_NAME.get(name)
        if (
            flag is None
            and name.startswith("no")
            and name[2:] in _BY_NAME
            and _BY_NAME[name[2:]].kind is bool
            and not eq
        ):
            values[name[2:]] = False
            continue
        if flag is None:
            unknown.append(arg)
            continue
        if eq:
            values[name] = _convert(flag, raw)
        elif flag.kind is bool:
            # `--flag` alone is true; `--flag true|false` is also accepted when the next word is a bool literal.
            if i < len(args) and args[i].lower() in _TRUE | _FALSE:
                values[name] = _convert(flag, args[i])
                i += 1
            else:
                values[name] = True
        else:
            if i >= len(args):
                raise FlagError(f"Couldn't interpret value  for flag {name}.")
            values[name] = _convert(flag, args[i])
            i += 1
    return ServerOptions(**values), unknown


class StartupError(Exception):
    """A flag combination TF Serving's Server::BuildAndStart refuses (INVALID_ARGUMENT, message as TF Serving's)."""


def check(options: Any) -> None:
    """Cross-flag rules, with the messages tensorflow_model_server's BuildAndStart gives (raised as StartupError)."""
    if options.version:
        return
    if options.port == 0:
        raise StartupError("server_options.grpc_port is not set.")
    if not options.model_base_path and not options.model_config_file:
        raise StartupError("Both server_options.model_base_path and server_options.model_config_file are empty!")
    if options.batching_parameters_file and not options.enable_batching:
        raise StartupError(
            "server_options.batching_parameters_file is set without setting server_options.enable_batching to true."
        )
    if (
        options.tensorflow_intra_op_parallelism > 0
        and options.tensorflow_inter_op_parallelism > 0
        and options.tensorflow_session_parallelism > 0
    ):
        raise StartupError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all."
        )
    for name in ("port", "rest_api_port"):
        if not 0 <= getattr(options, name) <= 65535:  # gRPC cannot listen there: TF Serving's BuildAndStart fails
            raise StartupError(
                "Failed to BuildAndStart gRPC server"
                if name == "port"
                else f"--rest_api_port={getattr(options, name)} is not a valid port"
            )
    for name in (
        "rest_api_timeout_in_ms",
        "grpc_max_threads",
        "rest_api_num_threads",
        "max_request_tensor_elements",
        "max_request_tensor_bytes",
        "max_request_batch_size",
        "max_request_string_bytes",
        "rest_api_max_body_bytes",
        "rest_api_read_timeout_in_ms",
        "rest_api_max_connections",
    ):
        if getattr(options, name) <= 0:
            raise StartupError(f"--{name} must be positive")
    try:
        channel_arguments(options.grpc_channel_arguments)
    except FlagError as e:
        raise StartupError(str(e)) from None


def comma_list(value: str) -> list[str]:
    """A comma-separated flag value, in order, without blanks or repeats."""
    out: list[str] = []
    for item in (a.strip() for a in value.split(",")):
        if item and item not in out:
            out.append(item)
    return out


def bind_addresses(value: str) -> list[str]:
    return comma_list(value) or ["0.0.0.0"]


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
    lines = [f"usage: {prog}", "Flags:"]
    for f in FLAGS:
        note = "" if f.supported else " (accepted for compatibility; ignored)"
        lines.append(f"  --{f.name}={f.default!r:<12} {f.kind.__name__:5}  {f.help}{note}")
    return "\n".join(lines)
