"""The admin surface (API keys, tenants' safety configs, audit), shared by HTTP and gRPC.

Each method takes the caller's admin key record and the request's fields as the JSON contract names
them, and returns the JSON answer as a dict — or raises an AlignerError, which each transport maps
through the one error table. The transports check the admin key first, each in one place (HTTP's
`admin_answer`, gRPC's `admin_rpc`), before reading the request, so a caller without an admin key
learns nothing about the request's validity. Both are thin adapters, so they accept, refuse and
answer alike.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from aligner.errors import InvalidRequest, NotFound
from aligner.tenants import ApiKey, validate_tenant
from serve.ingress import openapi


class AdminCore:
    """Mixed into the ingress deployment; relies on its `store` and `info`. `admin` is the caller's
    checked admin key (its id is recorded as the creator or actor of writes)."""

    async def objective_ranges(self) -> dict[str, tuple[float, float]]:
        return {o["name"]: (o["low"], o["high"]) for o in (await self.info())["objectives"]}

    # -- API keys --------------------------------------------------------------------------------

    async def create_key(self, admin: ApiKey, body: Any) -> dict[str, Any]:
        """A new key for a tenant; the answer holds the key, the only time it is shown."""
        spec = openapi.CreateKey.parse(body)
        record, key = await asyncio.to_thread(self.store.create_key, spec.tenant, admin=spec.admin, created_by=admin.id)
        return {**record.to_dict(), "key": key}

    async def list_keys(self, admin: ApiKey, tenant: str | None) -> dict[str, Any]:
        keys = await asyncio.to_thread(self.store.list_keys, tenant)
        return {"keys": [k.to_dict() for k in keys]}

    async def revoke_key(self, admin: ApiKey, key_id: str) -> dict[str, Any]:
        return (await asyncio.to_thread(self.store.revoke_key, key_id)).to_dict()

    # -- safety configs --------------------------------------------------------------------------

    async def put_safety_config(self, admin: ApiKey, tenant: str, body: Any) -> dict[str, Any]:
        """Store a new version of the tenant's config and make it active (in force within a second)."""
        validate_tenant(tenant)
        spec = openapi.PutSafetyConfig.parse(body)
        spec.config.check_objectives(await self.objective_ranges())
        stored = await asyncio.to_thread(
            self.store.set_safety_config, tenant, spec.config, expected_version=spec.expected_version, actor=admin.id
        )
        return stored.to_dict()

    async def get_safety_config(self, admin: ApiKey, tenant: str) -> dict[str, Any]:
        active = await asyncio.to_thread(self.store.get_safety_config, validate_tenant(tenant))
        if active is None:
            raise NotFound(f"tenant {tenant!r} has no active safety config")
        return active.to_dict()

    async def safety_config_versions(self, admin: ApiKey, tenant: str) -> dict[str, Any]:
        validate_tenant(tenant)
        versions = await asyncio.to_thread(self.store.safety_config_versions, tenant)
        active = await asyncio.to_thread(self.store.get_safety_config, tenant)
        return {"active": None if active is None else active.version, "versions": [v.to_dict() for v in versions]}

    async def activate_safety_config(self, admin: ApiKey, tenant: str, body: Any) -> dict[str, Any]:
        """Make an existing version active again (a rollback)."""
        validate_tenant(tenant)
        spec = openapi.ActivateSafetyConfig.parse(body)
        chosen = await asyncio.to_thread(
            self.store.activate_safety_config, tenant, spec.version,
            expected_version=spec.expected_version, actor=admin.id,
        )
        return chosen.to_dict()

    async def delete_safety_config(self, admin: ApiKey, tenant: str, expected_version: int) -> dict[str, Any]:
        """Deactivate the tenant's config; its versions and the audit stay."""
        validate_tenant(tenant)
        await asyncio.to_thread(self.store.delete_safety_config, tenant, expected_version=expected_version, actor=admin.id)
        return {"tenant": tenant, "active": None}

    async def audit(self, admin: ApiKey, tenant: str | None, since: str | None) -> dict[str, Any]:
        """Every safety-config change (of `tenant`, at or after the ISO time `since`), oldest first."""
        try:
            when = None if since is None else datetime.fromisoformat(since)
        except ValueError:
            raise InvalidRequest("since", f"is {since!r}; expected an ISO 8601 time") from None
        entries = await asyncio.to_thread(self.store.safety_audit, tenant, when)
        return {"entries": [e.to_dict() for e in entries]}
