"""`mtnlp-model-server`: tensorflow_model_server's command line, on our Python implementation."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Sequence

# Quiet TF/gRPC before they are imported; --verbose brings the detail back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if "--verbose" in sys.argv else "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from . import flags as flagmod  # noqa: E402

log = logging.getLogger("mtnlp.model_server")
VERSION = "mtnlp-model-server 0.1.0 (TF Serving 2.16 protocol)"


def _configure_logging(verbose: bool) -> None:
    import warnings

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s")
    if not verbose:
        warnings.filterwarnings("ignore")
        for noisy in ("tensorflow", "absl", "h5py", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def _configure_tf(values: dict) -> None:
    import tensorflow as tf

    session = values["tensorflow_session_parallelism"]
    intra = values["tensorflow_intra_op_parallelism"] or session
    inter = values["tensorflow_inter_op_parallelism"] or session
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    try:  # SavedModels with TF Text ops (ours) load only once its kernels are registered.
        import tensorflow_text  # noqa: F401
    except ImportError:  # pragma: no cover - part of the stack
        log.warning("tensorflow_text is not installed: models using TF Text ops will fail to load")


class Configs:
    """Every config file named by the flags, parsed and checked before TensorFlow is even imported."""

    def __init__(self, values: dict) -> None:
        from . import config as cfg
        from .batching import BatchOptions
        from .protos import BatchingParameters

        if values["model_config_file"]:
            self.model_config = cfg.model_server_config(values["model_config_file"])
            cfg.validate_config(self.model_config)
        else:
            self.model_config = cfg.single_model_config(values["model_name"], values["model_base_path"])
        self.batching = None
        if values["enable_batching"]:
            params = cfg.batching_parameters(values["batching_parameters_file"]) \
                if values["batching_parameters_file"] else BatchingParameters()
            self.batching = BatchOptions.from_proto(params)
        self.prometheus_path = None
        if values["monitoring_config_file"]:
            mon = cfg.monitoring_config(values["monitoring_config_file"])
            if mon.prometheus_config.enable:
                self.prometheus_path = mon.prometheus_config.path or "/monitoring/prometheus/metrics"
        self.ssl = cfg.ssl_config(values["ssl_config_file"]) if values["ssl_config_file"] else None


class ModelServer:
    """The assembled server; `start()` loads the models and opens the ports, `wait()` blocks."""

    def __init__(self, values: dict, configs: "Configs") -> None:
        from .manager import Manager, ManagerOptions
        from .metrics import Metrics

        self.values = values
        self.metrics = Metrics()
        self.model_config = configs.model_config
        batching = configs.batching
        self.prometheus_path = configs.prometheus_path
        self.ssl = configs.ssl
        self.manager = Manager(ManagerOptions(
            saved_model_tags=[t for t in values["saved_model_tags"].split(",") if t],
            enable_model_warmup=values["enable_model_warmup"],
            batching=batching,
            file_system_poll_wait_seconds=values["file_system_poll_wait_seconds"],
            max_num_load_retries=values["max_num_load_retries"],
            load_retry_interval_micros=values["load_retry_interval_micros"],
            num_load_threads=values["num_load_threads"] or 2,
            allow_version_labels_for_unavailable_models=values["allow_version_labels_for_unavailable_models"],
        ), self.metrics)
        self._config_text = self._read_config_text()
        self._grpc = None
        self._http = None
        self._stop = threading.Event()

    def _read_config_text(self) -> str | None:
        path = self.values["model_config_file"]
        if not path:
            return None
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError:
            return None

    def start(self) -> None:
        from .flags import channel_arguments
        from .grpc_service import build_server
        from .rest import RestApi, make_http_server

        v = self.values
        self.manager.apply_config(self.model_config, initial=True)
        self.manager.start_polling()
        self._start_config_polling()
        host = v["bind_address"]
        self._grpc = build_server(self.manager, max_workers=v["grpc_max_threads"],
                                  options=channel_arguments(v["grpc_channel_arguments"]))
        creds = self._server_credentials()
        address = f"{host}:{v['port']}" if ":" not in host else f"[{host}]:{v['port']}"
        bound = self._grpc.add_secure_port(address, creds) if creds else self._grpc.add_insecure_port(address)
        if not bound:
            raise OSError(f"Failed to bind gRPC to {address}")
        if v["grpc_socket_path"]:
            self._grpc.add_insecure_port(f"unix:{v['grpc_socket_path']}")
        self._grpc.start()
        log.info("Running gRPC ModelServer at %s ...", address)
        if v["grpc_socket_path"]:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", v["grpc_socket_path"])
        if v["rest_api_port"]:
            api = RestApi(self.manager, v["rest_api_timeout_in_ms"], self.metrics, self.prometheus_path)
            self._http = make_http_server(api, host, v["rest_api_port"])
            threading.Thread(target=self._http.serve_forever, name="rest", daemon=True).start()
            log.info("Exporting HTTP/REST API at:%s:%d ...", host, v["rest_api_port"])

    def _server_credentials(self):
        if self.ssl is None:
            return None
        import grpc

        ca = self.ssl.custom_ca.encode() if self.ssl.custom_ca else None
        return grpc.ssl_server_credentials([(self.ssl.server_key.encode(), self.ssl.server_cert.encode())],
                                           root_certificates=ca, require_client_auth=bool(self.ssl.client_verify))

    def _start_config_polling(self) -> None:
        wait = self.values["model_config_file_poll_wait_seconds"]
        if not self.values["model_config_file"] or wait <= 0:
            return
        from . import config as cfg

        def loop() -> None:
            while not self._stop.wait(wait):
                text = self._read_config_text()
                if text is None or text == self._config_text:
                    continue
                try:
                    new = cfg.model_server_config(self.values["model_config_file"])
                    self.manager.apply_config(new)
                    self._config_text = text
                    log.info("Reloaded model config from %s", self.values["model_config_file"])
                except Exception as e:  # noqa: BLE001 - keep serving the previous config
                    log.error("Failed to reload model config %s: %s", self.values["model_config_file"], e)
                    self._config_text = text  # don't retry the same broken text every poll

        threading.Thread(target=loop, name="config-poll", daemon=True).start()

    def wait(self) -> None:
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
        if self._grpc is not None:
            self._grpc.stop(grace=2)
        self.manager.stop()


def run(values: dict) -> int:
    """Run a server from parsed flag values until SIGINT/SIGTERM."""
    _configure_logging(values["verbose"])
    for f in flagmod.FLAGS:
        if not f.supported and values[f.name] != f.default:
            log.warning("--%s is accepted for compatibility with tensorflow_model_server and ignored", f.name)
    from .errors import ServingError

    try:
        configs = Configs(values)
    except ServingError as e:
        print(f"Failed to start server. Error: {e.code_name}: {e.message}", file=sys.stderr)
        return 1
    _configure_tf(values)
    try:
        server = ModelServer(values, configs)
        server.start()
    except ServingError as e:
        print(f"Failed to start server. Error: {e.code_name}: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"Failed to start server. Error: {e}", file=sys.stderr)
        return 1

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
        values = flagmod.parse(args)
        flagmod.check(values)
    except flagmod.FlagError as e:
        print(f"mtnlp-model-server: {e}\n(run with --help for the list of flags)", file=sys.stderr)
        return 2
    if values["version"]:
        print(VERSION)
        return 0
    return run(values)


if __name__ == "__main__":
    sys.exit(main())
