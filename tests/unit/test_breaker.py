"""Circuit breaker transitions: table tests of each edge, property tests over random call sequences."""

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compoundry.config.models import Breaker
from compoundry.core.routing.breaker import Admission, BreakerBoard, CircuitBreaker


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class S:
    """Settings as a plain object: the breaker must not need the pydantic model."""

    consecutive_failures: int = 3
    error_rate: float = 0.5
    window_s: float = 10.0
    cooldown_s: float = 5.0


def make(settings=S(), **options):
    clock = FakeClock()
    return CircuitBreaker(settings, clock, **options), clock


def call(breaker, ok: bool) -> Admission:
    admission = breaker.allow()
    assert admission.allowed
    (breaker.record_success if ok else breaker.record_failure)(admission)
    return admission


def trip(breaker, settings=S()):
    for _ in range(settings.consecutive_failures):
        call(breaker, ok=False)
    assert breaker.state == "open"


# ------------------------------------------------------------------ closed -> open
@pytest.mark.parametrize(("outcomes", "state"), [
    ("SSSSSS", "closed"),
    ("FF", "closed"),
    ("FFF", "open"),  # consecutive_failures=3
    ("FFSFF", "closed"),  # a success resets the run (the rate rule is off in this test)
    ("SFFF", "open"),
])
def test_consecutive_failures(outcomes, state):
    breaker, _ = make(S(error_rate=1.0), min_calls=100)
    for o in outcomes:
        call(breaker, o == "S")
    assert breaker.state == state


@pytest.mark.parametrize(("outcomes", "error_rate", "min_calls", "state"), [
    ("FFFF", 0.5, 5, "closed"),  # 100 % but below min_calls
    ("FFFFF", 0.5, 5, "open"),
    ("SFSFS", 0.5, 5, "closed"),  # the last outcome is a success: successes never trip
    ("SFSFSF", 0.5, 5, "open"),  # 3/6 = 0.5 reaches 0.5
    ("SSFSSF", 0.5, 5, "closed"),  # 2/6 < 0.5
    ("SSSSSSSFFF", 0.3, 5, "open"),  # 3/10 == 0.3 despite float rounding of 0.3 * 10
    ("SSSSSSSSFF", 0.3, 5, "closed"),
])
def test_error_rate_over_window(outcomes, error_rate, min_calls, state):
    breaker, _ = make(S(consecutive_failures=100, error_rate=error_rate), min_calls=min_calls)
    for o in outcomes:
        call(breaker, o == "S")
    assert breaker.state == state


def test_window_slides_old_failures_out():
    breaker, clock = make(S(consecutive_failures=100, window_s=10.0), min_calls=5)
    for o in "FFSS":
        call(breaker, o == "S")
    clock.advance(10.0)  # those four are now exactly window_s old: gone
    for o in "SSSSF":
        call(breaker, o == "S")
    snap = breaker.snapshot()
    assert (snap.state, snap.window_calls, snap.window_failures) == ("closed", 5, 1)
    assert snap.error_rate == pytest.approx(0.2)


def test_window_keeps_outcomes_just_inside():
    breaker, clock = make(S(consecutive_failures=100, window_s=10.0), min_calls=5)
    for o in "FFSS":
        call(breaker, o == "S")
    clock.advance(9.9)
    call(breaker, False)  # 3 of 5 within the window
    assert breaker.state == "open"


# ------------------------------------------------------------------ open -> half_open
def test_open_refuses_with_cooldown_left_as_retry_after():
    breaker, clock = make()
    trip(breaker)
    clock.advance(2.0)
    admission = breaker.allow()
    assert not admission.allowed
    assert admission.retry_after_s == pytest.approx(3.0)
    assert breaker.snapshot().retry_after_s == pytest.approx(3.0)


def test_cooldown_elapsed_reads_half_open_and_admits_one_probe():
    breaker, clock = make()
    trip(breaker)
    clock.advance(4.999)
    assert breaker.state == "open"
    clock.advance(0.001)
    assert breaker.state == "half_open"
    probe = breaker.allow()
    assert probe.allowed and probe.is_probe
    refused = breaker.allow()
    assert not refused.allowed and refused.retry_after_s == 1.0
    assert breaker.snapshot().probes_in_flight == 1


def test_max_probes_in_flight():
    breaker, clock = make(max_probes=2, probe_retry_after_s=0.5)
    trip(breaker)
    clock.advance(5.0)
    assert [breaker.allow().allowed for _ in range(3)] == [True, True, False]


# ------------------------------------------------------------------ half_open -> closed / open
def test_probe_success_closes_with_fresh_counters():
    breaker, clock = make()
    trip(breaker)
    clock.advance(5.0)
    breaker.record_success(breaker.allow())
    snap = breaker.snapshot()
    assert (snap.state, snap.consecutive_failures, snap.window_calls, snap.probes_in_flight) == ("closed", 0, 0, 0)
    assert breaker.allow().allowed and not breaker.allow().is_probe


def test_probe_failure_reopens_and_restarts_cooldown():
    breaker, clock = make()
    trip(breaker)
    clock.advance(7.0)
    breaker.record_failure(breaker.allow())
    assert breaker.state == "open"
    assert breaker.allow().retry_after_s == pytest.approx(5.0)
    assert breaker.snapshot().times_opened == 2


def test_cancelled_probe_frees_its_slot_without_deciding():
    breaker, clock = make()
    trip(breaker)
    clock.advance(5.0)
    breaker.record_cancel(breaker.allow())
    assert breaker.state == "half_open"
    assert breaker.allow().is_probe


# ------------------------------------------------------------------ outcomes of calls admitted earlier
def test_late_success_from_before_opening_does_not_close_half_open():
    breaker, clock = make()
    slow = breaker.allow()
    trip(breaker)
    clock.advance(5.0)
    probe = breaker.allow()
    breaker.record_success(slow)
    assert breaker.state == "half_open"
    breaker.record_success(probe)
    assert breaker.state == "closed"


def test_late_failure_while_open_does_not_restart_cooldown():
    one = S(consecutive_failures=1)
    breaker, clock = make(one)
    slow = breaker.allow()
    trip(breaker, one)
    clock.advance(3.0)
    breaker.record_failure(slow)
    assert breaker.allow().retry_after_s == pytest.approx(2.0)
    assert breaker.snapshot().times_opened == 1


def test_late_failure_from_before_opening_does_not_reopen_half_open():
    one = S(consecutive_failures=1)
    breaker, clock = make(one)
    slow = breaker.allow()
    trip(breaker, one)
    clock.advance(5.0)
    breaker.allow()
    breaker.record_failure(slow)
    assert breaker.state == "half_open"


def test_second_probe_succeeding_after_the_first_failed_does_not_close():
    breaker, clock = make(max_probes=2)
    trip(breaker)
    clock.advance(5.0)
    first, second = breaker.allow(), breaker.allow()
    breaker.record_failure(first)
    breaker.record_success(second)
    assert breaker.state == "open"


def test_recording_a_refused_admission_is_a_bug():
    breaker, _ = make()
    trip(breaker)
    with pytest.raises(ValueError):
        breaker.record_failure(breaker.allow())


def test_rejects_nonsense_options():
    with pytest.raises(ValueError):
        make(max_probes=0)


# ------------------------------------------------------------------ board
def test_board_creates_lazily_and_reuses():
    clock = FakeClock()
    board = BreakerBoard(clock)
    assert board.snapshots() == {}
    a = board.get("dep-a", Breaker())
    assert board.get("dep-a", Breaker()) is a
    assert board.get("dep-b", Breaker()) is not a
    assert list(board.snapshots()) == ["dep-a", "dep-b"]


def test_board_uses_component_settings_and_resets_on_change():
    clock = FakeClock()
    board = BreakerBoard(clock, min_calls=100)
    breaker = board.get("dep", Breaker(consecutive_failures=2))
    call(breaker, False)
    call(breaker, False)
    assert board.get("dep", Breaker(consecutive_failures=2)).state == "open"
    assert board.get("dep", Breaker(consecutive_failures=3)).state == "closed"
    board.forget("dep")
    board.forget("unknown")
    assert board.snapshots() == {}


# ------------------------------------------------------------------ properties
OPS = st.lists(st.one_of(
    st.tuples(st.just("tick"), st.floats(0.0, 4.0)),
    st.tuples(st.just("allow"), st.just(0)),  # admit and hold: a call in flight
    st.tuples(st.sampled_from(["success", "failure", "failure", "cancel"]), st.integers(0, 20)),  # a held call ends
), min_size=20, max_size=120)
SETTINGS = st.builds(S, consecutive_failures=st.integers(1, 4), error_rate=st.sampled_from([0.25, 0.5, 1.0]),
                     window_s=st.floats(1.0, 20.0), cooldown_s=st.floats(0.5, 8.0))


def run_ops(settings_, ops, max_probes, observe):
    """Drive a breaker with random ops; ``observe(event, breaker, clock, before, admission, same_period)``
    checks each (``same_period``: the admission is from the state the breaker was in before the op)."""
    clock = FakeClock()
    breaker = CircuitBreaker(settings_, clock, min_calls=3, max_probes=max_probes)
    held: list[tuple[Admission, int]] = []  # admitted calls and the test's period they were admitted in
    period = 0
    for op, arg in ops:
        before = breaker.snapshot()
        admission = None
        if op == "tick":
            clock.advance(arg)
        elif op == "allow":
            admission = breaker.allow()
            if admission.allowed:
                held.append((admission, period))
        elif held:
            admission, admitted_in = held.pop(arg % len(held))
            getattr(breaker, f"record_{op}")(admission)
            observe(op, breaker, clock, before, admission, admitted_in == period)
        after = breaker.snapshot()
        if (after.state, after.times_opened) != (before.state, before.times_opened):
            period += 1
        if op == "allow":
            observe("allow", breaker, clock, before, admission, True)


@settings(max_examples=300, deadline=None)
@given(SETTINGS, OPS, st.integers(1, 3))
def test_never_admits_while_open_before_cooldown(settings_, ops, max_probes):
    opened_at: list[float] = []

    def observe(event, breaker, clock, before, admission, _same_period):
        snap = breaker.snapshot()
        if event == "failure" and snap.times_opened > before.times_opened:
            opened_at.append(clock())
        if event != "allow" and before.state == "open":  # only time ends open: late outcomes change nothing
            assert (snap.state, snap.times_opened, snap.retry_after_s) == ("open", before.times_opened,
                                                                          before.retry_after_s)
        if event == "allow" and admission.is_probe:  # the test's own clock arithmetic, not the breaker's
            assert clock() >= opened_at[-1] + settings_.cooldown_s
        if event == "allow" and before.state == "open":
            assert not admission.allowed
            assert admission.retry_after_s > 0
            assert clock() < opened_at[-1] + settings_.cooldown_s

    run_ops(settings_, ops, max_probes, observe)


@settings(max_examples=300, deadline=None)
@given(SETTINGS, OPS, st.integers(1, 3))
def test_probe_success_in_half_open_always_closes(settings_, ops, max_probes):
    def observe(event, breaker, clock, before, admission, same_period):
        if event == "success" and admission.is_probe and before.state == "half_open" and same_period:
            assert breaker.state == "closed"
        if event == "failure" and admission.is_probe and before.state == "half_open" and same_period:
            assert breaker.state == "open"
        if event == "success":
            assert breaker.snapshot().times_opened == before.times_opened  # successes never open it
        assert breaker.snapshot().probes_in_flight <= max_probes

    run_ops(settings_, ops, max_probes, observe)


@settings(max_examples=200, deadline=None)
@given(SETTINGS, st.integers(0, 10))
def test_n_consecutive_failures_always_open(settings_, successes_first):
    breaker, _ = make(settings_, min_calls=1000)
    for _ in range(successes_first):
        call(breaker, True)
    for i in range(settings_.consecutive_failures):
        assert breaker.state == "closed", i
        call(breaker, False)
    assert breaker.state == "open"
