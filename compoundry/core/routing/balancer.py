"""Replica choice within one deployment: power of two choices over outstanding requests.

One :class:`Balancer` per deployment counts the requests in flight on each
replica (keys are any hashable: the replica URL or an id) and picks where the
next one goes. Replicas at the per-replica ``limit`` are not eligible; when
none is eligible :meth:`Balancer.pick` returns ``None`` and the caller queues,
spills over (``auto`` mode) or answers 503.

Usage by the gateway adapter (no await between ``pick`` and ``acquire``, so
the choice and the count stay consistent on the event loop)::

    replica = balancer.pick(ready_urls, exclude=tried)
    if replica is None:
        ...  # queue or spill
    with balancer.hold(replica):
        response = await call(replica)
"""

from __future__ import annotations

import random
from collections.abc import Collection, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Saturation:
    """How full a deployment is, for ``auto`` mode spill-over and metrics."""

    replicas: int  # ready replicas considered
    in_flight: int  # requests outstanding on them
    capacity: int | None  # replicas * limit; None when there is no limit
    utilization: float  # in_flight / capacity; 0.0 without a limit, 1.0 without ready replicas
    saturated: bool  # at or above the threshold: send new work elsewhere


class Balancer(Generic[K]):
    """Outstanding-request counts for one deployment's replicas, and the choice of the next replica."""

    def __init__(self, rng: random.Random, limit: int | None = None):
        """``limit``: requests in flight per replica (None: unlimited); :meth:`set_limit` changes it."""
        if limit is not None and limit < 1:
            raise ValueError("limit must be >= 1 or None")
        self.limit = limit
        self._rng = rng
        self._outstanding: dict[K, int] = {}  # only replicas with requests in flight

    def set_limit(self, limit: int | None) -> None:
        """A new per-replica limit (more gateway processes now share the replicas); calls in flight stay."""
        if limit is not None and limit < 1:
            raise ValueError("limit must be >= 1 or None")
        self.limit = limit

    def outstanding(self, replica: K) -> int:
        return self._outstanding.get(replica, 0)

    def total_outstanding(self) -> int:
        """Requests in flight on all replicas (the autoscaler's in-flight signal)."""
        return sum(self._outstanding.values())

    def eligible(self, replicas: Sequence[K], exclude: Collection[K] = ()) -> list[K]:
        """Replicas below the limit and not excluded, deduplicated, in the given order."""
        seen: set[K] = set()
        out: list[K] = []
        for replica in replicas:
            if replica in seen or replica in exclude:
                continue
            seen.add(replica)
            if self.limit is None or self.outstanding(replica) < self.limit:
                out.append(replica)
        return out

    def pick(self, replicas: Sequence[K], exclude: Collection[K] = ()) -> K | None:
        """Choose a replica, or None when every candidate is excluded or at its limit.

        With more than two candidates: sample two at random and take the less loaded (power of two
        choices: near least-loaded balance without every gateway herding onto the same idle replica).
        With one or two: take the least loaded, ties broken at random. Pass ``replicas`` as a
        sequence in a stable order; with a seeded ``rng`` the choice is then reproducible.
        """
        candidates = self.eligible(replicas, exclude)
        if not candidates:
            return None
        if len(candidates) > 2:
            candidates = self._rng.sample(candidates, 2)
        least = min(self.outstanding(r) for r in candidates)
        tied = [r for r in candidates if self.outstanding(r) == least]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)

    def acquire(self, replica: K) -> None:
        """Count one request in flight on ``replica`` (even above the limit: the caller decided)."""
        self._outstanding[replica] = self.outstanding(replica) + 1

    def release(self, replica: K) -> None:
        """The request on ``replica`` ended. Releasing more than was acquired is a bug and raises."""
        count = self.outstanding(replica)
        if count < 1:
            raise ValueError(f"release of {replica!r} without a matching acquire")
        if count == 1:
            del self._outstanding[replica]
        else:
            self._outstanding[replica] = count - 1

    @contextmanager
    def hold(self, replica: K) -> Iterator[K]:
        """``acquire`` now and ``release`` when the block ends, whatever happens in it."""
        self.acquire(replica)
        try:
            yield replica
        finally:
            self.release(replica)

    def saturation(self, replicas: Sequence[K], threshold: float = 1.0) -> Saturation:
        """Load of the ``replicas`` given (the ready ones). Saturated when no replica is ready, or with a
        limit when ``in_flight / capacity >= threshold`` (``threshold`` < 1 spills before queueing).
        Without a limit a deployment with ready replicas is never saturated.
        """
        ready = list(dict.fromkeys(replicas))
        in_flight = sum(self.outstanding(r) for r in ready)
        if not ready:
            return Saturation(0, 0, 0 if self.limit else None, 1.0, True)
        if self.limit is None:
            return Saturation(len(ready), in_flight, None, 0.0, False)
        capacity = len(ready) * self.limit
        utilization = in_flight / capacity  # compared as a ratio: 7/10 >= 0.7 holds, 7 >= 0.7 * 10 does not
        return Saturation(len(ready), in_flight, capacity, utilization, utilization >= threshold)
