"""Fakes for the autoscaler's I/O beyond ``tests.fakes``: replicas that die, and measured cold starts."""

from __future__ import annotations

from tests.fakes import NoCapacity, RecordingTarget


class MortalTarget(RecordingTarget):
    """A recording target whose replicas can die: ``lost`` reports each death once, as the local target does."""

    def __init__(self):
        super().__init__()
        self.deaths: dict[str, int] = {}

    def kill(self, deployment_id: str, count: int = 1) -> None:
        self.live[deployment_id] -= count
        self.deaths[deployment_id] = self.deaths.get(deployment_id, 0) + count

    def lost(self, deployment_id: str) -> int:
        return self.deaths.pop(deployment_id, 0)


class MeasuredCapacity(NoCapacity):
    """No floors, a Bento for every deployment, and these measured cold starts (component -> seconds)."""

    def __init__(self, measured: dict[str, float] | None = None):
        self.measured = dict(measured or {})
        self.reads = 0

    def cold_start_estimates(self) -> dict[str, float]:
        self.reads += 1
        return dict(self.measured)
