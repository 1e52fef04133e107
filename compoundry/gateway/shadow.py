"""Shadow mirroring: copies of real calls sent to a shadow variant in the background.

A mirrored call runs under the shadow deployment's breaker and balancer but
takes no lane slot (it must not delay real traffic), is never awaited by the
client, and is metered with ``shadow = true``. At most ``max_in_flight()``
run at once; past that a mirror is skipped rather than queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from compoundry.gateway.calls import CallContext, token_usage
from compoundry.gateway.errors import GatewayError

log = logging.getLogger(__name__)


class ShadowMirror:
    def __init__(self, call_route: Callable, record: Callable, max_in_flight: Callable[[], int],
                 clock: Callable[[], float] = time.perf_counter):
        """``call_route`` and ``record`` are the dispatcher's own: same breaker, balancer and metering."""
        self._call_route, self._record, self._max = call_route, record, max_in_flight
        self.clock = clock
        self._tasks: set[asyncio.Task] = set()  # kept referenced until done

    def __len__(self) -> int:
        return len(self._tasks)

    def send(self, route, config, inputs: Any, ctx: CallContext, path: str, variant: str) -> None:
        if route is None or len(self._tasks) >= self._max():
            return
        task = asyncio.create_task(self._call(route, config, inputs, ctx, path, variant))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _call(self, route, config, inputs: Any, ctx: CallContext, path: str, variant: str) -> None:
        started, outcome, attempts, usage = self.clock(), "ok", 0, (0, 0)
        try:
            output, attempts = await self._call_route(route, config, inputs, config.timeouts.request_s, ctx, path,
                                                      lane=False)
            usage = token_usage(output)
        except GatewayError as exc:
            outcome = exc.code
        except Exception:  # a mirror must never surface: log it and meter it as failed
            log.warning("shadow call to %s failed", route.deployment_id, exc_info=True)
            outcome = "internal_error"
        self._record(ctx, route.component, route, outcome, attempts, started, 0.0, usage, variant=variant, shadow=True)
