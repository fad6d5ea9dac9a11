"""gRPC services `aligner.v1.Aligner`, `aligner.v1.Admin` and the standard `grpc.health.v1.Health`,
served by Ray Serve's gRPC proxy.

`GrpcService` holds the gateway (serve/gateway/gateway.py) and each RPC converts the message, calls
the gateway and converts back, as the HTTP routes do over the same gateway. Errors leave through one
decorator, `grpc_errors`, which puts the one error table's status (serve/errors.py) on the call: the
code, the message, a `google.rpc.BadRequest` naming the field, and `aligner-error-code` /
`retry-after` trailers. The proxy calls the ingress class's methods by RPC name, so
serve/ingress/ingress.py exposes each RPC as a one-line delegate to this class.

Health answers from the same cached readiness as `GET /readyz` (no replica call per caller), and at
most `max_health_watches` Watch streams are open on one ingress at once. Ray Serve's proxy limits what can be done
(Ray 2.60): the client's gRPC deadline does not reach the deployment (send `budget.deadline_ms`),
and a streaming RPC that fails keeps its code and message but loses trailers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

from aligner.errors import ErrorInfo, Overloaded
from aligner.events import Done
from aligner.tenants import ApiKey
from proto.aligner.v1 import aligner_pb2 as pb
from serve.errors import grpc_code, retry_after
from serve.gateway.admin import AdminService, Answer
from serve.gateway.answer_headers import answer_headers, with_answer_headers
from serve.gateway.gateway import Gateway
from serve.ingress import grpc_convert

SERVICER_FUNCTIONS = [
    "proto.aligner.v1.aligner_pb2_grpc.add_AlignerServicer_to_server",
    "proto.aligner.v1.aligner_pb2_grpc.add_AdminServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",  # the standard grpc.health.v1.Health
]
HEALTH_SERVICES = ("", "aligner.v1.Aligner", "aligner.v1.Admin")  # "" is the server as a whole
WATCH_INTERVAL_S = 1.0
HEALTH = health_pb2.HealthCheckResponse


class GrpcError(Exception):
    """Raised out of a streaming method after its status is set (the proxy keeps code and details)."""


def set_error(grpc_context: Any, error: ErrorInfo, metadata: dict[str, str] | None = None) -> None:
    """Put an error on the call: status code from the error table, message, field, trailers (with
    `metadata`: a generation request's x-ratelimit-* and versions)."""
    code = grpc.StatusCode[grpc_code(error.code)]
    grpc_context.set_code(code)
    grpc_context.set_details(error.message)
    details = []
    if error.field:
        detail = any_pb2.Any()
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        details.append(detail)
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    trailers: list[tuple[str, str | bytes]] = [*(metadata or {}).items()]
    trailers += [("grpc-status-details-bin", status.SerializeToString()), ("aligner-error-code", error.code)]
    retry = retry_after(error)
    if retry is not None:
        trailers.append(("retry-after", retry))
    grpc_context.set_trailing_metadata(trailers)


def grpc_errors(empty: type) -> Callable:
    """The one error mapping of a unary RPC: any error becomes the call's status, and the answer an
    `empty` message (cancellation passes through)."""

    def decorate(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def rpc(self: GrpcService, request: Any, grpc_context: Any) -> Any:
            try:
                return await method(self, request, grpc_context)
            except Exception as exc:
                set_error(grpc_context, ErrorInfo.of(exc), answer_headers(exc))
                return empty()

        return rpc

    return decorate


def grpc_stream_errors(method: Callable[..., AsyncGenerator[Any, None]]) -> Callable[..., AsyncGenerator[Any, None]]:
    """The one error mapping of a streaming RPC: the status is set and the stream ends with GrpcError."""

    @functools.wraps(method)
    async def rpc(self: GrpcService, request: Any, grpc_context: Any) -> AsyncGenerator[Any, None]:
        try:
            async with contextlib.aclosing(method(self, request, grpc_context)) as messages:
                async for message in messages:
                    yield message
        except Exception as exc:
            error = ErrorInfo.of(exc)
            set_error(grpc_context, error, answer_headers(exc))
            raise GrpcError(error.message) from None

    return rpc


def authorization(grpc_context: Any) -> str | None:
    return dict(grpc_context.invocation_metadata()).get("authorization")


Fields = dict[str, Any]  # an RPC's request message as the JSON contract's fields (grpc_convert.to_plain)


def admin_rpc(response_type: type, operation: Callable[[AdminService, ApiKey, Fields], Awaitable[Answer]]) -> Callable:
    """An `aligner.v1.Admin` method: once the caller's admin key is checked (as over HTTP: no admin,
    no parsing), the request's fields go to the admin service, whose JSON answer becomes `response_type`."""

    @grpc_errors(response_type)
    async def rpc(self: GrpcService, request: Any, grpc_context: Any) -> Any:
        admin = await self.gateway.check_admin(authorization(grpc_context))
        self.gateway.check_size(request.ByteSize(), "request")
        grpc_convert.check_wire(request)
        answer = await operation(self.gateway.admin, admin, grpc_convert.to_plain(request))
        return grpc_convert.from_plain(answer, response_type())

    return rpc


def with_expected_version(fields: Fields) -> Fields:
    """A write's body: the fields but `tenant`, with an unset `expected_version` meaning none (JSON null)."""
    return {"expected_version": None, **{k: v for k, v in fields.items() if k != "tenant"}}


class GrpcService:
    """Every RPC of the three services, over one gateway."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.watches = 0  # Health.Watch streams open on this ingress

    # -- service aligner.v1.Admin: the same service as the HTTP admin routes ------------------------

    CreateKey = admin_rpc(pb.ApiKey, lambda s, admin, f: s.create_key(admin, f))
    ListKeys = admin_rpc(pb.ListKeysResponse, lambda s, admin, f: s.list_keys(admin, f.get("tenant")))
    RevokeKey = admin_rpc(pb.ApiKey, lambda s, admin, f: s.revoke_key(admin, f["id"]))
    PutSafetyConfig = admin_rpc(
        pb.SafetyConfigVersion, lambda s, admin, f: s.put_safety_config(admin, f["tenant"], with_expected_version(f))
    )
    GetSafetyConfig = admin_rpc(pb.SafetyConfigVersion, lambda s, admin, f: s.get_safety_config(admin, f["tenant"]))
    ListSafetyConfigVersions = admin_rpc(
        pb.ListSafetyConfigVersionsResponse, lambda s, admin, f: s.safety_config_versions(admin, f["tenant"])
    )
    ActivateSafetyConfig = admin_rpc(
        pb.SafetyConfigVersion,
        lambda s, admin, f: s.activate_safety_config(admin, f["tenant"], with_expected_version(f)),
    )
    DeleteSafetyConfig = admin_rpc(
        pb.DeleteSafetyConfigResponse,
        lambda s, admin, f: s.delete_safety_config(admin, f["tenant"], f["expected_version"]),
    )
    ListAudit = admin_rpc(pb.ListAuditResponse, lambda s, admin, f: s.audit(admin, f.get("tenant"), f.get("since")))
    GetUsage = admin_rpc(
        pb.UsageResponse, lambda s, admin, f: s.usage(admin, f.get("tenant"), f.get("since"), f.get("until"))
    )
    PutTenantPolicy = admin_rpc(
        pb.TenantPolicyVersion, lambda s, admin, f: s.put_policy(admin, f["tenant"], with_expected_version(f))
    )
    GetTenantPolicy = admin_rpc(pb.TenantPolicyVersion, lambda s, admin, f: s.get_policy(admin, f["tenant"]))
    ListTenantPolicyVersions = admin_rpc(
        pb.ListTenantPolicyVersionsResponse, lambda s, admin, f: s.policy_versions(admin, f["tenant"])
    )
    ActivateTenantPolicy = admin_rpc(
        pb.TenantPolicyVersion, lambda s, admin, f: s.activate_policy(admin, f["tenant"], with_expected_version(f))
    )
    ListTenantPolicyAudit = admin_rpc(pb.ListAuditResponse, lambda s, admin, f: s.policy_audit(admin, f["tenant"]))

    # -- service aligner.v1.Aligner -----------------------------------------------------------------

    @grpc_errors(pb.AlignResponse)
    async def Generate(self, request: pb.GenerateRequest, grpc_context: Any) -> pb.AlignResponse:
        gateway = self.gateway
        async with gateway.call() as call:
            await gateway.admit(call, authorization(grpc_context))
            gateway.check_size(request.ByteSize(), "request")
            grpc_convert.check_wire(request)
            data = grpc_convert.generate_request(request, streaming=False)
            response = await gateway.generate(call, gateway.parse(call, data))
        grpc_context.set_trailing_metadata(list(call.headers().items()))
        return grpc_convert.align_response(response)

    @grpc_stream_errors
    async def GenerateStream(
        self, request: pb.GenerateRequest, grpc_context: Any
    ) -> AsyncGenerator[pb.GenerateEvent, None]:
        gateway = self.gateway
        async with gateway.call() as call:
            await gateway.admit(call, authorization(grpc_context))
            gateway.check_size(request.ByteSize(), "request")
            grpc_convert.check_wire(request)
            data = grpc_convert.generate_request(request, streaming=True)
            stream = await gateway.open_stream(call, gateway.parse(call, data))
        if call.safety_headers():
            grpc_context.set_trailing_metadata(list(call.safety_headers().items()))
        # `relay` keeps the metrics and cancels the replica's search if the client goes away.
        async with contextlib.aclosing(gateway.relay(call, stream)) as events:
            async for event in events:
                if isinstance(event, ErrorInfo):  # the headers of its call: what it left of the quotas
                    raise with_answer_headers(event.error(), call.safety_headers())
                if isinstance(event, Done):  # the proxy takes trailers with each message: set before the last
                    grpc_context.set_trailing_metadata(list(call.headers().items()))
                yield grpc_convert.generate_event(event)

    @grpc_errors(pb.ListObjectivesResponse)
    async def ListObjectives(self, request: pb.ListObjectivesRequest, grpc_context: Any) -> pb.ListObjectivesResponse:
        await self.gateway.authenticate(authorization(grpc_context))
        return grpc_convert.objectives(await self.gateway.objectives())

    # -- service grpc.health.v1.Health --------------------------------------------------------------

    async def Check(self, request: Any, grpc_context: Any) -> Any:
        """SERVING when a model replica's engine answers and its objectives score (as /readyz)."""
        return await self._health(request)

    async def List(self, request: Any, grpc_context: Any) -> Any:
        """Every service this server reports on, with its status now (as Check)."""
        ready = (await self.gateway.ready()).ready
        status = HEALTH(status=HEALTH.SERVING if ready else HEALTH.NOT_SERVING)
        return health_pb2.HealthListResponse(statuses={service: status for service in HEALTH_SERVICES})

    async def Watch(self, request: Any, grpc_context: Any) -> AsyncIterator[Any]:
        """The status now, then each change (the cached readiness, read every WATCH_INTERVAL_S). Each open
        stream holds an ingress slot: beyond `max_health_watches` of them, RESOURCE_EXHAUSTED."""
        limit = self.gateway.config.max_health_watches
        if self.watches >= limit:
            error = ErrorInfo.of(
                Overloaded(
                    f"{self.watches} Health.Watch streams are open on this ingress, its limit "
                    f"(max_health_watches = {limit}); use Health.Check, or retry later",
                    retry_after_s=self.gateway.config.retry_after_s,
                )
            )
            set_error(grpc_context, error)
            raise GrpcError(error.message)
        self.watches += 1
        try:
            last = None
            while True:
                status = await self._health(request)
                if status != last:
                    yield status
                    last = status
                if request.service not in HEALTH_SERVICES:
                    return
                await asyncio.sleep(WATCH_INTERVAL_S)
        finally:
            self.watches -= 1

    async def _health(self, request: Any) -> Any:
        if request.service not in HEALTH_SERVICES:
            return HEALTH(status=HEALTH.SERVICE_UNKNOWN)
        ready = (await self.gateway.ready()).ready
        return HEALTH(status=HEALTH.SERVING if ready else HEALTH.NOT_SERVING)
