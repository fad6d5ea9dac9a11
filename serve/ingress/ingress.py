"""HTTP ingress: auth, body limits, validation and protocol conversion; the work happens in AlignerServer.

Routes (all documented in docs/http-api.md and at /docs):
POST /v1/chat/completions (OpenAI-compatible), POST /v1/generate (native),
GET /v1/models, GET /v1/objectives, GET /healthz, GET /readyz, GET /metrics,
and the admin key routes under /v1/admin/keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException as StarletteHTTPException

from aligner.errors import AlignerError, EngineUnavailable, InvalidRequest, NotFound, Overloaded
from aligner.tenants import TenantStore, default_store_url, import_bootstrap_admin_key
from aligner.contract import AlignRequest
from serve.ingress import openapi
from serve.gateway.admin import AdminCore
from serve.gateway.auth import ActiveSafetyConfigs, Authenticator
from serve.config import ServerConfig
from serve.ingress.grpc_methods import GrpcMethods
from serve.errors import PayloadTooLarge, Remote, error_payload, http_status, native_body, openai_body, retry_headers
from serve.metrics import Metrics
from serve.deployments.metrics_hub import MetricsPusher
from serve.ingress.openai import FINISH_REASONS, ChunkWriter, alignment, chat_completion, to_align_request

log = logging.getLogger("aligner.serve")

app = FastAPI(
    title="Aligner",
    version="0.1.0",
    description="Decoding-time alignment server: preferences, preference vectors, reward-guided search.",
)
openapi.install(app)


# Routing errors (unknown path, wrong method) and bad query/path parameters leave in the
# same `{"error": {code, field, message}}` shape as every other error.
ROUTING_CODES = {404: "not_found", 405: "method_not_allowed"}


@app.exception_handler(StarletteHTTPException)
async def routing_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = ROUTING_CODES.get(exc.status_code, "invalid_argument")
    message = {404: f"no route {request.url.path}; see /docs",
               405: f"{request.method} is not allowed on {request.url.path}; see /docs"}.get(exc.status_code, str(exc.detail))
    return JSONResponse(native_body({"code": code, "message": message}), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


@app.exception_handler(RequestValidationError)
async def parameter_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    field = str(first["loc"][-1]) if first.get("loc") else "parameters"
    message = "is required" if first.get("type") == "missing" else first.get("msg", "is invalid")
    payload = error_payload(InvalidRequest(field, message))
    return JSONResponse(native_body(payload), status_code=http_status(payload["code"]))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        name = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise InvalidRequest(name, "appears more than once in the same JSON object")
    return data


def _no_constants(name: str) -> Any:
    raise InvalidRequest("body", f"{name} is not valid JSON; numbers must be finite")


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, refusing bodies over `limit` bytes before reading them whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body: {declared} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise PayloadTooLarge(f"body: exceeds the limit of {limit} bytes")
    try:
        data = json.loads(body, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest("body", f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("body", "is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body", "must be a JSON object")
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("body", "contains an unpaired UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode") from None
    return data


def sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


class Call:
    """One request's bookkeeping at the ingress: tenant, strategy, timing, and its final metric."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.started = time.monotonic()
        self.tenant = "unauthenticated"
        self.strategy = "none"
        self.safety: dict[str, Any] | None = None  # the tenant's safety config this request is served under
        self.done = False

    def ok(self, response: dict[str, Any]) -> None:
        self.metrics.response(self.strategy, response, time.monotonic() - self.started)
        verdict = (response.get("safety") or {}).get("verdict")
        if verdict is not None:
            self.metrics.safety_actions.labels(tenant=self.tenant, action=verdict).inc()
        self.finish("ok")

    def finish(self, status: str) -> None:
        if not self.done:
            self.done = True
            self.metrics.finished(self.tenant, self.strategy, status)

    def failed(self, exc: BaseException) -> dict[str, Any]:
        """The error's payload, with the request counted under its code."""
        payload = error_payload(exc)
        self.finish(payload["code"])
        return payload


class ChatStream:
    """Renders the replica's events as OpenAI `chat.completion.chunk` SSE lines, ending with [DONE]."""

    def __init__(self, model: str, strategy: str, include_usage: bool):
        self.model, self.strategy, self.include_usage = model, strategy, include_usage
        self.writer: ChunkWriter | None = None

    def render(self, event: dict[str, Any]):
        if self.writer is None:
            self.writer = ChunkWriter(f"{time.time_ns():x}", self.model)
            yield sse(self.writer.chunk({"role": "assistant", "content": ""}))
        kind = event["type"]
        if kind == "delta":
            yield sse(self.writer.chunk({"content": event["text"]}))
        elif kind == "chunk":
            yield sse(self.writer.chunk({"content": event["text"]}, alignment={"scores": event.get("scores")}))
        elif kind == "done":
            response = event["response"]
            finish = FINISH_REASONS.get(response["finish_reason"], "length")
            yield sse(self.writer.chunk({}, finish, alignment=alignment(self.strategy, response)))
            if self.include_usage:
                yield sse(self.writer.usage_chunk(response))
            yield "data: [DONE]\n\n"
        elif kind == "error":
            yield sse(openai_body(event["error"]))
            yield "data: [DONE]\n\n"


READY_TIMEOUT_S = 10.0


# Defined last: serve.ingress captures the module's globals when it wraps the class,
# so everything the routes use must exist above this point.
@serve.ingress(app)
class Ingress(GrpcMethods, AdminCore):
    def __init__(self, config: dict[str, Any], model: Any, hub: Any):
        self.config = ServerConfig.load(config)
        self.store = TenantStore.open(self.config.tenant_store or default_store_url())
        import_bootstrap_admin_key(self.store)
        self.auth = Authenticator(self.store, self.config.auth_cache_s)
        self.safety = ActiveSafetyConfigs(self.store, self.config.auth_cache_s)
        self.model = model
        self.hub = hub
        self.metrics = Metrics()
        self.pusher = MetricsPusher(hub, self.metrics, self.config.metrics_interval_s, "ingress")
        self._info: dict[str, Any] | None = None
        # The first call through the model handle starts its router, which then learns the replicas.
        # Made now: otherwise the first burst of clients all queue while it learns, and overflow
        # max_queued_requests (429) on a server that has free replicas.
        self._priming = asyncio.get_running_loop().create_task(self._prime_model_handle())

    async def _prime_model_handle(self) -> None:
        try:
            await self.info()
        except Exception as exc:  # the first request tries again and reports whatever is wrong
            log.warning("ingress: the model replicas did not answer at start (%s); requests will retry", exc)

    # -- helpers -------------------------------------------------------------------------

    def error(self, call: Call | None, exc: BaseException, *, openai: bool = False) -> JSONResponse:
        payload = error_payload(exc) if call is None else call.failed(exc)
        body = openai_body(payload) if openai else native_body(payload)
        return JSONResponse(body, status_code=http_status(payload["code"]), headers=retry_headers(payload))

    async def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = await self.model.info.remote()
        return self._info

    def parse(self, data: dict[str, Any], call: Call) -> AlignRequest:
        request = AlignRequest.parse(data, self.config.search_limits)
        call.strategy = request.search.strategy
        return request

    async def admit(self, authorization: str | None, call: Call) -> None:
        """Authenticate a generation request (any transport) and fix the safety config it is served under."""
        key = await self.auth.authenticate(authorization)
        call.tenant = key.tenant
        # One version per request: the one active now, whatever changes while it runs.
        call.safety = await self.safety.for_request(key)
        self.metrics.safety_version.labels(tenant=key.tenant).set(0 if call.safety is None else call.safety["version"])

    async def accepted(self, request: Request, call: Call) -> dict[str, Any]:
        await self.admit(request.headers.get("authorization"), call)
        return await read_json(request, self.config.max_body_bytes)

    @staticmethod
    def safety_headers(call: Call) -> dict[str, str]:
        return {} if call.safety is None else {"x-aligner-safety-version": str(call.safety["version"])}

    async def run(self, data: dict[str, Any], call: Call) -> tuple[dict[str, Any], dict[str, str]]:
        """The replica's response and the headers that say who served it, and under which safety config."""
        try:
            result = await self.model.generate.remote(data, call.safety)
        except (BackPressureError, RayActorError) as exc:
            raise self.replica_failure(exc) from None
        if "error" in result:
            raise Remote(result["error"])
        return result["response"], {"x-aligner-replica": result["replica"], **self.safety_headers(call)}

    async def open_stream(self, data: dict[str, Any], call: Call) -> Any:
        """The replica's event stream, once it has accepted the request (errors raise before any byte is sent)."""
        events = self.model.options(stream=True).stream.remote(data, call.safety)
        try:
            first = await events.__anext__()
        except (BackPressureError, RayActorError) as exc:
            raise self.replica_failure(exc) from None
        except asyncio.CancelledError:
            events.cancel()
            raise
        if first["type"] == "error":
            raise Remote(first["error"])
        return events

    def replica_failure(self, exc: BaseException) -> AlignerError:
        """What a failed call to the model deployment means for the client: a full queue (429) or a
        replica that died with its engine (503; Ray Serve replaces it)."""
        if isinstance(exc, BackPressureError):
            return Overloaded(
                f"the server is at capacity ({self.config.max_queued_requests} requests queued per ingress); retry later",
                retry_after_s=self.config.retry_after_s,
            )
        return EngineUnavailable("the model replica serving this request died; it is being replaced, retry shortly")

    async def _events(self, events: Any) -> AsyncIterator[dict[str, Any]]:
        """The replica's events; a replica that dies mid-stream ends them with an error event."""
        try:
            async for event in events:
                yield event
        except RayActorError as exc:
            yield {"type": "error", "error": error_payload(self.replica_failure(exc))}

    async def relay(self, events: Any, call: Call, render) -> AsyncIterator[str]:
        """SSE lines from the replica's events; closing (client gone) cancels the replica's search."""
        first_text = True
        try:
            async for event in self._events(events):
                if event["type"] in ("delta", "chunk") and first_text:
                    first_text = False
                    self.metrics.first_chunk.labels(strategy=call.strategy).observe(time.monotonic() - call.started)
                if event["type"] == "done":
                    call.ok(event["response"])
                elif event["type"] == "error":
                    call.finish(event["error"]["code"])
                for line in render(event):
                    yield line
        finally:
            if not call.done:
                events.cancel()
                call.finish("cancelled")

    # -- generation ---------------------------------------------------------------------

    @app.post("/v1/generate", openapi_extra=openapi.body("AlignRequest"), responses=openapi.responses("AlignResponse"))
    async def generate(self, request: Request) -> Response:
        """Native AlignRequest -> AlignResponse; `stream: true` gives SSE events delta, chunk, done."""
        call = Call(self.metrics)
        try:
            data = await self.accepted(request, call)
            parsed = self.parse(data, call)
            if not parsed.stream:
                response, headers = await self.run(data, call)
                call.ok(response)
                return JSONResponse(response, headers=headers)
            events = await self.open_stream(data, call)
        except asyncio.CancelledError:  # the client went away: Serve cancels us and the replica's search
            call.finish("cancelled")
            raise
        except Exception as exc:
            return self.error(call, exc)

        def render(event):
            if event["type"] == "error":
                yield sse(native_body(event["error"]), "error")
            else:
                yield sse(event, event["type"])

        return StreamingResponse(
            self.relay(events, call, render), media_type="text/event-stream", headers=self.safety_headers(call)
        )

    @app.post(
        "/v1/chat/completions",
        openapi_extra=openapi.body("ChatCompletionRequest"),
        responses=openapi.responses("ChatCompletion", openai=True),
    )
    async def chat_completions(self, request: Request) -> Response:
        """OpenAI-compatible chat completions; alignment fields ride in the body (the client's extra_body)."""
        call = Call(self.metrics)
        try:
            body = await self.accepted(request, call)
            data, options = to_align_request(body)
            data["stream"] = options["stream"]
            parsed = self.parse(data, call)
            info = await self.info()
            if options["model"] != info["model"]:
                raise NotFound(f"model: {options['model']!r} is not served; this server serves {info['model']!r}")
            model = info["model"]
            if not parsed.stream:
                response, headers = await self.run(data, call)
                call.ok(response)
                return JSONResponse(chat_completion(response, model=model, strategy=call.strategy), headers=headers)
            events = await self.open_stream(data, call)
        except asyncio.CancelledError:
            call.finish("cancelled")
            raise
        except Exception as exc:
            return self.error(call, exc, openai=True)
        return StreamingResponse(
            self.relay(events, call, ChatStream(model, call.strategy, options["include_usage"]).render),
            media_type="text/event-stream",
            headers=self.safety_headers(call),
        )

    # -- discovery and health -----------------------------------------------------------

    @app.get("/v1/models")
    async def models(self, request: Request) -> Response:
        """The served model, in OpenAI's list format."""
        try:
            await self.auth.authenticate(request.headers.get("authorization"))
            info = await self.info()
        except Exception as exc:
            return self.error(None, exc, openai=True)
        entry = {"id": info["model"], "object": "model", "created": 0, "owned_by": "aligner",
                 "max_model_len": info["max_model_len"]}
        return JSONResponse({"object": "list", "data": [entry]})

    @app.get("/v1/objectives")
    async def objectives(self, request: Request) -> Response:
        """Objectives a preference vector or constraint can name: name, scale (low, high), description."""
        try:
            await self.auth.authenticate(request.headers.get("authorization"))
            info = await self.info()
        except Exception as exc:
            return self.error(None, exc)
        return JSONResponse({"objectives": info["objectives"]})

    @app.get("/healthz")
    async def healthz(self) -> Response:
        """Liveness of the ingress (no engine involved)."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz(self) -> Response:
        """Readiness: a model replica's engine answers and its objectives score a probe."""
        state = await self.readiness()
        return JSONResponse(state, status_code=200 if state.get("ready") else 503)

    async def readiness(self) -> dict[str, Any]:
        try:
            # Short: while replicas are being replaced nobody answers, and "not ready" must come back fast.
            return await asyncio.wait_for(self.model.ready.remote(), READY_TIMEOUT_S)
        except Exception as exc:
            return {"ready": False, "error": error_payload(exc)}

    @app.get("/metrics")
    async def metrics(self) -> Response:
        """Prometheus text format: every replica's metrics, merged (see serve/metrics.py)."""
        text = await self.hub.render.remote()
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- admin (serve/gateway/admin.py holds the logic, shared with gRPC) -------------------------------

    async def admin_answer(self, request: Request, work, *, with_body: bool = False,
                           status_code: int = 200) -> Response:
        """`work(admin[, body])` of the admin core, once the caller's admin key is checked (before
        the body is read: no admin, no parsing)."""
        try:
            admin = await self.auth.admin(request.headers.get("authorization"))
            args = (await read_json(request, self.config.max_body_bytes),) if with_body else ()
            return JSONResponse(await work(admin, *args), status_code=status_code)
        except Exception as exc:
            return self.error(None, exc)

    @app.post("/v1/admin/keys", status_code=201, openapi_extra=openapi.body("CreateKey"))
    async def create_key_route(self, request: Request) -> Response:
        """Create a key for a tenant; the response holds the key, the only time it is shown."""
        return await self.admin_answer(request, self.create_key, with_body=True, status_code=201)

    @app.get("/v1/admin/keys")
    async def list_keys_route(self, request: Request, tenant: str | None = None) -> Response:
        """Every key (or one tenant's): ids, tenants, admin flag, created, revoked; never the key."""
        return await self.admin_answer(request, lambda a: self.list_keys(a, tenant))

    @app.delete("/v1/admin/keys/{key_id}")
    async def revoke_key_route(self, key_id: str, request: Request) -> Response:
        """Revoke a key; it is refused everywhere within a second."""
        return await self.admin_answer(request, lambda a: self.revoke_key(a, key_id))

    @app.put("/v1/admin/tenants/{tenant}/safety-config", openapi_extra=openapi.body("PutSafetyConfig"))
    async def put_safety_config_route(self, tenant: str, request: Request) -> Response:
        """Store a new version of the tenant's safety config and activate it (in force within a second)."""
        return await self.admin_answer(request, lambda admin, body: self.put_safety_config(admin, tenant, body),
                                       with_body=True)

    @app.get("/v1/admin/tenants/{tenant}/safety-config")
    async def get_safety_config_route(self, tenant: str, request: Request) -> Response:
        """The tenant's active safety config (version and content); 404 when it has none."""
        return await self.admin_answer(request, lambda a: self.get_safety_config(a, tenant))

    @app.get("/v1/admin/tenants/{tenant}/safety-config/versions")
    async def safety_config_versions_route(self, tenant: str, request: Request) -> Response:
        """Every version of the tenant's safety config, oldest first, and which one is active."""
        return await self.admin_answer(request, lambda a: self.safety_config_versions(a, tenant))

    @app.post("/v1/admin/tenants/{tenant}/safety-config/activate", openapi_extra=openapi.body("ActivateSafetyConfig"))
    async def activate_safety_config_route(self, tenant: str, request: Request) -> Response:
        """Make an existing version active again (a rollback)."""
        return await self.admin_answer(request, lambda admin, body: self.activate_safety_config(admin, tenant, body),
                                       with_body=True)

    @app.delete("/v1/admin/tenants/{tenant}/safety-config")
    async def delete_safety_config_route(self, tenant: str, request: Request, expected_version: int) -> Response:
        """Deactivate the tenant's safety config (the versions and the audit stay)."""
        return await self.admin_answer(request, lambda a: self.delete_safety_config(a, tenant, expected_version))

    @app.get("/v1/admin/audit")
    async def audit_route(self, request: Request, tenant: str | None = None, since: str | None = None) -> Response:
        """Every safety-config change (of `tenant`, at or after the ISO time `since`), oldest first; read-only."""
        return await self.admin_answer(request, lambda a: self.audit(a, tenant, since))
