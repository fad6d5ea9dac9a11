"""The admin HTTP API of a running server, behind the tenant store's safety-config methods.

`aligner safety ... --server URL` uses it instead of opening the store: the same commands,
through the server (its auth, validation against the served objectives, and audit with the
admin key's id). Plain `urllib`, so the core imports no transport library.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from aligner.errors import AlignerError, InvalidRequest, NotFound, ServerError, from_payload
from aligner.safety.config import SafetyConfig
from aligner.tenants import AuditEntry, SafetyConfigVersion, validate_tenant

KEY_ENV = "ALIGNER_API_KEY"
TIMEOUT_S = 60


class AdminClient:
    """Safety-config methods of `TenantStore`, answered by a server's admin routes."""

    def __init__(self, url: str, key: str | None):
        if not key:
            raise InvalidRequest("--key", f"an admin API key is needed with --server (or set ${KEY_ENV})")
        self.url = url.rstrip("/")
        self.key = key

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **query: Any) -> Any:
        params = {k: v for k, v in query.items() if v is not None}
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise self._error(exc) from None
        except urllib.error.URLError as exc:
            raise ServerError("unavailable", f"cannot reach {self.url}: {exc.reason}") from None

    @staticmethod
    def _error(exc: urllib.error.HTTPError) -> AlignerError:
        try:
            return from_payload(json.loads(exc.read())["error"])
        except (ValueError, KeyError, TypeError):
            return ServerError("internal", f"the server answered HTTP {exc.code}")

    @staticmethod
    def _route(tenant: str) -> str:
        return f"/v1/admin/tenants/{validate_tenant(tenant)}/safety-config"

    def get_safety_config(self, tenant: str) -> SafetyConfigVersion | None:
        try:
            return _version(self._call("GET", self._route(tenant)))
        except NotFound:
            return None

    def safety_config_versions(self, tenant: str) -> list[SafetyConfigVersion]:
        return [_version(v) for v in self._call("GET", f"{self._route(tenant)}/versions")["versions"]]

    def set_safety_config(self, tenant: str, config: SafetyConfig, *, expected_version: int | None,
                          actor: str | None = None) -> SafetyConfigVersion:
        body = {"config": config.model_dump(mode="json"), "expected_version": expected_version}
        return _version(self._call("PUT", self._route(tenant), body))

    def activate_safety_config(self, tenant: str, version: int, *, expected_version: int | None,
                               actor: str | None = None) -> SafetyConfigVersion:
        body = {"version": version, "expected_version": expected_version}
        return _version(self._call("POST", f"{self._route(tenant)}/activate", body))

    def delete_safety_config(self, tenant: str, *, expected_version: int | None, actor: str | None = None) -> None:
        if expected_version is None:
            raise NotFound(f"tenant {tenant!r} has no active safety config")
        self._call("DELETE", self._route(tenant), expected_version=expected_version)

    def safety_audit(self, tenant: str | None = None, since: datetime | None = None) -> list[AuditEntry]:
        entries = self._call("GET", "/v1/admin/audit", tenant=tenant, since=since and since.isoformat())["entries"]
        return [AuditEntry(**{**e, "at": datetime.fromisoformat(e["at"])}) for e in entries]


def _version(data: dict[str, Any]) -> SafetyConfigVersion:
    return SafetyConfigVersion(
        tenant=data["tenant"], version=data["version"], config=SafetyConfig.model_validate(data["config"]),
        content_hash=data["content_hash"], created_at=datetime.fromisoformat(data["created_at"]),
        created_by=data["created_by"],
    )


def key_from(value: str | None) -> str | None:
    return value or os.environ.get(KEY_ENV)
