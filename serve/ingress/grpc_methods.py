"""gRPC methods of the ingress (services `aligner.v1.Aligner` and `aligner.v1.Admin`), served by
Ray Serve's gRPC proxy.

The ingress class serves HTTP (FastAPI) and these methods alike: the proxy calls the method whose
name is the RPC's, with the request message and a `grpc_context` (metadata in, status out). They
share the HTTP routes' path — auth, the tenant's safety config, validation, the model replica,
the admin core (serve/gateway/admin.py) — and the one error table (`serve/errors.py`). Errors carry the code, the message, a
`google.rpc.BadRequest` naming the field, and `aligner-error-code` / `retry-after` trailers.

The standard `grpc.health.v1.Health` service (Check, Watch) answers from the same readiness as
`GET /readyz`. Ray Serve's proxy limits what can be done (Ray 2.60): the client's gRPC deadline
does not reach the deployment (send `budget.deadline_ms`), and a streaming RPC that fails keeps
its code and message but loses trailers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from proto.aligner.v1 import aligner_pb2 as pb
from serve.ingress import grpc_convert
from serve.errors import PayloadTooLarge, error_payload, grpc_code

SERVICER_FUNCTIONS = [
    "proto.aligner.v1.aligner_pb2_grpc.add_AlignerServicer_to_server",
    "proto.aligner.v1.aligner_pb2_grpc.add_AdminServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",  # the standard grpc.health.v1.Health
]
HEALTH_SERVICES = ("", "aligner.v1.Aligner", "aligner.v1.Admin")  # "" is the server as a whole
WATCH_INTERVAL_S = 1.0


class GrpcError(Exception):
    """Raised out of a streaming method after its status is set (the proxy keeps code and details)."""


def set_error(grpc_context: Any, payload: dict[str, Any]) -> None:
    """Put an error payload on the call: status code from the error table, message, field, trailers."""
    import grpc
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2

    code = grpc.StatusCode[grpc_code(payload["code"])]
    grpc_context.set_code(code)
    grpc_context.set_details(payload["message"])
    details = []
    if payload.get("field"):
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=payload["field"], description=payload["message"])]))
        details.append(detail)
    status = status_pb2.Status(code=code.value[0], message=payload["message"], details=details)
    trailers = [("grpc-status-details-bin", status.SerializeToString()), ("aligner-error-code", payload["code"])]
    if payload.get("retry_after_s") is not None:
        trailers.append(("retry-after", str(max(1, round(payload["retry_after_s"])))))
    grpc_context.set_trailing_metadata(trailers)


def authorization(grpc_context: Any) -> str | None:
    return dict(grpc_context.invocation_metadata()).get("authorization")


def admin_rpc(response_type: type, call_core: Callable[[Any, Any, dict[str, Any]], Awaitable[dict]]):
    """An `aligner.v1.Admin` method: once the caller's admin key is checked (as over HTTP: no admin,
    no parsing), the request message as the JSON contract's fields, handed to the admin core
    (serve/gateway/admin.py), whose JSON answer becomes `response_type`."""

    async def rpc(self, request: Any, grpc_context: Any) -> Any:
        try:
            admin = await self.auth.admin(authorization(grpc_context))
            self.check_size(request)
            answer = await call_core(self, admin, grpc_convert.to_plain(request))
            return grpc_convert.from_plain(answer, response_type())
        except Exception as exc:
            set_error(grpc_context, error_payload(exc))
            return response_type()

    return rpc


def with_expected_version(fields: dict[str, Any]) -> dict[str, Any]:
    """A write's body: the fields but `tenant`, with an unset `expected_version` meaning none (JSON null)."""
    return {"expected_version": None, **{k: v for k, v in fields.items() if k != "tenant"}}


class GrpcMethods:
    """Mixed into the ingress deployment; relies on its `admit`, `parse`, `run`, `open_stream`,
    `relay` and `info` (serve/ingress/ingress.py) and on the admin core (serve/gateway/admin.py)."""

    # -- service aligner.v1.Admin: the same core as the HTTP admin routes --------------------------

    CreateKey = admin_rpc(pb.ApiKey, lambda self, admin, f: self.create_key(admin, f))
    ListKeys = admin_rpc(pb.ListKeysResponse, lambda self, admin, f: self.list_keys(admin, f.get("tenant")))
    RevokeKey = admin_rpc(pb.ApiKey, lambda self, admin, f: self.revoke_key(admin, f["id"]))
    PutSafetyConfig = admin_rpc(pb.SafetyConfigVersion, lambda self, admin, f: self.put_safety_config(admin, f["tenant"], with_expected_version(f)))
    GetSafetyConfig = admin_rpc(pb.SafetyConfigVersion, lambda self, admin, f: self.get_safety_config(admin, f["tenant"]))
    ListSafetyConfigVersions = admin_rpc(pb.ListSafetyConfigVersionsResponse, lambda self, admin, f: (
        self.safety_config_versions(admin, f["tenant"])))
    ActivateSafetyConfig = admin_rpc(pb.SafetyConfigVersion, lambda self, admin, f: self.activate_safety_config(admin, f["tenant"], with_expected_version(f)))
    DeleteSafetyConfig = admin_rpc(pb.DeleteSafetyConfigResponse, lambda self, admin, f: self.delete_safety_config(admin, f["tenant"], f["expected_version"]))
    ListAudit = admin_rpc(pb.ListAuditResponse, lambda self, admin, f: self.audit(admin, f.get("tenant"), f.get("since")))

    def check_size(self, request: Any) -> None:
        """The HTTP body limit, applied to the message (gRPC's own limit is 4 MiB)."""
        size, limit = request.ByteSize(), self.config.max_body_bytes
        if size > limit:
            raise PayloadTooLarge(f"request: {size} bytes exceeds the limit of {limit} bytes")

    # -- service aligner.v1.Aligner -----------------------------------------------------------------

    async def grpc_accepted(self, request: pb.GenerateRequest, grpc_context: Any, call: Any, streaming: bool) -> dict:
        """The request's AlignRequest data once the caller, the size and the fields pass (as HTTP's
        `accepted` + `parse`)."""
        await self.admit(authorization(grpc_context), call)
        self.check_size(request)
        data = grpc_convert.generate_request(request, streaming=streaming)
        self.parse(data, call)
        return data

    async def Generate(self, request: pb.GenerateRequest, grpc_context: Any) -> pb.AlignResponse:
        from serve.ingress.ingress import Call

        call = Call(self.metrics)
        try:
            data = await self.grpc_accepted(request, grpc_context, call, streaming=False)
            response, headers = await self.run(data, call)
            call.ok(response)
            grpc_context.set_trailing_metadata(list(headers.items()))
            return grpc_convert.align_response(response)
        except asyncio.CancelledError:
            call.finish("cancelled")
            raise
        except Exception as exc:
            set_error(grpc_context, call.failed(exc))
            return pb.AlignResponse()

    async def GenerateStream(self, request: pb.GenerateRequest, grpc_context: Any) -> AsyncIterator[pb.GenerateEvent]:
        from serve.ingress.ingress import Call

        call = Call(self.metrics)
        try:
            data = await self.grpc_accepted(request, grpc_context, call, streaming=True)
            events = await self.open_stream(data, call)
        except asyncio.CancelledError:
            call.finish("cancelled")
            raise
        except Exception as exc:
            payload = call.failed(exc)
            set_error(grpc_context, payload)
            raise GrpcError(payload["message"]) from None
        if call.safety is not None:
            grpc_context.set_trailing_metadata([("x-aligner-safety-version", str(call.safety["version"]))])
        failed: dict[str, Any] = {}

        def render(event: dict[str, Any]):
            if event["type"] == "error":
                failed.update(event["error"])
            else:
                yield grpc_convert.generate_event(event)

        # `relay` keeps the metrics and cancels the replica's search if the client goes away.
        async for message in self.relay(events, call, render):
            yield message
        if failed:
            set_error(grpc_context, failed)
            raise GrpcError(failed["message"])

    async def Check(self, request: Any, grpc_context: Any) -> Any:
        """grpc.health.v1: SERVING when a model replica's engine answers and its objectives score (as /readyz)."""
        return await self._health(request, grpc_context)

    async def Watch(self, request: Any, grpc_context: Any) -> AsyncIterator[Any]:
        """grpc.health.v1: the status now, then each change (checked every WATCH_INTERVAL_S)."""
        last = None
        while True:
            status = await self._health(request, grpc_context)
            if status != last:
                yield status
                last = status
            if request.service not in HEALTH_SERVICES:
                return
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def _health(self, request: Any, grpc_context: Any) -> Any:
        from grpc_health.v1 import health_pb2

        serving = health_pb2.HealthCheckResponse
        if request.service not in HEALTH_SERVICES:
            return serving(status=serving.SERVICE_UNKNOWN)
        ready = (await self.readiness()).get("ready")
        return serving(status=serving.SERVING if ready else serving.NOT_SERVING)

    async def ListObjectives(self, request: pb.ListObjectivesRequest, grpc_context: Any) -> pb.ListObjectivesResponse:
        try:
            await self.auth.authenticate(authorization(grpc_context))
            return grpc_convert.objectives((await self.info())["objectives"])
        except Exception as exc:
            set_error(grpc_context, error_payload(exc))
            return pb.ListObjectivesResponse()
