"""What follower gateways tell the autoscaler leader: their load per deployment and the requests they held.

With several gateway processes only one runs the autoscaler (the holder of the ``autoscaler`` lease); the
others see a share of the traffic the leader never sees. Each follower reports, every tick, one small
document: per deployment its calls in flight and queued now and its *cumulative* completions (so a missed
report loses nothing: the leader adds the difference to what it saw before), and the components it woke
(a request held for a cold start, a pre-warming access). Pure: the caller passes times and plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FollowerReport:
    """What one follower accumulates between reports (its request path writes, its tick sends)."""

    completions: dict[str, tuple[int, float]] = field(default_factory=dict)  # deployment -> (calls, service s)
    wakes: dict[tuple[str, str | None, str], float] = field(default_factory=dict)  # (component, variant, reason)

    def completed(self, deployment: str, service_s: float) -> None:
        calls, total = self.completions.get(deployment, (0, 0.0))
        self.completions[deployment] = (calls + 1, total + service_s)

    def woke(self, component: str, variant: str | None, reason: str, at: float) -> None:
        self.wakes[(component, variant, reason)] = at

    def forget_wakes_before(self, at: float) -> None:
        """Wakes the leader has had several reports to see."""
        self.wakes = {key: woke for key, woke in self.wakes.items() if woke >= at}

    def document(self, load: dict[str, tuple[int, int]], since: float) -> dict:
        """The report: ``load`` is deployment -> (in flight, queued) now; wakes newer than ``since`` only."""
        return {"load": {d: list(v) for d, v in load.items()},
                "completions": {d: list(v) for d, v in self.completions.items()},
                "wakes": [[c, v, r, at] for (c, v, r), at in self.wakes.items() if at > since]}


@dataclass(frozen=True)
class Demand:
    """What the leader adds to its own view this tick, summed over fresh follower reports."""

    load: dict[str, tuple[int, int]]                      # deployment -> (in flight, queued) elsewhere
    completions: dict[str, tuple[int, float]]            # deployment -> (new calls, their service seconds)
    wakes: list[tuple[str, str | None, str]]             # (component, variant, reason), each once


class DemandMerger:
    """The leader's memory of follower reports: cumulative counts seen and wakes already acted on."""

    def __init__(self) -> None:
        self._seen_completions: dict[tuple[str, str], tuple[int, float]] = {}
        self._seen_wakes: dict[str, float] = {}  # gateway -> newest wake time acted on

    def merge(self, reports: list[tuple[str, float, dict]], now: float, stale_s: float) -> Demand:
        """``reports``: (gateway, reported at, document); a report older than ``stale_s`` is a dead follower's."""
        load: dict[str, tuple[int, int]] = {}
        completions: dict[str, tuple[int, float]] = {}
        wakes: set[tuple[str, str | None, str]] = set()
        for gateway, at, document in reports:
            if now - at > stale_s:
                continue
            for deployment, (in_flight, queued) in document.get("load", {}).items():
                mine = load.get(deployment, (0, 0))
                load[deployment] = (mine[0] + int(in_flight), mine[1] + int(queued))
            for deployment, (calls, service) in document.get("completions", {}).items():
                before = self._seen_completions.get((gateway, deployment), (0, 0.0))
                if calls < before[0]:  # the follower restarted: its counts began again
                    before = (0, 0.0)
                self._seen_completions[(gateway, deployment)] = (calls, service)
                if calls > before[0]:
                    new = completions.get(deployment, (0, 0.0))
                    completions[deployment] = (new[0] + calls - before[0], new[1] + service - before[1])
            newest = self._seen_wakes.get(gateway, float("-inf"))
            for component, variant, reason, woke_at in document.get("wakes", []):
                if woke_at > newest:
                    wakes.add((component, variant, reason))
                    self._seen_wakes[gateway] = max(self._seen_wakes.get(gateway, newest), woke_at)
        return Demand(load, completions, sorted(wakes, key=lambda w: (w[0], w[1] or "", w[2])))
