"""What the tenant store returns: key records, safety-config and policy versions, audit entries (all UTC)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import overload

from aligner.safety.config import SafetyConfig
from aligner.tenants.policy import TenantPolicy


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
def utc(value: datetime | None) -> datetime | None:
    """`value` as an aware UTC datetime (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite keeps no zone; everything stored is UTC
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ApiKey:
    """An API key's public record: never the secret nor its hash."""

    id: str
    tenant: str
    admin: bool
    created_at: datetime
    created_by: str | None = None
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "admin": self.admin,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


@dataclass(frozen=True)
class SafetyConfigVersion:
    """One immutable version of a tenant's safety config."""

    tenant: str
    version: int
    config: SafetyConfig
    content_hash: str
    created_at: datetime
    created_by: str | None

    def to_dict(self) -> dict:
        return {
            "tenant": self.tenant,
            "version": self.version,
            "config": self.config.model_dump(mode="json"),
            "content_hash": self.content_hash,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class TenantPolicyVersion:
    """One immutable version of a tenant's policy."""

    tenant: str
    version: int
    policy: TenantPolicy
    content_hash: str
    created_at: datetime
    created_by: str | None

    def to_dict(self) -> dict:
        return {
            "tenant": self.tenant,
            "version": self.version,
            "policy": self.policy.model_dump(mode="json"),
            "content_hash": self.content_hash,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class AuditEntry:
    """One change of a safety config or a policy: who, when, what, old -> new version, hash of the new
    content."""

    id: int
    at: datetime
    tenant: str
    actor: str | None
    action: str  # set | activate | delete
    old_version: int | None
    new_version: int | None
    content_hash: str | None

    def to_dict(self) -> dict:
        return {
            **{
                k: getattr(self, k)
                for k in ("id", "tenant", "actor", "action", "old_version", "new_version", "content_hash")
            },
            "at": self.at.isoformat(),
        }
