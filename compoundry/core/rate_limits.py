"""Per-tenant and per-key rate limits: which limits a request must pass, and whether it passes (pure).

The algorithm is GCRA (a token bucket stored as one number per limit, its *theoretical arrival time*):
a limit of ``L`` units per ``window`` spends ``window / L`` seconds of that time per unit; a request
passes when the time it would push ahead of ``now`` stays within one window, so up to ``L`` units may
arrive at once and then ``L`` per window, with no boundary burst of a fixed window and no per-request
log of a moving one. A request passes only if *every* limit it is under passes, and then all are
charged together (a request refused by its tokens limit does not spend its requests limit).

A request whose cost alone exceeds a whole window (``max_tokens`` over the tokens limit, or a limit
divided below one per worker) passes when its bucket is full and leaves it in debt: refused until
paid back, never refused forever. The Redis adapter runs the same rule in Lua
(``compoundry/gateway/rate_limit_backends.py``); ``tests/unit/test_rate_limits.py`` checks both agree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WINDOW_S = 60.0
CHARS_PER_TOKEN = 4  # the usual estimate for English text with BPE tokenizers
EPSILON_S = 1e-6  # float noise at epoch-sized times: a request landing exactly on the window's edge passes


@dataclass(frozen=True)
class Rule:
    """One tenant's or key's limits; None: unlimited."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    @property
    def limits_tokens(self) -> bool:
        return self.tokens_per_minute is not None


@dataclass(frozen=True)
class Ask:
    """One limit a request must pass: its bucket ``key``, ``limit`` units per window and this request's ``cost``."""

    key: str
    limit: float
    cost: float

    @property
    def interval_s(self) -> float:
        return WINDOW_S / self.limit


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: float = 0.0  # > 0 when refused: when the request would pass, if nothing else arrives
    tats: tuple[float, ...] = ()  # what to store per ask when allowed
    refused_by: str | None = None  # the key of the limit that needs the longest wait


def decide(asks: Sequence[Ask], tats: Sequence[float | None], now: float, window_s: float = WINDOW_S) -> Verdict:
    """Whether a request with these ``asks`` passes, given each bucket's stored time (None: never used)."""
    new, wait, worst = [], 0.0, None
    for ask, stored in zip(asks, tats):
        tat = now if stored is None or stored < now else stored
        pushed = tat + ask.cost * (window_s / ask.limit)  # the same float steps as the Lua twin
        new.append(pushed)
        if pushed - now > window_s + EPSILON_S and tat > now:  # over the window and not a full bucket
            need = min(pushed - window_s, tat) - now
            if need > wait:
                wait, worst = need, ask.key
    if worst is not None:
        return Verdict(False, wait, refused_by=worst)
    return Verdict(True, tats=tuple(new))


def asks_for(tenant: str, key_id: str | None, tenant_rule: Rule | None, key_rule: Rule | None, tokens: int,
             divisor: int = 1, prefix: str = "") -> list[Ask]:
    """The limits a request of ``tenant`` (with key ``key_id``) must pass, ``tokens`` its estimated tokens.

    ``divisor`` splits each limit over processes that count apart (the workers of an embedded gateway). Every
    key of one request shares the ``{tenant}`` hash tag, so one Redis Cluster slot holds them all.
    """
    asks = []
    for scope, rule in ((f"{prefix}{{{tenant}}}", tenant_rule), (f"{prefix}{{{tenant}}}:key:{key_id}", key_rule)):
        if rule is None:
            continue
        if rule.requests_per_minute is not None:
            asks.append(Ask(f"{scope}:rpm", rule.requests_per_minute / divisor, 1))
        if rule.tokens_per_minute is not None and tokens > 0:
            asks.append(Ask(f"{scope}:tpm", rule.tokens_per_minute / divisor, tokens))
    return asks


def rules_for(tenant: str, key_id: str | None, tenants: Mapping[str, Rule], keys: Mapping[str, Rule],
              default: Rule | None) -> tuple[Rule | None, Rule | None]:
    """``(tenant rule, key rule)``: the tenant's own entry, else the default; a key only when listed."""
    return tenants.get(tenant, default), keys.get(key_id) if key_id else None


_BUDGET_FIELDS = ("max_tokens", "max_completion_tokens", "max_new_tokens")


def estimate_tokens(body: bytes) -> int:
    """Tokens a request may cost before it runs: its declared completion budget plus its text at
    ~4 characters a token. Counted before the call, so a request over its tokens limit never reaches a model.

    The budget is ``max_tokens`` (or ``max_completion_tokens``) at the top level or in ``inputs`` (the
    component and pipeline routes); the text is every string value of the JSON body. A body that is not
    JSON counts by its size.
    """
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return math.ceil(len(body) / CHARS_PER_TOKEN)
    chars, budget, stack = 0, 0, [data]
    for holder in (data, data.get("inputs") if isinstance(data, dict) else None):
        if isinstance(holder, dict):
            budget += next((v for f in _BUDGET_FIELDS if isinstance(v := holder.get(f), int) and v > 0), 0)
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return budget + math.ceil(chars / CHARS_PER_TOKEN)
