"""serve/gateway/admin.py: every admin body is strict and bounded like the columns it reaches; `since` and
`until` at the calendar's edges are 400s naming them."""

from __future__ import annotations

import asyncio

import pytest

from aligner.errors import InvalidRequest
from aligner.tenants import TenantStore
from aligner.tenants.policy import INT32_MAX
from serve.gateway.admin import (
    ActivateSafetyConfig,
    ActivateTenantPolicy,
    AdminService,
    CreateKey,
    PutSafetyConfig,
    PutTenantPolicy,
    check_version,
)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # Failed before the fix: 10**30 reached SQLite's INTEGER and raised OverflowError (a 500).
        ({"version": 10**30, "expected_version": None}, "version"),
        ({"version": 2**31, "expected_version": None}, "version"),
        ({"version": 1, "expected_version": 2**31}, "expected_version"),
        ({"version": True, "expected_version": None}, "version"),
        ({"version": 0, "expected_version": None}, "version"),
    ],
)
def test_an_activate_body_out_of_the_columns_range_is_refused_naming_the_field(body, field):
    with pytest.raises(InvalidRequest) as err:
        ActivateTenantPolicy.parse(body)
    assert err.value.field == field, err.value.message


@pytest.mark.parametrize("expected", [True, "1", 1.0, 2**31, 0])
def test_a_put_policy_expected_version_is_a_strict_bounded_integer(expected):
    """Failed before the fix: `true`, "1" and 1.0 were read as version 1."""
    with pytest.raises(InvalidRequest) as err:
        PutTenantPolicy.parse({"policy": {}, "expected_version": expected})
    assert err.value.field == "expected_version", err.value.message


def test_a_valid_put_policy_body_parses():
    body = PutTenantPolicy.parse({"policy": {"weight": 2.0}, "expected_version": 3})
    assert body.expected_version == 3 and body.policy.weight == 2.0


# -- every admin body is strict, and its integers fit the INT32 version columns ------------------------


@pytest.mark.parametrize("admin", ["yes", "true", 1, 0, None, [], {}])
def test_a_key_s_admin_flag_is_a_strict_boolean(admin):
    """Failed before the fix: `"admin": "yes"` (and 1) created an admin key."""
    with pytest.raises(InvalidRequest) as err:
        CreateKey.parse({"tenant": "acme", "admin": admin})
    assert err.value.field == "admin", err.value.message


def test_a_valid_key_body_parses():
    assert CreateKey.parse({"tenant": "acme", "admin": True}).admin is True
    assert CreateKey.parse({"tenant": "acme"}).admin is False


@pytest.mark.parametrize("expected", [True, False, "1", 1.0, 2**31, 2**70, 0, -1])
def test_a_put_safety_config_expected_version_is_a_strict_bounded_integer(expected):
    """Failed before the fix: `expected_version: true` was read as version 1, and 2**70 reached the store."""
    with pytest.raises(InvalidRequest) as err:
        PutSafetyConfig.parse({"config": {"text": "Be kind."}, "expected_version": expected})
    assert err.value.field == "expected_version", err.value.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": 2**70, "expected_version": None}, "version"),  # failed before the fix: a 500 on SQLite
        ({"version": 2**31, "expected_version": None}, "version"),
        ({"version": 1, "expected_version": 2**31}, "expected_version"),
        ({"version": 1, "expected_version": 0}, "expected_version"),
        ({"version": "1", "expected_version": None}, "version"),
        ({"version": 1, "expected_version": True}, "expected_version"),
    ],
)
def test_an_activate_safety_config_body_is_bounded_like_the_columns(body, field):
    with pytest.raises(InvalidRequest) as err:
        ActivateSafetyConfig.parse(body)
    assert err.value.field == field, err.value.message


def test_a_put_policy_body_is_strict_at_its_root():
    with pytest.raises(InvalidRequest) as err:
        PutTenantPolicy.parse({"policy": {}, "expected_version": None, "admin": "yes"})
    assert err.value.field == "admin"


@pytest.mark.parametrize("version", [0, -1, 2**31, 2**70, True])
def test_a_version_from_a_query_is_bounded_like_the_columns(version):
    with pytest.raises(InvalidRequest) as err:
        check_version("expected_version", version)
    assert err.value.field == "expected_version"
    assert check_version("expected_version", INT32_MAX) == INT32_MAX


@pytest.fixture
def admin_service(tmp_path):
    store = TenantStore.open(f"sqlite:///{tmp_path / 'tenants.db'}")

    async def objectives():
        return []

    yield AdminService(store, objectives), store.create_key("ops", admin=True)[0]
    store.close()


@pytest.mark.parametrize(
    "since",
    [
        "0001-01-01T00:00:00+01:00",  # failed before the fix: OverflowError converting to UTC, a 500
        "9999-12-31T23:59:59-01:00",
        "2026-02-30",
        "2026-12-01T24:00",
        "not a time",
        "",
        "x" * 10_000,
    ],
)
def test_an_audit_since_at_the_calendar_s_edges_is_a_400_naming_since(admin_service, since):
    service, admin = admin_service
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(service.audit(admin, None, since))
    assert err.value.field == "since" and len(err.value.message) < 300


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-12-01", "2026-12-01T17:00"])
def test_an_audit_since_at_representable_edges_is_answered(admin_service, since):
    service, admin = admin_service
    assert asyncio.run(service.audit(admin, None, since)) == {"entries": []}


@pytest.mark.parametrize(
    ("since", "until"), [("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"), ("9999-12-31T23:30Z", None)]
)
def test_usage_at_the_calendar_s_edges_is_answered(admin_service, since, until):
    service, admin = admin_service
    assert asyncio.run(service.usage(admin, None, since, until))["hours"] == []


@pytest.mark.parametrize(
    ("since", "until", "field"), [("0001-01-01T00:00+01:00", None, "since"), (None, "9999-12-31T23:59-01:00", "until")]
)
def test_usage_beyond_the_calendar_s_edges_is_a_400_naming_the_bound(admin_service, since, until, field):
    service, admin = admin_service
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(service.usage(admin, None, since, until))
    assert err.value.field == field


@pytest.mark.parametrize("version", [0, 2**31, 2**70])
def test_a_delete_s_expected_version_is_bounded_like_the_columns(admin_service, version):
    """Failed before the fix: 2**70 reached SQLite's INTEGER and raised OverflowError (a 500)."""
    service, admin = admin_service
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(service.delete_safety_config(admin, "acme", version))
    assert err.value.field == "expected_version"


def test_activate_refuses_a_stored_policy_version_above_this_servers_limits(tmp_path):
    """Found by review: only PUT checked a policy against the server; a version stored under a server
    with higher limits came back through a rollback unchecked."""
    from aligner.contract import SearchLimits
    from aligner.tenants.policy import TenantPolicy

    store = TenantStore.open(f"sqlite:///{tmp_path / 'tenants.db'}")
    admin = store.create_key("ops", admin=True)[0]

    async def objectives():
        return []

    service = AdminService(store, objectives, limits=SearchLimits(max_tokens=100))
    store.set_tenant_policy("acme", TenantPolicy.model_validate({"caps": {"max_tokens": 200}}), expected_version=None)
    store.set_tenant_policy("acme", TenantPolicy(), expected_version=1)
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(service.activate_policy(admin, "acme", {"version": 1, "expected_version": 2}))
    assert err.value.field == "policy.caps.max_tokens" and store.get_tenant_policy("acme").version == 2
    store.close()
