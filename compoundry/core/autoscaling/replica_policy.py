"""How many replicas one variant deployment should run: a pure function of its own load.

Each deployment scales on *its own* invocation rate and in-flight requests,
never on the pipeline's aggregate traffic (the study's lesson 1: a spike on
the classifier must not scale the LLM). The rule is Little's law: the
concurrency a deployment needs is ``arrival_rate x latency`` (or what is in
flight and queued right now, if that is more), and each replica carries
``target_concurrency`` of it.

Two stabilisation windows keep the count from flapping, as Kubernetes' HPA
does: a scale-up takes the *lowest* recommendation of the up window (0 s by
default: react at once), a scale-down the *highest* of the down window. The
down window is never shorter than ``COLD_STARTS_PER_DOWN_WINDOW`` cold starts
of the component (``down_window_s``), so a slow model is not scaled away
about when its new replica has finished loading. Scale to zero needs a full
``idle_window_s`` with no arrival and nothing in flight. A replica that died
is not a scale-down: ``decide`` takes the count that ran before it died, and
``decision_reason`` calls what brings the count back a replacement.
The clock is the caller's ``now``: nothing here reads time or does I/O.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

#: A request held for a cold start counts as queued demand for this many decision ticks.
DEMAND_TTL_TICKS = 3
#: k: the scale-down window spans at least this many cold starts (ADR 0032). A replica started for a
#: recommendation that fell at once is ready one cold start later; with k = 2 it then still serves for
#: at least one more cold start before the window lets it go (k = 1 would remove it as it became ready).
COLD_STARTS_PER_DOWN_WINDOW = 2.0


@dataclass(frozen=True)
class Bounds:
    min_replicas: int
    max_replicas: int
    target_concurrency: int
    idle_window_s: float
    up_window_s: float = 0.0
    down_window_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas >= 1, got {self.min_replicas}/{self.max_replicas}")
        if self.target_concurrency < 1:
            raise ValueError("target_concurrency must be >= 1")

    def with_floor(self, floor: int) -> "Bounds":
        """These bounds with min raised to ``floor`` (a scheduled warm-up), never above max."""
        low = min(max(self.min_replicas, floor), self.max_replicas)
        return Bounds(low, self.max_replicas, self.target_concurrency, self.idle_window_s,
                      self.up_window_s, self.down_window_s)


@dataclass(frozen=True)
class Load:
    """What one deployment saw recently."""

    arrival_rate: float = 0.0  # requests per second over the observation window
    in_flight: int = 0  # being served by its replicas now
    queued: int = 0  # waiting: in its lane, or held for a cold start
    latency_s: float = 0.0  # mean service time of recent calls (0 when unknown)

    @property
    def active(self) -> bool:
        return self.arrival_rate > 0 or self.in_flight > 0 or self.queued > 0


def needed_replicas(load: Load, target_concurrency: int) -> int:
    """Replicas to carry ``load`` at ``target_concurrency`` each (Little's law), before any bound."""
    concurrency = max(load.arrival_rate * load.latency_s, float(load.in_flight + load.queued))
    if concurrency <= 0:
        return 0
    return max(1, math.ceil(concurrency / target_concurrency - 1e-9))


class ReplicaPolicy:
    """The replica count for one deployment, remembering only what stabilisation needs."""

    def __init__(self, bounds: Bounds, now: float):
        self._bounds = bounds
        self._last_active = now  # a new deployment counts as just used: no instant scale to zero
        self._history: deque[tuple[float, int]] = deque()

    @property
    def bounds(self) -> Bounds:
        return self._bounds

    @property
    def last_active(self) -> float:
        """When the deployment last had load, or was woken or freshly started (the idle window counts from here)."""
        return self._last_active

    def set_bounds(self, bounds: Bounds) -> None:
        """New bounds (a config reload, a warm-up floor starting or ending); the history is kept."""
        self._bounds = bounds

    def mark_active(self, now: float) -> None:
        """The deployment was just used, woken or started: its idle window restarts at ``now``."""
        self._last_active = max(self._last_active, now)

    def recommend(self, now: float, load: Load, current: int) -> int:
        """The replica count to run now, given the load and how many run (starting or ready)."""
        if load.active:
            self._last_active = now
        raw = self._raw(now, load, current)
        self._remember(now, raw)
        if raw == 0:
            return 0  # only reachable after a full idle window: that window was the stabilisation
        if raw > current:
            return min(r for t, r in self._history if t >= now - self._bounds.up_window_s)
        if raw < current:
            # a recommendation above ``current`` inside the window means "do not go down yet"
            return min(current, max(r for t, r in self._history if t >= now - self._bounds.down_window_s))
        return raw

    def _raw(self, now: float, load: Load, current: int) -> int:
        """The bounded recommendation before stabilisation."""
        b = self._bounds
        wanted = needed_replicas(load, b.target_concurrency)
        idle_for = now - self._last_active
        if wanted == 0 and current > 0 and idle_for < b.idle_window_s:
            wanted = 1  # recently used: keep one replica warm until the idle window has passed
        return min(max(wanted, b.min_replicas), b.max_replicas)

    def _remember(self, now: float, raw: int) -> None:
        self._history.append((now, raw))
        horizon = now - max(self._bounds.up_window_s, self._bounds.down_window_s)
        while self._history and self._history[0][0] < horizon:
            self._history.popleft()

    def scale_to_zero_at(self) -> float | None:
        """When an idle deployment may go to zero (None when min_replicas keeps it up)."""
        if self._bounds.min_replicas > 0:
            return None
        return self._last_active + self._bounds.idle_window_s


class CompletionWindow:
    """Completed calls of one deployment over the last ``window_s``: its arrival rate and mean latency.

    In steady state completions arrive as fast as requests do; requests still
    waiting are counted separately (in flight, queued), so nothing is missed.
    """

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self._calls: deque[tuple[float, float, int]] = deque()  # (finished at, total service seconds, calls)
        self._first_seen: float | None = None
        self._count, self._service = 0, 0.0  # running sums over ``_calls``: ``load`` is O(expired entries)

    def add(self, now: float, service_s: float, count: int = 1) -> None:
        """``count`` calls finished at ``now`` taking ``service_s`` each on average (the simulator adds a tick's worth)."""
        if count <= 0:
            return
        if self._first_seen is None:
            self._first_seen = now
        self._calls.append((now, service_s * count, count))
        self._count += count
        self._service += service_s * count

    def load(self, now: float, in_flight: int = 0, queued: int = 0) -> Load:
        calls, horizon = self._calls, now - self.window_s
        while calls and calls[0][0] < horizon:
            _, service, count = calls.popleft()
            self._count -= count
            self._service -= service
        if not calls:
            self._count, self._service = 0, 0.0  # no float drift survives an empty window
            return Load(0.0, in_flight, queued, 0.0)
        # a window younger than window_s (first calls after a scale from zero) is measured over its own age
        span = min(self.window_s, max(now - (self._first_seen or now), 1.0))
        return Load(self._count / span, in_flight, queued, self._service / self._count)


def cold_start_s(measured: float | None, configured: float) -> float:
    """A component's cold start for stabilisation: its measured seconds to ready when known, else the
    configured ``timeouts.cold_start_s`` (an upper bound: a replica slower than that failed)."""
    return configured if measured is None else measured


def down_window_s(configured_s: float, cold_start: float, k: float = COLD_STARTS_PER_DOWN_WINDOW) -> float:
    """The effective scale-down stabilisation: ``autoscaler.down_stabilization_s``, never under k cold starts."""
    return max(configured_s, k * cold_start)


def deployment_bounds(scaling, up_window_s: float, down_stabilization_s: float, floor: int = 0, *,
                      cold_start: float) -> Bounds:
    """A component's ``scaling:`` settings as bounds, raised by a warm-up ``floor`` (0: none).

    ``down_stabilization_s`` is the configured window; the bounds carry the effective one
    (``down_window_s`` with the component's ``cold_start`` seconds).
    """
    bounds = Bounds(scaling.min_replicas, scaling.max_replicas, scaling.target_concurrency, scaling.idle_window_s,
                    up_window_s, down_window_s(down_stabilization_s, cold_start))
    return bounds.with_floor(floor) if floor else bounds


def decide(policy: ReplicaPolicy, window: CompletionWindow, now: float, in_flight: int, queued: int,
           current: int, held: bool = False, lost: int = 0) -> int:
    """One tick's replica count for one deployment, exactly as the gateway's autoscaler takes it.

    ``held``: a request waited for this deployment within the last few ticks
    (it counts as one more queued call). ``lost``: replicas found dead since
    the last decision, no longer in ``current``; the policy decides for the
    count that ran before they died, so a death never reads as a scale-down and
    what the result exceeds ``current`` by is started at once. The simulator
    calls this too, so the same observed inputs give the same decision live and
    simulated.
    """
    load = window.load(now, in_flight, queued + (1 if held else 0))
    return policy.recommend(now, load, current + lost)


def decision_reason(desired: int, current: int, lost: int = 0, floor: int = 0) -> str:
    """Why ``decide`` moved the count from ``current`` (live) to ``desired``, for the scaling events.

    ``replace``: replicas died and the count goes back up without load asking
    for more than ran before; ``floor``: a warm-up floor raised it; ``idle``:
    to zero; ``load`` otherwise.
    """
    if desired == 0:
        return "idle"
    if lost and current < desired <= current + lost:
        return "replace"
    return "floor" if current < desired <= floor else "load"
