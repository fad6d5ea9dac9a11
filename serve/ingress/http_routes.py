"""The HTTP API over the gateway: the FastAPI app of the ingress, its routes, and its error handlers.

Routes (all documented in docs/http-api.md and at /docs):
POST /v1/chat/completions (OpenAI-compatible), POST /v1/generate (native),
GET /v1/models, GET /v1/objectives, GET /healthz, GET /readyz, GET /metrics,
the admin routes under /v1/admin, the console at /console (serve/ingress/console_routes.py) and the API's
Swagger UI at /docs (serve/ingress/api_docs.py).

Each route reads what only HTTP has (the Authorization header, a size-limited strict JSON body),
calls the gateway (serve/gateway/gateway.py) and renders its answer: JSON, or SSE lines for a stream.
Routes raise; the app's exception handlers answer every error, in the one format of its route
(OpenAI's for the OpenAI routes), through the one error table (serve/errors.py).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aligner.errors import AlignerError, ErrorInfo, InvalidRequest, NotFound
from aligner.events import Chunk, Delta, Done
from aligner.tenants import ApiKey, validate_tenant
from serve.errors import PayloadTooLarge, http_status, native_body, openai_body, retry_headers
from serve.gateway.admin import INT32_MAX, AdminService, Answer, check_version
from serve.gateway.answer_headers import answer_headers
from serve.gateway.gateway import Gateway, Relayed
from serve.ingress import api_docs, console_routes, json_body, openapi, policy_routes
from serve.ingress.openai import FINISH_REASONS, ChunkWriter, alignment, chat_completion, to_align_request

# Routing errors (unknown path, wrong method) and bad query/path parameters leave in the
# same `{"error": {code, field, message}}` shape as every other error.
ROUTING_CODES = {404: "not_found", 405: "method_not_allowed"}
SSE = "text/event-stream"


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


def authorization(request: Request) -> str | None:
    return request.headers.get("authorization")


# -- the request body ----------------------------------------------------------------------------


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object (serve/ingress/json_body.py), refusing a non-JSON Content-Type, and bodies
    over the size limit before reading them whole."""
    gateway = gateway_of(request)
    json_body.check_media_type(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        gateway.check_size(int(declared), "body")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > gateway.config.max_body_bytes:
            raise PayloadTooLarge(f"body: exceeds the limit of {gateway.config.max_body_bytes} bytes")
    return json_body.parse_json_object(body)


# -- streams: each event is converted once, here ---------------------------------------------------


def sse(data: object, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def native_events(events: AsyncIterator[Relayed]) -> AsyncIterator[str]:
    """SSE events `delta`, `chunk`, `done` (or `error`), each named after its kind."""
    async for event in events:
        if isinstance(event, ErrorInfo):
            yield sse(native_body(event), "error")
        else:
            yield sse(event.to_dict(), event.kind)


class ChatStream:
    """Renders the replica's events as OpenAI `chat.completion.chunk` SSE lines, ending with [DONE]."""

    def __init__(self, model: str, strategy: str, include_usage: bool):
        self.model, self.strategy, self.include_usage = model, strategy, include_usage

    async def render(self, events: AsyncIterator[Relayed]) -> AsyncIterator[str]:
        writer: ChunkWriter | None = None
        async for event in events:
            if writer is None:
                writer = ChunkWriter(f"{time.time_ns():x}", self.model)
                yield sse(writer.chunk({"role": "assistant", "content": ""}))
            if isinstance(event, Delta):
                yield sse(writer.chunk({"content": event.text}))
            elif isinstance(event, Chunk):
                yield sse(writer.chunk({"content": event.text}, alignment={"scores": event.scores}))
            elif isinstance(event, Done):
                response = event.response
                finish = FINISH_REASONS.get(response.finish_reason, "length")
                yield sse(writer.chunk({}, finish, alignment=alignment(self.strategy, response)))
                if self.include_usage:
                    yield sse(writer.usage_chunk(response))
                yield "data: [DONE]\n\n"
            else:
                yield sse(openai_body(event))
                yield "data: [DONE]\n\n"


# -- generation ------------------------------------------------------------------------------------


async def generate(request: Request) -> Response:
    """Native AlignRequest -> AlignResponse; `stream: true` gives SSE events delta, chunk, done."""
    gateway = gateway_of(request)
    async with gateway.call() as call:
        await gateway.admit(call, authorization(request))
        parsed = gateway.parse(call, await read_json(request))
        if not parsed.stream:
            response = await gateway.generate(call, parsed)
            return JSONResponse(response.model_dump(exclude_none=True), headers=call.headers())
        stream = await gateway.open_stream(call, parsed)
    return StreamingResponse(native_events(gateway.relay(call, stream)), media_type=SSE, headers=call.safety_headers())


async def chat_completions(request: Request) -> Response:
    """OpenAI-compatible chat completions; alignment fields ride in the body (the client's extra_body)."""
    gateway = gateway_of(request)
    async with gateway.call() as call:
        await gateway.admit(call, authorization(request))
        data, options = to_align_request(await read_json(request))
        parsed = gateway.parse(call, data)
        model = (await gateway.info()).model
        if options.model != model:
            raise NotFound(f"model: {options.model!r} is not served; this server serves {model!r}")
        if not parsed.stream:
            response = await gateway.generate(call, parsed)
            return JSONResponse(chat_completion(response, model=model, strategy=call.strategy), headers=call.headers())
        stream = await gateway.open_stream(call, parsed)
    chunks = ChatStream(model, call.strategy, options.include_usage).render(gateway.relay(call, stream))
    return StreamingResponse(chunks, media_type=SSE, headers=call.safety_headers())


# -- discovery and health --------------------------------------------------------------------------


async def models(request: Request) -> Response:
    """The served model, in OpenAI's list format."""
    gateway = gateway_of(request)
    await gateway.authenticate(authorization(request))
    info = await gateway.info()
    entry = {
        "id": info.model,
        "object": "model",
        "created": 0,
        "owned_by": "aligner",
        "max_model_len": info.max_model_len,
    }
    return JSONResponse({"object": "list", "data": [entry]})


async def objectives(request: Request) -> Response:
    """Objectives a preference vector or constraint can name: name, scale (low, high), description."""
    gateway = gateway_of(request)
    await gateway.authenticate(authorization(request))
    return JSONResponse({"objectives": [asdict(o) for o in await gateway.objectives()]})


async def healthz() -> Response:
    """Liveness of the ingress (no engine involved)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: a model replica's engine answers and its objectives score a probe (this ingress's
    cached answer, refreshed in the background: a caller never reaches a replica)."""
    state = await gateway_of(request).ready()
    if state.ready:
        return JSONResponse({"ready": True, "model": state.model})
    return JSONResponse({"ready": False, "error": state.error.to_dict() if state.error else None}, status_code=503)


async def metrics(request: Request) -> Response:
    """Prometheus text format: every replica's metrics, merged (see serve/metrics.py); needs an admin key
    (`metrics_auth`)."""
    text = await gateway_of(request).metrics_text(authorization(request))
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


# -- admin (serve/gateway/admin.py, shared with gRPC) ------------------------------------------------


async def admin_answer(
    request: Request, work: Callable[..., Awaitable[Answer]], *, with_body: bool = False, status_code: int = 200
) -> Response:
    """`work(admin service, admin key[, body])`, once the caller's admin key is checked (before the
    body is read: no admin, no parsing)."""
    gateway = gateway_of(request)
    admin = await gateway.check_admin(authorization(request))
    body = (await read_json(request),) if with_body else ()
    return JSONResponse(await work(gateway.admin, admin, *body), status_code=status_code)


async def create_key_route(request: Request) -> Response:
    """Create a key for a tenant; the response holds the key, the only time it is shown."""
    return await admin_answer(request, AdminService.create_key, with_body=True, status_code=201)


async def list_keys_route(request: Request, tenant: str | None = None) -> Response:
    """Every key (or one tenant's): ids, tenants, admin flag, created, revoked; never the key."""
    return await admin_answer(request, lambda s, a: s.list_keys(a, tenant))


async def revoke_key_route(key_id: str, request: Request) -> Response:
    """Revoke a key; it is refused everywhere within a second."""
    return await admin_answer(request, lambda s, a: s.revoke_key(a, key_id))


async def put_safety_config_route(tenant: str, request: Request) -> Response:
    """Store a new version of the tenant's safety config and activate it (in force within a second)."""
    return await admin_answer(request, lambda s, a, body: s.put_safety_config(a, tenant, body), with_body=True)


async def get_safety_config_route(tenant: str, request: Request) -> Response:
    """The tenant's active safety config (version and content); 404 when it has none."""
    return await admin_answer(request, lambda s, a: s.get_safety_config(a, tenant))


async def safety_config_versions_route(tenant: str, request: Request) -> Response:
    """Every version of the tenant's safety config, oldest first, and which one is active."""
    return await admin_answer(request, lambda s, a: s.safety_config_versions(a, tenant))


async def activate_safety_config_route(tenant: str, request: Request) -> Response:
    """Make an existing version active again (a rollback)."""
    return await admin_answer(request, lambda s, a, body: s.activate_safety_config(a, tenant, body), with_body=True)


async def delete_safety_config_route(tenant: str, request: Request) -> Response:
    """Deactivate the tenant's safety config (the versions and the audit stay)."""

    # `expected_version` is read once the admin key is checked (`query_version`), as gRPC does: a caller
    # without one gets 401/403 whatever the query holds. /docs lists it from DELETE_PARAMETERS.
    def delete(service: AdminService, admin: ApiKey) -> Awaitable[Answer]:
        validate_tenant(tenant)  # named first, as gRPC's path names it
        return service.delete_safety_config(admin, tenant, query_version(request, "expected_version"))

    return await admin_answer(request, delete)


def query_version(request: Request, name: str) -> int:
    """The version number in query parameter `name`: 400 naming it unless it is an integer from 1 to INT32_MAX."""
    text = request.query_params.get(name)
    return check_version(name, int(text) if text is not None and re.fullmatch("[0-9]{1,10}", text) else text)


DELETE_PARAMETERS = {
    "parameters": [
        {
            "name": "expected_version",
            "in": "query",
            "required": True,
            "description": "The active version, as last read; another active version is a 409 conflict.",
            "schema": {"type": "integer", "minimum": 1, "maximum": INT32_MAX},
        }
    ]
}


async def audit_route(request: Request, tenant: str | None = None, since: str | None = None) -> Response:
    """Every safety-config change (of `tenant`, at or after the ISO time `since`), oldest first; read-only."""
    return await admin_answer(request, lambda s, a: s.audit(a, tenant, since))


async def usage_route(
    request: Request, tenant: str | None = None, since: str | None = None, until: str | None = None
) -> Response:
    """Metered usage (of `tenant`) of every hour overlapping [since, until) (ISO 8601), per tenant and hour,
    and totals."""
    return await admin_answer(request, lambda s, a: s.usage(a, tenant, since, until))


# -- the app ---------------------------------------------------------------------------------------

SAFETY_CONFIG = "/v1/admin/tenants/{tenant}/safety-config"
# (method, path, endpoint, FastAPI route options), in the order /docs lists them.
ROUTES: list[tuple[str, str, Callable[..., Awaitable[Response]], dict[str, Any]]] = [
    (
        "POST",
        "/v1/generate",
        generate,
        {"openapi_extra": openapi.body("AlignRequest"), "responses": openapi.responses("AlignResponse")},
    ),
    (
        "POST",
        "/v1/chat/completions",
        chat_completions,
        {
            "openapi_extra": openapi.body("ChatCompletionRequest"),
            "responses": openapi.responses("ChatCompletion", openai=True),
        },
    ),
    ("GET", "/v1/models", models, {}),
    ("GET", "/v1/objectives", objectives, {}),
    ("GET", "/healthz", healthz, {}),
    ("GET", "/readyz", readyz, {}),
    ("GET", "/metrics", metrics, {}),
    ("POST", "/v1/admin/keys", create_key_route, {"status_code": 201, "openapi_extra": openapi.body("CreateKey")}),
    ("GET", "/v1/admin/keys", list_keys_route, {}),
    ("DELETE", "/v1/admin/keys/{key_id}", revoke_key_route, {}),
    ("PUT", SAFETY_CONFIG, put_safety_config_route, {"openapi_extra": openapi.body("PutSafetyConfig")}),
    ("GET", SAFETY_CONFIG, get_safety_config_route, {}),
    ("GET", f"{SAFETY_CONFIG}/versions", safety_config_versions_route, {}),
    (
        "POST",
        f"{SAFETY_CONFIG}/activate",
        activate_safety_config_route,
        {"openapi_extra": openapi.body("ActivateSafetyConfig")},
    ),
    ("DELETE", SAFETY_CONFIG, delete_safety_config_route, {"openapi_extra": DELETE_PARAMETERS}),
    ("GET", "/v1/admin/audit", audit_route, {}),
    ("GET", "/v1/admin/usage", usage_route, {}),
    *policy_routes.routes(admin_answer),
    *console_routes.routes(),
    *api_docs.routes(),
]
# Routes whose errors leave in OpenAI's format (the others: the native one).
OPENAI_ROUTES = {chat_completions, models}


def error_response(request: Request, error: ErrorInfo, headers: dict[str, str] | None = None) -> JSONResponse:
    openai = request.scope.get("endpoint") in OPENAI_ROUTES
    body = openai_body(error) if openai else native_body(error)
    return JSONResponse(body, status_code=http_status(error.code), headers={**(headers or {}), **retry_headers(error)})


async def aligner_error(request: Request, exc: Exception) -> JSONResponse:
    """Every error a route raises: an AlignerError with its code, anything else as `internal` (logged); a
    generation request's with the headers its call gave it (OpenAI's x-ratelimit-*, the versions)."""
    return error_response(request, ErrorInfo.of(exc), answer_headers(exc))


async def routing_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = ROUTING_CODES.get(exc.status_code, "invalid_argument")
    message = {
        404: f"no route {request.url.path}; see /docs",
        405: f"{request.method} is not allowed on {request.url.path}; see /docs",
    }.get(exc.status_code, str(exc.detail))
    return JSONResponse(
        native_body(ErrorInfo(code, message)), status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def parameter_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    field = str(first["loc"][-1]) if first.get("loc") else "parameters"
    message = "is required" if first.get("type") == "missing" else first.get("msg", "is invalid")
    error = ErrorInfo.of(InvalidRequest(field, message))
    return JSONResponse(native_body(error), status_code=http_status(error.code))


def build_app(gateway: Gateway) -> FastAPI:
    """The ingress's FastAPI app: every route of ROUTES over `gateway`, and the error handlers."""
    app = FastAPI(
        title="Aligner",
        version="0.1.0",
        description="Decoding-time alignment server: preferences, preference vectors, reward-guided search.",
        docs_url=None,  # serve/ingress/api_docs.py serves /docs, without a CDN
        redoc_url=None,
    )
    app.state.gateway = gateway
    for method, path, endpoint, options in ROUTES:
        app.add_api_route(path, endpoint, methods=[method], **options)
    app.exception_handler(StarletteHTTPException)(routing_error)
    app.exception_handler(RequestValidationError)(parameter_error)
    app.exception_handler(AlignerError)(aligner_error)
    # Anything else answers as `internal`, logged with its traceback. (Starlette runs an Exception
    # handler in its outermost middleware and raises the error on to the server once answered: the
    # server logs it too.) CancelledError — the client went away — passes through to Serve.
    app.exception_handler(Exception)(aligner_error)
    openapi.install(app)
    return app
