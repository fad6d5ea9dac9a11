"""The one table from the core's error codes to HTTP statuses and gRPC codes.

Errors cross the Ray boundary as plain dicts (`error_payload`), never as
pickled exceptions, so every transport sees the same code, field and message.
"""

from __future__ import annotations

import logging
from typing import Any

from aligner.errors import AlignerError, InvalidRequest, Overloaded

log = logging.getLogger(__name__)

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


class Remote(AlignerError):
    """An error another replica reported as a payload, carried with its code, field and message intact."""

    def __init__(self, payload: dict[str, Any]):
        super().__init__(payload["message"])
        self.payload = payload


def error_payload(exc: BaseException) -> dict[str, Any]:
    """A JSON-safe description of `exc`: code, message, and field / retry_after_s where they apply.

    Anything that is not an AlignerError is an internal error: logged here with
    its traceback, reported to the client without internals.
    """
    if isinstance(exc, Remote):
        return dict(exc.payload)
    if isinstance(exc, AlignerError):
        payload = {"code": exc.code, "message": exc.message}
        if isinstance(exc, InvalidRequest):
            payload["field"] = exc.field
        if isinstance(exc, Overloaded):
            payload["retry_after_s"] = exc.retry_after_s
        return payload
    log.error("internal error", exc_info=exc)
    return {"code": "internal", "message": f"internal error ({type(exc).__name__}); see the server log"}


def http_status(code: str) -> int:
    return ERROR_TABLE.get(code, ERROR_TABLE["internal"])[0]


def grpc_code(code: str) -> str:
    return ERROR_TABLE.get(code, ERROR_TABLE["internal"])[1]


def native_body(payload: dict[str, Any]) -> dict[str, Any]:
    """`{"error": {"code", "field", "message"}}` for the native routes."""
    return {"error": {"code": payload["code"], "field": payload.get("field"), "message": payload["message"]}}


def openai_body(payload: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's error object: message, type, param (the field), code."""
    kind = ERROR_TABLE.get(payload["code"], ERROR_TABLE["internal"])[2]
    return {"error": {"message": payload["message"], "type": kind, "param": payload.get("field"), "code": payload["code"]}}


def retry_headers(payload: dict[str, Any]) -> dict[str, str]:
    retry = payload.get("retry_after_s")
    return {} if retry is None else {"Retry-After": str(max(1, round(retry)))}
