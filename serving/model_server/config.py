"""Reading TF Serving's text-format config files; a malformed one fails as in TF Serving (ParseProtoTextFile)."""

from __future__ import annotations

import logging

from google.protobuf import message, text_format
from tensorflow_serving.config import model_server_config_pb2

from .errors import invalid_argument, not_found
from .protos import BatchingParameters, MonitoringConfig, SSLConfig

log = logging.getLogger(__name__)


def parse_text_proto(path: str, proto: message.Message) -> message.Message:
    """Parse a text-format config file as TF Serving's ParseProtoTextFile: a failure is INVALID_ARGUMENT
    "Invalid protobuf file: '<path>'", and the parser's own complaint is logged the way protobuf's C++ parser logs it
    ("Error parsing text-format <message type>: <line>:<column>: <what>")."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError as e:
        raise not_found(f"{path}; No such file or directory") from e
    except (OSError, UnicodeDecodeError) as e:
        raise invalid_argument(f"Cannot read config file '{path}': {e}") from e
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as e:
        log.error("Error parsing text-format %s: %s", proto.DESCRIPTOR.full_name, _parser_complaint(e))
        raise invalid_argument(f"Invalid protobuf file: '{path}'") from e
    return proto


def _parser_complaint(e: text_format.ParseError) -> str:
    """Python's "3:5 : msg" in the C++ parser's "3:5: msg" spelling."""
    text = str(e)
    location, sep, what = text.partition(" : ")
    return f"{location}: {what}" if sep else text


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


def validate_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    which = config.WhichOneof("config")
    if which != "model_config_list":
        raise invalid_argument("ServerModelConfig type not supported. Only ModelConfigList is currently supported")
    seen: set[str] = set()
    for mc in config.model_config_list.config:
        if not mc.name:
            raise invalid_argument("Model config has an empty name")
        if mc.name in seen:
            raise invalid_argument(f"Illegal to list model {mc.name} 2 times in config list")
        seen.add(mc.name)
        if not mc.base_path:
            raise invalid_argument(f"Model {mc.name} has an empty base_path")
        if mc.model_platform not in ("", "tensorflow"):
            raise invalid_argument(
                f"Model {mc.name} has model_platform '{mc.model_platform}'; only 'tensorflow' is supported"
            )
        if (
            mc.model_version_policy.WhichOneof("policy_choice") == "specific"
            and not mc.model_version_policy.specific.versions
        ):
            raise invalid_argument(f"Model {mc.name}: the 'specific' version policy lists no versions")
