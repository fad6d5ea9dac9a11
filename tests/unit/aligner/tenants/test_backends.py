"""aligner/tenants/backends.py: no part of a store URL's user-info (user, password) is ever shown, in an
error, a log line or the store's `url`; an unencoded `@` in it is refused before SQLAlchemy misreads it."""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy.engine import make_url

from aligner.errors import ConfigError
from aligner.tenants import TenantStore, mask_url
from aligner.tenants.backends import engine_for, scrub, user_info_secrets

# Distinctive pieces (`Qp`, `sZ`...), so that no word of a message contains one by chance.
PASSWORDS = ["Qp@sZ", "Qa:bZ", "Qp%40sZ", "Qx@Qy:Qz@Qw", "Qpa/sZ", "Qp?sZ#Qx", "s3cr3tQ"]


def secrets_of(password: str) -> list[str]:
    """Every piece of the user-info that must not be shown: the user, the password, its parts."""
    pieces = {"dbuser", password, *re.split(r"%40|[@:/?#]", password)}
    return [p for p in pieces if len(p) >= 2]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("tail", ["db/aligner", "db:5432/aligner", "db:notaport/aligner", "db/aligner?sslmode=require"])
def test_the_shown_url_holds_no_part_of_the_user_info(password, tail):
    """Failed before the fix: `postgresql://u:***@ss@db/x` for the password `p@ss`, and the user shown."""
    shown = mask_url(f"postgresql://dbuser:{password}@{tail}")
    assert shown == f"postgresql://***@{tail}"
    for secret in secrets_of(password):
        assert secret not in shown, (secret, shown)


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize(
    "template",
    [
        "postgresql://dbuser:{}@db:notaport/aligner",  # SQLAlchemy's own error quotes the URL's pieces
        "mysql://dbuser:{}@db/aligner",  # unsupported backend
        "postgresql+asyncpg://dbuser:{}@db/aligner",  # unsupported driver
        "postgresql://dbuser:{}@db/aligner",  # the driver is there: an engine, and its shown URL
    ],
)
def test_no_error_or_shown_url_of_the_engine_holds_the_user_info(password, template):
    url = template.format(password)
    try:
        _, shown = engine_for(url)
    except ConfigError as exc:
        shown = exc.message
    for secret in secrets_of(password):
        assert secret not in shown, (secret, shown)


@pytest.mark.parametrize("password", ["Qp@sZ", "Qx@Qy:Qz@Qw"])
def test_an_unencoded_at_in_the_user_info_is_refused_saying_how_to_encode_it(password):
    """SQLAlchemy would take `ss@db` for the host (and show it in its errors): refused instead."""
    with pytest.raises(ConfigError) as err:
        engine_for(f"postgresql://dbuser:{password}@db/aligner")
    assert "%40" in err.value.message and "Q" not in err.value.message


def test_a_password_in_the_query_is_hidden_too():
    shown = mask_url("postgresql://db/aligner?sslmode=require&password=hunter2&application_name=a")
    assert "hunter2" not in shown and "sslmode=require" in shown and "application_name=a" in shown


@pytest.mark.parametrize(
    "query",
    [
        "sslpassword=hunter2",
        "PassWord=hunter2",
        "pass%77ord=hunter2",
        "x=1;password=hunter2",
        "password=",
        "password=abc#hunter2",  # found by review: `#`, `;` and `@` are part of the value, as SQLAlchemy reads it
        "password=abc;hunter2",
        "password=abc@hunter2",
        "options=-c%20password%3Dhunter2",
    ],
)
def test_every_password_parameter_is_hidden_however_its_name_is_written(query):
    """Failed before this fix for `sslpassword` and a percent-encoded name: libpq reads both."""
    shown = mask_url(f"postgresql://db/aligner?sslmode=require&{query}&application_name=a")
    assert "hunter2" not in shown and "sslmode=require" in shown and "application_name=a" in shown
    assert "=***" in shown


def test_a_query_password_with_an_at_sign_does_not_pass_for_the_user_info():
    """Found by review: the last `@` of the URL, inside a query password, was taken for the user-info's
    end, and the password's tail shown."""
    assert mask_url("postgresql://u:pw@host/db?password=p@ss#word") == "postgresql://***@host/db?password=***"
    assert "xyz" not in mask_url("postgresql://host/db?password=hunter2@xyz")


@pytest.mark.parametrize(
    "url", ["sqlite:////var/lib/aligner/tenants.db", "sqlite:///tenants.db", "sqlite:////srv/a@b/t.db"]
)
def test_a_sqlite_url_is_shown_whole(url):
    assert mask_url(url) == url


def test_a_url_without_a_scheme_hides_what_precedes_its_at():
    assert mask_url("dbuser:p@ss@db/x") == "***@db/x"


def test_an_unreachable_postgres_store_says_so_without_the_user_info(caplog):
    caplog.set_level(logging.DEBUG)
    url = "postgresql://dbuser:p%40ss:word@127.0.0.1:1/aligner?connect_timeout=1"
    with pytest.raises(ConfigError) as err:
        TenantStore.open(url)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("dbuser", "p%40ss", "p@ss", "word"):
        assert secret not in err.value.message and secret not in logged, secret


def test_a_database_s_refusal_quoting_the_user_shows_it_as_stars(pg_server):
    """PostgreSQL's own message names the user (`role "..." does not exist`): scrubbed like the URL."""
    url = make_url(pg_server.get_uri()).set(username="Qhostileuser", password="Qp@sZ:word")
    with pytest.raises(ConfigError) as err:
        TenantStore.open(url.render_as_string(hide_password=False))
    assert "cannot open the database" in err.value.message
    for secret in ("Qhostileuser", "Qp", "sZ", "word", "%40"):
        assert secret not in err.value.message, (secret, err.value.message)


def test_scrub_hides_quoted_short_secrets_and_bare_long_ones():
    assert scrub('role "ab" does not exist; ab', ["ab"]) == 'role "***" does not exist; ab'
    assert scrub("user hunter2 refused", ["hunter2"]) == "user *** refused"
    secrets = user_info_secrets("postgresql://u%40x:p%3As@db/x")
    assert set(secrets) == {"u%40x:p%3As", "u%40x", "p%3As", "u@x", "p:s"}
    # Longest first, so a secret inside a longer one never leaves the rest of the longer one shown.
    assert [len(s) for s in secrets] == sorted((len(s) for s in secrets), reverse=True)
