"""The headers a generation request's error answer carries, whatever transport renders it: `Gateway.call`
puts them on the error it lets through (OpenAI's x-ratelimit-* of a rate-limited tenant, the versions of
the policy and safety config the request was admitted under), and the HTTP error handler and the gRPC
error mapping read them back (serve/ingress/)."""

from __future__ import annotations

import contextlib

ANSWER_HEADERS = "aligner_answer_headers"  # the attribute of the error that carries them


def answer_headers(exc: BaseException) -> dict[str, str]:
    """The headers `exc`'s answer carries (none for an error that did not pass through a generation call)."""
    headers = getattr(exc, ANSWER_HEADERS, None)
    return dict(headers) if isinstance(headers, dict) else {}


def with_answer_headers(exc: BaseException, headers: dict[str, str]) -> BaseException:
    """`exc`, carrying `headers` for its answer (an exception that takes no attributes carries none)."""
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, ANSWER_HEADERS, headers)
    return exc
