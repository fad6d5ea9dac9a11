"""Tenants' metered usage in the store: one row per tenant, hour (UTC) and request status.

Ingress replicas batch their counts in memory and add them here every flush interval. The write is
an upsert that adds to the row (`INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n`), one
statement per row, so replicas on several nodes writing the same hour add up on both backends with
no read-modify-write. Rows are written in key order so two PostgreSQL writers never deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from aligner.errors import InvalidRequest
from aligner.tenants.backends import Database
from aligner.tenants.keys import validate_tenant
from aligner.tenants.records import now, utc
from aligner.tenants.schema import usage_hourly

HOUR = timedelta(hours=1)
# The verdicts of a tenant's safety config (SafetyInfo.verdict), each counted in a column of its own.
SAFETY_ACTIONS = ("passed", "resampled", "refused", "flagged")


@dataclass
class UsageCounts:
    """What some requests of one tenant, hour and status consumed (sums over those requests)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generated_tokens: int = 0  # every token the engine generated: all candidates' and the judge's
    candidate_tokens: int = 0  # tokens over all candidates: the search's fan-out
    prefill_tokens: int = 0
    reward_calls: int = 0
    engine_requests: int = 0
    safety_passed: int = 0
    safety_resampled: int = 0
    safety_refused: int = 0
    safety_flagged: int = 0

    def add(self, other: UsageCounts) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}


COUNTERS = tuple(f.name for f in fields(UsageCounts))
TOKEN_COUNTERS = tuple(n for n in COUNTERS if n != "requests" and not n.startswith("safety_"))


@dataclass(frozen=True)
class UsageKey:
    """Which row a count goes to: the tenant, the start of the hour (UTC), the request's status."""

    tenant: str
    hour: datetime
    status: str  # "ok" or the error code (`cancelled` when the client went away)


@dataclass(frozen=True)
class UsageRow:
    """One stored row: a tenant's requests of one status in one hour, and what they consumed."""

    key: UsageKey
    counts: UsageCounts
    updated_at: datetime


@dataclass
class TenantUsage:
    """A tenant's usage over one hour (or, with `hour` None, over the whole range asked): the
    requests by status, the token and call counters summed over them, the safety actions."""

    tenant: str
    hour: datetime | None
    requests: dict[str, int] = field(default_factory=dict)
    counts: UsageCounts = field(default_factory=UsageCounts)

    def add(self, row: UsageRow) -> None:
        self.requests[row.key.status] = self.requests.get(row.key.status, 0) + row.counts.requests
        self.counts.add(row.counts)

    def to_dict(self) -> dict:
        counts = self.counts
        out: dict = {"tenant": self.tenant}
        if self.hour is not None:
            out["hour"] = self.hour.isoformat()
        out["requests"] = dict(sorted(self.requests.items()))
        out.update({name: getattr(counts, name) for name in TOKEN_COUNTERS})
        out["safety_actions"] = {
            a: getattr(counts, f"safety_{a}") for a in SAFETY_ACTIONS if getattr(counts, f"safety_{a}")
        }
        return out


def hour_of(at: datetime) -> datetime:
    """The start of the UTC hour holding `at`."""
    return utc(at).replace(minute=0, second=0, microsecond=0)


def summarize(rows: Iterable[UsageRow]) -> tuple[list[TenantUsage], list[TenantUsage]]:
    """The rows as one entry per tenant and hour (oldest first), and one total per tenant."""
    hours: dict[tuple[str, datetime], TenantUsage] = {}
    totals: dict[str, TenantUsage] = {}
    for row in rows:
        key = row.key
        hours.setdefault((key.tenant, key.hour), TenantUsage(key.tenant, key.hour)).add(row)
        totals.setdefault(key.tenant, TenantUsage(key.tenant, None)).add(row)
    by_hour = sorted(hours.values(), key=lambda u: (u.tenant, u.hour or datetime.min.replace(tzinfo=UTC)))
    return by_hour, [totals[t] for t in sorted(totals)]


def usage_report(rows: Iterable[UsageRow], since: datetime | None, until: datetime | None) -> dict:
    """The answer of GET /v1/admin/usage (and `aligner usage --json`): the bounds, per tenant and hour, totals."""
    hours, totals = summarize(rows)
    return {
        "since": None if since is None else since.isoformat(),
        "until": None if until is None else until.isoformat(),
        "hours": [u.to_dict() for u in hours],
        "totals": [u.to_dict() for u in totals],
    }


def parse_hour_bound(name: str, text: str | None) -> datetime | None:
    """A `since` / `until` bound: an ISO 8601 date or time (no zone: UTC); InvalidRequest naming `name`."""
    if text is None:
        return None
    shown = repr(text) if len(text) <= 40 else repr(text[:40]) + "..."  # never echo a huge value back
    try:
        at = datetime.fromisoformat(text.strip())
    except (ValueError, TypeError) as exc:
        # A calendar edge (30 February, hour 24, second 60) says which part is out of range.
        why = "" if "isoformat" in str(exc) or isinstance(exc, TypeError) else f" ({exc})"
        raise InvalidRequest(
            name, f"is {shown}{why}; expected an ISO 8601 date or time, e.g. 2026-12-01T17:00:00Z (no zone: UTC)"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first representable UTC time
        raise InvalidRequest(name, f"is {shown}, outside the times this server can represent") from None


def hour_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """The bounds of a usage query: every hour that overlaps [since, until) is returned."""
    start, end = parse_hour_bound("since", since), parse_hour_bound("until", until)
    if start is not None and end is not None and end <= start:
        shown = f"is {end.isoformat()}, not after since ({start.isoformat()})"
        raise InvalidRequest("until", f"{shown}; until is exclusive")
    return start, end


class UsageTable:
    def __init__(self, db: Database):
        self.db = db

    def add(self, counts: Mapping[UsageKey, UsageCounts]) -> None:
        """Add each row's counts to what is stored (one transaction, rows in key order)."""
        if not counts:
            return
        dialect = postgresql if self.db.backend == "postgresql" else sqlite
        at = now()
        with self.db.write() as conn:
            for key in sorted(counts, key=lambda k: (k.tenant, k.hour, k.status)):
                values = counts[key].to_dict()
                statement = dialect.insert(usage_hourly).values(
                    tenant=validate_tenant(key.tenant),
                    hour=hour_of(key.hour),
                    status=key.status[:32],  # the column's width (error codes are shorter)
                    updated_at=at,
                    **values,
                )
                added = {name: usage_hourly.c[name] + statement.excluded[name] for name in values}
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[usage_hourly.c.tenant, usage_hourly.c.hour, usage_hourly.c.status],
                        set_={**added, "updated_at": statement.excluded.updated_at},
                    )
                )

    def rows(
        self, tenant: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[UsageRow]:
        """The rows (of `tenant`) of every hour overlapping [since, until), by tenant, hour, status."""
        query = select(usage_hourly).order_by(usage_hourly.c.tenant, usage_hourly.c.hour, usage_hourly.c.status)
        if tenant is not None:
            query = query.where(usage_hourly.c.tenant == validate_tenant(tenant))
        if since is not None:
            query = query.where(usage_hourly.c.hour >= hour_of(since))
        if until is not None:
            query = query.where(usage_hourly.c.hour < utc(until))
        with self.db.read() as conn:
            return [
                UsageRow(
                    key=UsageKey(row.tenant, utc(row.hour), row.status),
                    counts=UsageCounts(**{name: getattr(row, name) for name in COUNTERS}),
                    updated_at=utc(row.updated_at),
                )
                for row in conn.execute(query)
            ]
