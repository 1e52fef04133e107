"""The simulator and the live gateway's Autoscaler take the same scaling decision for the same observed inputs.

The simulator runs a varying trace; every input it gives the policy (completed
calls, in flight, queued, replicas running, the time) is recorded and fed to
the real ``Autoscaler`` (a recording target, a fake load board and clock), whose
decisions must be the simulator's, tick for tick. The gateway's cold start is
the one it measured, which the simulator's model states: with the study LLM's
150 s the scale-down window is 300 s on both sides, not the configured 30 s.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np

import compoundry.sim.engine as engine
from compoundry.config.models import Pipeline
from compoundry.core.autoscaling.replica_policy import CompletionWindow
from compoundry.core.routing.route_view import RouteView
from compoundry.scaling.autoscaler import Autoscaler
from compoundry.sim.policies import build_plan
from compoundry.sim.scenario import study_scenario
from tests.scaling_fakes import MeasuredCapacity, MortalTarget

NAME, DEPLOYMENT = "dialogue-llm", "dialogue-llm-v1"


class RecordingWindow(CompletionWindow):
    adds: list = []

    def add(self, now, service_s, count=1):
        RecordingWindow.adds.append((now, service_s, count))
        super().add(now, service_s, count)


def _simulated(monkeypatch):
    study = study_scenario(days=0.1)
    scaling = study.components[NAME].scaling.model_copy(update={"min_replicas": 1, "max_replicas": 60})
    component = study.components[NAME].model_copy(update={"scaling": scaling})
    scenario = study.model_copy(update={
        "components": {NAME: component}, "models": {NAME: study.models[NAME]}, "invocation": {}, "schedules": {},
        "pipelines": {"agent": Pipeline.model_validate({"steps": {"answer": {"component": NAME}}})}})
    per_tick = np.concatenate([np.full(20, 60), np.linspace(60, 600, 30), np.full(20, 600), np.full(40, 30)])
    calls = per_tick.astype(np.int64).reshape(-1, 1)
    decisions = []
    real_decide = engine.decide

    def recording_decide(policy, window, now, in_flight, queued, current, held=False):
        desired = real_decide(policy, window, now, in_flight, queued, current, held)
        decisions.append((now, in_flight, queued, current, desired, len(RecordingWindow.adds)))
        return desired

    RecordingWindow.adds = []
    monkeypatch.setattr(engine, "decide", recording_decide)
    monkeypatch.setattr(engine, "CompletionWindow", RecordingWindow)
    engine.simulate(scenario, calls, calls[:, 0], build_plan("per-component", scenario, calls, [NAME]), [NAME])
    return scenario, component, decisions, list(RecordingWindow.adds)


def test_the_live_autoscaler_decides_what_the_simulator_decided(monkeypatch):
    scenario, component, decisions, adds = _simulated(monkeypatch)
    assert len({d[4] for d in decisions}) > 3  # the trace moves the count up and down
    now = [0.0]
    load = [(0, 0)]
    routes = SimpleNamespace(routes={NAME: RouteView(NAME, DEPLOYMENT, "m", "1", "llm", ())})

    async def refresh():
        return True

    routes.refresh = refresh
    board = SimpleNamespace(load_of=lambda c, d: load[0], processes=1)
    config = SimpleNamespace(components={NAME: component}, pipelines={})
    settings = SimpleNamespace(tick_s=scenario.tick_s, window_s=scenario.window_s, up_stabilization_s=0.0,
                               down_stabilization_s=scenario.down_stabilization_s)
    target = MortalTarget()
    measured = MeasuredCapacity({NAME: scenario.models[NAME].cold_start_s})
    scaler = Autoscaler(routes, board, lambda: config, target, measured, settings, clock=lambda: now[0])

    async def replay():
        target.live[DEPLOYMENT] = 1
        await scaler.tick()  # starts tracking at time 0, as the simulator's policy does
        fed, live_decisions = 0, []
        for at, in_flight, queued, current, _desired, n_adds in decisions:
            for add_at, service_s, count in adds[fed:n_adds]:
                now[0] = add_at
                for _ in range(count):  # the gateway observes one call at a time
                    scaler.observe(SimpleNamespace(deployment=DEPLOYMENT, compute_ms=service_s * 1000))
            fed = n_adds
            now[0], load[0], target.live[DEPLOYMENT] = at, (in_flight, queued), current
            before = len(target.calls)
            await scaler.tick()
            await asyncio.gather(*scaler._actions.values())
            live_decisions.append(target.calls[-1][1] if len(target.calls) > before else current)
        await scaler.stop()
        return live_decisions, scaler.describe()["deployments"][DEPLOYMENT]

    live_decisions, shown = asyncio.run(replay())
    assert live_decisions == [d[4] for d in decisions]
    assert shown["down_stabilization_s"] == 2 * scenario.models[NAME].cold_start_s == 300
    assert shown["cold_start_source"] == "measured"


def test_a_simulated_replica_lives_two_cold_starts_after_it_was_asked_for(monkeypatch):
    """Every scale-down comes 300 s (2 x the LLM's 150 s cold start) or more after the count last rose above
    the new level: a replica asked for serves at least a cold start after it is ready, not the configured 30 s."""
    scenario, _component, decisions, _adds = _simulated(monkeypatch)
    assert scenario.down_stabilization_s == 30
    ups, downs = [], 0
    for at, _f, _q, current, desired, _n in decisions:
        if desired > current:
            ups.append((at, desired))
        elif desired < current:
            downs += 1
            assert at - max(u for u, level in ups if level > desired) >= 2 * scenario.models[NAME].cold_start_s
    assert downs >= 2
