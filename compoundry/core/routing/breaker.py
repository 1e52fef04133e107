"""Circuit breakers per deployment: pure policy over an injected clock.

A breaker stops the gateway from hammering a deployment that keeps failing and
gives it ``cooldown_s`` to recover before a few trial calls (probes) decide.

    closed --(N failures in a row, or error rate over the window)--> open
    open --(cooldown_s elapsed)--> half_open
    half_open --(a probe succeeds)--> closed
    half_open --(a probe fails)--> open (cooldown restarts)

Usage by the gateway adapter (no await between ``allow`` and the call start)::

    admission = breaker.allow()
    if not admission.allowed:
        raise ComponentUnavailable(..., retry_after=admission.retry_after_s)
    try:
        response = await call()
    except TransportError:
        breaker.record_failure(admission)
        raise
    else:
        breaker.record_success(admission)

Every outcome is reported with the :class:`Admission` it was let in by, so a
slow call admitted before the breaker opened cannot reset its cooldown or
close it while half open: each state change starts a new *epoch* and outcomes
from older epochs are ignored. A call that ends with neither outcome (the
client went away) must still call :meth:`CircuitBreaker.record_cancel` so the
probe slot it holds is freed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

State = Literal["closed", "open", "half_open"]
Clock = Callable[[], float]


class BreakerSettings(Protocol):
    """What a breaker reads from ``compoundry.config.models.Breaker`` (any object with these fields)."""

    consecutive_failures: int
    error_rate: float
    window_s: float
    cooldown_s: float


@dataclass(frozen=True)
class Admission:
    """The answer to :meth:`CircuitBreaker.allow`; hand it back with the call's outcome."""

    allowed: bool
    retry_after_s: float = 0.0  # when refused: seconds until the breaker may admit again (a hint)
    is_probe: bool = False  # admitted as a half-open trial call
    epoch: int = 0  # the breaker state this admission belongs to


@dataclass(frozen=True)
class BreakerSnapshot:
    """Read-only view for ``/metrics`` and the control API."""

    state: State
    consecutive_failures: int
    window_calls: int
    window_failures: int
    error_rate: float  # failures / calls in the window; 0.0 when the window is empty
    retry_after_s: float  # > 0 only while open
    probes_in_flight: int
    times_opened: int  # monotonically increasing: a counter for metrics


class CircuitBreaker:
    """One deployment's breaker. Deterministic: transitions depend only on calls and the clock."""

    def __init__(self, settings: BreakerSettings, clock: Clock, *, min_calls: int = 5,
                 max_probes: int = 1, probe_retry_after_s: float = 1.0):
        """``min_calls``: the error rate only trips once the window holds this many outcomes (so one
        failed call out of one is not a 100 % error rate). ``max_probes``: trial calls in flight while
        half open. ``probe_retry_after_s``: the retry hint when half open and all probe slots are taken.
        """
        if min_calls < 1 or max_probes < 1:
            raise ValueError("min_calls and max_probes must be >= 1")
        self.settings = settings
        self._clock = clock
        self._min_calls = min_calls
        self._max_probes = max_probes
        self._probe_retry_after_s = probe_retry_after_s
        self._state: State = "closed"
        self._epoch = 0
        self._opened_at = 0.0
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()  # (time, failed), oldest first
        self._window_failures = 0
        self._probes = 0
        self._times_opened = 0

    # ------------------------------------------------------------------ queries
    @property
    def state(self) -> State:
        """The current state; an open breaker whose cooldown has passed reads as ``half_open``."""
        self._advance()
        return self._state

    def snapshot(self) -> BreakerSnapshot:
        self._advance()
        self._prune()
        calls = len(self._window)
        retry_after = self._cooldown_left() if self._state == "open" else 0.0
        return BreakerSnapshot(
            state=self._state, consecutive_failures=self._consecutive, window_calls=calls,
            window_failures=self._window_failures,
            error_rate=self._window_failures / calls if calls else 0.0,
            retry_after_s=retry_after, probes_in_flight=self._probes, times_opened=self._times_opened)

    # ------------------------------------------------------------------ admission
    def allow(self) -> Admission:
        """Admit or refuse one call. Admitting a half-open probe takes a probe slot until its outcome."""
        self._advance()
        if self._state == "closed":
            return Admission(True, epoch=self._epoch)
        if self._state == "open":
            return Admission(False, retry_after_s=self._cooldown_left(), epoch=self._epoch)
        if self._probes < self._max_probes:
            self._probes += 1
            return Admission(True, is_probe=True, epoch=self._epoch)
        return Admission(False, retry_after_s=self._probe_retry_after_s, epoch=self._epoch)

    # ------------------------------------------------------------------ outcomes
    def record_success(self, admission: Admission) -> None:
        """A call admitted by ``admission`` got a response. A probe's success closes the breaker."""
        if not self._current(admission):
            return
        if admission.is_probe:
            self._to("closed")
            return
        self._consecutive = 0
        self._add(failed=False)

    def record_failure(self, admission: Admission) -> None:
        """A call failed in a way that counts against the deployment (transport error, timeout, 5xx)."""
        if not self._current(admission):
            return
        if admission.is_probe:
            self._to("open")
            return
        self._consecutive += 1
        self._add(failed=True)
        if self._consecutive >= self.settings.consecutive_failures or self._rate_tripped():
            self._to("open")

    def record_cancel(self, admission: Admission) -> None:
        """A call ended without an outcome (cancelled): free its probe slot, count nothing."""
        if self._current(admission) and admission.is_probe:
            self._probes -= 1

    # ------------------------------------------------------------------ internals
    def _current(self, admission: Admission) -> bool:
        """Outcomes only count for admissions of the current state (see the module docstring)."""
        if not admission.allowed:
            raise ValueError("record an outcome only for an admitted call")
        self._advance()
        return admission.epoch == self._epoch

    def _advance(self) -> None:
        if self._state == "open" and self._cooldown_left() <= 0:
            self._to("half_open")

    def _cooldown_left(self) -> float:
        return max(0.0, self._opened_at + self.settings.cooldown_s - self._clock())

    def _to(self, state: State) -> None:
        """Enter ``state`` with fresh counters; a new epoch voids outcomes of calls admitted before."""
        self._state = state
        self._epoch += 1
        self._probes = 0
        self._consecutive = 0
        self._window.clear()
        self._window_failures = 0
        if state == "open":
            self._opened_at = self._clock()
            self._times_opened += 1

    def _add(self, failed: bool) -> None:
        self._window.append((self._clock(), failed))
        self._window_failures += failed
        self._prune()

    def _prune(self) -> None:
        """Drop outcomes older than ``window_s`` (an outcome exactly ``window_s`` old is dropped)."""
        horizon = self._clock() - self.settings.window_s
        while self._window and self._window[0][0] <= horizon:
            _, failed = self._window.popleft()
            self._window_failures -= failed

    def _rate_tripped(self) -> bool:
        calls = len(self._window)
        # a division (not failures >= rate * calls) so 3 of 10 at error_rate 0.3 trips despite float rounding
        return calls >= self._min_calls and self._window_failures / calls >= self.settings.error_rate


class BreakerBoard:
    """The gateway's breakers, one per deployment id, created on first use from the component's settings."""

    def __init__(self, clock: Clock, *, min_calls: int = 5, max_probes: int = 1,
                 probe_retry_after_s: float = 1.0):
        self._clock = clock
        self._options = dict(min_calls=min_calls, max_probes=max_probes,
                             probe_retry_after_s=probe_retry_after_s)
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, deployment_id: str, settings: BreakerSettings) -> CircuitBreaker:
        """The deployment's breaker. Changed settings (a config reload) start a fresh, closed breaker."""
        breaker = self._breakers.get(deployment_id)
        if breaker is None or breaker.settings != settings:
            breaker = CircuitBreaker(settings, self._clock, **self._options)
            self._breakers[deployment_id] = breaker
        return breaker

    def forget(self, deployment_id: str) -> None:
        """Drop a deleted deployment's breaker (no-op when unknown)."""
        self._breakers.pop(deployment_id, None)

    def snapshots(self) -> dict[str, BreakerSnapshot]:
        return {key: breaker.snapshot() for key, breaker in sorted(self._breakers.items())}
