"""Calls the gateway gave up on, still counted on their replica until it is done with them.

When a call times out, a BentoML replica does not stop: a sync API keeps computing in its thread pool
after the connection closes. Releasing the replica's slot at the timeout made a replica jammed by an
abandoned 50,000-text batch look idle, to the balancer (which sent it more), to the per-replica cap and to
the autoscaler (which saw no load). So the request to the replica runs as its own task: the caller stops
waiting at its timeout, the task keeps the replica's slot until the replica answers, or until
``busy_s`` more seconds pass, when its own timeout closes the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from compoundry.core.routing.retry import ErrorKind
from compoundry.gateway.errors import ComponentTimeout


class AbandonedCalls:
    """How many abandoned calls are still out (a metric), and the one way to make a call that may be."""

    def __init__(self) -> None:
        self.out = 0
        self._tasks: set[asyncio.Task] = set()

    async def call(self, balancer, url: str, send: Callable[[float], Awaitable[Any]], timeout_s: float,
                   busy_s: float, component: str) -> Any:
        """``send(timeout)`` to ``url`` holding its slot on ``balancer``; give up after ``timeout_s`` but keep
        the slot (and the request) for up to ``busy_s`` more seconds. ``busy_s`` 0: a plain call."""
        if busy_s <= 0:
            with balancer.hold(url):
                return await send(timeout_s)
        balancer.acquire(url)
        task = asyncio.ensure_future(send(timeout_s + busy_s))
        try:
            output = await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if task.done():
                balancer.release(url)
                if not task.cancelled():
                    task.exception()  # retrieved: it lost the race with the timeout, nobody will raise it
            else:
                self._keep(task, balancer, url)
            if isinstance(exc, asyncio.CancelledError):
                raise
            error = ComponentTimeout(f"{component} did not answer within {timeout_s:.3f}s",
                                     {"component": component, "replica": url})
            error.error_kind = ErrorKind.TIMEOUT
            raise error from None
        except BaseException:
            balancer.release(url)
            raise
        balancer.release(url)
        return output

    def _keep(self, task: asyncio.Task, balancer, url: str) -> None:
        self.out += 1
        self._tasks.add(task)

        def done(finished: asyncio.Task) -> None:
            self.out -= 1
            self._tasks.discard(finished)
            balancer.release(url)
            if not finished.cancelled():
                finished.exception()  # retrieved: an abandoned call's failure is nobody's to raise

        task.add_done_callback(done)

    async def aclose(self) -> None:
        """Cancel what is still out (at shutdown: nobody waits for these answers)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
