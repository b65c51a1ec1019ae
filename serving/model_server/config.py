"""Reading TF Serving's text-format config files; a malformed one fails with protobuf's parser message."""

from __future__ import annotations

from google.protobuf import message, text_format
from tensorflow_serving.config import model_server_config_pb2

from .errors import invalid_argument
from .protos import BatchingParameters, MonitoringConfig, SSLConfig


def parse_text_proto(path: str, proto: message.Message) -> message.Message:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise invalid_argument(f"Cannot read config file '{path}': {e}") from e
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as e:
        raise invalid_argument(f"Invalid protobuf file: '{path}': {e}") from e
    return proto


def model_server_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    return parse_text_proto(path, model_server_config_pb2.ModelServerConfig())  # type: ignore[return-value]


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    mc = config.model_config_list.config.add()
    mc.name, mc.base_path, mc.model_platform = name, base_path, "tensorflow"
    return config


def batching_parameters(path: str):
    return parse_text_proto(path, BatchingParameters())


def monitoring_config(path: str):
    return parse_text_proto(path, MonitoringConfig())


def ssl_config(path: str):
    return parse_text_proto(path, SSLConfig())
