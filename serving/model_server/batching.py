"""Inter-request batching with BatchingParameters semantics (TF Serving's BasicBatchScheduler + BatchingSession).

Concurrent requests to one signature of one servable are queued as tasks. A batch closes when the next task would
not fit `max_batch_size`; a worker (`num_batch_threads` of them) takes the oldest batch once it is full, once
`batch_timeout_micros` has passed since its first task, or at once when the timeout is 0. At most
`max_enqueued_batches` batches wait; more is UNAVAILABLE. The merged batch is padded up to the next
`allowed_batch_sizes` entry, run once, and split back.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from .errors import ServingError, internal, invalid_argument, unavailable


@dataclass(frozen=True)
class BatchOptions:
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0

    @classmethod
    def from_proto(cls, p) -> BatchOptions:
        """Defaults as TF Serving's when a field is absent; invalid combinations are INVALID_ARGUMENT."""

        def wrapped(name: str, default):
            return getattr(p, name).value if p.HasField(name) else default

        o = cls(
            max_batch_size=int(wrapped("max_batch_size", 1000)),
            batch_timeout_micros=int(wrapped("batch_timeout_micros", 0)),
            max_enqueued_batches=int(wrapped("max_enqueued_batches", 10)),
            num_batch_threads=int(wrapped("num_batch_threads", os.cpu_count() or 1)),
            allowed_batch_sizes=tuple(int(s) for s in p.allowed_batch_sizes),
            pad_variable_length_inputs=bool(p.pad_variable_length_inputs),
            enable_large_batch_splitting=bool(wrapped("enable_large_batch_splitting", False)),
            max_execution_batch_size=int(wrapped("max_execution_batch_size", 0)),
        )
        o.validate()
        return o

    @property
    def execution_limit(self) -> int:
        if self.enable_large_batch_splitting and self.max_execution_batch_size > 0:
            return self.max_execution_batch_size
        return self.max_batch_size

    def validate(self) -> None:
        if self.max_batch_size <= 0:
            raise invalid_argument("max_batch_size must be positive")
        if self.num_batch_threads <= 0:
            raise invalid_argument("num_batch_threads must be positive")
        if self.batch_timeout_micros < 0:
            raise invalid_argument("batch_timeout_micros must be non-negative")
        if self.max_enqueued_batches <= 0:
            raise invalid_argument("max_enqueued_batches must be positive")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:])):
                raise invalid_argument("allowed_batch_sizes entries must be monotonically increasing")
            if sizes[-1] != self.execution_limit:
                raise invalid_argument(
                    "Last entry in allowed_batch_sizes must be equal to max_batch_size (or to "
                    "max_execution_batch_size when enable_large_batch_splitting is true)"
                )


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    size: int
    deadline: float | None = None  # time.monotonic() after which nobody waits for the result
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, np.ndarray] | None = None
    error: ServingError | None = None


@dataclass
class _Batch:
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    opened: float = field(default_factory=time.monotonic)
    closed: bool = False


class _Queue:
    def __init__(self) -> None:
        self.batches: deque[_Batch] = deque()


# run(queue key, merged inputs, deadline) -> outputs; the key is what `BatchScheduler.run` was given.
RunBatch = Callable[[Hashable, dict[str, np.ndarray], "float | None"], dict[str, np.ndarray]]


class BatchScheduler:
    """One per servable version: a queue per signature and output selection, shared worker threads (like TF
    Serving's shared scheduler)."""

    def __init__(self, options: BatchOptions, run: RunBatch, on_batch: Callable[[int], None] | None = None) -> None:
        self.options = options
        self._run = run
        self._on_batch = on_batch
        self._cv = threading.Condition()
        self._queues: dict[Hashable, _Queue] = {}
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"batch-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    def run(
        self,
        signature_key: str,
        inputs: dict[str, np.ndarray],
        outputs: tuple[str, ...] | None = None,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Queue `inputs` with other requests for the same signature and outputs; block until its rows are back."""
        key = (signature_key, outputs)
        sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
        if None in sizes or len(sizes) != 1:
            raise invalid_argument("Batching session Run() input tensors must have equal 0th-dimension size")
        size = sizes.pop()
        limit = self.options.execution_limit
        if size > self.options.max_batch_size or (size > limit and not self.options.enable_large_batch_splitting):
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {self.options.max_batch_size}"
            )
        if size > limit:  # split into execution-sized pieces, run them, stitch the outputs together
            pieces = [{k: v[i : i + limit] for k, v in inputs.items()} for i in range(0, size, limit)]
            tasks = [self._enqueue(key, p, min(limit, size - i * limit), deadline) for i, p in enumerate(pieces)]
            results = [self._wait(t) for t in tasks]
            return {k: np.concatenate([r[k] for r in results]) for k in results[0]}
        return self._wait(self._enqueue(key, inputs, size, deadline))

    @staticmethod
    def _wait(task: _Task) -> dict[str, np.ndarray]:
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def _enqueue(self, key: Hashable, inputs: dict[str, np.ndarray], size: int, deadline: float | None) -> _Task:
        task = _Task(inputs, size, deadline)
        o = self.options
        with self._cv:
            q = self._queues.setdefault(key, _Queue())
            open_batch = q.batches[-1] if q.batches and not q.batches[-1].closed else None
            wake = o.batch_timeout_micros == 0
            if open_batch is None or open_batch.size + size > o.execution_limit:
                if open_batch is not None:
                    open_batch.closed = True
                if len(q.batches) >= o.max_enqueued_batches:
                    raise unavailable("The batch scheduling queue to which this task was submitted is full")
                open_batch = _Batch()
                q.batches.append(open_batch)
                wake = True  # a new deadline to wait for
            open_batch.tasks.append(task)
            open_batch.size += size
            if open_batch.size >= o.execution_limit:
                open_batch.closed = True
                wake = True
            # Waking a worker for every task that joins a waiting batch would only cost the GIL: workers wake
            # when a batch opens (new deadline), fills up, or at once when there is no timeout.
            if wake:
                self._cv.notify()
        return task

    def _take(self) -> tuple[Hashable, _Batch] | None:
        """Under the lock: the oldest batch that may run now, else None."""
        timeout = self.options.batch_timeout_micros / 1e6
        now = time.monotonic()
        best = None
        for key, q in self._queues.items():
            if not q.batches:
                continue
            b = q.batches[0]
            if b.closed or now - b.opened >= timeout:
                if best is None or b.opened < best[1].opened:
                    best = (key, b)
        if best is not None:
            self._queues[best[0]].batches.popleft()
            best[1].closed = True
        return best

    def _next_deadline(self) -> float | None:
        timeout = self.options.batch_timeout_micros / 1e6
        heads = [q.batches[0].opened + timeout for q in self._queues.values() if q.batches]
        return min(heads) if heads else None

    def _worker(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stopped:
                        return
                    taken = self._take()
                    if taken is not None:
                        break
                    deadline = self._next_deadline()
                    self._cv.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            self._process(*taken)

    def _process(self, key: Hashable, batch: _Batch) -> None:
        tasks = batch.tasks
        try:
            merged, padded = self._merge(tasks)
            if self._on_batch is not None:
                self._on_batch(padded)
            # The batch runs as long as its most patient request waits (TF Serving's BatchingSession does the same).
            deadlines = [t.deadline for t in tasks]
            out = self._run(key, merged, None if None in deadlines else max(deadlines))
            start = 0
            for t in tasks:
                piece = {}
                for name, arr in out.items():
                    if arr.ndim == 0 or arr.shape[0] != padded:
                        raise internal(
                            f"Batched output tensor '{name}' has shape {list(arr.shape)}, "
                            f"which does not start with the batch size {padded}"
                        )
                    piece[name] = arr[start : start + t.size]
                t.result = piece
                start += t.size
        except Exception as e:  # noqa: BLE001 - every task of the batch gets the batch's error
            from .errors import from_exception

            err = from_exception(e)
            for t in tasks:
                t.error = err
        finally:
            for t in tasks:
                t.done.set()

    def _merge(self, tasks: list[_Task]) -> tuple[dict[str, np.ndarray], int]:
        total = sum(t.size for t in tasks)
        padded = total
        for s in self.options.allowed_batch_sizes:
            if s >= total:
                padded = s
                break
        merged = {}
        for name in tasks[0].inputs:
            parts = [t.inputs[name] for t in tasks]
            if len({p.shape[1:] for p in parts}) > 1:
                if not self.options.pad_variable_length_inputs:
                    raise invalid_argument(
                        f"Tensors with name '{name}' from different tasks have different shapes and padding is "
                        f"turned off. Set pad_variable_length_inputs to true in BatchingParameters."
                    )
                parts = _pad_to_common(parts)
            arr = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if padded > total:  # pad with copies of the first row, as a neutral, valid input
                arr = np.concatenate([arr, np.repeat(arr[:1], padded - total, axis=0)])
            merged[name] = arr
        return merged, padded


def _pad_to_common(parts: list[np.ndarray]) -> list[np.ndarray]:
    rank = parts[0].ndim
    if any(p.ndim != rank for p in parts):
        raise invalid_argument("Tensors of different ranks cannot be batched together")
    target = [max(p.shape[d] for p in parts) for d in range(1, rank)]
    out = []
    for p in parts:
        pad = [(0, 0)] + [(0, t - s) for t, s in zip(target, p.shape[1:])]
        fill = b"" if p.dtype == object else 0
        out.append(np.pad(p, pad, mode="constant", constant_values=fill) if any(x[1] for x in pad) else p)
    return out
