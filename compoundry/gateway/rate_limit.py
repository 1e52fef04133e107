"""Per-tenant and per-key rate limits on every prediction route: one pure ASGI middleware inside ``Security``.

It runs after the API key was resolved (the principal is in the request state) and before any route, so
it covers every prediction route however the handlers are written. A refused request gets 429 with
``Retry-After`` in the gateway's error shape and one metering record with outcome ``rate_limited``
(no model ran: no tokens, no cost). Which limits apply is :mod:`compoundry.core.rate_limits`; where the
buckets live is :mod:`compoundry.gateway.rate_limit_backends` (``backend=`` takes a fake in tests).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

from compoundry.config.settings import PlatformSettings
from compoundry.core.costs.records import RATE_LIMITED, MeteringRecord
from compoundry.core.rate_limits import asks_for, estimate_tokens, rules_for
from compoundry.gateway.errors import GatewayError, error_response
from compoundry.gateway.rate_limit_backends import Buckets, LocalBuckets, RedisBuckets
from compoundry.gateway.security import read_body, replay_body, required_scope

ANONYMOUS = "anonymous"  # the tenant of a call without a key (gateway.auth_required: false), as metering has it
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
_LIMIT_NAMES = {"rpm": "requests_per_minute", "tpm": "tokens_per_minute"}


class RateLimited(GatewayError):
    """Over a tenant's or a key's limit: retry after ``retry_after`` seconds."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, details: dict, retry_after: float):
        super().__init__(message, {**details, "retry_after": round(retry_after, 3)})
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class RateLimits:
    """The middleware. Limits come from ``platform.yaml gateway.rate_limits`` (read at start).

    Without ``redis_url`` every worker keeps its own buckets with the limits divided by
    ``settings.gateway_workers`` (uvicorn spreads connections over workers, so the sum holds per gateway).
    """

    def __init__(self, app, settings: PlatformSettings, sink=None, backend: Buckets | None = None, metrics=None):
        self.app = app
        self.metrics = metrics  # GatewayMetrics: refusals counted by scope and limit
        config = settings.config.gateway.rate_limits
        self.enabled = config.enabled
        self.default = config.default.rule() if config.default is not None else None
        self.tenants = {name: limit.rule() for name, limit in config.tenants.items()}
        self.keys = {key_id: limit.rule() for key_id, limit in config.keys.items()}
        shared = config.redis_url is not None
        self.divisor = 1 if shared else max(1, settings.gateway_workers)
        self.prefix = config.key_prefix
        self.sink = sink
        if backend is None and self.enabled:
            backend = RedisBuckets(config.redis_url, config.redis_timeout_s) if shared else LocalBuckets()
        self.backend = backend

    async def __call__(self, scope, receive, send):
        if not self.enabled or scope["type"] != "http" or required_scope(scope.get("path", "")) != "invoke":
            return await self.app(scope, receive, send)
        principal = scope.get("state", {}).get("principal")
        tenant = principal.tenant if principal is not None else ANONYMOUS
        key_id = principal.key_id if principal is not None else None
        tenant_rule, key_rule = rules_for(tenant, key_id, self.tenants, self.keys, self.default)
        if tenant_rule is None and key_rule is None:
            return await self.app(scope, receive, send)
        body = None
        if any(rule is not None and rule.limits_tokens for rule in (tenant_rule, key_rule)):
            body = await read_body(receive)
            receive = replay_body(body, receive)
        asks = asks_for(tenant, key_id, tenant_rule, key_rule, estimate_tokens(body) if body else 0,
                        self.divisor, self.prefix)
        verdict = await self.backend.check(asks) if asks else None
        if verdict is None or verdict.allowed:
            return await self.app(scope, receive, send)
        if body is None:
            body = await read_body(receive)
        request_id = scope.get("state", {}).get("request_id") or ""
        limit = _LIMIT_NAMES.get((verdict.refused_by or "")[-3:], "requests_per_minute")
        whose = "key" if ":key:" in (verdict.refused_by or "") else "tenant"
        self._meter(scope, tenant, request_id, body)
        if self.metrics is not None:
            self.metrics.on_rate_limited(whose, limit)
        refusal = RateLimited(f"rate limit exceeded: this {whose}'s {limit.replace('_', ' ')}; "
                              f"retry after {verdict.retry_after_s:.1f} s",
                              {"limit": limit, "scope": whose, "tenant": tenant}, verdict.retry_after_s)
        return await error_response(refusal, request_id or None)(scope, receive, send)

    def _meter(self, scope, tenant: str, request_id: str, body: bytes) -> None:
        """One record for the refused request: what it asked for, outcome ``rate_limited``, nothing spent."""
        if self.sink is None:
            return
        component, pipeline = _target(scope.get("path", ""), body)
        latency = _header(scope, b"x-latency-class")
        self.sink.record(MeteringRecord(
            timestamp=datetime.now(timezone.utc), tenant=tenant, pipeline_id=pipeline, request_id=request_id,
            component=component, variant="", deployment_id="", mode="dedicated",
            latency_class=latency if latency in ("interactive", "batch") else "interactive",
            outcome=RATE_LIMITED, cost=0.0))

    async def aclose(self) -> None:
        if self.backend is not None:
            await self.backend.aclose()


def _target(path: str, body: bytes) -> tuple[str, str]:
    """``(component, pipeline)`` the refused request named: from the path, else the OpenAI body's ``model``."""
    parts = path.strip("/").split("/")
    name = parts[2] if len(parts) >= 3 else ""
    if parts[:2] == ["v1", "pipelines"]:
        return "", name if _NAME.fullmatch(name) else ""
    if parts[:2] != ["v1", "components"]:
        model = re.search(rb'"model"\s*:\s*"([^"]{1,100})"', body or b"")
        name = model.group(1).decode("utf-8", "replace") if model else ""
    return (name if _NAME.fullmatch(name) else ""), ""


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1").strip().lower()
    return ""
