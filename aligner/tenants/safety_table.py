"""Tenants' safety configs in the store: versions, the active one and the audit log (versioned_table.py)."""

from __future__ import annotations

from aligner.safety.config import SafetyConfig
from aligner.tenants.backends import Database
from aligner.tenants.records import SafetyConfigVersion, utc
from aligner.tenants.schema import safety_audit, safety_config_active, safety_config_versions
from aligner.tenants.versioned_table import DocumentTables, VersionedTable

TABLES = DocumentTables("safety config", safety_config_versions, safety_config_active, safety_audit)


def _to_version(row) -> SafetyConfigVersion:
    return SafetyConfigVersion(
        tenant=row.tenant,
        version=row.version,
        config=SafetyConfig.model_validate_json(row.content),
        content_hash=row.content_hash,
        created_at=utc(row.created_at),
        created_by=row.created_by,
    )


def safety_config_table(db: Database) -> VersionedTable[SafetyConfigVersion]:
    return VersionedTable(db, TABLES, _to_version)
