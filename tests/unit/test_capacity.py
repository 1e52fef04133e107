"""Capacity floors and replica facts (SQLite and PostgreSQL), the warm-up flow's name resolution,
which replicas a scale-down stops, and the autoscaler's wake-up, replacement and stabilisation logic with
a recording target."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace

import pytest

from compoundry.cli.scaling_commands import scaling_windows
from compoundry.config.models import Component, Pipeline
from compoundry.core.routing.route_view import RouteView
from compoundry.flows.scheduled_warmup import WarmupError, warmup_components
from compoundry.scaling.autoscaler import Autoscaler
from compoundry.scaling.targets.local import choose_to_stop
from compoundry.store import DeploymentStatus
from compoundry.store.capacity import CapacityStore, ReplicaRow
from compoundry.store.tables import utcnow
from tests.scaling_fakes import MeasuredCapacity, MortalTarget


def test_floors_overlap_to_the_highest_and_end_on_time(store):
    capacity = CapacityStore(store)
    first = capacity.add_floor("embedder", 1, timedelta(minutes=10), source="morning")
    capacity.add_floor("embedder", 3, timedelta(minutes=5))
    capacity.add_floor("llm", 2, timedelta(minutes=1), starts_at=utcnow() + timedelta(hours=1))  # not yet
    assert capacity.active_floors() == {"embedder": 3}
    assert capacity.active_floors(utcnow() + timedelta(minutes=7)) == {"embedder": 1}
    assert capacity.active_floors(utcnow() + timedelta(minutes=11)) == {}
    assert capacity.release(first.id) and not capacity.release(first.id)
    assert [f.min_replicas for f in capacity.floors()] == [3]
    with pytest.raises(ValueError):
        capacity.add_floor("embedder", -1, timedelta(minutes=1))


def test_live_replicas_bento_tags_and_cold_start_estimates(store):
    store.add_deployment("emb-v1", "embedder", "m", "1", "pyfunc")
    store.update_deployment("emb-v1", bento_tag="compoundry-pyfunc:abc")
    for i, status in enumerate((DeploymentStatus.READY, DeploymentStatus.STARTING, DeploymentStatus.STOPPED)):
        store.add_replica(f"emb-v1-r{i}", "emb-v1", f"http://127.0.0.1:{9000 + i}", pid=None, status=status)
    capacity = CapacityStore(store)
    assert [r.id for r in capacity.live_replicas(["emb-v1"])["emb-v1"]] == ["emb-v1-r0", "emb-v1-r1"]
    assert capacity.bento_tags(["emb-v1"]) == {"emb-v1": "compoundry-pyfunc:abc"}
    capacity.record_ready("emb-v1-r0", 4.0)
    capacity.record_ready("emb-v1-r1", 6.0)
    assert capacity.cold_start_estimates() == {"embedder": 5.0}


def test_scale_down_stops_starting_replicas_first_then_the_newest():
    rows = [ReplicaRow("d-r0", "d", "u0", 1, "ready", 1.0), ReplicaRow("d-rb", "d", "u1", 2, "ready", 1.0),
            ReplicaRow("d-ra", "d", "u2", 3, "starting", None)]
    assert [r.id for r in choose_to_stop(rows, 2)] == ["d-ra", "d-rb"]
    assert choose_to_stop(rows, 0) == []


def test_warmup_resolves_pipelines_to_their_components_and_refuses_unknown_names():
    config = SimpleNamespace(
        components={"a": None, "b": None, "c": None},
        pipelines={"p": Pipeline(steps={"x": {"component": "a"}, "y": {"component": "b", "depends_on": ["x"]}})})
    assert warmup_components(config, ["p"], ["c", "a"]) == ["c", "a", "b"]
    with pytest.raises(WarmupError, match="nope"):
        warmup_components(config, ["nope"], [])


# --- the autoscaler's request-path hooks, with a target that records what it is asked ----------
def _autoscaler(live: dict[str, int], clock=lambda: 0.0, idle_window_s: float = 300, load: list | None = None,
                measured: dict[str, float] | None = None, cold_start_s: float = 120):
    """Components a -> b -> c; ``load[0]``: a's (in flight, queued), the others have none."""
    load = load if load is not None else [(0, 0)]
    components = {n: Component(model=f"m-{n}", engine="pyfunc", timeouts={"cold_start_s": cold_start_s},
                               scaling={"max_replicas": 3, "idle_window_s": idle_window_s}) for n in "abc"}
    pipelines = {"chain": Pipeline(steps={"a": {"component": "a"}, "b": {"component": "b", "depends_on": ["a"]},
                                          "c": {"component": "c", "depends_on": ["b"]}})}
    routes = SimpleNamespace(routes={n: RouteView(n, f"{n}-v1", f"m-{n}", "1", "pyfunc", ()) for n in "abc"})

    async def refresh():
        return True

    routes.refresh = refresh
    board = SimpleNamespace(load_of=lambda component, deployment: load[0] if component == "a" else (0, 0), processes=1)
    config = SimpleNamespace(components=components, pipelines=pipelines)
    target = MortalTarget()
    target.live.update(live)
    settings = SimpleNamespace(tick_s=1.0, window_s=10.0, up_stabilization_s=0.0, down_stabilization_s=30.0)
    capacity = MeasuredCapacity(measured)
    return Autoscaler(routes, board, lambda: config, target, capacity, settings, clock=clock), target


def test_first_access_wakes_the_component_and_its_cold_downstream_at_once():
    async def scenario():
        scaler, target = _autoscaler({"a-v1": 1})  # a is warm, b and c are at zero
        await scaler.tick()
        assert scaler.describe()["cold"] == ["b", "c"] and target.calls == []
        scaler.on_access("a", None)
        await asyncio.sleep(0.05)
        assert sorted(target.calls) == [("b-v1", 1), ("c-v1", 1)]
        assert {e["component"]: e["reason"] for e in scaler.describe()["events"]} == {"b": "prewarm", "c": "prewarm"}
        scaler.on_access("a", None)  # nothing cold any more: no second start
        await asyncio.sleep(0.05)
        assert len(target.calls) == 2
        await scaler.stop()

    asyncio.run(scenario())


def test_the_last_component_wakes_only_itself():
    async def scenario():
        scaler, target = _autoscaler({})
        await scaler.tick()
        scaler.request_capacity("c", "cold_start")
        await asyncio.sleep(0.05)
        assert target.calls == [("c-v1", 1)]
        await scaler.stop()

    asyncio.run(scenario())


def test_a_prewarmed_component_stays_up_for_its_request_then_idles_out():
    async def scenario():
        now = [0.0]
        scaler, target = _autoscaler({"a-v1": 1}, clock=lambda: now[0], idle_window_s=3)
        await scaler.tick()
        scaler.on_access("a", None)
        await asyncio.sleep(0.05)
        assert target.live["c-v1"] == 1
        now[0] = 60.0  # far past c's idle window, but the request is still on its way (b cold-starting)
        await scaler.tick()
        await asyncio.sleep(0.05)
        assert target.live["c-v1"] == 1
        scaler.on_access("c", None)  # the request arrives: from now on c idles like any component
        for now[0] in (61.0, 100.0):
            await scaler.tick()
            await asyncio.sleep(0.05)
        assert target.live["c-v1"] == 0
        await scaler.stop()

    asyncio.run(scenario())


# --- dead replicas are replaced at once; the down window spans two cold starts ----------------
async def _ticks(scaler, now: list, times) -> None:
    for now[0] in times:
        await scaler.tick()
        await asyncio.gather(*scaler._actions.values())


def test_a_dead_replica_is_replaced_at_the_next_tick_without_load_asking():
    async def scenario():
        now, load = [0.0], [(20, 0)]  # 20 in flight at 8 per replica: 3 replicas
        scaler, target = _autoscaler({"a-v1": 1}, clock=lambda: now[0], load=load, cold_start_s=10)
        await _ticks(scaler, now, [0.0])
        assert target.live["a-v1"] == 3
        load[0] = (1, 0)  # load falls: the down window (30 s configured, 2 x 10 s cold start) holds 3
        await _ticks(scaler, now, [1.0, 2.0])
        assert target.live["a-v1"] == 3
        target.kill("a-v1")  # one replica's process dies; load does not ask for it back
        await _ticks(scaler, now, [3.0])
        assert target.calls[-1] == ("a-v1", 3)
        assert scaler.describe()["events"][-1]["reason"] == "replace"
        await _ticks(scaler, now, [40.0])  # past the window: the usual scale-down, no replacement loop
        assert target.live["a-v1"] == 1
        await scaler.stop()

    asyncio.run(scenario())


def test_a_death_during_a_scaling_action_is_replaced_when_it_ends():
    async def scenario():
        now, load = [0.0], [(20, 0)]
        scaler, target = _autoscaler({"a-v1": 3}, clock=lambda: now[0], load=load, cold_start_s=10)
        await _ticks(scaler, now, [0.0])
        load[0] = (0, 0)
        scaler._actions["a-v1"] = asyncio.get_running_loop().create_future()  # a slow scale action in flight
        target.kill("a-v1")
        await scaler.tick()  # the death is seen, the decision waits for the action
        assert target.calls == [] and scaler.tracked["a-v1"].lost == 1
        scaler._actions.pop("a-v1").cancel()
        await _ticks(scaler, now, [1.0])
        assert target.calls == [("a-v1", 3)]
        await scaler.stop()

    asyncio.run(scenario())


def test_a_dead_replica_that_idled_out_is_not_brought_back():
    async def scenario():
        now = [0.0]
        scaler, target = _autoscaler({"c-v1": 1}, clock=lambda: now[0], idle_window_s=5, cold_start_s=10)
        await _ticks(scaler, now, [0.0])
        now[0] = 1.0
        target.kill("c-v1")
        await _ticks(scaler, now, [1.0])  # still inside the idle window: replaced
        assert target.calls[-1] == ("c-v1", 1)
        now[0] = 10.0
        target.kill("c-v1")  # past the idle window it would have gone to zero: it stays there
        calls = len(target.calls)
        await _ticks(scaler, now, [10.0])
        assert len(target.calls) == calls and target.live["c-v1"] == 0
        await scaler.stop()

    asyncio.run(scenario())


def test_the_down_window_is_two_measured_cold_starts_and_shown():
    async def scenario():
        now = [0.0]
        scaler, _ = _autoscaler({"a-v1": 1, "b-v1": 1}, clock=lambda: now[0], measured={"a": 45.0},
                                cold_start_s=10)
        await _ticks(scaler, now, [0.0])
        shown = scaler.describe()
        assert shown["down_stabilization"] == {"configured_s": 30.0, "cold_starts": 2.0}
        a, b = shown["deployments"]["a-v1"], shown["deployments"]["b-v1"]
        assert (a["down_stabilization_s"], a["cold_start_s"], a["cold_start_source"]) == (90.0, 45.0, "measured")
        assert (b["down_stabilization_s"], b["cold_start_s"], b["cold_start_source"]) == (30.0, 10, "configured")
        scaler.capacity.measured["b"] = 20.0  # re-read once a minute
        await _ticks(scaler, now, [30.0])
        assert scaler.describe()["deployments"]["b-v1"]["down_stabilization_s"] == 30.0
        await _ticks(scaler, now, [61.0])
        assert scaler.describe()["deployments"]["b-v1"]["down_stabilization_s"] == 40.0
        assert scaler.capacity.reads == 2
        await scaler.stop()

    asyncio.run(scenario())


def test_plan_scaling_shows_each_components_window_in_force():
    config = SimpleNamespace(components={
        "llm": Component(model="m", engine="llm", timeouts={"cold_start_s": 300}),
        "fast": Component(model="m", engine="pyfunc", timeouts={"cold_start_s": 120})})
    rows = {r["component"]: r for r in scaling_windows(config, 30.0, {"llm": 150.0, "fast": 4.0})}
    assert (rows["llm"]["cold_start_s"], rows["llm"]["down_stabilization_s"]) == (150.0, 300.0)
    assert rows["llm"]["cold_start_source"] == "measured" and rows["llm"]["down_stabilization_from"] == "cold start"
    assert (rows["fast"]["down_stabilization_s"], rows["fast"]["down_stabilization_from"]) == (30.0, "configured")
    unmeasured = scaling_windows(config, 30.0, {})
    assert [r["down_stabilization_s"] for r in unmeasured] == [240.0, 600.0]  # sorted: fast, llm
