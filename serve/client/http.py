"""A running server over HTTP: `POST /v1/generate` (SSE when streaming) and the admin API.

`aligner generate --server`, `aligner safety --server` and `aligner tenants policy --server` use it.
The server's errors come back
as the `AlignerError` of their code and field (`aligner.errors.from_payload`), so a CLI reports
them as it reports its own: bad input still exits with status 2.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx

from aligner.errors import AlignerError, InvalidRequest, NotFound, ServerError, from_payload
from aligner.safety.config import SafetyConfig
from aligner.tenants import (
    AuditEntry,
    SafetyConfigStore,
    SafetyConfigVersion,
    TenantPolicy,
    TenantPolicyStore,
    TenantPolicyVersion,
    validate_tenant,
)

KEY_ENV = "ALIGNER_API_KEY"
ADMIN_TIMEOUT_S = 60


def api_key(given: str | None) -> str:
    """`--key`, else $ALIGNER_API_KEY; InvalidRequest naming `--key` when neither is set."""
    key = given or os.environ.get(KEY_ENV)
    if not key:
        raise InvalidRequest("--key", f"an API key is needed with --server (or set ${KEY_ENV})")
    return key


def base_url(server: str) -> str:
    """`HOST:PORT` or a URL, as a URL without a trailing slash."""
    return (server if "://" in server else f"http://{server}").rstrip("/")


def error_of(reply: httpx.Response) -> AlignerError:
    """The error a failed reply carries in its `{"error": {code, field, message}}` body."""
    try:
        return from_payload(reply.json()["error"])
    except (ValueError, KeyError, TypeError):
        return ServerError("internal", f"the server answered HTTP {reply.status_code}")


def generate_events(server: str, key: str, data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The answer to a request body as wire events: the SSE events when streaming, else one `done`."""
    url = f"{base_url(server)}/v1/generate"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(timeout=httpx.Timeout(None, connect=10), trust_env=False) as client:
            if not data.get("stream"):
                reply = client.post(url, json=data, headers=headers)
                if reply.status_code != 200:
                    raise error_of(reply)
                yield {"type": "done", "response": reply.json()}
                return
            with client.stream("POST", url, json=data, headers=headers) as reply:
                if reply.status_code != 200:
                    reply.read()
                    raise error_of(reply)
                for line in reply.iter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        if "error" in event and "type" not in event:
                            raise from_payload(event["error"])
                        yield event
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, KeyError) as exc:  # InvalidURL is not an HTTPError
        raise ServerError("unavailable", f"cannot get an answer from {url}: {exc}") from None


class AdminClient(SafetyConfigStore, TenantPolicyStore):
    """The safety-config and policy methods of `TenantStore`, answered by a server's admin routes (its auth,
    validation against the served objectives and limits, and audit with the admin key's id: `actor` is
    ignored)."""

    def __init__(self, url: str, key: str):
        self.url = base_url(url)
        self._client = httpx.Client(
            timeout=ADMIN_TIMEOUT_S,
            trust_env=False,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **query: Any) -> Any:
        params = {k: v for k, v in query.items() if v is not None}
        try:
            reply = self._client.request(
                method, f"{self.url}{path}", params=params or None, content=None if body is None else json.dumps(body)
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is not an HTTPError
            raise ServerError("unavailable", f"cannot reach {self.url}: {exc}") from None
        if reply.is_error:
            raise error_of(reply)
        return json.loads(reply.content or b"null")

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

    def set_safety_config(
        self, tenant: str, config: SafetyConfig, *, expected_version: int | None, actor: str | None = None
    ) -> SafetyConfigVersion:
        body = {"config": config.model_dump(mode="json"), "expected_version": expected_version}
        return _version(self._call("PUT", self._route(tenant), body))

    def activate_safety_config(
        self, tenant: str, version: int, *, expected_version: int | None, actor: str | None = None
    ) -> SafetyConfigVersion:
        body = {"version": version, "expected_version": expected_version}
        return _version(self._call("POST", f"{self._route(tenant)}/activate", body))

    def delete_safety_config(self, tenant: str, *, expected_version: int | None, actor: str | None = None) -> None:
        if expected_version is None:
            raise NotFound(f"tenant {tenant!r} has no active safety config")
        self._call("DELETE", self._route(tenant), expected_version=expected_version)

    def safety_audit(self, tenant: str | None = None, since: datetime | None = None) -> list[AuditEntry]:
        entries = self._call("GET", "/v1/admin/audit", tenant=tenant, since=since and since.isoformat())["entries"]
        return [AuditEntry(**{**e, "at": datetime.fromisoformat(e["at"])}) for e in entries]

    # -- tenants' policies (TenantPolicyStore)

    @staticmethod
    def _policy_route(tenant: str) -> str:
        return f"/v1/admin/tenants/{validate_tenant(tenant)}/policy"

    def get_tenant_policy(self, tenant: str) -> TenantPolicyVersion | None:
        try:
            return _policy_version(self._call("GET", self._policy_route(tenant)))
        except NotFound:
            return None

    def tenant_policy_versions(self, tenant: str) -> list[TenantPolicyVersion]:
        return [_policy_version(v) for v in self._call("GET", f"{self._policy_route(tenant)}/versions")["versions"]]

    def set_tenant_policy(
        self, tenant: str, policy: TenantPolicy, *, expected_version: int | None, actor: str | None = None
    ) -> TenantPolicyVersion:
        body = {"policy": policy.model_dump(mode="json"), "expected_version": expected_version}
        return _policy_version(self._call("PUT", self._policy_route(tenant), body))

    def activate_tenant_policy(
        self, tenant: str, version: int, *, expected_version: int | None, actor: str | None = None
    ) -> TenantPolicyVersion:
        body = {"version": version, "expected_version": expected_version}
        return _policy_version(self._call("POST", f"{self._policy_route(tenant)}/activate", body))

    def tenant_policy_audit(self, tenant: str) -> list[AuditEntry]:
        entries = self._call("GET", f"{self._policy_route(tenant)}/audit")["entries"]
        return [AuditEntry(**{**e, "at": datetime.fromisoformat(e["at"])}) for e in entries]

    def usage(self, tenant: str | None = None, since: str | None = None, until: str | None = None) -> dict[str, Any]:
        """GET /v1/admin/usage: the metered usage as the server answers it (see `usage_report`)."""
        return self._call("GET", "/v1/admin/usage", tenant=tenant, since=since, until=until)


def _policy_version(data: dict[str, Any]) -> TenantPolicyVersion:
    return TenantPolicyVersion(
        tenant=data["tenant"],
        version=data["version"],
        policy=TenantPolicy.model_validate(data["policy"]),
        content_hash=data["content_hash"],
        created_at=datetime.fromisoformat(data["created_at"]),
        created_by=data["created_by"],
    )


def _version(data: dict[str, Any]) -> SafetyConfigVersion:
    return SafetyConfigVersion(
        tenant=data["tenant"],
        version=data["version"],
        config=SafetyConfig.model_validate(data["config"]),
        content_hash=data["content_hash"],
        created_at=datetime.fromisoformat(data["created_at"]),
        created_by=data["created_by"],
    )
