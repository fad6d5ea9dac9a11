"""An error answer carries the headers its generation call gave the error (serve/gateway/answer_headers.py):
the HTTP error handler as response headers beside Retry-After, the gRPC error mapping as trailing metadata
beside the status details."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from aligner.errors import ErrorInfo, InvalidRequest, RateLimited
from serve.gateway.answer_headers import answer_headers, with_answer_headers
from serve.ingress.grpc_methods import set_error
from serve.ingress.http_routes import aligner_error

HEADERS = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0", "x-aligner-policy-version": "3"}


def http_request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/generate", "headers": [], "query_string": b""})


def test_an_http_error_answer_carries_its_calls_headers_and_retry_after():
    refused = with_answer_headers(RateLimited("requests_per_minute: over", "requests_per_minute", 7.0), HEADERS)
    answer = asyncio.run(aligner_error(http_request(), refused))
    assert answer.status_code == 429
    assert {k: answer.headers[k] for k in HEADERS} == HEADERS
    assert answer.headers["retry-after"] == "7"
    internal = asyncio.run(aligner_error(http_request(), with_answer_headers(RuntimeError("boom"), HEADERS)))
    assert internal.status_code == 500 and internal.headers["x-ratelimit-limit-requests"] == "60"


def test_an_error_that_passed_through_no_call_carries_no_headers():
    answer = asyncio.run(aligner_error(http_request(), InvalidRequest("body", "is not JSON")))
    assert answer.status_code == 400 and "x-ratelimit-limit-requests" not in answer.headers
    assert answer_headers(ValueError()) == {}


class Context:
    """The part of a gRPC servicer context that `set_error` writes."""

    def __init__(self) -> None:
        self.trailers: dict = {}

    def set_code(self, code) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, trailers) -> None:
        self.trailers = dict(trailers)


def test_a_grpc_error_carries_its_calls_headers_as_trailing_metadata():
    context = Context()
    set_error(context, ErrorInfo.of(InvalidRequest("max_tokens", "too large")), HEADERS)
    assert {k: context.trailers[k] for k in HEADERS} == HEADERS
    assert context.trailers["aligner-error-code"] == "invalid_argument"
    assert "grpc-status-details-bin" in context.trailers
