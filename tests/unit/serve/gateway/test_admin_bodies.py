"""serve/gateway/admin.py: the policy admin bodies are strict and bounded like the columns they reach."""

from __future__ import annotations

import pytest

from aligner.errors import InvalidRequest
from serve.gateway.admin import ActivateTenantPolicy, PutTenantPolicy


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
