"""Devices for tf.distribute.MirroredStrategy: all GPUs if there are any, else N logical CPU devices.

On a CPU-only machine MirroredStrategy needs one logical CPU device per replica, and they can only
be created before TensorFlow initializes its devices. ``configure_cpu_replicas`` must therefore run
at the start of the process (the local runner does it first thing; on Kubeflow each component is its
own process and ``run_fn`` can do it). ``make_strategy`` refuses to build a strategy over devices
that do not exist: ``MirroredStrategy(["/cpu:0", "/cpu:1"])`` with one logical CPU reports two
replicas and then hangs silently in ``fit``.
"""

from __future__ import annotations

import logging

import tensorflow as tf

log = logging.getLogger(__name__)


class DeviceSetupError(RuntimeError):
    pass


def configure_cpu_replicas(replicas: int) -> None:
    """Splits the CPU into ``replicas`` logical devices (no-op with GPUs, or if already so)."""
    if tf.config.list_physical_devices("GPU") or replicas <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration()] * replicas
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) >= replicas:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError as e:
        raise DeviceSetupError(
            f"Cannot create {replicas} logical CPU devices for MirroredStrategy: TensorFlow has already "
            f"initialized its devices in this process ({e}). Call mtnlp.model.devices.configure_cpu_replicas() "
            "at process start (the local runner does), or set training.cpu_replicas to 1."
        ) from e


def make_strategy(cpu_replicas: int) -> tf.distribute.MirroredStrategy:
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        strategy = tf.distribute.MirroredStrategy()
    else:
        configure_cpu_replicas(cpu_replicas)
        cpus = tf.config.list_logical_devices("CPU")
        if len(cpus) < cpu_replicas:
            raise DeviceSetupError(
                f"MirroredStrategy wants {cpu_replicas} CPU replicas but only {len(cpus)} logical CPU "
                f"device(s) exist: {[d.name for d in cpus]}. Configure them before TensorFlow starts "
                "(mtnlp.model.devices.configure_cpu_replicas) or lower training.cpu_replicas."
            )
        strategy = tf.distribute.MirroredStrategy([d.name for d in cpus[:cpu_replicas]])
    log.info(
        "MirroredStrategy over %d replica(s): %s",
        strategy.num_replicas_in_sync,
        ", ".join(strategy.extended.worker_devices),
    )
    return strategy
