"""The training's distribution strategy (``training.strategy``) and what each worker may write.

- ``mirrored``: ``tf.distribute.MirroredStrategy`` over the devices of this machine (model/devices.py).
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy``, TF's collective all-reduce over the workers
  that the ``TF_CONFIG`` environment variable names (``{"cluster": {"worker": ["host:port", ...]}, "task":
  {"type": "worker", "index": i}}``), as Kubeflow's training operator (TFJob) and Vertex AI's worker pools set
  it. Every worker runs the same training; the global batch (``training.batch_size``) is split across all
  replicas of all workers, and the input is sharded by element (``AutoShardPolicy.DATA``), so that within a
  step no example is seen by two workers. As TF's multi-worker guide prescribes, every worker saves (saving
  may need the other workers' collectives), but only the chief writes where the outputs belong; the others
  write to a temporary directory that is deleted afterwards (``output_dirs``).

The strategy must be built before the process runs any other TensorFlow op (the collectives are configured
when the eager context starts): ``run_fn`` builds it first thing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import tensorflow as tf

from mtnlp.model import devices

log = logging.getLogger(__name__)


# custom_config keys of the Trainer launchers (TFX's Vertex AI trainer, components/tfjob_trainer.py): read by
# the executor that starts the workers, not settings of the training
LAUNCHER_KEYS = ("ai_platform_training_args", "ai_platform_enable_vertex", "ai_platform_vertex_region", "mtnlp_tfjob")


class DistributionError(RuntimeError):
    pass


def training_settings(custom_config: dict) -> dict:
    """The Trainer's custom_config without its launcher's keys: the run's PipelineConfig as JSON."""
    return {key: value for key, value in custom_config.items() if key not in LAUNCHER_KEYS}


def tf_config() -> dict | None:
    """The parsed ``TF_CONFIG``, None when unset; a malformed one is an error that shows it."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None
    try:
        parsed = json.loads(text)
        workers = parsed["cluster"]["worker"]
        parsed["task"]["type"], int(parsed["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise DistributionError(
            f"TF_CONFIG is not a cluster description ({type(e).__name__}: {e}); expected e.g. "
            '{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}; got '
            f"{text[:300]!r}"
        ) from None
    if not isinstance(workers, list) or not workers:
        raise DistributionError(f"TF_CONFIG's cluster.worker must be a non-empty list of host:port, got {workers!r}")
    return parsed


def make_strategy(strategy: str, cpu_replicas: int) -> tf.distribute.Strategy:
    """``training.strategy`` built: see the module docstring."""
    if strategy == "mirrored":
        return devices.make_strategy(cpu_replicas)
    if strategy != "multi_worker":
        raise DistributionError(f"unknown training.strategy {strategy!r}")
    cluster = tf_config()
    if cluster is None:
        log.warning("training.strategy=multi_worker without TF_CONFIG: training as a single worker")
    if cpu_replicas > 1:
        log.warning(
            "training.cpu_replicas=%d is ignored by multi_worker: each worker trains on its GPUs, "
            "else on one CPU device",
            cpu_replicas,
        )
    multi_worker = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = multi_worker.cluster_resolver
    log.warning(
        "MultiWorkerMirroredStrategy: %s %s of %d worker(s), %d replica(s) in sync",
        resolver.task_type,
        resolver.task_id,
        len((cluster or {}).get("cluster", {}).get("worker", [None])),
        multi_worker.num_replicas_in_sync,
    )
    return multi_worker


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: always, except a multi-worker run's non-chief workers (the
    chief is the ``chief`` task, or worker 0 when the cluster has no ``chief``)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


@contextlib.contextmanager
def output_dirs(strategy: tf.distribute.Strategy, paths: Sequence[str]) -> Iterator[list[str]]:
    """The chief gets ``paths``; another worker gets the same names under a temporary directory, deleted on exit."""
    if is_chief(strategy):
        yield list(paths)
        return
    scratch = tempfile.mkdtemp(prefix=f"mtnlp-worker{strategy.cluster_resolver.task_id}-")
    try:
        yield [os.path.join(scratch, str(i), os.path.basename(p.rstrip("/"))) for i, p in enumerate(paths)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns when every worker has called it: TFX's Trainer executor checks, right after ``run_fn``, that the
    model exists, which a worker that finishes before the chief has written it would fail."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


def shard_by_example(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker takes its own part of every global batch (together the batch one worker would train on),
    whatever the number of input files (file sharding would need at least one file per worker)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def prepare_fit(model, strategy: tf.distribute.Strategy, train_data: tf.data.Dataset) -> None:
    """Works around two faults of Keras 3's ``fit`` under MultiWorkerMirroredStrategy (tensorflow/tensorflow#72388):

    - before the first step, ``fit`` and ``evaluate`` all-reduce a whole distributed input batch across the workers
      only to learn its shapes, which fails for nested inputs (and would need equal padded lengths on every
      worker): the model, its losses, metrics and optimizer are built here from one local batch instead, and that
      step is skipped;
    - each step's logs (scalars) are averaged across workers with ``reduce(..., axis=0)``, which fails on a scalar:
      they are averaged over the replicas instead (``axis=None``), as MirroredStrategy does.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    with strategy.scope():
        model._symbolic_build(data_batch=next(iter(train_data)))  # builds only what is not built yet
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    reduce_per_replica = getattr(
        keras_tf_trainer.reduce_per_replica, "keras_reduce_per_replica", keras_tf_trainer.reduce_per_replica
    )

    def reduce_logs(values, strategy, reduction):
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and reduction in ("auto", "mean"):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    reduce_logs.keras_reduce_per_replica = reduce_per_replica
    keras_tf_trainer.reduce_per_replica = reduce_logs
