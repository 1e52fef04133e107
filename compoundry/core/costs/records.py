"""Metering records and per-call pricing: plain data and pure functions.

One :class:`MeteringRecord` per component call: who called which component, how, and what it cost.
The gateway builds it on its hot path, so construction does no validation
beyond what a dataclass does; the sink and the report work on it later.

Cost attribution
----------------
``price_call`` prices only what a *call* causes: ``per_call`` plus
``per_1k_tokens`` over prompt + completion tokens. ``replica_hour`` is never
charged per call: a dedicated replica (and a serverless one during its idle
timeout and cold start) costs by the hour whether or not it is called, so a
per-call share would depend on traffic not yet seen and would double count
once the report adds replica hours. The cost report takes replica hours from
the replica lifetimes and spreads them over pipelines/tenants in proportion to
their summed ``compute_ms`` (:func:`share_replica_cost`). Shed calls never
reached a model and cost nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Literal, Protocol

MODES = ("dedicated", "serverless", "auto", "external")
MeteringMode = Literal["dedicated", "serverless", "auto", "external"]

OK = "ok"
FALLBACK = "fallback"
SHED = "shed"
RATE_LIMITED = "rate_limited"  # refused by a tenant's or key's rate limit before any model ran


def error_outcome(code: str | int) -> str:
    """Outcome for a failed call: ``error:<code>`` (HTTP status, ``timeout``, ``breaker_open``...)."""
    return f"error:{code}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MeteringRecord:
    """One component call, as the cost report and the dashboards need it.

    ``timestamp`` is when the call started (timezone-aware; naive means UTC).
    ``outcome`` is ``ok``, ``error:<code>``, ``fallback``, ``shed`` or ``rate_limited``.
    ``cost`` is :func:`price_call` of the component's prices (marginal cost only).
    """

    timestamp: datetime
    tenant: str
    pipeline_id: str
    request_id: str
    component: str
    variant: str
    deployment_id: str
    mode: MeteringMode
    latency_class: str
    step: str | None = None
    queue_ms: float = 0.0
    cold_start_ms: float = 0.0
    compute_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    outcome: str = OK
    cost: float = 0.0
    shadow: bool = False  # a mirrored experiment call: it costs, but no client saw its answer
    unit_key: str | None = None  # an experiment's sticky key (s:<session> / u:<user>): its unit of analysis
    delivered: bool = True  # False: the gateway never finished sending its request's answer (killed, client gone)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(MeteringRecord))


def to_utc(moment: datetime) -> datetime:
    """Aware UTC: SQLite stores datetimes without their offset, so every row and bound is UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class PriceList(Protocol):
    """What :func:`price_call` reads; ``compoundry.config.models.Prices`` has it."""

    per_call: float
    per_1k_tokens: float
    replica_hour: float


def price_call(prices: PriceList, *, prompt_tokens: int = 0, completion_tokens: int = 0,
               outcome: str = OK) -> float:
    """Marginal cost of one call: ``per_call + per_1k_tokens * tokens / 1000``; 0 for a shed call.

    Errors and fallbacks are charged like successes: the backend did (some of)
    the work, and an external provider bills failed calls the same way.
    ``replica_hour`` is deliberately ignored (see the module docstring).
    """
    if outcome in (SHED, RATE_LIMITED):
        return 0.0
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts must be non-negative")
    return prices.per_call + prices.per_1k_tokens * (prompt_tokens + completion_tokens) / 1000.0


def replica_hours_cost(prices: PriceList, replica_seconds: float) -> float:
    """Cost of replicas that ran ``replica_seconds`` in total (summed over replicas)."""
    if replica_seconds < 0:
        raise ValueError("replica_seconds must be non-negative")
    return prices.replica_hour * replica_seconds / 3600.0


def share_replica_cost(total: float, compute_ms_by_key: Mapping[str, float]) -> dict[str, float]:
    """Split a replica-hour cost over keys (pipelines, tenants) by their share of compute time.

    Idle time is shared the same way. With no compute at all the cost stays
    unattributed (empty result) rather than being split arbitrarily.
    """
    weight = sum(max(0.0, w) for w in compute_ms_by_key.values())
    if weight <= 0:
        return {}
    return {key: total * max(0.0, w) / weight for key, w in compute_ms_by_key.items()}
