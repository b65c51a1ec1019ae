"""Model versions over time: discovery on the file system, version policies, loading, labels, safe swaps.

Availability-preserving like TF Serving's AspiredVersionsManager + AvailabilityPreservingPolicy: a new version is
loaded before an old one is unloaded, a version that fails to load is reported (state END with its error) and never
replaces a serving one, and an unloaded version is only released once its in-flight requests are done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from .batching import BatchOptions, BatchScheduler
from .config import validate_config
from .errors import ServingError, failed_precondition, from_exception, invalid_argument, not_found
from .inference import Servable
from .metrics import Metrics
from .servable import LoadedModel
from .warmup import run_warmup

log = logging.getLogger(__name__)

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class ManagerOptions:
    saved_model_tags: list[str] = field(default_factory=lambda: ["serve"])
    enable_model_warmup: bool = True
    batching: BatchOptions | None = None
    file_system_poll_wait_seconds: int = 1
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    num_load_threads: int = 2
    allow_version_labels_for_unavailable_models: bool = False


@dataclass
class VersionHandle:
    model: str
    version: int
    path: str
    state: str = START
    error: ServingError | None = None
    servable: Servable | None = None
    inflight: int = 0


@dataclass
class ModelEntry:
    config: model_server_config_pb2.ModelConfig
    versions: dict[int, VersionHandle] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    removed: bool = False


def list_versions(base_path: str) -> list[int]:
    try:
        names = os.listdir(base_path)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(base_path, n)))


def aspired_versions(config: model_server_config_pb2.ModelConfig, present: list[int]) -> list[int]:
    policy = config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return list(present)
    if which == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in present if v in wanted]
    n = policy.latest.num_versions if which == "latest" and policy.latest.num_versions > 0 else 1
    return present[-n:]


class Manager:
    def __init__(self, options: ManagerOptions, metrics: Metrics | None = None) -> None:
        self.options = options
        self.metrics = metrics or Metrics()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[str, ModelEntry] = {}
        self._loader = ThreadPoolExecutor(max(1, options.num_load_threads), thread_name_prefix="load")
        self._stop = threading.Event()
        self._config_lock = threading.Lock()  # one config change at a time

    # ----- configuration -------------------------------------------------------------------------------------
    def apply_config(self, config: model_server_config_pb2.ModelServerConfig, *, initial: bool = False,
                     timeout: float | None = None) -> None:
        """Make `config` the served set; wait for its loads; then set labels. Raises ServingError."""
        validate_config(config)
        with self._config_lock:
            wanted = {mc.name: mc for mc in config.model_config_list.config}
            with self._lock:
                for name, entry in list(self._models.items()):
                    if name not in wanted:
                        entry.removed = True
                        for h in entry.versions.values():
                            if h.state == AVAILABLE:
                                self._unload(h)
                        del self._models[name]
                        log.info("Model %s removed from the config: unloading it", name)
                for name, mc in wanted.items():
                    entry = self._models.get(name)
                    if entry is None:
                        self._models[name] = ModelEntry(config=mc)
                        log.info("Adding/updating models: %s (base path %s)", name, mc.base_path)
                    else:
                        entry.config = mc
                    self._reconcile(self._models[name])
            with self._lock:
                added = [n for n in wanted if not any(h.state == AVAILABLE for h in self._models[n].versions.values())]
            self._wait_settled(list(wanted), timeout)
            # At startup every failure is fatal; on a reload, only models that had nothing serving before and still
            # have nothing (TF Serving waits for the models a reload adds).
            check = list(wanted) if initial else [n for n in added if not any(
                h.state == AVAILABLE for h in self._models[n].versions.values())]
            if check:
                failed = [h for n in check for h in self._models[n].versions.values()
                          if h.state == END and h.error is not None]
                if failed:
                    details = ", ".join(f"{{name: {h.model} version: {h.version}}} due to error: {h.error}"
                                        for h in failed)
                    raise ServingError(2, f"{len(failed)} servable(s) did not become available: {details}")
            self._apply_labels(wanted)

    def _apply_labels(self, wanted: dict[str, model_server_config_pb2.ModelConfig]) -> None:
        with self._lock:
            new_labels: dict[str, dict[str, int]] = {}
            for name, mc in wanted.items():
                entry = self._models[name]
                labels = dict(mc.version_labels)
                for label, version in labels.items():
                    h = entry.versions.get(version)
                    if (h is None or h.state != AVAILABLE) and \
                            not self.options.allow_version_labels_for_unavailable_models:
                        raise failed_precondition(
                            f"Request to assign label to version {version} of model {name}, which is not currently "
                            f"available for inference")
                new_labels[name] = labels
            for name, labels in new_labels.items():
                self._models[name].labels = labels

    def _wait_settled(self, names: list[str], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                busy = [h for n in names if n in self._models for h in self._models[n].versions.values()
                        if h.state in (START, LOADING)]
                if not busy:
                    return
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ServingError(4, f"Timed out waiting for {len(busy)} version(s) to load")
                self._changed.wait(remaining if remaining is not None else 1.0)

    # ----- file system polling -------------------------------------------------------------------------------
    def poll_once(self) -> None:
        with self._lock:
            for entry in list(self._models.values()):
                self._reconcile(entry)

    def start_polling(self) -> None:
        wait = self.options.file_system_poll_wait_seconds
        if wait <= 0:  # TF Serving: 0 polls only once (done at config time)
            return

        def loop() -> None:
            while not self._stop.wait(wait):
                try:
                    self.poll_once()
                except Exception:  # noqa: BLE001 - a poll must never kill the poller
                    log.exception("File system poll failed")

        threading.Thread(target=loop, name="fs-poll", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._loader.shutdown(wait=False, cancel_futures=True)

    def _reconcile(self, entry: ModelEntry) -> None:
        """Under the lock: load aspired versions, unload the rest once something aspired is AVAILABLE."""
        mc = entry.config
        present = list_versions(mc.base_path)
        if not present and not entry.versions:
            log.warning("No versions of servable %s found under base path %s", mc.name, mc.base_path)
        aspired = aspired_versions(mc, present)
        # Forget versions whose directory is gone and that are not serving (a failed one may be re-pushed).
        for v in [v for v, h in entry.versions.items() if v not in present and h.state == END]:
            del entry.versions[v]
        for v in sorted(aspired, reverse=True):
            h = entry.versions.get(v)
            if h is None or (h.state == END and h.error is None):
                h = VersionHandle(mc.name, v, os.path.join(mc.base_path, str(v)))
                entry.versions[v] = h
                self.metrics.set_state(mc.name, v, START)
                self._loader.submit(self._load, h)
        aspired_ready = any(entry.versions[v].state == AVAILABLE for v in aspired if v in entry.versions)
        unaspired_ready = sorted(v for v, h in entry.versions.items() if v not in aspired and h.state == AVAILABLE)
        # Keep the newest unaspired one serving while nothing aspired is ready.
        to_unload = unaspired_ready if aspired_ready else unaspired_ready[:-1]
        for v in to_unload:
            self._unload(entry.versions[v])

    # ----- load / unload -------------------------------------------------------------------------------------
    def _set_state(self, h: VersionHandle, state: str) -> None:
        with self._changed:
            h.state = state
            self.metrics.set_state(h.model, h.version, state)
            self._changed.notify_all()

    def _load(self, h: VersionHandle) -> None:
        if self._stop.is_set():
            return
        self._set_state(h, LOADING)
        attempts = 1 + max(0, self.options.max_num_load_retries)
        err: ServingError | None = None
        for attempt in range(attempts):
            if attempt:
                log.info("Retrying load of %s version %d (attempt %d)", h.model, h.version, attempt + 1)
                if self._stop.wait(self.options.load_retry_interval_micros / 1e6):
                    return
            try:
                servable = self._build_servable(h)
            except Exception as e:  # noqa: BLE001 - any failure is this version's load error
                err = from_exception(e)
                self.metrics.inc(":tensorflow:cc:saved_model:load_attempt_count", model_path=h.path,
                                 status=err.code_name)
                log.error("Loading servable: {name: %s version: %d} failed: %s", h.model, h.version, err)
                continue
            self.metrics.inc(":tensorflow:cc:saved_model:load_attempt_count", model_path=h.path, status="success")
            with self._changed:
                h.servable = servable
                h.error = None
                self._set_state(h, AVAILABLE)
                log.info("Successfully loaded servable version {name: %s version: %d}", h.model, h.version)
                entry = self._models.get(h.model)
                if entry is not None and not entry.removed:
                    self._reconcile(entry)  # now older versions may go
                else:
                    self._unload(h)
            return
        with self._changed:
            h.error = err
            self._set_state(h, END)
            entry = self._models.get(h.model)
            if entry is not None:
                self._reconcile(entry)

    def _build_servable(self, h: VersionHandle) -> Servable:
        model = LoadedModel(h.path, self.options.saved_model_tags)
        batcher = None
        if self.options.batching is not None:
            batcher = BatchScheduler(
                self.options.batching,
                run=lambda key, inputs: model.run(model.signatures[key], inputs),
                on_batch=lambda size: self.metrics.observe(
                    ":tensorflow:serving:batching_session:processed_batch_size", size, model_name=h.model))
        servable = Servable(h.model, h.version, model, batcher)
        if self.options.enable_model_warmup:
            start = time.perf_counter()
            try:
                n = run_warmup(servable, h.path)
            except Exception:
                if batcher is not None:
                    batcher.stop()
                raise
            if n:
                self.metrics.observe(":tensorflow:serving:model_warmup_latency",
                                     (time.perf_counter() - start) * 1e6, model_path=h.path, status="OK")
        return servable

    def _unload(self, h: VersionHandle) -> None:
        """Under the lock: stop routing to `h`; release it once its in-flight requests finish."""
        h.state = UNLOADING
        self.metrics.set_state(h.model, h.version, UNLOADING)
        log.info("Unloading servable version {name: %s version: %d}", h.model, h.version)

        def finish() -> None:
            with self._changed:
                while h.inflight:
                    self._changed.wait(1.0)
                servable, h.servable = h.servable, None
                self._set_state(h, END)
            if servable is not None and servable.batcher is not None:
                servable.batcher.stop()

        threading.Thread(target=finish, name="unload", daemon=True).start()

    # ----- request routing -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def acquire(self, spec: model_pb2.ModelSpec) -> Iterator[Servable]:
        """The servable a ModelSpec names, pinned for the duration of the request."""
        with self._lock:
            h = self._resolve(spec)
            h.inflight += 1
            servable = h.servable
        try:
            assert servable is not None
            yield servable
        finally:
            with self._changed:
                h.inflight -= 1
                if not h.inflight:
                    self._changed.notify_all()

    def _resolve(self, spec: model_pb2.ModelSpec) -> VersionHandle:
        entry = self._models.get(spec.name)
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            v = spec.version.value
            h = entry.versions.get(v) if entry else None
            if h is None or h.state != AVAILABLE:
                raise not_found(f"Servable not found for request: Specific({spec.name}, {v})")
            return h
        if choice == "version_label":
            label = spec.version_label
            if entry is None or label not in entry.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            v = entry.labels[label]
            h = entry.versions.get(v)
            if h is None or h.state != AVAILABLE:
                raise not_found(f"Servable not found for request: Specific({spec.name}, {v})")
            return h
        ready = [h for h in (entry.versions.values() if entry else ()) if h.state == AVAILABLE]
        if not ready:
            raise not_found(f"Servable not found for request: Latest({spec.name})")
        return max(ready, key=lambda h: h.version)

    # ----- status --------------------------------------------------------------------------------------------
    def model_status(self, request: get_model_status_pb2.GetModelStatusRequest
                     ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        if not spec.name:
            raise invalid_argument("Missing model name in request.")
        with self._lock:
            entry = self._models.get(spec.name)
            if entry is None or not entry.versions:
                raise not_found(f"Could not find any versions of model {spec.name}")
            choice = spec.WhichOneof("version_choice")
            if choice == "version_label":
                if spec.version_label not in entry.labels:
                    raise invalid_argument(f"Unrecognized servable version label: {spec.version_label}")
                versions = [entry.labels[spec.version_label]]
            elif choice == "version":
                versions = [spec.version.value]
            else:
                versions = sorted(entry.versions, reverse=True)
            response = get_model_status_pb2.GetModelStatusResponse()
            for v in versions:
                h = entry.versions.get(v)
                if h is None:
                    raise not_found(f"Could not find version {v} of model {spec.name}")
                s = response.model_version_status.add(version=v)
                s.state = get_model_status_pb2.ModelVersionStatus.State.Value(h.state)
                if h.error is not None:
                    s.status.error_code = h.error.code
                    s.status.error_message = h.error.message
            return response

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)
