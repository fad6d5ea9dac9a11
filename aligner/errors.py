"""Domain errors of the alignment core.

Every error carries a stable `code`; the transports in `serve/` map codes to
HTTP status and gRPC codes in one table. The core never knows about either
transport. `ErrorInfo` is an error as data: what crosses a process boundary
(no exception class is pickled) and what every transport renders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aligner.usage import Usage

log = logging.getLogger(__name__)


def shown(value: object, limit: int = 40) -> str:
    """A client's value as error messages echo it: repr, cut at `limit` characters (it may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


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
    """The composed prompt plus `max_tokens` does not fit in the model's context; `field` is the request's
    conversation as the client sent it (`messages` or `prompt`)."""

    code = "prompt_too_long"

    def __init__(self, prompt_tokens: int, max_tokens: int, max_model_len: int, field: str = "messages"):
        limit = max_model_len - max_tokens
        super().__init__(
            field,
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


class RateLimited(AlignerError):
    """The tenant is over one of its quotas (`limit`: requests_per_minute, candidate_tokens_per_minute or
    max_concurrent_requests); retry after `retry_after_s` seconds. Not `overloaded`: the server has room."""

    code = "rate_limited"

    def __init__(self, message: str, limit: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = retry_after_s


class ServerError(AlignerError):
    """An error a remote server answered, with its code kept (for the CLI's client modes)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ErrorInfo:
    """An error as plain data: its stable code, the message, the offending field (InvalidRequest) and
    the seconds to wait before a retry (Overloaded, RateLimited); and what the request had cost when it
    failed after engine work (`usage`, for metering: never shown to the client)."""

    code: str
    message: str
    field: str | None = None
    retry_after_s: float | None = None
    usage: Usage | None = None

    @classmethod
    def of(cls, exc: BaseException, usage: Usage | None = None) -> ErrorInfo:
        """What `exc` tells a client (and `usage`, what its request had cost). Anything that is not an
        AlignerError is an internal error: logged here with its traceback, described without internals."""
        if isinstance(exc, Reported):
            return exc.info
        if isinstance(exc, AlignerError):
            return cls(
                code=exc.code,
                message=exc.message,
                field=exc.field if isinstance(exc, InvalidRequest) else None,
                retry_after_s=exc.retry_after_s if isinstance(exc, (Overloaded, RateLimited)) else None,
                usage=usage,
            )
        log.error("internal error", exc_info=exc)
        return cls("internal", f"internal error ({type(exc).__name__}); see the server log", usage=usage)

    def error(self) -> Reported:
        """This error as an exception to raise, carrying this info unchanged."""
        return Reported(self)

    def to_dict(self) -> dict:
        """The JSON payload: code and message, and field / retry_after_s where they apply."""
        payload: dict = {"code": self.code, "message": self.message}
        if self.field is not None:
            payload["field"] = self.field
        if self.retry_after_s is not None:
            payload["retry_after_s"] = self.retry_after_s
        return payload


def error_code(exc: BaseException) -> str:
    """The code `exc` is reported under ("internal" for anything not an AlignerError), without logging."""
    if isinstance(exc, Reported):
        return exc.info.code
    return exc.code if isinstance(exc, AlignerError) else "internal"


class Reported(AlignerError):
    """An error that arrived as an ErrorInfo (from another process), raised with its code, field and
    message intact."""

    def __init__(self, info: ErrorInfo):
        super().__init__(info.message)
        self.info = info
        self.code = info.code


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
