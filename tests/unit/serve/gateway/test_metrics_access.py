"""serve/gateway/gateway.py metrics_text: /metrics names every tenant, so only an admin key reads it,
unless the operator turned that off (`metrics_auth: none`). A real SQLite tenant store and the real
authenticator; the metrics hub is a stand-in that renders fixed text."""

from __future__ import annotations

import asyncio

import pytest

from aligner.errors import ConfigError, PermissionDenied, Unauthenticated
from aligner.tenants import TenantStore
from serve.config import ServerConfig
from serve.gateway.auth import Authenticator
from serve.gateway.gateway import Gateway

TEXT = b'aligner_requests_total{tenant="acme"} 1.0\n'


class Render:
    async def remote(self) -> bytes:
        return TEXT


class Hub:
    render = Render()


@pytest.fixture
def store(tmp_path):
    store = TenantStore.open(f"sqlite:///{tmp_path}/tenants.db")
    yield store
    store.close()


def gateway_over(store: TenantStore, **config) -> Gateway:
    # Only what metrics_text uses: a whole Gateway needs Ray handles of running deployments (tests/e2e).
    gateway = Gateway.__new__(Gateway)
    gateway.config = ServerConfig.load(config)
    gateway.auth = Authenticator(store, cache_s=0)
    gateway.hub = Hub()
    return gateway


def test_metrics_need_an_admin_key_by_default(store):
    _, tenant_key = store.create_key("acme")
    _, admin_key = store.create_key("ops", admin=True)
    gateway = gateway_over(store)
    assert gateway.config.metrics_auth == "admin"
    for anonymous in (None, "", "Bearer", "Basic abc", "Bearer alk_000000000000_forgedforgedforgedforged"):
        with pytest.raises(Unauthenticated):
            asyncio.run(gateway.metrics_text(anonymous))
    with pytest.raises(PermissionDenied):
        asyncio.run(gateway.metrics_text(f"Bearer {tenant_key}"))
    assert asyncio.run(gateway.metrics_text(f"Bearer {admin_key}")) == TEXT


def test_metrics_auth_none_serves_anyone(store):
    assert asyncio.run(gateway_over(store, metrics_auth="none").metrics_text(None)) == TEXT


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("metrics_auth", "tenants", "'admin' or 'none'"),
        ("readiness_interval_s", 0, "greater than 0"),
        ("max_health_watches", -1, "greater than or equal to 0"),
    ],
)
def test_bad_health_and_metrics_settings_name_the_field(field, value, says):
    with pytest.raises(ConfigError) as err:
        ServerConfig.load({field: value})
    assert field in str(err.value) and says in str(err.value)
