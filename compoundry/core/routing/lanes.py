"""Priority lanes: one bounded wait queue per component, ordered by latency class, deadline, arrival.

A request that finds its component at its concurrency limit waits in *that
component's* lane, so a fast component never waits behind a slow one. Within a
lane, ``interactive`` goes before ``batch``, then the earliest deadline, then
first come (FIFO). Deadlines are monotonic seconds by which the request must be
*finished*.

Shedding, so callers get a fast 429 + Retry-After instead of a late timeout:

* **full**: the lowest-priority entry loses. A new request that ranks above
  the worst queued one displaces it (a new interactive request sheds a queued
  batch one); otherwise the new request is refused.
* **doomed**: a request that must wait is refused at once when
  ``now + expected wait + expected service > deadline``; the expected wait is
  ``(position - free slots + 1) * service / concurrency`` with an EWMA of
  observed service times.
* **expired**: a queued request whose deadline passes is removed.

:class:`LaneQueue` is the pure core (plain data, ``now`` passed in);
:class:`Lane` is the asyncio adapter the gateway uses::

    lane = Lane(concurrency=replicas * target_concurrency, capacity=256)
    try:
        async with lane.slot("interactive", deadline=clock() + sla_s):
            response = await call()
    except Shed as shed:
        return 429 with Retry-After: ceil(shed.retry_after_s)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal

Clock = Callable[[], float]
ShedReason = Literal["queue_full", "deadline", "displaced", "expired"]
#: Lower ranks are served first.
CLASS_RANK: dict[str, int] = {"interactive": 0, "batch": 1}
_ORDER = attrgetter("order")


class Shed(Exception):
    """A request refused by a lane; the caller answers 429 with ``Retry-After: ceil(retry_after_s)``.

    Returned as a value by :meth:`LaneQueue.offer` and raised by :meth:`Lane.slot`.
    """

    def __init__(self, reason: ShedReason, retry_after_s: float):
        super().__init__(f"shed ({reason}); retry after {retry_after_s:.2f}s")
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Admitted:
    """``entry`` was queued at ``position`` (0 = next); ``displaced`` was shed to make room for it."""

    position: int
    displaced: tuple[Entry, Shed] | None = None


@dataclass(eq=False)
class Entry:
    """One waiting request. ``payload`` is the adapter's (a future); the queue never looks at it."""

    latency_class: str
    deadline: float = float("inf")
    payload: Any = None
    seq: int = -1  # arrival order, set by the queue
    order: tuple[int, float, int] = field(init=False, default=(0, 0.0, 0))  # sort key, set by the queue


class LaneQueue:
    """Ordering, admission and slot accounting for one component. Pure: every method takes ``now``."""

    def __init__(self, *, concurrency: int, capacity: int, initial_service_s: float = 0.0,
                 alpha: float = 0.2, min_retry_after_s: float = 0.5):
        if concurrency < 1 or capacity < 0:
            raise ValueError("concurrency must be >= 1 and capacity >= 0")
        self.concurrency = concurrency
        self.capacity = capacity
        self.service_s = initial_service_s  # EWMA of observed service time; 0 = unknown, no early shedding
        self.alpha = alpha
        self.min_retry_after_s = min_retry_after_s
        self.in_flight = 0
        self._items: list[Entry] = []  # kept sorted by Entry.order
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def entries(self) -> list[Entry]:
        """Queued entries in service order (a copy)."""
        return list(self._items)

    @property
    def free_slots(self) -> int:
        return max(0, self.concurrency - self.in_flight)

    def expected_wait(self, position: int) -> float:
        """Seconds until the entry at ``position`` gets a slot, if nothing overtakes it."""
        waves = position - self.free_slots + 1
        return max(0, waves) * self.service_s / self.concurrency

    def retry_after(self, position: int) -> float:
        """Retry-After hint for a request refused at ``position``: its expected wait, at least a floor."""
        return max(self.min_retry_after_s, self.expected_wait(position))

    def offer(self, entry: Entry, now: float) -> Admitted | Shed:
        """Queue ``entry`` or refuse it; a full queue sheds its lowest-priority entry (new or queued)."""
        entry.seq = next(self._seq)
        entry.order = (CLASS_RANK[entry.latency_class], entry.deadline, entry.seq)
        position = bisect_left(self._items, entry.order, key=_ORDER)
        if len(self._items) >= self.capacity and (not self._items or position >= len(self._items)):
            return Shed("queue_full", self.retry_after(len(self._items)))
        if now >= entry.deadline or now + self.expected_wait(position) + self.service_s > entry.deadline:
            return Shed("deadline", self.retry_after(position))
        displaced = None
        if len(self._items) >= self.capacity:
            worst = self._items.pop()
            displaced = (worst, Shed("displaced", self.retry_after(len(self._items))))
        self._items.insert(position, entry)
        return Admitted(position, displaced)

    def expire(self, now: float) -> list[tuple[Entry, Shed]]:
        """Remove queued entries whose deadline has passed, with the :class:`Shed` to give each."""
        gone = [e for e in self._items if e.deadline <= now]
        if gone:
            self._items = [e for e in self._items if e.deadline > now]
        return [(e, Shed("expired", self.retry_after(len(self._items)))) for e in gone]

    def pop(self, now: float) -> Entry | None:
        """Start the best live entry if a slot is free (taking the slot); expired entries are skipped.

        Call :meth:`expire` first to learn which entries were dropped as expired.
        """
        while self._items and self.free_slots > 0:
            entry = self._items.pop(0)
            if entry.deadline > now:
                self.in_flight += 1
                return entry
        return None

    def remove(self, entry: Entry) -> bool:
        """Withdraw a queued entry (its waiter gave up); False when it is not queued."""
        i = bisect_left(self._items, entry.order, key=_ORDER)
        if i < len(self._items) and self._items[i] is entry:
            del self._items[i]
            return True
        return False

    def acquire(self) -> bool:
        """Take a slot without queueing when one is free and nobody waits (the fast path)."""
        if self._items or self.free_slots == 0:
            return False
        self.in_flight += 1
        return True

    def release(self, service_s: float | None = None) -> None:
        """Free a slot; ``service_s`` (how long the call held it) feeds the EWMA when given."""
        if self.in_flight <= 0:
            raise RuntimeError("release without a matching acquire/pop")
        self.in_flight -= 1
        if service_s is not None and service_s >= 0:
            self.service_s = service_s if self.service_s == 0 else (
                self.alpha * service_s + (1 - self.alpha) * self.service_s)



class Lane:
    """asyncio adapter over :class:`LaneQueue`: ``async with lane.slot(cls, deadline)`` or :class:`Shed`."""

    def __init__(self, *, concurrency: int, capacity: int, clock: Clock = time.monotonic, **queue_options: Any):
        self.queue = LaneQueue(concurrency=concurrency, capacity=capacity, **queue_options)
        self.clock = clock  # must match the clock deadlines are computed with

    def resize(self, concurrency: int) -> None:
        """New concurrency limit (replicas changed); extra slots go to waiters at once."""
        self.queue.concurrency = max(1, concurrency)
        self._dispatch()

    @asynccontextmanager
    async def slot(self, latency_class: str, deadline: float = float("inf")) -> AsyncIterator[None]:
        """Hold one concurrency slot for the body; raises :class:`Shed` when refused or out of time."""
        await self._acquire(latency_class, deadline)
        started = self.clock()
        try:
            yield
        finally:
            self.queue.release(self.clock() - started)
            self._dispatch()

    async def _acquire(self, latency_class: str, deadline: float) -> None:
        if self.queue.acquire():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = Entry(latency_class, deadline, future)
        result = self.queue.offer(entry, self.clock())
        if isinstance(result, Shed):
            raise result
        if result.displaced is not None:
            _fail(*result.displaced)
        self._dispatch()
        timeout = None if deadline == float("inf") else max(0.0, deadline - self.clock())
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)  # raises the Shed if displaced/expired
            return
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            self._leave(entry, future)
            raise
        if self.queue.remove(entry):  # still queued when its deadline passed
            future.cancel()
            raise Shed("expired", self.queue.retry_after(len(self.queue)))
        await future  # settled in the same instant: granted (return) or shed (raise)

    def _leave(self, entry: Entry, future: asyncio.Future[None]) -> None:
        """A cancelled waiter leaves: withdraw its entry, or give back the slot it was just granted."""
        if self.queue.remove(entry):
            future.cancel()
        elif future.done() and not future.cancelled() and future.exception() is None:
            self.queue.release()
            self._dispatch()

    def _dispatch(self) -> None:
        """Fail expired waiters, then hand free slots to the best waiting entries."""
        now = self.clock()
        for entry, shed in self.queue.expire(now):
            _fail(entry, shed)
        while (entry := self.queue.pop(now)) is not None:
            if entry.payload.done():  # its waiter already left; give the slot back
                self.queue.release()
                continue
            entry.payload.set_result(None)


def _fail(entry: Entry, shed: Shed) -> None:
    if not entry.payload.done():
        entry.payload.set_exception(shed)
