"""BatchScheduler semantics in-process (no server): queue limits, large-batch splitting, timeouts, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mtnlp.serving.model_server.batching import BatchOptions, BatchScheduler
from mtnlp.serving.model_server.errors import ServingError


def recorder(delay: float = 0.0, gate: threading.Event | None = None):
    seen: list[int] = []

    def run(key, inputs: dict, deadline=None) -> dict:
        if gate is not None:
            gate.wait(10)
        time.sleep(delay)
        x = inputs["x"]
        seen.append(len(x))
        return {"y": x * 2, "n": np.full(len(x), len(x))}

    return run, seen


def test_full_queue_is_unavailable():
    gate = threading.Event()
    run, seen = recorder(gate=gate)
    s = BatchScheduler(BatchOptions(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1), run)
    try:
        first = threading.Thread(target=s.run, args=("k", {"x": np.array([1.0])}))
        first.start()
        time.sleep(0.2)  # the worker took the first batch and is blocked in the model
        second = threading.Thread(target=s.run, args=("k", {"x": np.array([2.0])}))
        second.start()
        time.sleep(0.2)  # one batch waiting: the queue is full
        with pytest.raises(ServingError) as e:
            s.run("k", {"x": np.array([3.0])})
        assert e.value.code_name == "UNAVAILABLE"
    finally:
        gate.set()
        first.join(5)
        second.join(5)
        s.stop()
    assert seen == [1, 1]


def test_large_batch_splitting():
    run, seen = recorder()
    o = BatchOptions(
        max_batch_size=8,
        max_execution_batch_size=4,
        enable_large_batch_splitting=True,
        allowed_batch_sizes=(2, 4),
        num_batch_threads=1,
    )
    o.validate()
    s = BatchScheduler(o, run)
    try:
        out = s.run("k", {"x": np.arange(7, dtype=np.float32)})
        with pytest.raises(ServingError, match="larger than maximum"):
            s.run("k", {"x": np.zeros(9, np.float32)})
    finally:
        s.stop()
    assert out["y"].tolist() == [0, 2, 4, 6, 8, 10, 12]
    assert sorted(seen) == [4, 4]  # 4 + 3 padded to 4


def test_timeout_collects_sequential_requests():
    run, seen = recorder()
    s = BatchScheduler(BatchOptions(max_batch_size=16, batch_timeout_micros=300_000, num_batch_threads=1), run)
    results: list = []
    try:
        threads = []
        for i in range(3):  # arrive 50 ms apart, all inside the 300 ms window of the first
            t = threading.Thread(target=lambda i=i: results.append(s.run("k", {"x": np.array([float(i)])})))
            t.start()
            threads.append(t)
            time.sleep(0.05)
        for t in threads:
            t.join(5)
    finally:
        s.stop()
    assert seen == [3]
    assert sorted(float(r["y"][0]) for r in results) == [0.0, 2.0, 4.0]


def test_model_error_reaches_every_task_of_the_batch():
    def run(key, inputs, deadline=None):
        raise ServingError(3, "bad batch")

    s = BatchScheduler(BatchOptions(max_batch_size=4, num_batch_threads=1), run)
    try:
        with pytest.raises(ServingError, match="bad batch"):
            s.run("k", {"x": np.array([1.0])})
    finally:
        s.stop()


def test_inputs_must_share_batch_dimension():
    run, _ = recorder()
    s = BatchScheduler(BatchOptions(num_batch_threads=1), run)
    try:
        with pytest.raises(ServingError, match="0th-dimension"):
            s.run("k", {"x": np.zeros(2), "z": np.zeros(3)})
    finally:
        s.stop()
