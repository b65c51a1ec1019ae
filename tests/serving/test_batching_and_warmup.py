"""Batching merges concurrent requests per BatchingParameters (observed through the batch size the model saw);
warmup replays assets.extra/tf_serving_warmup_requests before a version serves."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mtnlp.serving.client import ServingClient, ServingClientError

from .conftest import LOCAL_ONLY

pytestmark = LOCAL_ONLY


@pytest.fixture(scope="module")
def batching_server(toy_dir, tmp_path_factory, server_logs, monitoring_config):
    from .conftest import ServerProcess

    params = tmp_path_factory.mktemp("batching") / "batching_parameters.txt"
    params.write_text(
        "max_batch_size { value: 8 }\n"
        "batch_timeout_micros { value: 100000 }\n"
        "max_enqueued_batches { value: 100 }\n"
        "num_batch_threads { value: 1 }\n"
        "allowed_batch_sizes: 2\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n"
        "pad_variable_length_inputs: true\n"
    )
    p = ServerProcess(
        [
            "--model_name=hpt",
            f"--model_base_path={toy_dir / 'half_plus_two'}",
            "--enable_batching",
            f"--batching_parameters_file={params}",
            f"--monitoring_config_file={monitoring_config}",
        ],
        server_logs,
    ).wait_ready()
    yield p
    p.stop()


def concurrent(n: int, fn) -> list:
    barrier = threading.Barrier(n)

    def run(i: int):
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_concurrent_requests_are_merged(batching_server):
    with ServingClient(batching_server.grpc, model_name="hpt", timeout=30) as c:
        c.predict({"x": [0.0]})  # connect first so the burst really is concurrent
        results = concurrent(8, lambda i: c.predict({"x": [float(i)]}))
    sizes = [int(r["batch_size"][0]) for r in results]
    assert [float(r["y"][0]) for r in results] == [0.5 * i + 3.0 for i in range(8)]  # split back in order
    assert max(sizes) > 1, sizes  # the model saw merged batches
    assert all(s in (2, 4, 8) for s in sizes), sizes  # ... padded to an allowed batch size


def test_single_request_padded_to_allowed_size(batching_server):
    with ServingClient(batching_server.grpc, model_name="hpt", timeout=30) as c:
        out = c.predict({"x": [1.0, 2.0, 3.0]})
    assert out["y"].tolist() == [3.5, 4.0, 4.5]  # only the caller's rows come back
    assert out["batch_size"].tolist() == [4, 4, 4]  # 3 rows padded up to allowed size 4


def test_request_over_max_batch_size_rejected(batching_server):
    with ServingClient(batching_server.grpc, model_name="hpt", timeout=30) as c:
        with pytest.raises(ServingClientError) as e:
            c.predict({"x": np.zeros(9, np.float32)})
        assert e.value.code == "INVALID_ARGUMENT" and "larger than maximum" in e.value.message
        assert c.predict({"x": [0.0]})["y"].tolist() == [3.0]


def test_variable_length_inputs_padded(batching_server):
    with ServingClient(batching_server.grpc, model_name="hpt", timeout=30) as c:
        c.predict({"x": np.ones((1, 1), np.float32)}, "seq")
        results = concurrent(4, lambda i: c.predict({"x": np.ones((1, i + 1), np.float32)}, "seq"))
    assert [float(r["total"][0]) for r in results] == [1.0, 2.0, 3.0, 4.0]  # padding is zeros
    merged = [r for r in results if int(r["batch_size"][0]) > 1]
    assert merged, [r["batch_size"].tolist() for r in results]
    assert all(int(r["width"][0]) == 4 for r in merged if int(r["batch_size"][0]) == 4)


def test_batch_sizes_in_metrics(batching_server):
    text = urllib.request.urlopen(f"http://{batching_server.rest}/monitoring/prometheus/metrics", timeout=30).read()
    line = next(
        ln
        for ln in text.decode().splitlines()
        if ln.startswith(":tensorflow:serving:batching_session:processed_batch_size_count")
    )
    assert int(line.rsplit(" ", 1)[1]) > 0


@pytest.mark.parametrize("flag,expected_calls", [([], 1 + 3), (["--enable_model_warmup=false"], 1)])
def test_warmup_replayed_before_serving(start_server, toy_dir, flag, expected_calls):
    p = start_server(
        "--model_name=warmup_counter", f"--model_base_path={toy_dir / 'warmup_counter'}", *flag, rest=False
    )
    with ServingClient(p.grpc, model_name="warmup_counter") as c:
        assert int(c.predict({"x": [1.0]})["calls"][0]) == expected_calls
    if not flag:
        assert "Number of warmup records read: 3" in p.log()


def test_rest_timeout(start_server, toy_dir, tmp_path):
    # A batch that waits 3 s for company outlasts a 300 ms REST timeout: 504 with an error, gRPC still answers.
    params = tmp_path / "slow_batching.txt"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 3000000 }\n")
    p = start_server(
        "--model_name=hpt",
        f"--model_base_path={toy_dir / 'half_plus_two'}",
        "--enable_batching",
        f"--batching_parameters_file={params}",
        "--rest_api_timeout_in_ms=300",
    )
    req = urllib.request.Request(f"http://{p.rest}/v1/models/hpt:predict", data=b'{"instances": [1.0]}', method="POST")
    start = time.monotonic()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 504 and "error" in json.loads(e.value.read())
    assert time.monotonic() - start < 2.5
    with ServingClient(p.grpc, model_name="hpt", timeout=30) as c:
        assert c.predict({"x": [1.0]})["y"].tolist() == [3.5]
