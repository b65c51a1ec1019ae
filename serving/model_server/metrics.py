"""Counters and histograms in TF Serving's metric names, rendered as Prometheus text.

TF monitoring names like /tensorflow/serving/request_count become :tensorflow:serving:request_count in TF Serving's
Prometheus exporter; we keep that spelling so dashboards work against either server.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

from .errors import from_exception

_LATENCY_BUCKETS_US = (10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Histogram:
    def __init__(self, buckets: tuple[int, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.total += 1
        self.sum += value


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))
        self._hists: dict[str, dict[tuple, _Histogram]] = defaultdict(dict)
        self._labels: dict[str, tuple[str, ...]] = {}
        self._state: dict[tuple[str, int], str] = {}

    def _key(self, name: str, labels: dict[str, str]) -> tuple:
        self._labels.setdefault(name, tuple(labels))
        return tuple(str(labels[k]) for k in self._labels[name])

    def inc(self, name: str, **labels: str) -> None:
        with self._lock:
            self._counters[name][self._key(name, labels)] += 1

    def observe(self, name: str, value: float, **labels: str) -> None:
        buckets = _BATCH_BUCKETS if "batch_size" in name else _LATENCY_BUCKETS_US
        with self._lock:
            key = self._key(name, labels)
            h = self._hists[name].setdefault(key, _Histogram(buckets))
            h.observe(value)

    def set_state(self, model: str, version: int, state: str) -> None:
        with self._lock:
            self._state[(model, version)] = state

    def request(self, model: str, api: str, entrypoint: str, status: str, micros: float) -> None:
        self.inc(":tensorflow:serving:request_count", model_name=model, status=status)
        self.observe(":tensorflow:serving:request_latency", micros, model_name=model, API=api, entrypoint=entrypoint)

    @contextlib.contextmanager
    def timed_request(self, model: str, api: str, entrypoint: str) -> Iterator[None]:
        """Counts and times one request (both front ends); its status is the code of the error it raises, if any."""
        start = time.perf_counter()
        status = "OK"
        try:
            yield
        except Exception as e:
            status = from_exception(e).code_name
            raise
        finally:
            self.request(model, api, entrypoint, status, (time.perf_counter() - start) * 1e6)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                lines.append(f"# TYPE {name} counter")
                for key, value in sorted(series.items()):
                    lines.append(f"{name}{{{self._fmt(name, key)}}} {value}")
            for name, series in sorted(self._hists.items()):
                lines.append(f"# TYPE {name} histogram")
                for key, h in sorted(series.items()):
                    base = self._fmt(name, key)
                    sep = "," if base else ""
                    for b, c in zip(h.buckets, h.counts):
                        lines.append(f'{name}_bucket{{{base}{sep}le="{b}"}} {c}')
                    lines.append(f'{name}_bucket{{{base}{sep}le="+Inf"}} {h.total}')
                    lines.append(f"{name}_sum{{{base}}} {h.sum}")
                    lines.append(f"{name}_count{{{base}}} {h.total}")
            # Load state of every known version (1 for its current state), an addition of ours.
            name = ":mtnlp:serving:model_version_state"
            lines.append(f"# TYPE {name} gauge")
            for (model, version), state in sorted(self._state.items()):
                lines.append(f'{name}{{model_name="{model}",version="{version}",state="{state}"}} 1')
        return "\n".join(lines) + "\n"

    def _fmt(self, name: str, key: tuple) -> str:
        return ",".join(f'{k}="{_escape(v)}"' for k, v in zip(self._labels[name], key))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
