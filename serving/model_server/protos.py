"""TF Serving config messages that the `tensorflow-serving-api` wheel does not ship.


The wheel carries `ModelServerConfig` (config/model_server_config.proto) but not `BatchingParameters`
(servables/tensorflow/session_bundle_config.proto), `MonitoringConfig` (config/monitoring_config.proto) nor `SSLConfig`
(config/ssl_config.proto). We declare those schemas here, with TF Serving's package, message names, field names, numbers and types, so that the very same
text-format files parse identically (and the parser's error messages are protobuf's own). If a later wheel ships the
real modules, they are used instead.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, wrappers_pb2

try:  # pragma: no cover - depends on the wheel
    from tensorflow_serving.servables.tensorflow.session_bundle_config_pb2 import BatchingParameters  # type: ignore
except ImportError:  # the 2.16 wheel: declare it ourselves
    BatchingParameters = None  # type: ignore[assignment]
try:  # pragma: no cover - depends on the wheel
    from tensorflow_serving.config.monitoring_config_pb2 import MonitoringConfig  # type: ignore
except ImportError:
    MonitoringConfig = None  # type: ignore[assignment]

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    msg: descriptor_pb2.DescriptorProto, name: str, number: int, ftype: int, type_name: str = "", repeated: bool = False
) -> None:
    f = msg.field.add(name=name, number=number, type=ftype, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = type_name


def _build() -> tuple[type, type, type]:
    from google.protobuf import message_factory

    pool = descriptor_pool.Default()
    # wrappers.proto must be in the pool for the Int64Value/BoolValue fields.
    pool.FindFileByName(wrappers_pb2.DESCRIPTOR.name)

    batching = descriptor_pb2.FileDescriptorProto(
        name="mtnlp_compat/tensorflow_serving/session_bundle_config_batching.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
    )
    bp = batching.message_type.add(name="BatchingParameters")
    i64, boolv, strv = ".google.protobuf.Int64Value", ".google.protobuf.BoolValue", ".google.protobuf.StringValue"
    _field(bp, "max_batch_size", 1, _F.TYPE_MESSAGE, i64)
    _field(bp, "batch_timeout_micros", 2, _F.TYPE_MESSAGE, i64)
    _field(bp, "max_enqueued_batches", 3, _F.TYPE_MESSAGE, i64)
    _field(bp, "num_batch_threads", 4, _F.TYPE_MESSAGE, i64)
    _field(bp, "thread_pool_name", 5, _F.TYPE_MESSAGE, strv)
    _field(bp, "allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True)
    _field(bp, "pad_variable_length_inputs", 7, _F.TYPE_BOOL)
    _field(bp, "enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, boolv)
    _field(bp, "max_execution_batch_size", 9, _F.TYPE_MESSAGE, i64)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="mtnlp_compat/tensorflow_serving/monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    pc = monitoring.message_type.add(name="PrometheusConfig")
    _field(pc, "enable", 1, _F.TYPE_BOOL)
    _field(pc, "path", 2, _F.TYPE_STRING)
    mc = monitoring.message_type.add(name="MonitoringConfig")
    _field(mc, "prometheus_config", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")

    ssl = descriptor_pb2.FileDescriptorProto(
        name="mtnlp_compat/tensorflow_serving/ssl_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    sc = ssl.message_type.add(name="SSLConfig")
    _field(sc, "server_key", 1, _F.TYPE_STRING)
    _field(sc, "server_cert", 2, _F.TYPE_STRING)
    _field(sc, "custom_ca", 3, _F.TYPE_STRING)
    _field(sc, "client_verify", 4, _F.TYPE_BOOL)

    classes = []
    for fdp, name in (
        (batching, "tensorflow.serving.BatchingParameters"),
        (monitoring, "tensorflow.serving.MonitoringConfig"),
        (ssl, "tensorflow.serving.SSLConfig"),
    ):
        try:
            pool.FindMessageTypeByName(name)
        except KeyError:
            pool.Add(fdp)
        desc = pool.FindMessageTypeByName(name)
        if hasattr(message_factory, "GetMessageClass"):
            classes.append(message_factory.GetMessageClass(desc))
        else:  # protobuf 3.20
            classes.append(message_factory.MessageFactory(pool).GetPrototype(desc))
    return classes[0], classes[1], classes[2]


try:  # pragma: no cover - depends on the wheel
    from tensorflow_serving.config.ssl_config_pb2 import SSLConfig  # type: ignore
except ImportError:
    SSLConfig = None  # type: ignore[assignment]

if BatchingParameters is None or MonitoringConfig is None or SSLConfig is None:
    _bp, _mc, _sc = _build()
    BatchingParameters = BatchingParameters or _bp
    MonitoringConfig = MonitoringConfig or _mc
    SSLConfig = SSLConfig or _sc

__all__ = ["BatchingParameters", "MonitoringConfig", "SSLConfig"]
