"""The simulator and the live gateway's Autoscaler take the same scaling decision for the same observed inputs.

The simulator runs a varying trace; every input it gives the policy (completed
calls, in flight, queued, replicas running, the time) is recorded and fed to
the real ``Autoscaler`` (a recording target, a fake load board and clock), whose
decisions must be the simulator's, tick for tick.
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
from tests.fakes import NoCapacity, RecordingTarget

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
    board = SimpleNamespace(load_of=lambda c, d: load[0])
    config = SimpleNamespace(components={NAME: component}, pipelines={})
    settings = SimpleNamespace(tick_s=scenario.tick_s, window_s=scenario.window_s, up_stabilization_s=0.0,
                               down_stabilization_s=scenario.down_stabilization_s)
    target = RecordingTarget()
    scaler = Autoscaler(routes, board, lambda: config, target, NoCapacity(), settings, clock=lambda: now[0])

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
        return live_decisions

    assert asyncio.run(replay()) == [d[4] for d in decisions]
