"""What crosses the DeploymentHandle between the ingress and a model replica: typed objects only.

The ingress sends the `AlignRequest` it parsed (once) and the `TenantContext` it admitted the request
under. The replica answers a `ReplicaResult`, or for a stream yields `Accepted` (the request passed the
core's checks and its prompt is composed), then the core's `Delta` / `Chunk` events and one `Done`, or
an `ErrorInfo` instead. No exception class and no untyped dict crosses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aligner.contract import AlignResponse, SearchLimits
from aligner.errors import ErrorInfo
from aligner.events import Chunk, Delta, Done
from aligner.safety.config import SafetyConfig


@dataclass(frozen=True)
class TenantContext:
    """The tenant's safety config in force when its request arrived (one version for the whole request,
    whatever changes while it runs), whether the caller may read the config's text (admins), the
    priority tier its policy gives it, who the tenant is and the limits its policy sets."""

    version: int | None = None  # None: the tenant has no safety config
    config: SafetyConfig | None = None
    reveal: bool = False
    priority: int = 0  # the tenant policy's priority tier: the engine's per-request priority
    # The tenant metered for what a cancelled search generated (the replica records it; None: not metered).
    tenant: str | None = None
    # The server's limits lowered to the tenant's caps, for what the replica prices (the judges' prefills,
    # the safety config's resamples); None: the server's own.
    limits: SearchLimits | None = None


NO_SAFETY_CONFIG = TenantContext()


@dataclass(frozen=True)
class ReplicaResult:
    """A replica's answer to one request: the response or the error, and which replica served it."""

    replica: str
    response: AlignResponse | None = None
    error: ErrorInfo | None = None
    # Seconds the replica spent in its method (its monotonic clock): the ingress takes them from what it
    # waited for the answer, and what is left is Ray Serve's queue (no two nodes' clocks compared).
    service_s: float = 0.0

    def unwrap(self) -> AlignResponse:
        """The response, or the error raised (with its code, field and message intact)."""
        if self.error is not None:
            raise self.error.error()
        assert self.response is not None
        return self.response


@dataclass(frozen=True)
class Accepted:
    """A stream's first item: the replica accepted the request; errors from now on arrive in-stream."""

    replica: str
    service_s: float = 0.0  # seconds from the replica method's start to this acknowledgement (phase 1)


@dataclass(frozen=True)
class ObjectiveInfo:
    """An objective a preference vector or constraint can name (GET /v1/objectives, ListObjectives)."""

    name: str
    description: str
    low: float
    high: float
    reference: float | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What a replica serves: the model's name and context length, and the objectives it scores."""

    model: str
    max_model_len: int
    objectives: list[ObjectiveInfo] = field(default_factory=list)


@dataclass(frozen=True)
class Readiness:
    """A replica's answer to a readiness probe."""

    ready: bool
    model: str | None = None
    error: ErrorInfo | None = None


# What a replica's stream yields, in order: Accepted, then text events and Done (or an ErrorInfo).
StreamItem = Accepted | Delta | Chunk | Done | ErrorInfo
