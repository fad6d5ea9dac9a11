"""Tenants' policies in the store: versions, the active one and the audit log (versioned_table.py)."""

from __future__ import annotations

from aligner.tenants.backends import Database
from aligner.tenants.policy import STORED, TenantPolicy
from aligner.tenants.records import TenantPolicyVersion, utc
from aligner.tenants.schema import tenant_policy_active, tenant_policy_audit, tenant_policy_versions
from aligner.tenants.versioned_table import DocumentTables, VersionedTable

TABLES = DocumentTables("policy", tenant_policy_versions, tenant_policy_active, tenant_policy_audit)


def _to_version(row) -> TenantPolicyVersion:
    return TenantPolicyVersion(
        tenant=row.tenant,
        version=row.version,
        policy=TenantPolicy.model_validate_json(row.content, context=STORED),
        content_hash=row.content_hash,
        created_at=utc(row.created_at),
        created_by=row.created_by,
    )


def policy_table(db: Database) -> VersionedTable[TenantPolicyVersion]:
    return VersionedTable(db, TABLES, _to_version)
