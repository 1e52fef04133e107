"""Outlier ejection per replica, beneath the deployment's breaker (as Envoy's outlier detection does).

One dead replica must not take its deployment down: its failures eject *it*
for a while, the balancer stops picking it, and the other replicas carry the
traffic. The last healthy replica is never ejected: its failures are the
deployment's, and its breaker (with the component's own settings) judges them.

``consecutive_failures`` failures in a row (5xx, timeouts, refused or reset
connections) eject a replica for ``base_ejection_s`` x the number of times it
was ejected before (capped at ``max_ejection_s``); it comes back on its own
when that time has passed and is ejected again at its next failure run. A
success resets its run of failures. Pure: the caller passes ``now``. Replicas are
keyed by URL, as Envoy keys hosts by address: a new replica that takes the port
of a recently ejected one waits out the rest of that ejection.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class _Replica:
    failures_in_a_row: int = 0
    ejections: int = 0
    ejected_until: float = float("-inf")


@dataclass
class OutlierDetector(Generic[K]):
    consecutive_failures: int = 3
    base_ejection_s: float = 5.0
    max_ejection_s: float = 60.0
    _replicas: dict[K, _Replica] = field(default_factory=dict)

    def record_success(self, replica: K) -> None:
        state = self._replicas.get(replica)
        if state is not None:
            state.failures_in_a_row = 0

    def record_failure(self, replica: K, now: float, peers: Iterable[K] = ()) -> bool:
        """Count a failure of ``replica``; True when this one ejected it.

        The last healthy replica among ``peers`` (the deployment's replicas) is never ejected: its
        failures are the deployment's, for its breaker to judge.
        """
        state = self._replicas.setdefault(replica, _Replica())
        state.failures_in_a_row += 1
        if state.failures_in_a_row < self.consecutive_failures or state.ejected_until > now:
            return False
        if not any(p != replica and not self.ejected(p, now) for p in peers):
            return False
        state.ejections += 1
        state.failures_in_a_row = 0
        state.ejected_until = now + min(self.base_ejection_s * state.ejections, self.max_ejection_s)
        return True

    def ejected(self, replica: K, now: float) -> bool:
        state = self._replicas.get(replica)
        return state is not None and state.ejected_until > now

    def healthy(self, replicas: Iterable[K], now: float) -> list[K]:
        """The replicas not ejected now, in the order given."""
        return [r for r in replicas if not self.ejected(r, now)]

    def back_in_s(self, replicas: Iterable[K], now: float) -> float:
        """Seconds until the first of these ejected replicas may be tried again (0 if one is healthy)."""
        waits = [self._replicas[r].ejected_until - now if self.ejected(r, now) else 0.0 for r in replicas]
        return max(0.0, min(waits, default=0.0))
