"""Fixtures for the serving conformance suite.

By default each server is `python -m mtnlp.serving.model_server.main` (what `mtnlp-model-server` runs) started as a
subprocess on free loopback ports. Set MTNLP_SERVING_GRPC=host:port and MTNLP_SERVING_REST=host:port to run the
protocol tests against another server, e.g. real TF Serving, which must then serve the toy models built by
`python -m tests.serving.toy_models DIR --serving-root /models` with `--model_config_file=/models/models.config`
(see serving/README.md). Tests that need to start, reconfigure or break a server of their own are skipped then.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

REPO = Path(__file__).resolve().parents[2]
EXTERNAL_GRPC = os.environ.get("MTNLP_SERVING_GRPC")
EXTERNAL_REST = os.environ.get("MTNLP_SERVING_REST")
LOCAL_ONLY = pytest.mark.skipif(
    bool(EXTERNAL_GRPC),
    reason="needs a server process of its own (MTNLP_SERVING_GRPC points the suite at an external server)",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command() -> list[str]:
    exe = shutil.which("mtnlp-model-server", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "mtnlp.serving.model_server.main"]


class ServerProcess:
    """A model server subprocess on free loopback ports; its log goes to a file read on failure."""

    def __init__(self, flags: list[str], log_dir: Path, rest: bool = True) -> None:
        self.grpc_port = free_port()
        self.rest_port = free_port() if rest else 0
        self.log_path = log_dir / f"server-{self.grpc_port}.log"
        args = server_command() + [
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            "--bind_address=127.0.0.1",
            *flags,
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO), env=env)
        self.args = args

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest(self) -> str:
        return f"127.0.0.1:{self.rest_port}"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> ServerProcess:
        """Until the gRPC port accepts connections (the server opens it after the initial loads)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=0.5):
                    pass
                if not self.rest_port:
                    return self
                with socket.create_connection(("127.0.0.1", self.rest_port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        log = self.log()
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{log[-3000:]}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@dataclass
class Endpoint:
    grpc: str
    rest: str | None
    process: ServerProcess | None  # None when external


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy SavedModels (built once per session, ~5 s)."""
    from tests.serving.toy_models import build_all

    return build_all(tmp_path_factory.mktemp("toy_models"))


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server_logs")


@pytest.fixture(scope="session")
def monitoring_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("monitoring") / "monitoring.config"
    p.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    return p


@pytest.fixture(scope="session")
def server(toy_dir: Path, server_logs: Path, monitoring_config: Path) -> Iterator[Endpoint]:
    """The shared server: half_plus_two (versions 1, 2; labels stable=1, canary=2), tf1_half_plus_two, tf2_padded
    (version 123 from 00000123/) and tf1_half_plus_three."""
    if EXTERNAL_GRPC:
        yield Endpoint(EXTERNAL_GRPC, EXTERNAL_REST, None)
        return
    proc = ServerProcess(
        [
            f"--model_config_file={toy_dir / 'models.config'}",
            f"--monitoring_config_file={monitoring_config}",
            "--max_num_load_retries=0",
        ],
        server_logs,
    ).wait_ready()
    yield Endpoint(proc.grpc, proc.rest, proc)
    proc.stop()


@pytest.fixture
def start_server(server_logs: Path) -> Iterator:
    """Factory: start_server(*flags, ready=True) -> ServerProcess, stopped after the test."""
    started: list[ServerProcess] = []

    def start(*flags: str, ready: bool = True, rest: bool = True, timeout: float = 90.0) -> ServerProcess:
        p = ServerProcess(list(flags), server_logs, rest=rest)
        started.append(p)
        return p.wait_ready(timeout) if ready else p

    yield start
    for p in started:
        p.stop()


@pytest.fixture(scope="session")
def grpc_client(server: Endpoint):
    from mtnlp.serving.client import ServingClient

    with ServingClient(server.grpc, model_name="half_plus_two", timeout=30) as c:
        c.wait_until_available(60)
        for model in ("tf1_half_plus_two", "tf2_padded", "tf1_half_plus_three"):
            c.wait_until_available(60, model_name=model)
        yield c


@pytest.fixture(scope="session")
def rest_base(server: Endpoint, grpc_client) -> str:
    if not server.rest:
        pytest.skip("no REST endpoint (set MTNLP_SERVING_REST)")
    return f"http://{server.rest}"


@pytest.fixture(scope="session")
def stub(server: Endpoint, grpc_client):
    """A raw PredictionService stub on the shared server (requests no client library would send)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(server.grpc, options=[("grpc.max_send_message_length", -1)])
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def post_json(url: str, body: bytes) -> tuple[int, dict]:
    """POST raw bytes as JSON; -> (HTTP status, the JSON answer), error statuses included."""
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def version_states(client, model: str | None = None) -> dict[int, str]:
    """{version: state name} from GetModelStatus."""
    from tensorflow_serving.apis import get_model_status_pb2

    state = get_model_status_pb2.ModelVersionStatus.State
    return {s.version: state.Name(s.state) for s in client.status(model_name=model).model_version_status}


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """Poll until predicate() is truthy (returns it) or fail the test."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last_exc}" if last_exc else ""))
