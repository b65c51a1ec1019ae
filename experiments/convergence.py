"""Training to convergence for the studies: early stopping on the heads' own validation metrics, a wall-clock
budget, and what a trained model costs to serve.

Imported only where a model trains (it imports Keras); ``experiments/mtl_vs_stl.py`` runs each model in a
process of its own and uses these there.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras

log = logging.getLogger("mtnlp")


def primary_scores(signatures: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, float]:
    """Each head's primary metric, scored through ``signatures`` on ``data`` (task -> ``TaskData``) with the
    pipeline's metrics (``serving/evaluate.py``)."""
    from mtnlp.serving.evaluate import evaluate_signatures

    scored, _ = evaluate_signatures(signatures, data)
    return {r.head: r.metrics[_primary_metric(r.head)] for r in scored}


def _primary_metric(head_name: str) -> str:
    from mtnlp.model.tasks import get_head

    return get_head(head_name).primary_metric


class EarlyStoppingOnPrimaryMetrics(keras.callbacks.Callback):
    """Early stopping on the model's own validation scores: each head's primary metric (entity F1, BLEU,
    macro-F1... as the Evaluator computes them), scored through the model's serving signatures at every
    validation point (epoch end). Training stops once no head has beaten its own best by more than
    ``min_delta`` for ``patience`` points: a multi-task model stops when its last head has converged, not when
    the mean stalls because one head's noisy score peaked early while another still climbs. The weights of the
    point with the best mean over the heads (the one model that would be served) are restored at the end.

    Args:
        make_signatures: builds the serving signatures of the model being trained (called once, at the first
            validation point: the traced functions read the model's variables, so later points see new weights).
        selection_data: task name -> ``TaskData``, the validation records scored at each point.
        examples_per_step: task name -> examples of that task in one optimizer step (batch size x the
            task's sampling weight), so each point also says how many examples of each task were seen.
        patience: validation points without improvement before training stops.
        min_delta: the smallest rise of the mean that counts as an improvement.
        log_prefix: put before each log line (the run's position in the study).
    """

    def __init__(
        self,
        make_signatures: Callable[[], Mapping[str, Any]],
        selection_data: Mapping[str, Any],
        examples_per_step: Mapping[str, float],
        patience: int,
        min_delta: float = 1e-4,
        log_prefix: str = "",
    ):
        super().__init__()
        self._make_signatures, self._data = make_signatures, selection_data
        self._examples_per_step, self.patience, self.min_delta = dict(examples_per_step), patience, min_delta
        self._prefix = log_prefix
        self._signatures: Mapping[str, Any] | None = None
        self.points: list[dict[str, Any]] = []
        self.best_score, self.best_step, self.stopped_early = float("-inf"), 0, False
        self._best_weights: list | None = None
        self._best_per_head: dict[str, float] = {}
        self._since_improvement = 0

    def on_epoch_end(self, epoch, logs=None):
        if self._signatures is None:
            self._signatures = self._make_signatures()
        step = int(self.model.optimizer.iterations.numpy())
        scores = primary_scores(self._signatures, self._data)
        mean = statistics.fmean(scores.values())
        self.points.append(
            {
                "step": step,
                "examples": {t: round(step * n) for t, n in self._examples_per_step.items()},
                "primary": scores,
                "mean_primary": mean,
            }
        )
        if mean > self.best_score:
            self.best_score, self.best_step = mean, step
            self._best_weights = self.model.get_weights()
        improved = [h for h, v in scores.items() if v > self._best_per_head.get(h, float("-inf")) + self.min_delta]
        for head in improved:
            self._best_per_head[head] = scores[head]
        self._since_improvement = 0 if improved else self._since_improvement + 1
        log.warning(
            "%sstep %d: %s  mean %.4f (best %.4f at step %d)",
            self._prefix,
            step,
            "  ".join(f"{h}={v:.4f}" for h, v in scores.items()),
            mean,
            self.best_score,
            self.best_step,
        )
        if self._since_improvement >= self.patience:
            log.warning(
                "%sno head improved for %d validation points: stopping at step %d", self._prefix, self.patience, step
            )
            self.stopped_early = True
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)


class TimeBudget(keras.callbacks.Callback):
    """Stops training once ``seconds`` of wall-clock time have passed (checked after every step); the
    validation point of the interrupted epoch still runs.

    Args:
        seconds: the budget, counted from the start of ``fit``.
        log_prefix: put before the log line that says the budget is spent.
    """

    def __init__(self, seconds: float, log_prefix: str = ""):
        super().__init__()
        self.seconds, self._prefix, self._start, self.spent = seconds, log_prefix, 0.0, False

    def on_train_begin(self, logs=None):
        self._start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if not self.spent and time.time() - self._start > self.seconds:
            log.warning("%stime budget of %.0f s spent", self._prefix, self.seconds)
            self.spent = True
            self.model.stop_training = True


def serving_latency_ms(
    signatures: Mapping[str, Any], requests: Sequence[tuple[str, Mapping[str, Any]]], repeats: int = 20
) -> dict[str, float]:
    """Median milliseconds of one call per ``(signature, inputs)``, each a one-example request, after
    three warm-up calls (the first call of a signature traces nothing more, but warms caches)."""
    latency = {}
    for name, inputs in requests:
        function = signatures[name]
        for _ in range(3):
            function(**inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            function(**inputs)
            times.append((time.perf_counter() - start) * 1000)
        latency[name] = round(statistics.median(times), 2)
    return latency


def peak_memory_mb() -> int:
    """This process's peak resident memory, in MB: ``VmHWM`` of ``/proc/self/status``, which counts from the
    process's own start (``getrusage``'s maximum carries the parent's peak over into a spawned child)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
