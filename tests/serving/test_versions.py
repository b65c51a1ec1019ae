"""Version lifecycle: polling, policies, labels, failed versions, config reload (RPC and polling), safe swaps."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from mtnlp.serving.client import RestClient, ServingClient, ServingClientError
from tests.serving.toy_models import copy_version

from .conftest import LOCAL_ONLY, version_states, wait_for

pytestmark = LOCAL_ONLY
State = get_model_status_pb2.ModelVersionStatus.State


@pytest.fixture
def base(tmp_path: Path, toy_dir: Path) -> Path:
    """A model directory holding only version 1 of half_plus_two (y = 0.5x + 2)."""
    b = tmp_path / "hpt"
    b.mkdir()
    copy_version(toy_dir / "half_plus_two" / "1", b / "1")
    return b


def y0(client: ServingClient, **kw) -> float:
    return float(client.predict({"x": [0.0]}, **kw)["y"][0])


def config_text(*models: tuple[str, Path, str]) -> str:
    body = "".join(
        f'  config {{ name: "{n}" base_path: "{p}" model_platform: "tensorflow" {extra} }}\n' for n, p, extra in models
    )
    return "model_config_list {\n" + body + "}\n"


def test_new_version_is_loaded_and_old_one_unloaded(start_server, base, toy_dir):
    p = start_server("--model_name=hpt", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1")
    with ServingClient(p.grpc, model_name="hpt") as c:
        assert y0(c) == 2.0
        copy_version(toy_dir / "half_plus_two" / "2", base / "2")
        wait_for(lambda: y0(c) == 3.0, what="version 2 to serve")
        wait_for(lambda: version_states(c) == {2: "AVAILABLE", 1: "END"}, what="version 1 to be unloaded")
        with pytest.raises(ServingClientError) as e:
            c.predict({"x": [0.0]}, version=1)
        assert e.value.code == "NOT_FOUND"


def test_failed_version_is_reported_and_never_replaces_serving_one(start_server, base, toy_dir):
    p = start_server(
        "--model_name=hpt", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1", "--max_num_load_retries=0"
    )
    with ServingClient(p.grpc, model_name="hpt") as c:
        copy_version(toy_dir / "broken" / "3", base / "3")

        def failed():
            st = {s.version: s for s in c.status().model_version_status}
            return 3 in st and st[3].state == State.Value("END") and st[3].status.error_code != 0

        wait_for(failed, what="version 3 to fail")
        st = {s.version: s for s in c.status().model_version_status}
        assert st[3].status.error_message
        assert st[1].state == State.Value("AVAILABLE")
        for _ in range(3):  # poll cycles later, still version 1
            assert y0(c) == 2.0
            time.sleep(0.5)
        rest = RestClient(p.rest, model_name="hpt").status()
        v3 = next(v for v in rest["model_version_status"] if v["version"] == "3")
        assert v3["state"] == "END" and v3["status"]["error_code"] != "OK" and v3["status"]["error_message"]


def test_swap_under_load_drops_no_request(start_server, base, toy_dir):
    p = start_server("--model_name=hpt", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1")
    errors: list[str] = []
    seen: list[float] = []
    stop = threading.Event()

    def hammer() -> None:
        with ServingClient(p.grpc, model_name="hpt", retries=0) as c:
            while not stop.is_set():
                try:
                    seen.append(y0(c))
                except Exception as e:  # noqa: BLE001 - every failure counts
                    errors.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        copy_version(toy_dir / "half_plus_two" / "2", base / "2")
        with ServingClient(p.grpc, model_name="hpt") as c:
            wait_for(lambda: version_states(c) == {2: "AVAILABLE", 1: "END"}, what="the swap to finish")
        n = len(seen)
        wait_for(lambda: len(seen) > n + 50, what="requests after the swap")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    assert 2.0 in seen and 3.0 in seen and set(seen) == {2.0, 3.0}
    assert seen[-1] == 3.0


def test_version_policies_labels_and_reload_rpc(start_server, tmp_path, toy_dir):
    base = tmp_path / "hpt"
    base.mkdir()
    for v in ("1", "2"):
        copy_version(toy_dir / "half_plus_two" / v, base / v)
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(("hpt", base, "model_version_policy { specific { versions: 1 } }")))
    p = start_server(f"--model_config_file={cfg}", "--max_num_load_retries=0")
    with ServingClient(p.grpc, model_name="hpt") as c:
        assert version_states(c) == {1: "AVAILABLE"}  # specific: only version 1
        assert y0(c) == 2.0

        new = text_format.Parse(
            config_text(
                (
                    "hpt",
                    base,
                    'model_version_policy { all {} } version_labels { key: "stable" value: 1 } '
                    'version_labels { key: "canary" value: 2 }',
                ),
                ("tf1", toy_dir / "tf1_half_plus_two", ""),
            ),
            model_server_config_pb2.ModelServerConfig(),
        )
        resp = c.reload_config(new)
        assert resp.status.error_code == 0
        assert version_states(c) == {2: "AVAILABLE", 1: "AVAILABLE"}
        assert y0(c, version_label="stable") == 2.0 and y0(c, version_label="canary") == 3.0
        assert y0(c) == 3.0
        assert float(c.predict({"x": [0.0]}, model_name="tf1")["y"][0]) == 2.0

        # A label on a version that is not available is refused; the previous labels stay.
        bad = text_format.Parse(
            config_text(("hpt", base, 'model_version_policy { all {} } version_labels { key: "stable" value: 7 }')),
            model_server_config_pb2.ModelServerConfig(),
        )
        with pytest.raises(ServingClientError) as e:
            c.reload_config(bad)
        assert e.value.code == "FAILED_PRECONDITION" and "7" in e.value.message

        # Adding a model that cannot load fails the reload with the load error; what served keeps serving.
        with_broken = text_format.Parse(
            config_text(("hpt", base, "model_version_policy { all {} }"), ("broken", toy_dir / "broken", "")),
            model_server_config_pb2.ModelServerConfig(),
        )
        with pytest.raises(ServingClientError) as e:
            c.reload_config(with_broken)
        assert "did not become available" in e.value.message and "broken" in e.value.message
        assert y0(c) == 3.0
        assert version_states(c, "broken") == {3: "END"}

        # latest { num_versions: 1 } and the tf1 model dropped from the config.
        latest = text_format.Parse(
            config_text(("hpt", base, "model_version_policy { latest { num_versions: 1 } }")),
            model_server_config_pb2.ModelServerConfig(),
        )
        assert c.reload_config(latest).status.error_code == 0
        wait_for(lambda: version_states(c) == {2: "AVAILABLE", 1: "END"}, what="version 1 to be unloaded")
        with pytest.raises(ServingClientError) as e:
            c.predict({"x": [0.0]}, model_name="tf1")
        assert e.value.code == "NOT_FOUND"


def test_model_config_file_polling(start_server, tmp_path, base, toy_dir):
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(("hpt", base, "")))
    p = start_server(f"--model_config_file={cfg}", "--model_config_file_poll_wait_seconds=1")
    with ServingClient(p.grpc, model_name="hpt") as c:
        with pytest.raises(ServingClientError):
            c.status(model_name="tf1")
        cfg.write_text(config_text(("hpt", base, ""), ("tf1", toy_dir / "tf1_half_plus_two", "")))
        wait_for(lambda: version_states(c, "tf1") == {1: "AVAILABLE"}, what="tf1 to be added by polling")
        # A malformed config is logged and ignored: everything keeps serving.
        cfg.write_text("model_config_list { config { name: ")
        time.sleep(2.5)
        assert y0(c) == 2.0 and float(c.predict({"x": [0.0]}, model_name="tf1")["y"][0]) == 2.0
        assert p.proc.poll() is None
        assert "Failed to reload model config" in p.log()


def test_startup_fails_when_a_version_cannot_load(start_server, tmp_path, toy_dir):
    base = tmp_path / "broken"
    base.mkdir()
    copy_version(toy_dir / "broken" / "3", base / "3")
    p = start_server("--model_name=broken", f"--model_base_path={base}", "--max_num_load_retries=0", ready=False)
    assert p.wait_exit(90) != 0
    assert "did not become available" in p.log() and "broken" in p.log()


def test_unix_socket(start_server, base, tmp_path):
    sock = tmp_path / "grpc.sock"
    p = start_server("--model_name=hpt", f"--model_base_path={base}", f"--grpc_socket_path={sock}", rest=False)
    with ServingClient(f"unix:{sock}", model_name="hpt") as c:
        assert y0(c) == 2.0
    assert p.proc.poll() is None


def test_queued_reloads_never_starve_inference(start_server, base, tmp_path):
    """Reloads waiting for a model that keeps failing (retried 5 x 60 s by default) must not hold the gRPC workers:
    each honours its deadline, none holds the config lock while loads run, and at most a few run at once."""
    pending = tmp_path / "pending"
    (pending / "1").mkdir(parents=True)  # no saved_model.pb yet: NOT_FOUND, which is retried
    p = start_server("--model_name=hpt", f"--model_base_path={base}", "--grpc_max_threads=8")
    config = text_format.Parse(
        config_text(("hpt", base, ""), ("pending", pending, "")), model_server_config_pb2.ModelServerConfig()
    )
    codes: list[str] = []

    def reload() -> None:
        with ServingClient(p.grpc, model_name="hpt", retries=0) as c:
            try:
                c.reload_config(config, timeout=2.0)
                codes.append("OK")
            except ServingClientError as e:
                codes.append(e.code)

    reloads = [threading.Thread(target=reload) for _ in range(10)]  # more than the 8 gRPC workers
    for t in reloads:
        t.start()
    time.sleep(0.5)
    start = time.monotonic()
    with ServingClient(p.grpc, model_name="hpt", retries=0, timeout=1.0) as c:
        wait_for(
            lambda: y0(c) == 2.0 and version_states(c)[1] == "AVAILABLE",
            timeout=5.0,
            interval=0.05,
            what="Predict and GetModelStatus to answer while the reloads wait",
        )
        recovered = time.monotonic() - start
        for t in reloads:
            t.join(10)
        assert not any(t.is_alive() for t in reloads)
        assert set(codes) <= {"DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"} and len(codes) == 10, codes
        assert version_states(c, "pending") == {1: "LOADING"}  # applied; the load goes on retrying after the deadlines
    print(f"gRPC answered {recovered:.2f} s after 10 queued reloads")


@pytest.mark.parametrize("problem", ["DATA_LOSS", "PERMISSION_DENIED"])
def test_load_errors_that_cannot_succeed_are_not_retried(start_server, tmp_path, toy_dir, problem):
    """An unparsable saved_model.pb or a version outside --allowed_model_roots cannot load on a retry: with the
    default retries (5 x 60 s) start-up must fail at once, not after five minutes."""
    root = tmp_path / "root"
    base = root / "m"
    base.mkdir(parents=True)
    flags = []
    if problem == "DATA_LOSS":  # a saved_model.pb cut short: protobuf cannot parse it
        copy_version(toy_dir / "half_plus_two" / "1", base / "3")
        pb = base / "3" / "saved_model.pb"
        pb.write_bytes(pb.read_bytes()[:2000])
    else:
        (tmp_path / "elsewhere").mkdir()
        copy_version(toy_dir / "half_plus_two" / "1", tmp_path / "elsewhere" / "1")
        (base / "1").symlink_to(tmp_path / "elsewhere" / "1")
        flags.append(f"--allowed_model_roots={root}")
    p = start_server("--model_name=m", f"--model_base_path={base}", *flags, ready=False)
    assert p.wait_exit(60) == 255
    assert f"due to error: {problem}" in p.log()


def test_allowed_model_roots_resolve_every_file_the_loader_opens(start_server, tmp_path, toy_dir):
    """A version directory inside the root whose saved_model.pb and variables are symlinks to a model elsewhere must
    be refused (PERMISSION_DENIED, not retried), as a version directory that is itself such a symlink is."""
    root = tmp_path / "root"
    version = root / "m" / "1"
    version.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy_version(toy_dir / "half_plus_two" / "1", elsewhere / "1")
    for name in ("saved_model.pb", "variables"):
        (version / name).symlink_to(elsewhere / "1" / name)
    p = start_server("--model_name=m", f"--model_base_path={root / 'm'}", f"--allowed_model_roots={root}", ready=False)
    assert p.wait_exit(60) == 255
    assert "due to error: PERMISSION_DENIED" in p.log() and "outside the allowed model roots" in p.log()
