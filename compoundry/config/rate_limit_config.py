"""``platform.yaml gateway.rate_limits``: requests and tokens per minute, per tenant and per API key.

A tenant's limit is shared by all its keys; a key listed under ``keys`` (by its public id) also has
its own. Both are enforced by every gateway of the platform together when ``redis_url`` is set;
without it each gateway worker enforces its share (the limit divided by the workers), so the limit
holds per gateway, not across gateways (docs/decisions/0037-rate-limits.md).
"""

from __future__ import annotations

from pydantic import Field

from compoundry.config.base import Strict
from compoundry.core.rate_limits import Rule


class RateLimit(Strict):
    requests_per_minute: int | None = Field(None, ge=1, description="requests per minute; null: unlimited")
    tokens_per_minute: int | None = Field(None, ge=1, description="tokens per minute, counted before the call: "
                                                                  "the request's max_tokens plus its text at ~4 "
                                                                  "characters a token; null: unlimited")

    def rule(self) -> Rule:
        return Rule(self.requests_per_minute, self.tokens_per_minute)


class RateLimitSettings(Strict):
    """Per-tenant and per-key limits on the prediction routes (a refused request gets 429 + Retry-After)."""

    default: RateLimit | None = Field(None, description="the limits of a tenant without its own entry; "
                                                        "null: such tenants are unlimited")
    tenants: dict[str, RateLimit] = Field(default_factory=dict, description="tenant -> its limits, shared by "
                                                                            "all its keys")
    keys: dict[str, RateLimit] = Field(default_factory=dict, description="API key id -> that key's own limits, "
                                                                         "on top of its tenant's")
    redis_url: str | None = Field(None, description="redis://host:port/db shared by every gateway and worker; "
                                                    "null: each worker counts alone, with the limits divided by "
                                                    "gateway.workers")
    key_prefix: str = Field("compoundry:rl:", description="prefix of the Redis keys")
    redis_timeout_s: float = Field(0.1, gt=0, description="a Redis check slower than this serves the request "
                                                          "unlimited (fail open)")

    @property
    def enabled(self) -> bool:
        return self.default is not None or bool(self.tenants) or bool(self.keys)
