"""The HTTP admin routes of tenants' policies, beside the safety-config ones (serve/ingress/http_routes.py).

`routes(admin_answer)` gives their entries of `http_routes.ROUTES`; `admin_answer` is that module's
(the admin key checked before the body is read, the answer as JSON), passed in so this module does not
import the one that lists it. The operations are the gateway's admin service (serve/gateway/admin.py),
shared with gRPC.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from serve.ingress import openapi

POLICY = "/v1/admin/tenants/{tenant}/policy"
Route = tuple[str, str, Callable[..., Awaitable[Response]], dict[str, Any]]


def routes(admin_answer: Callable[..., Awaitable[Response]]) -> list[Route]:
    """(method, path, endpoint, FastAPI route options) of each policy route, in the order /docs lists them."""

    async def put_policy_route(tenant: str, request: Request) -> Response:
        """Store a new version of the tenant's policy and activate it (in force within a second)."""
        return await admin_answer(request, lambda s, a, body: s.put_policy(a, tenant, body), with_body=True)

    async def get_policy_route(tenant: str, request: Request) -> Response:
        """The tenant's active policy (version and content); 404 when it has none."""
        return await admin_answer(request, lambda s, a: s.get_policy(a, tenant))

    async def policy_versions_route(tenant: str, request: Request) -> Response:
        """Every version of the tenant's policy, oldest first, and which one is active."""
        return await admin_answer(request, lambda s, a: s.policy_versions(a, tenant))

    async def activate_policy_route(tenant: str, request: Request) -> Response:
        """Make an existing version of the tenant's policy active again (a rollback)."""
        return await admin_answer(request, lambda s, a, body: s.activate_policy(a, tenant, body), with_body=True)

    async def policy_audit_route(tenant: str, request: Request) -> Response:
        """Every change of the tenant's policy, oldest first; read-only."""
        return await admin_answer(request, lambda s, a: s.policy_audit(a, tenant))

    return [
        ("PUT", POLICY, put_policy_route, {"openapi_extra": openapi.body("PutTenantPolicy")}),
        ("GET", POLICY, get_policy_route, {}),
        ("GET", f"{POLICY}/versions", policy_versions_route, {}),
        ("POST", f"{POLICY}/activate", activate_policy_route, {"openapi_extra": openapi.body("ActivateTenantPolicy")}),
        ("GET", f"{POLICY}/audit", policy_audit_route, {}),
    ]
