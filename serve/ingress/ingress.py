"""`Ingress`: the deployment that serves HTTP and gRPC, over one transport-neutral gateway.

Its FastAPI app (serve/ingress/http_routes.py) is built at replica start over `self.gateway`. Ray
Serve's gRPC proxy calls the RPCs by name on this class, so each RPC is a one-line delegate to
`GrpcService` (serve/ingress/grpc_methods.py); neither transport's module imports the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from aligner.tenants import TenantStore, default_store_url, import_bootstrap_admin_key
from serve.config import ServerConfig
from serve.gateway.gateway import Gateway
from serve.ingress import http_routes
from serve.ingress.grpc_methods import GrpcService


def unary(name: str) -> Callable[..., Awaitable[Any]]:
    """A unary RPC of the ingress: `GrpcService.<name>`."""

    async def rpc(self: Ingress, request: Any, grpc_context: Any) -> Any:
        return await getattr(self.grpc, name)(request, grpc_context)

    rpc.__name__ = name
    return rpc


def streaming(name: str) -> Callable[..., AsyncGenerator[Any, None]]:
    """A server-streaming RPC of the ingress (the proxy streams it from an async generator)."""

    async def rpc(self: Ingress, request: Any, grpc_context: Any) -> AsyncGenerator[Any, None]:
        async with contextlib.aclosing(getattr(self.grpc, name)(request, grpc_context)) as messages:
            async for message in messages:
                yield message

    rpc.__name__ = name
    return rpc


@serve.ingress()
class Ingress:
    def __init__(
        self,
        config: dict[str, Any],
        model: DeploymentHandle,
        hub: DeploymentHandle,
        keeper: DeploymentHandle | None = None,
    ):
        server_config = ServerConfig.load(config)
        store = TenantStore.open(server_config.tenant_store or default_store_url())
        import_bootstrap_admin_key(store)
        self.gateway = Gateway(server_config, model, hub, store, keeper)
        self.grpc = GrpcService(self.gateway)

    async def __del__(self) -> None:
        """Ray Serve awaits this when it stops the replica (after draining): nothing counted is lost."""
        gateway = getattr(self, "gateway", None)  # None: the constructor failed, nothing was counted
        if gateway is not None:
            await gateway.close()

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Ray Serve asks for the HTTP app once the replica is constructed: its routes close over the gateway."""
        return http_routes.build_app(self.gateway)

    # -- gRPC: aligner.v1.Aligner -----------------------------------------------------------------
    Generate = unary("Generate")
    GenerateStream = streaming("GenerateStream")
    ListObjectives = unary("ListObjectives")

    # -- gRPC: aligner.v1.Admin -------------------------------------------------------------------
    CreateKey = unary("CreateKey")
    ListKeys = unary("ListKeys")
    RevokeKey = unary("RevokeKey")
    PutSafetyConfig = unary("PutSafetyConfig")
    GetSafetyConfig = unary("GetSafetyConfig")
    ListSafetyConfigVersions = unary("ListSafetyConfigVersions")
    ActivateSafetyConfig = unary("ActivateSafetyConfig")
    DeleteSafetyConfig = unary("DeleteSafetyConfig")
    ListAudit = unary("ListAudit")
    GetUsage = unary("GetUsage")
    PutTenantPolicy = unary("PutTenantPolicy")
    GetTenantPolicy = unary("GetTenantPolicy")
    ListTenantPolicyVersions = unary("ListTenantPolicyVersions")
    ActivateTenantPolicy = unary("ActivateTenantPolicy")
    ListTenantPolicyAudit = unary("ListTenantPolicyAudit")

    # -- gRPC: grpc.health.v1.Health --------------------------------------------------------------
    Check = unary("Check")
    List = unary("List")
    Watch = streaming("Watch")
