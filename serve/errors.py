"""The one table from the core's error codes to HTTP statuses, gRPC codes and OpenAI error types, and
the renderers of an `ErrorInfo` for each transport.

Errors cross the Ray boundary as `ErrorInfo` data, never as pickled exceptions, so every transport
sees the same code, field and message.
"""

from __future__ import annotations

from typing import Any

from aligner.errors import AlignerError, ErrorInfo, InvalidRequest

# code -> (HTTP status, gRPC status code name, OpenAI error type)
ERROR_TABLE: dict[str, tuple[int, str, str]] = {
    "invalid_argument": (400, "INVALID_ARGUMENT", "invalid_request_error"),
    "prompt_too_long": (400, "INVALID_ARGUMENT", "invalid_request_error"),
    "unauthenticated": (401, "UNAUTHENTICATED", "authentication_error"),
    "permission_denied": (403, "PERMISSION_DENIED", "permission_error"),
    "not_found": (404, "NOT_FOUND", "not_found_error"),
    "method_not_allowed": (405, "UNIMPLEMENTED", "invalid_request_error"),
    "conflict": (409, "ABORTED", "conflict_error"),
    "version_conflict": (409, "ABORTED", "conflict_error"),
    "payload_too_large": (413, "INVALID_ARGUMENT", "invalid_request_error"),
    "unsupported_media_type": (415, "INVALID_ARGUMENT", "invalid_request_error"),
    "overloaded": (429, "RESOURCE_EXHAUSTED", "rate_limit_error"),
    "rate_limited": (429, "RESOURCE_EXHAUSTED", "rate_limit_error"),
    "reward_failed": (500, "INTERNAL", "server_error"),
    "invalid_config": (500, "INTERNAL", "server_error"),
    "internal": (500, "INTERNAL", "server_error"),
    "engine_unavailable": (503, "UNAVAILABLE", "server_error"),
    "model_unavailable": (503, "UNAVAILABLE", "server_error"),
    "deadline_exceeded": (504, "DEADLINE_EXCEEDED", "timeout_error"),
}


class PayloadTooLarge(AlignerError):
    """A request over `max_body_bytes` (HTTP body or gRPC message), refused before it is parsed."""

    code = "payload_too_large"


class UnsupportedMediaType(InvalidRequest):
    """An HTTP body whose Content-Type is not the one its route reads (415); the field is `Content-Type`."""

    code = "unsupported_media_type"

    def __init__(self, message: str):
        super().__init__("Content-Type", message)


def http_status(code: str) -> int:
    return ERROR_TABLE.get(code, ERROR_TABLE["internal"])[0]


def grpc_code(code: str) -> str:
    return ERROR_TABLE.get(code, ERROR_TABLE["internal"])[1]


def native_body(error: ErrorInfo) -> dict[str, Any]:
    """`{"error": {"code", "field", "message"}}` for the native routes."""
    return {"error": {"code": error.code, "field": error.field, "message": error.message}}


def openai_body(error: ErrorInfo) -> dict[str, Any]:
    """OpenAI's error object: message, type, param (the field), code."""
    kind = ERROR_TABLE.get(error.code, ERROR_TABLE["internal"])[2]
    return {"error": {"message": error.message, "type": kind, "param": error.field, "code": error.code}}


def retry_after(error: ErrorInfo) -> str | None:
    """The Retry-After value (whole seconds, at least 1) of an error that names one."""
    return None if error.retry_after_s is None else str(max(1, round(error.retry_after_s)))


def retry_headers(error: ErrorInfo) -> dict[str, str]:
    retry = retry_after(error)
    return {} if retry is None else {"Retry-After": retry}
