"""Domain errors of the alignment core.

Every error carries a stable `code`; the transports in `serve/` map codes to
HTTP status and gRPC codes in one table each. The core never knows about
either transport.
"""

from __future__ import annotations


class AlignerError(Exception):
    """Base class: `code` is the stable machine-readable kind of the error."""

    code = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class InvalidRequest(AlignerError):
    """The request is malformed; `field` names the offending field (dotted path)."""

    code = "invalid_argument"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message

    def to_dict(self) -> dict:
        return {"code": self.code, "field": self.field, "message": self.message}


class PromptTooLong(InvalidRequest):
    """The composed prompt plus `max_tokens` does not fit in the model's context."""

    code = "prompt_too_long"

    def __init__(self, prompt_tokens: int, max_tokens: int, max_model_len: int):
        limit = max_model_len - max_tokens
        super().__init__(
            "messages",
            f"the composed prompt has {prompt_tokens} tokens but at most {limit} fit "
            f"(max_model_len {max_model_len} - max_tokens {max_tokens})",
        )
        self.prompt_tokens = prompt_tokens
        self.limit = limit


class ModelUnavailable(AlignerError):
    """The model directory or embedded model cannot be prepared or loaded."""

    code = "model_unavailable"


class EngineUnavailable(AlignerError):
    """The engine is not running, failed, or has been shut down."""

    code = "engine_unavailable"


class ConfigError(AlignerError):
    """The server or model configuration is inconsistent (found at start, not per request)."""

    code = "invalid_config"


class Unauthenticated(AlignerError):
    """No API key, an unknown key, or a revoked key."""

    code = "unauthenticated"


class PermissionDenied(AlignerError):
    """The key is valid but may not do this (not an admin, or another tenant's resource)."""

    code = "permission_denied"


class NotFound(AlignerError):
    """The named resource (key, tenant, model) does not exist."""

    code = "not_found"


class Conflict(AlignerError):
    """The resource changed since the caller read it (or already exists)."""

    code = "conflict"


class VersionConflict(Conflict):
    """A write named an `expected_version` that is no longer the current one (someone changed it first)."""

    code = "version_conflict"


class Overloaded(AlignerError):
    """The server's queue is full; retry after `retry_after_s` seconds."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ServerError(AlignerError):
    """An error a remote server answered, with its code kept (for the CLI's client modes)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def from_payload(error: dict) -> AlignerError:
    """A server's error payload (`{"code", "field", "message"}`) as the core's error, so a client
    reports it as the in-process command would (a field error exits with status 2)."""
    code, message, field = error.get("code", "internal"), error.get("message", "the server failed"), error.get("field")
    if field and code in ("invalid_argument", "prompt_too_long"):
        return InvalidRequest(field, message.removeprefix(f"{field}: "))
    if code == "version_conflict":
        return VersionConflict(message)
    if code == "not_found":
        return NotFound(message)
    return ServerError(code, message)
