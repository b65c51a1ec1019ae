"""Model versions over time: discovery on the file system, version policies, loading, labels, safe swaps.

Availability-preserving like TF Serving's AspiredVersionsManager + AvailabilityPreservingPolicy: a new version is
loaded before an old one is unloaded, a version that fails to load is reported (state END with its error) and never
replaces a serving one, and an unloaded version is only released once its in-flight requests are done.

Version directories are discovered as TF Serving's FileSystemStoragePathSource does: a child of the base path is a
version when its name parses as an int64 (`strings::safe_strto64`: ASCII digits, optional leading '-', surrounding
ASCII whitespace), so `00000123` is version 123 and is loaded from `00000123/`; anything else is ignored. Failed loads
are retried on a timer rather than in a loader thread, and a retry is cancelled as soon as its version is no longer
aspired (TF Serving's CancelLoadServableRetry), so a broken version never holds up a good one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from .batching import BatchOptions, BatchScheduler
from .config import validate_config
from .errors import (
    CODE_NAMES,
    ServingError,
    deadline_exceeded,
    failed_precondition,
    from_exception,
    invalid_argument,
    not_found,
    permission_denied,
    unknown,
)
from .metrics import Metrics
from .servable import LoadedModel, Servable
from .tensors import RequestLimits
from .warmup import run_warmup

log = logging.getLogger(__name__)

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"

# Load failures that a retry cannot fix, so the version ends at once instead of after --max_num_load_retries ×
# --load_retry_interval_micros (5 minutes by default): a path outside --allowed_model_roots or unreadable
# (PERMISSION_DENIED), a saved_model.pb that does not parse (DATA_LOSS), a bad SavedModel or warmup record
# (INVALID_ARGUMENT), an unsupported one (UNIMPLEMENTED). TF Serving 2.16 retries every failure; a version still
# being copied fails with NOT_FOUND (no saved_model.pb yet) and keeps its retries.
PERMANENT_LOAD_ERRORS = frozenset({3, 7, 12, 15})


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
    session_config: Any = None  # tf.compat.v1.ConfigProto for every model's session
    limits: RequestLimits = RequestLimits()
    enable_signature_method_name_check: bool = False
    # [mtnlp extension] When non-empty, every base path (and the directory a version resolves to) must lie inside
    # one of these directories; TF Serving loads whatever path a config names.
    allowed_model_roots: tuple[str, ...] = ()


@dataclass
class VersionHandle:
    model: str
    version: int
    path: str
    state: str = START
    error: ServingError | None = None  # the last load failure (also while retries are pending)
    servable: Servable | None = None
    inflight: int = 0
    failed_attempts: int = 0
    attempt_running: bool = False
    cancelled: bool = False  # no longer aspired: no further load attempt
    retry_timer: threading.Timer | None = None


@dataclass
class ModelEntry:
    config: model_server_config_pb2.ModelConfig
    versions: dict[int, VersionHandle] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    removed: bool = False
    last_poll_problem: str | None = None  # logged once, not at every poll


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_C_SPACE = " \t\n\v\f\r"  # what C's isspace() accepts in the "C" locale


def parse_version(name: str) -> int | None:
    """A directory name as a version number, exactly as TF Serving's ParseVersionNumber (safe_strto64): optional
    surrounding ASCII whitespace, an optional '-', ASCII digits only, within int64; None otherwise (ignored)."""
    text = name.strip(_C_SPACE)
    digits = text[1:] if text.startswith("-") else text
    if not digits or any(c < "0" or c > "9" for c in digits):
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


def version_directories(base_path: str) -> dict[int, str]:
    """{version: child name} under `base_path`; raises OSError when the base path cannot be listed. Two names for
    one version (`7` and `007`): the later in byte order wins, with TF Serving's warning."""
    found: dict[int, str] = {}
    for child in sorted(os.listdir(base_path)):
        version = parse_version(child)
        if version is None:
            continue
        if version in found:
            log.warning(
                "Duplicate version directories detected. Version %d will be loaded from %s, %s will be ignored.",
                version,
                child,
                found[version],
            )
        found[version] = child
    return found


def within_roots(path: str, roots: tuple[str, ...]) -> bool:
    """Whether `path`, with symlinks resolved, is one of `roots` or lies below one (roots are already resolved)."""
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def first_path_outside(version_dir: str, roots: tuple[str, ...]) -> str | None:
    """The first path under `version_dir` (itself included) that resolves outside `roots`, None if none does.
    Every file the loader may open is checked, so a version directory inside a root whose saved_model.pb or
    variables are symlinks to a model elsewhere is refused like a version directory that is such a symlink."""
    if not within_roots(version_dir, roots):
        return version_dir
    seen: set[str] = set()
    for directory, subdirs, files in os.walk(version_dir, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:  # a symlink loop inside the roots: walk each real directory once
            subdirs[:] = []
            continue
        seen.add(real)
        for name in subdirs + files:
            path = os.path.join(directory, name)
            if not within_roots(path, roots):
                return path
    return None


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
        self._config_lock = threading.Lock()  # one config change at a time (never held while loads run)
        self._config_generation = 0  # bumped by every config change: the latest one sets the labels

    # ----- configuration -------------------------------------------------------------------------------------
    def apply_config(
        self, config: model_server_config_pb2.ModelServerConfig, *, initial: bool = False, timeout: float | None = None
    ) -> None:
        """Make `config` the served set; wait for its loads (at most `timeout` seconds); then set labels. Raises
        ServingError (DEADLINE_EXCEEDED once `timeout` has passed: the new config stays applied and its loads go on).

        The config lock is held only while the served set changes, never while loads (and their retries) run, so a
        reload waiting for a model that keeps failing does not block the next reload, the file-system poller or any
        request."""
        deadline = None if timeout is None else time.monotonic() + timeout
        validate_config(config)
        self._check_roots(config)
        if not self._config_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise deadline_exceeded("Timed out waiting for another config change to finish")
        try:
            self._config_generation += 1
            generation = self._config_generation
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
                added = [n for n in wanted if not any(h.state == AVAILABLE for h in self._models[n].versions.values())]
        finally:
            self._config_lock.release()
        self._wait_settled(list(wanted), None if deadline is None else deadline - time.monotonic())
        with self._config_lock:
            if generation != self._config_generation:
                return  # a newer config was applied meanwhile: its own call reports its loads and sets its labels
            # At startup every failure is fatal; on a reload, only models that had nothing serving before and still
            # have nothing (TF Serving waits for the models a reload adds).
            with self._lock:
                check = (
                    list(wanted)
                    if initial
                    else [
                        n
                        for n in added
                        if n in self._models
                        and not any(h.state == AVAILABLE for h in self._models[n].versions.values())
                    ]
                )
                failed = [
                    h
                    for n in check
                    for h in self._models[n].versions.values()
                    if h.state == END and h.error is not None
                ]
            if failed:
                raise unknown(unavailable_message(failed))
            self._apply_labels(wanted)

    def _check_roots(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        roots = self.options.allowed_model_roots
        if not roots:
            return
        for mc in config.model_config_list.config:
            if not within_roots(mc.base_path, roots):
                raise permission_denied(
                    f"Model {mc.name}: base path {mc.base_path} is outside the allowed model roots "
                    f"({', '.join(roots)}); see --allowed_model_roots"
                )

    def _apply_labels(self, wanted: dict[str, model_server_config_pb2.ModelConfig]) -> None:
        with self._lock:
            new_labels: dict[str, dict[str, int]] = {}
            for name, mc in wanted.items():
                entry = self._models[name]
                labels = dict(mc.version_labels)
                for version in labels.values():
                    h = entry.versions.get(version)
                    if (
                        h is None or h.state != AVAILABLE
                    ) and not self.options.allow_version_labels_for_unavailable_models:
                        raise failed_precondition(
                            f"Request to assign label to version {version} of model {name}, which is not currently "
                            f"available for inference"
                        )
                new_labels[name] = labels
            for name, labels in new_labels.items():
                self._models[name].labels = labels

    def _wait_settled(self, names: list[str], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                busy = [
                    h
                    for n in names
                    if n in self._models
                    for h in self._models[n].versions.values()
                    if h.state in (START, LOADING)
                ]
                if not busy:
                    return
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise deadline_exceeded(
                        f"Timed out waiting for {len(busy)} version(s) to load (the config is "
                        f"applied; they go on loading): "
                        f"{', '.join(f'{h.model} version {h.version}' for h in busy)}"
                    )
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
        with self._lock:
            for entry in self._models.values():
                for h in entry.versions.values():
                    if h.retry_timer is not None:
                        h.retry_timer.cancel()
        self._loader.shutdown(wait=False, cancel_futures=True)

    def _reconcile(self, entry: ModelEntry) -> None:
        """Under the lock: load aspired versions, cancel pending loads of the others, unload the rest once something
        aspired is AVAILABLE."""
        mc = entry.config
        try:
            present = version_directories(mc.base_path)
        except OSError as e:
            # As TF Serving: a base path that cannot be read changes nothing (no reason to unload what serves).
            self._report_poll_problem(
                entry, f"Could not find base path {mc.base_path} for servable {mc.name} with error {e.strerror or e}"
            )
            return
        if not present and not entry.versions:
            self._report_poll_problem(
                entry,
                f"No versions of servable {mc.name} found under base path "
                f"{mc.base_path}. Did you forget to name your leaf directory as a number "
                f"(eg. '/1/')?",
            )
        else:
            entry.last_poll_problem = None
        aspired = aspired_versions(mc, sorted(present))
        # Forget versions whose directory is gone and that are not serving (a failed one may be re-pushed).
        for v in [v for v, h in entry.versions.items() if v not in present and h.state == END]:
            del entry.versions[v]
        for v, h in entry.versions.items():
            if v not in aspired and h.state in (START, LOADING) and not h.cancelled:
                self._cancel_load(h)
        for v in sorted(aspired, reverse=True):  # newest first: the version most likely to be wanted
            h = entry.versions.get(v)
            if h is None or (h.state == END and h.error is None):
                h = VersionHandle(mc.name, v, os.path.join(mc.base_path, present[v]))
                entry.versions[v] = h
                self.metrics.set_state(mc.name, v, START)
                self._loader.submit(self._load, h)
        aspired_ready = any(entry.versions[v].state == AVAILABLE for v in aspired if v in entry.versions)
        unaspired_ready = sorted(v for v, h in entry.versions.items() if v not in aspired and h.state == AVAILABLE)
        # Keep the newest unaspired one serving while nothing aspired is ready.
        to_unload = unaspired_ready if aspired_ready else unaspired_ready[:-1]
        for v in to_unload:
            self._unload(entry.versions[v])

    @staticmethod
    def _report_poll_problem(entry: ModelEntry, message: str) -> None:
        if entry.last_poll_problem != message:
            log.warning("%s", message)
            entry.last_poll_problem = message

    def _cancel_load(self, h: VersionHandle) -> None:
        """Under the lock: no further load attempt of `h` (no longer aspired). An attempt already running finishes
        and is then judged like any other version; a pending retry or a queued load ends now, with the last error."""
        h.cancelled = True
        if h.retry_timer is not None:
            h.retry_timer.cancel()
            h.retry_timer = None
        if not h.attempt_running:
            log.info(
                "Cancelled loading of servable version {name: %s version: %d}: no longer aspired", h.model, h.version
            )
            self._set_state(h, END)

    # ----- load / unload -------------------------------------------------------------------------------------
    def _set_state(self, h: VersionHandle, state: str) -> None:
        with self._changed:
            h.state = state
            self.metrics.set_state(h.model, h.version, state)
            self._changed.notify_all()

    def _load(self, h: VersionHandle) -> None:
        """One load attempt (in a loader thread). A failure schedules the next attempt on a timer, so loader threads
        never sleep through retry intervals while other versions wait."""
        with self._changed:
            if h.cancelled or self._stop.is_set():
                return
            h.retry_timer = None
            h.attempt_running = True
            if h.state != LOADING:
                self._set_state(h, LOADING)
        if h.failed_attempts:
            log.info(
                "Retrying load of servable version {name: %s version: %d} (attempt %d)",
                h.model,
                h.version,
                h.failed_attempts + 1,
            )
        try:
            servable, err = self._build_servable(h), None
        except Exception as e:  # noqa: BLE001 - any failure is this version's load error
            servable, err = None, from_exception(e)
        self.metrics.inc(
            ":tensorflow:cc:saved_model:load_attempt_count",
            model_path=h.path,
            status="success" if err is None else err.code_name,
        )
        with self._changed:
            h.attempt_running = False
            entry = self._models.get(h.model)
            if servable is not None:
                h.servable, h.error = servable, None
                self._set_state(h, AVAILABLE)
                log.info("Successfully loaded servable version {name: %s version: %d}", h.model, h.version)
                if entry is not None and not entry.removed:
                    self._reconcile(entry)  # now older versions may go (and this one, if no longer aspired)
                else:
                    self._unload(h)
                return
            h.error = err
            h.failed_attempts += 1
            log.error("Loading servable: {name: %s version: %d} failed: %s", h.model, h.version, err)
            retries_left = h.failed_attempts <= self.options.max_num_load_retries
            if retries_left and err.code in PERMANENT_LOAD_ERRORS:
                log.error(
                    "Not retrying servable version {name: %s version: %d}: %s cannot succeed by waiting",
                    h.model,
                    h.version,
                    err.code_name,
                )
                retries_left = False
            if retries_left and not h.cancelled and not self._stop.is_set():
                h.retry_timer = threading.Timer(
                    max(0, self.options.load_retry_interval_micros) / 1e6, self._submit_retry, args=(h,)
                )
                h.retry_timer.daemon = True
                h.retry_timer.start()
                self._changed.notify_all()  # the error is visible in the status while the retry waits
                return
            self._set_state(h, END)
            if entry is not None:
                self._reconcile(entry)

    def _submit_retry(self, h: VersionHandle) -> None:
        if not self._stop.is_set():
            self._loader.submit(self._load, h)

    def _build_servable(self, h: VersionHandle) -> Servable:
        roots = self.options.allowed_model_roots
        if roots:
            outside = first_path_outside(h.path, roots)
            if outside is not None:
                raise permission_denied(
                    f"{outside} (in version directory {h.path}) resolves to "
                    f"{os.path.realpath(outside)}, outside the allowed model roots "
                    f"({', '.join(roots)}); see --allowed_model_roots"
                )
        model = LoadedModel(h.path, self.options.saved_model_tags, self.options.session_config)
        batcher = None
        if self.options.batching is not None:
            batcher = BatchScheduler(
                self.options.batching,
                run=lambda key, inputs, deadline: model.run(model.signatures[key[0]], inputs, key[1], deadline),
                on_batch=lambda size: self.metrics.observe(
                    ":tensorflow:serving:batching_session:processed_batch_size", size, model_name=h.model
                ),
            )
        servable = Servable(
            h.model, h.version, model, batcher, self.options.limits, self.options.enable_signature_method_name_check
        )
        if self.options.enable_model_warmup:
            start = time.perf_counter()
            try:
                n = run_warmup(servable, h.path)
            except Exception:
                servable.close()
                raise
            if n:
                self.metrics.observe(
                    ":tensorflow:serving:model_warmup_latency",
                    (time.perf_counter() - start) * 1e6,
                    model_path=h.path,
                    status="OK",
                )
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
            if servable is not None:
                servable.close()

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
    def model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest
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


def unavailable_message(failed: list[VersionHandle]) -> str:
    """TF Serving's startup/reload failure text: `N servable(s) did not become available: {{{name: m version: v}
    due to error: CODE: message}, }`."""
    details = "".join(
        f"{{{{name: {h.model} version: {h.version}}} due to error: "
        f"{CODE_NAMES.get(h.error.code, 'UNKNOWN') if h.error else 'UNKNOWN'}: "
        f"{h.error.message if h.error else ''}}}, "
        for h in failed
    )
    return f"{len(failed)} servable(s) did not become available: {{{details}}}"
