"""Where rate-limit buckets live: this process's memory, or Redis shared by every gateway and worker.

Both answer ``await check(asks) -> Verdict | None`` with the rule of :func:`compoundry.core.rate_limits.decide`;
None means "unknown" (Redis down or slow) and the request is served: a limiter outage must not become a
gateway outage (fail open, docs/decisions/0037-rate-limits.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from compoundry.core.rate_limits import EPSILON_S, WINDOW_S, Ask, Verdict, decide

log = logging.getLogger(__name__)


class Buckets(Protocol):
    async def check(self, asks: Sequence[Ask]) -> Verdict | None: ...

    async def aclose(self) -> None: ...


class LocalBuckets:
    """This process's buckets: no await between read and write, so a check is atomic on the event loop."""

    MAX_KEYS = 100_000  # beyond this, buckets that are full again (their time is past) are forgotten

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._tats: dict[str, float] = {}

    async def check(self, asks: Sequence[Ask]) -> Verdict:
        now = self.clock()
        verdict = decide(asks, [self._tats.get(a.key) for a in asks], now)
        if verdict.allowed:
            self._tats.update(zip((a.key for a in asks), verdict.tats))
            if len(self._tats) > self.MAX_KEYS:
                self._tats = {k: t for k, t in self._tats.items() if t > now}
        return verdict

    async def aclose(self) -> None:
        return None


#: ``decide`` in Lua, atomic in Redis: KEYS = the asks' keys; ARGV = now ("" = the server's clock), the window,
#: the epsilon, then ``interval, cost`` per ask. Returns {1} or {0, wait in ms, index of the limiting ask (1-based)}.
GCRA_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local window = tonumber(ARGV[2])
local epsilon = tonumber(ARGV[3])
local pushed, wait, worst = {}, 0, 0
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new = tat + tonumber(ARGV[2 * i + 3]) * tonumber(ARGV[2 * i + 2])
  pushed[i] = new
  if new - now > window + epsilon and tat > now then
    local need = math.min(new - window, tat) - now
    if need > wait then wait, worst = need, i end
  end
end
if worst > 0 then return {0, math.ceil(wait * 1000), worst} end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.17g', pushed[i]), 'PX', math.ceil((pushed[i] - now) * 1000) + 1000)
end
return {1}
"""


class RedisBuckets:
    """Buckets in Redis: one script call (one round trip) per request, on the Redis server's clock, so gateways
    on hosts whose clocks disagree still share one timeline.

    A failed or slow call serves the request; Redis is then skipped for ``retry_s`` (no timeout paid per request
    while it is down) and the warning is logged at most once per ``warn_every_s``.
    """

    def __init__(self, url: str, timeout_s: float = 0.1, *, client=None, retry_s: float = 1.0,
                 warn_every_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.client = client if client is not None else aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.script = self.client.register_script(GCRA_LUA)
        self.url, self.retry_s, self.warn_every_s, self.clock = url, retry_s, warn_every_s, clock
        self._skip_until = float("-inf")
        self._warned_at = float("-inf")
        self.failures = 0

    async def check(self, asks: Sequence[Ask], now: float | None = None) -> Verdict | None:
        """``now`` is for tests comparing with :func:`decide`; the gateway uses the server's clock."""
        if not asks or self.clock() < self._skip_until:
            return None if asks else Verdict(True)
        args: list = ["" if now is None else repr(now), WINDOW_S, EPSILON_S]
        for ask in asks:
            args += [repr(ask.interval_s), ask.cost]
        try:
            answer = await self.script(keys=[a.key for a in asks], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        if int(answer[0]) == 1:
            return Verdict(True)
        return Verdict(False, int(answer[1]) / 1000, refused_by=asks[int(answer[2]) - 1].key)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        at = self.clock()
        self._skip_until = at + self.retry_s
        if at - self._warned_at >= self.warn_every_s:
            self._warned_at = at
            log.warning("rate limits: Redis at %s failed (%s: %s); serving without limits until it answers "
                        "(%d failures so far)", _safe(self.url), type(exc).__name__, exc, self.failures)

    async def aclose(self) -> None:
        await self.client.aclose()


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url
