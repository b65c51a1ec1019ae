"""`mtnlp-model-server`: tensorflow_model_server's command line, on our Python implementation."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

# Quiet TF/gRPC before they are imported; --verbose brings the detail back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if "--verbose" in sys.argv else "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from . import flags as flagmod  # noqa: E402

log = logging.getLogger("mtnlp.model_server")
VERSION = "mtnlp-model-server 0.1.0 (TF Serving 2.16 protocol)"


def _configure_logging(verbose: bool) -> None:
    import warnings

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
    )
    if not verbose:
        warnings.filterwarnings("ignore")
        for noisy in ("tensorflow", "absl", "h5py", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def _load_tf_ops() -> None:
    """Registers TF Text's kernels that the project's SavedModels use (as stock TF Serving links them), without
    importing tensorflow_text's Python package (which imports Keras)."""
    from mtnlp.model.serving_ops import load_text_ops

    try:
        load_text_ops()
    except (ImportError, OSError, RuntimeError) as e:  # pragma: no cover - part of the stack
        log.warning("TF Text's kernels are not loaded (%s): models using TF Text ops will fail to load", e)


def _session_config(options: flagmod.ServerOptions):
    """TF Serving's session_config: intra/inter-op flags when either is set, else --tensorflow_session_parallelism
    for both (0: TensorFlow picks)."""
    from .servable import session_config

    intra, inter = options.tensorflow_intra_op_parallelism, options.tensorflow_inter_op_parallelism
    if intra > 0 or inter > 0:
        return session_config(intra, inter)
    session = options.tensorflow_session_parallelism
    return session_config(session, session)


class Configs:
    """Every config file named by the flags, parsed and checked before TensorFlow is even imported."""

    def __init__(self, options: flagmod.ServerOptions) -> None:
        from . import config as cfg
        from .batching import BatchOptions
        from .protos import BatchingParameters

        if options.model_config_file:
            self.model_config = cfg.model_server_config(options.model_config_file)
            cfg.validate_config(self.model_config)
        else:
            log.info(
                "Building single TensorFlow model file config:  model_name: %s model_base_path: %s",
                options.model_name,
                options.model_base_path,
            )
            self.model_config = cfg.single_model_config(options.model_name, options.model_base_path)
        self.batching = None
        if options.enable_batching:
            params = (
                cfg.batching_parameters(options.batching_parameters_file)
                if options.batching_parameters_file
                else BatchingParameters()
            )
            self.batching = BatchOptions.from_proto(params)
        self.prometheus_path = None
        if options.monitoring_config_file:
            mon = cfg.monitoring_config(options.monitoring_config_file)
            if mon.prometheus_config.enable:
                self.prometheus_path = mon.prometheus_config.path or "/monitoring/prometheus/metrics"
        self.ssl = cfg.ssl_config(options.ssl_config_file) if options.ssl_config_file else None
        roots = flagmod.comma_list(options.allowed_model_roots)
        self.allowed_model_roots = tuple(os.path.realpath(r) for r in roots)


class ModelServer:
    """The assembled server; `start()` loads the models and opens the ports, `wait()` blocks."""

    def __init__(self, options: flagmod.ServerOptions, configs: Configs) -> None:
        from .manager import Manager, ManagerOptions
        from .metrics import Metrics
        from .tensors import RequestLimits

        self.options = options
        self.metrics = Metrics()
        self.model_config = configs.model_config
        self.prometheus_path = configs.prometheus_path
        self.ssl = configs.ssl
        self.manager = Manager(
            ManagerOptions(
                saved_model_tags=[t for t in options.saved_model_tags.split(",") if t],
                enable_model_warmup=options.enable_model_warmup,
                batching=configs.batching,
                file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
                max_num_load_retries=options.max_num_load_retries,
                load_retry_interval_micros=options.load_retry_interval_micros,
                num_load_threads=options.num_load_threads or 2,
                allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
                session_config=_session_config(options),
                limits=RequestLimits(
                    options.max_request_tensor_elements,
                    options.max_request_tensor_bytes,
                    options.max_request_batch_size,
                    options.max_request_string_bytes,
                ),
                enable_signature_method_name_check=options.enable_signature_method_name_check,
                allowed_model_roots=configs.allowed_model_roots,
            ),
            self.metrics,
        )
        self._config_text = self._read_config_text()
        from .memory import MemoryReturner

        self._memory = MemoryReturner()
        self._grpc = None
        self._http = None
        self._stop = threading.Event()

    def _read_config_text(self) -> str | None:
        path = self.options.model_config_file
        if not path:
            return None
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError:
            return None

    def start(self) -> None:
        """Load the initial models (ServingError if they cannot load), then listen. ServingError when gRPC cannot
        listen; a REST port that cannot be bound is logged and skipped, as TF Serving does."""
        from .errors import invalid_argument
        from .flags import channel_arguments
        from .grpc_service import build_server

        o = self.options
        self.manager.apply_config(self.model_config, initial=True)
        self.manager.start_polling()
        self._start_config_polling()
        self._memory.start()
        addresses = flagmod.bind_addresses(o.bind_address)
        self._grpc = build_server(
            self.manager,
            max_workers=o.grpc_max_threads,
            options=channel_arguments(o.grpc_channel_arguments),
            reload_enabled=not o.disable_reload_config_rpc,
            enable_profiler=o.enable_profiler,
        )
        creds = self._server_credentials()
        bound = []
        for host in addresses:
            # gRPC treats 0.0.0.0 (TF Serving's address) as every interface, IPv4 and IPv6 alike.
            address = f"[{host}]:{o.port}" if ":" in host else f"{host}:{o.port}"
            try:
                ok = self._grpc.add_secure_port(address, creds) if creds else self._grpc.add_insecure_port(address)
            except RuntimeError:  # grpcio raises where older releases returned port 0
                ok = 0
            if ok:
                bound.append(address)
            elif ":" in host and bound:
                log.warning("Not listening on %s (IPv6 unavailable here?)", address)
            else:
                log.error("Failed to bind gRPC to %s", address)
                raise invalid_argument("Failed to BuildAndStart gRPC server")
        if o.grpc_socket_path:
            self._grpc.add_insecure_port(f"unix:{o.grpc_socket_path}")
        self._grpc.start()
        for address in bound:
            log.info("Running gRPC ModelServer at %s ...", address)
        if o.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", o.grpc_socket_path)
        if o.rest_api_port:
            self._start_rest(addresses)

    def _start_rest(self, addresses: list[str]) -> None:
        from .http_transport import HttpLimits, RestServer
        from .rest import RestApi

        o = self.options
        if o.rest_api_port == o.port:
            log.error(
                "server_options.http_port cannot be same as grpc_port. Please use a different port for "
                "HTTP/REST API. Skipped exporting HTTP/REST API."
            )
            return
        api = RestApi(self.manager, o.rest_api_timeout_in_ms, self.metrics, self.prometheus_path)
        limits = HttpLimits(
            max_body_bytes=o.rest_api_max_body_bytes,
            read_timeout_s=o.rest_api_read_timeout_in_ms / 1000.0,
            max_connections=o.rest_api_max_connections,
        )
        server = RestServer(api, addresses, o.rest_api_port, num_threads=o.rest_api_num_threads, limits=limits)
        try:
            server.start()
        except OSError as e:
            log.error("Failed to start HTTP Server at localhost:%d (%s)", o.rest_api_port, e)
            return
        self._http = server
        for host, port in server.bound:
            shown = f"[{host}]" if ":" in host else host
            log.info("Exporting HTTP/REST API at:%s:%d ...", shown, port)

    def _server_credentials(self):
        if self.ssl is None:
            return None
        import grpc

        ca = self.ssl.custom_ca.encode() if self.ssl.custom_ca else None
        return grpc.ssl_server_credentials(
            [(self.ssl.server_key.encode(), self.ssl.server_cert.encode())],
            root_certificates=ca,
            require_client_auth=bool(self.ssl.client_verify),
        )

    def _start_config_polling(self) -> None:
        wait = self.options.model_config_file_poll_wait_seconds
        if not self.options.model_config_file or wait <= 0:
            return
        from . import config as cfg

        def loop() -> None:
            while not self._stop.wait(wait):
                text = self._read_config_text()
                if text is None or text == self._config_text:
                    continue
                self._config_text = text  # a broken file is reported once, not at every poll
                try:
                    new = cfg.model_server_config(self.options.model_config_file)
                except Exception as e:  # noqa: BLE001 - keep serving the previous config
                    log.error(
                        "Failed to reload model config %s: Failed to read ModelServerConfig file: %s",
                        self.options.model_config_file,
                        e,
                    )
                    continue
                try:
                    self.manager.apply_config(new)
                    log.info("Reloaded model config from %s", self.options.model_config_file)
                except Exception as e:  # noqa: BLE001
                    log.error(
                        "Failed to reload model config %s: PollFilesystemAndReloadConfig failed to ReloadConfig: %s",
                        self.options.model_config_file,
                        e,
                    )

        threading.Thread(target=loop, name="config-poll", daemon=True).start()

    def wait(self) -> None:
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
        self._memory.stop()
        if self._http is not None:
            self._http.stop()
        if self._grpc is not None:
            self._grpc.stop(grace=2)
        self.manager.stop()


# What tensorflow_model_server returns from main() when it cannot start (-1).
EXIT_START_FAILED = 255


def _start_failed(code_name: str, message: str) -> int:
    # TF Serving's main.cc writes this line to stdout.
    print(f"Failed to start server. Error: {code_name}: {message}", flush=True)
    return EXIT_START_FAILED


def run(options: flagmod.ServerOptions) -> int:
    """Run a server from parsed flag values until SIGINT/SIGTERM."""
    _configure_logging(options.verbose)
    for f in flagmod.FLAGS:
        if not f.supported and getattr(options, f.name) != f.default:
            log.warning("--%s is accepted for compatibility with tensorflow_model_server and ignored", f.name)
    from .errors import ServingError

    try:
        flagmod.check(options)
    except flagmod.StartupError as e:
        return _start_failed("INVALID_ARGUMENT", str(e))
    try:
        configs = Configs(options)
    except ServingError as e:
        return _start_failed(e.code_name, e.message)
    _load_tf_ops()
    try:
        server = ModelServer(options, configs)
        server.start()
    except ServingError as e:
        return _start_failed(e.code_name, e.message)

    def _term(signum, frame):  # noqa: ARG001
        server._stop.set()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    server.wait()
    log.info("Shutting down")
    server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in ("-h", "--help", "-help"):
        print(flagmod.usage())
        return 0
    try:
        options, unknown = flagmod.parse(args)
    except flagmod.FlagError as e:
        # As tensorflow::Flags: the complaint on stderr, the usage on stdout, exit -1.
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        print(flagmod.usage(), flush=True)
        return EXIT_START_FAILED
    if options.version:
        print(VERSION)
        return 0
    if unknown:
        # tensorflow_model_server reports the first unknown argument with its usage, then starts anyway.
        print(f"unknown argument: {unknown[0]}\n{flagmod.usage()}", flush=True)
        print(f"WARNING: ignoring unknown argument(s): {' '.join(unknown)}", file=sys.stderr, flush=True)
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
