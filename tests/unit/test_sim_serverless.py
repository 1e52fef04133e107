"""The simulated serverless backend (ADR 0042): cold after idling, a concurrency limit, throttled calls queue."""

from __future__ import annotations

import numpy as np
import pytest

from compoundry.sim.engine import SERVERLESS, Plan, simulate
from compoundry.sim.policies import hybrid_modes
from compoundry.sim.scenario import ComponentModel, ServerlessModel, study_scenario
from compoundry.sim.serverless import ServerlessPool

TICK = 10.0


def _pool(**serverless) -> ServerlessPool:
    # 1 s calls (0.95 s + 0.05 s overhead): calls per tick x 1 s / 10 s = calls in flight
    model = ComponentModel(service_s=0.95, cold_start_s=30, slots_per_replica=1,
                           serverless=ServerlessModel(**serverless))
    return ServerlessPool(model, TICK)


def test_the_first_calls_after_an_idle_period_meet_a_cold_start_and_warm_ones_do_not():
    pool = _pool(cold_start_s=5, keep_warm_s=60, concurrency_limit=None)
    assert pool.serve(100, 0, TICK) == (1.0, 0.0)  # nothing warm: every call needs a new instance
    assert pool.serve(100, 1, TICK) == (0.0, 0.0)  # the 10 instances stay warm
    cold, _ = pool.serve(200, 2, TICK)  # 20 in flight, 10 warm: half of the calls need new instances
    assert cold == pytest.approx(0.5)
    for k in range(3, 10):  # idle past keep_warm_s (6 ticks): the instances are reclaimed
        pool.serve(0, k, TICK)
    assert pool.serve(100, 10, TICK)[0] == 1.0
    assert pool.cold_calls == pytest.approx(100 + 100 + 100)


def test_calls_above_the_concurrency_limit_are_throttled_and_retried_in_order():
    pool = _pool(cold_start_s=0, concurrency_limit=10, retry_after_s=2)  # 10 in flight: 100 calls a tick
    assert pool.serve(100, 0, TICK) == (0.0, 0.0)
    cold, wait = pool.serve(300, 1, TICK)  # 200 left over: a queue of 0 -> 200 calls at 10 calls/s
    assert cold == 0.0 and wait == pytest.approx(100 / 10 + 1.0)  # mean queue ahead + half a retry interval
    assert pool.backlog == 200 and pool.throttled_calls == 200
    pool.serve(0, 2, TICK)
    pool.serve(0, 3, TICK)
    assert pool.backlog == 0  # the retries drain at the limit


def test_in_auto_mode_throttled_calls_come_back_through_the_gateway():
    pool = _pool(cold_start_s=0, concurrency_limit=10, retry_after_s=2)
    pool.serve(300, 0, TICK)
    assert pool.take_retries() == 200 and pool.backlog == 0
    # own replicas took 50 of the retries; 150 go back to the backend, which serves 100, with 20 calls/s of
    # own capacity draining the queue beside its own 10 calls/s
    _, wait = pool.serve(150, 1, TICK, retries=150, other_rate=20.0)
    assert pool.backlog == 50 and wait == pytest.approx((150 + 50) / 2 / 30 + 1.0)
    assert pool.served == 200


def test_an_always_warm_unlimited_backend_is_the_old_model():
    pool = _pool(cold_start_s=0, concurrency_limit=None)
    assert [pool.serve(n, k, TICK) for k, n in enumerate([0, 5_000, 0, 90_000])] == [(0.0, 0.0)] * 4
    assert pool.throttled_calls == 0 and pool.cold_calls == 0


def _serverless_only(**serverless):
    study = study_scenario(days=0.05)
    name = "embedder"
    model = study.models[name].model_copy(update={"serverless": ServerlessModel(**serverless)})
    return study.model_copy(update={"models": {**study.models, name: model}}), name


def test_the_engine_records_what_the_backend_did_per_tick():
    scenario, name = _serverless_only(cold_start_s=5, concurrency_limit=5)
    components = list(scenario.components)
    i = components.index(name)
    calls = np.zeros((60, len(components)), dtype=np.int64)
    calls[10:20, i] = 2_000  # 0.1 s calls: 20 in flight against a limit of 5
    plan = Plan("serverless", modes={c: SERVERLESS for c in components})
    result = simulate(scenario, calls, calls[:, i], plan, components)
    rec = result.records
    assert rec.ext_cold[10, i] == 1.0 and rec.ext_cold[11, i] == 0.0  # cold once, then warm
    assert rec.ext_wait_s[11, i] > rec.ext_wait_s[10, i] > 0  # the throttled backlog grows during the burst
    assert result.throttled[i] > 0 and result.external_calls[i] == 20_000
    assert rec.ext_wait_s[-1, i] == 0.0  # and drains after it


def test_hybrid_does_not_choose_a_serverless_endpoint_that_would_throttle_ordinary_traffic():
    scenario = study_scenario(days=0.05)
    components = list(scenario.components)
    calls = np.full((720, len(components)), 50, dtype=np.int64)  # two hours, cheaper on serverless than a replica
    assert hybrid_modes(scenario, calls, components)["sql-executor"] == SERVERLESS
    tight = {c: m.model_copy(update={"serverless": ServerlessModel(concurrency_limit=1)})
             for c, m in scenario.models.items()}
    modes = hybrid_modes(scenario.model_copy(update={"models": tight}), calls, components)
    assert modes["sql-executor"] == "auto"  # 50 calls x 0.35 s / 10 s = 1.75 in flight > 1
