"""The autoscaling policy: tables for the rule, properties for the guarantees."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compoundry.config.models import Scaling
from compoundry.core.autoscaling.replica_policy import (
    COLD_STARTS_PER_DOWN_WINDOW,
    Bounds,
    CompletionWindow,
    Load,
    ReplicaPolicy,
    cold_start_s,
    decide,
    decision_reason,
    deployment_bounds,
    down_window_s,
    needed_replicas,
)


@pytest.mark.parametrize("load, target, expected", [
    (Load(), 8, 0),
    (Load(arrival_rate=10, latency_s=0.1), 8, 1),  # L = 1
    (Load(arrival_rate=100, latency_s=0.1), 8, 2),  # L = 10 -> ceil(10/8)
    (Load(arrival_rate=80, latency_s=0.1), 8, 1),  # L = 8 exactly: one replica at its target
    (Load(arrival_rate=0, in_flight=17), 8, 3),  # what is in flight now counts when the rate lags
    (Load(queued=1), 8, 1),  # a request held for a cold start asks for one replica
    (Load(arrival_rate=1000, latency_s=0.5, in_flight=3), 4, 125),
])
def test_littles_law(load, target, expected):
    assert needed_replicas(load, target) == expected


def test_bounds_are_checked():
    with pytest.raises(ValueError):
        Bounds(3, 2, 8, 60)
    with pytest.raises(ValueError):
        Bounds(0, 0, 8, 60)
    assert Bounds(0, 4, 8, 60).with_floor(2).min_replicas == 2
    assert Bounds(0, 4, 8, 60).with_floor(9).min_replicas == 4  # a floor never exceeds max


def test_scale_from_zero_is_immediate():
    policy = ReplicaPolicy(Bounds(0, 3, 8, idle_window_s=60), now=0)
    assert policy.recommend(1000, Load(queued=1), current=0) == 1


def test_scale_to_zero_only_after_the_idle_window():
    policy = ReplicaPolicy(Bounds(0, 3, 8, idle_window_s=60, down_window_s=10), now=0)
    assert policy.recommend(0, Load(arrival_rate=5, latency_s=0.1), current=1) == 1
    assert policy.recommend(59, Load(), current=1) == 1
    assert policy.recommend(60, Load(), current=1) == 0
    assert policy.scale_to_zero_at() == 60


def test_min_replicas_keep_capacity_provisioned():
    policy = ReplicaPolicy(Bounds(2, 3, 8, idle_window_s=1), now=0)
    assert policy.recommend(10_000, Load(), current=2) == 2
    assert policy.scale_to_zero_at() is None


def test_scale_down_waits_for_the_down_window():
    policy = ReplicaPolicy(Bounds(0, 5, 1, idle_window_s=600, down_window_s=30), now=0)
    assert policy.recommend(0, Load(in_flight=4), current=1) == 4
    assert policy.recommend(10, Load(in_flight=1), current=4) == 4  # 4 was recommended 10 s ago
    assert policy.recommend(31, Load(in_flight=1), current=4) == 1


def test_scale_up_window_needs_a_sustained_rise():
    policy = ReplicaPolicy(Bounds(0, 5, 1, idle_window_s=600, up_window_s=5), now=0)
    assert policy.recommend(0, Load(in_flight=1), current=1) == 1
    assert policy.recommend(1, Load(in_flight=4), current=1) == 1  # a blip: the window still holds 1
    assert policy.recommend(7, Load(in_flight=4), current=1) == 4


loads = st.builds(Load, arrival_rate=st.floats(0, 500), in_flight=st.integers(0, 200), queued=st.integers(0, 50),
                  latency_s=st.floats(0, 5))
bounds = st.builds(lambda lo, extra, t, idle, up, down: Bounds(lo, lo + extra if lo + extra else 1, t, idle, up, down),
                   st.integers(0, 4), st.integers(0, 6), st.integers(1, 32), st.floats(1, 600),
                   st.floats(0, 30), st.floats(0, 120))


@settings(max_examples=300, deadline=None)
@given(bounds, st.lists(st.tuples(st.floats(0.01, 50), loads), min_size=1, max_size=40), st.integers(0, 10))
def test_never_above_max_nor_below_min(b, steps, start):
    policy, now, current = ReplicaPolicy(b, now=0), 0.0, min(start, b.max_replicas)
    for dt, load in steps:
        now += dt
        current = policy.recommend(now, load, current)
        assert b.min_replicas <= current <= b.max_replicas


@settings(max_examples=200, deadline=None)
@given(bounds, loads, st.integers(0, 10))
def test_no_flapping_under_steady_load(b, load, start):
    """Under a constant load the count settles and then never changes."""
    policy, current = ReplicaPolicy(b, now=0), min(start, b.max_replicas)
    counts = []
    for tick in range(1, 400):
        current = policy.recommend(float(tick), load, current)
        counts.append(current)
    settled = counts[-200:]
    assert len(set(settled)) == 1, settled


@settings(max_examples=200, deadline=None)
@given(bounds, st.lists(st.tuples(st.floats(0.01, 50), loads), min_size=1, max_size=40))
def test_zero_only_after_a_full_idle_window(b, steps):
    policy, now, current, last_active = ReplicaPolicy(b, now=0), 0.0, 1, 0.0
    for dt, load in steps:
        now += dt
        if load.active:
            last_active = now
        new = policy.recommend(now, load, current)
        if new == 0 and current > 0:
            assert now - last_active >= b.idle_window_s
            assert not load.active
        current = new


# --- the down window never shorter than k cold starts; dead replicas replaced -------------------
def test_the_down_window_is_the_configured_one_or_two_cold_starts():
    assert COLD_STARTS_PER_DOWN_WINDOW == 2
    assert down_window_s(30, cold_start=5) == 30  # a fast model: the configured window
    assert down_window_s(30, cold_start=150) == 300  # the 150 s LLM: two cold starts
    assert cold_start_s(measured=None, configured=120) == 120 and cold_start_s(measured=42.5, configured=120) == 42.5
    bounds = deployment_bounds(Scaling(max_replicas=4), 0.0, 30.0, floor=2, cold_start=150)
    assert (bounds.down_window_s, bounds.min_replicas) == (300, 2)


@settings(max_examples=200, deadline=None)
@given(st.floats(1, 300), st.floats(0, 60), st.lists(st.tuples(st.floats(0.5, 20), loads), min_size=1, max_size=60))
def test_a_replica_started_for_load_serves_at_least_one_cold_start_before_it_is_scaled_away(cold, configured, steps):
    """With k = 2: started at t, ready at t + cold, not removed before t + 2 cold (a full cold start of service)."""
    b = deployment_bounds(Scaling(min_replicas=1, max_replicas=8, target_concurrency=4, idle_window_s=3600),
                          0.0, configured, cold_start=cold)
    policy, now, current, raised_at = ReplicaPolicy(b, now=0), 0.0, 1, {}
    for dt, load in steps:
        now += dt
        new = policy.recommend(now, load, current)
        for count in range(current + 1, new + 1):
            raised_at[count] = now  # the replica that makes ``count`` started now
        for count in range(new + 1, current + 1):
            assert now - raised_at.get(count, -1e9) >= COLD_STARTS_PER_DOWN_WINDOW * cold
        current = new


def test_a_dead_replica_is_decided_for_as_if_it_still_ran():
    policy = ReplicaPolicy(Bounds(0, 5, 1, idle_window_s=600, down_window_s=60), now=0)
    window = CompletionWindow(10)
    assert decide(policy, window, 0, 4, 0, current=1) == 4  # load asked for 4
    assert decide(policy, window, 10, 1, 0, current=4) == 4  # load fell: the window holds 4
    # one of the four died: 3 live, and the load alone would say 1 (held at 3 by the window); it goes back to 4
    assert decide(policy, window, 11, 1, 0, current=3, lost=1) == 4
    assert decision_reason(4, current=3, lost=1) == "replace"
    assert decide(policy, window, 80, 1, 0, current=3, lost=1) == 1  # past the window: no replacement, down to 1


@pytest.mark.parametrize("desired, current, lost, floor, expected", [
    (0, 1, 1, 0, "idle"),
    (2, 1, 1, 0, "replace"),
    (3, 1, 1, 0, "load"),  # more than ran before the death: load asked for it
    (2, 1, 0, 2, "floor"),
    (2, 1, 0, 0, "load"),
    (1, 2, 0, 0, "load"),
])
def test_decision_reasons(desired, current, lost, floor, expected):
    assert decision_reason(desired, current, lost, floor) == expected
