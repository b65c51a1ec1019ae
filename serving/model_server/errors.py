"""Errors carried with TensorFlow's canonical status codes, and their gRPC and HTTP renderings."""

from __future__ import annotations

import grpc

# tensorflow/core/protobuf/error_codes.proto; the same numbers as grpc.StatusCode.
CODE_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

# TF Serving's REST front end maps each status code to one HTTP status (http_server / http_rest_api_handler).
_HTTP_STATUS = {
    0: 200,
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}

_GRPC_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request or load failure with a canonical code, raised anywhere and rendered by the front ends."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message

    @property
    def code_name(self) -> str:
        return CODE_NAMES.get(self.code, "UNKNOWN")

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return _GRPC_BY_VALUE.get(self.code, grpc.StatusCode.UNKNOWN)

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)

    def __str__(self) -> str:
        return self.message


def unknown(message: str) -> ServingError:
    return ServingError(2, message)


def invalid_argument(message: str) -> ServingError:
    return ServingError(3, message)


def deadline_exceeded(message: str) -> ServingError:
    return ServingError(4, message)


def not_found(message: str) -> ServingError:
    return ServingError(5, message)


def permission_denied(message: str) -> ServingError:
    return ServingError(7, message)


def resource_exhausted(message: str) -> ServingError:
    return ServingError(8, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(9, message)


def unimplemented(message: str) -> ServingError:
    return ServingError(12, message)


def unavailable(message: str) -> ServingError:
    return ServingError(14, message)


def internal(message: str) -> ServingError:
    return ServingError(13, message)


def data_loss(message: str) -> ServingError:
    return ServingError(15, message)


def from_exception(exc: BaseException) -> ServingError:
    """Turn whatever the model raised into a ServingError, keeping TF's own code when it has one."""
    if isinstance(exc, ServingError):
        return exc
    code = getattr(exc, "error_code", None)  # tf.errors.OpError
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(code, int) and code in CODE_NAMES and code != 0:
        return ServingError(code, message)
    if isinstance(exc, (TypeError, ValueError)):
        return invalid_argument(message)
    if isinstance(exc, MemoryError):
        return resource_exhausted("Out of memory while serving the request")
    return unknown(f"{type(exc).__name__}: {message}")
