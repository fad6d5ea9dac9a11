"""API keys and tenant names: their format, hashing and checks (no database).

An API key is `alk_<12 hex>_<secret>`: the hex part names the row (`key_<12 hex>`), the
secret is 256 random bits of which only the SHA-256 is stored. The plaintext exists once,
in the return value of `TenantStore.create_key` (or `generate_key`, which stores nothing).
"""

from __future__ import annotations

import hashlib
import re
import secrets

from aligner.errors import InvalidRequest, shown

TENANT_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
KEY_PREFIX = "alk_"
ID_PREFIX = "key_"
ID_HEX_CHARS = 12
SECRET_BYTES = 32  # 256 bits; token_urlsafe gives 43 characters
MAX_KEY_CHARS = 256
KEY_RE = re.compile(r"alk_([0-9a-f]{12})_([A-Za-z0-9_-]{22,200})")
ID_RE = re.compile(r"key_[0-9a-f]{12}")
# Hashed against a presented secret whose id is unknown, so that answer costs the same work.
DUMMY_HASH = hashlib.sha256(b"aligner: no such key").hexdigest()


def new_key_parts() -> tuple[str, str]:
    """(id hex, secret) of a fresh key."""
    return secrets.token_hex(ID_HEX_CHARS // 2), secrets.token_urlsafe(SECRET_BYTES)


def generate_key() -> str:
    """A fresh key, `alk_<id hex>_<secret>`, not stored anywhere."""
    suffix, secret = new_key_parts()
    return f"{KEY_PREFIX}{suffix}_{secret}"


def key_parts(key: str) -> tuple[str, str] | None:
    """(id hex, secret) of a well-formed key; None for anything else (too long, wrong shape, not a string)."""
    if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
        return None
    match = KEY_RE.fullmatch(key)
    return None if match is None else (match.group(1), match.group(2))


def is_key_id(key_id: object) -> bool:
    return isinstance(key_id, str) and ID_RE.fullmatch(key_id) is not None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def validate_tenant(tenant: str) -> str:
    """The tenant name itself, or InvalidRequest("tenant", ...) naming the allowed pattern."""
    if not isinstance(tenant, str) or TENANT_RE.fullmatch(tenant) is None:
        raise InvalidRequest(
            "tenant",
            f"invalid tenant name {shown(tenant, 80)}: it must match {TENANT_PATTERN} "
            "(1-63 characters: lower-case letters, digits, '_', '.', '-', starting with a letter or digit)",
        )
    return tenant
