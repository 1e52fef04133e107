"""The store's observations of an experiment: the unit each value belongs to (issue 16)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from compoundry.config.experiment_config import Experiment
from compoundry.store import PlatformStore
from compoundry.store.observations import observe
from compoundry.store.tables import metering_table


def _experiment(sticky_key: str) -> Experiment:
    return Experiment.model_validate({
        "component": "embedder", "sticky_key": sticky_key, "metric": {"source": "metered", "name": "success"},
        "variants": [{"name": "champion", "alias": "champion", "weight": 50},
                     {"name": "challenger", "alias": "challenger", "weight": 50}]})


def test_calls_of_one_request_are_one_unit_and_a_session_key_falls_back_to_the_request(tmp_path):
    store = PlatformStore(f"sqlite:///{tmp_path / 'platform.db'}")
    store.create_schema()
    start = datetime.now(timezone.utc)
    rows = [dict(timestamp=start + timedelta(milliseconds=i), tenant="t", pipeline_id="p", request_id=request,
                 component="embedder", variant=variant, deployment_id="d", mode="dedicated",
                 latency_class="interactive", compute_ms=10.0, outcome=outcome, shadow=False)
            for i, (request, variant, outcome) in enumerate([("r1", "champion", "ok"), ("r1", "champion", "error:500"),
                                                              ("r2", "champion", "ok"), ("r3", "challenger", "ok")])]
    with store.engine.begin() as conn:
        conn.execute(metering_table.insert(), rows)
    until = start + timedelta(seconds=5)
    by_request = observe(store.engine, _experiment("request"), start - timedelta(seconds=1), until)
    champion = by_request["champion"]
    assert (champion.calls, champion.samples, champion.units, champion.unit) == (3, 3, 2, "request")
    assert champion.per_unit.sum_y == 2.0 and champion.mean == 2 / 3
    by_session = observe(store.engine, _experiment("session"), start - timedelta(seconds=1), until)
    assert by_session["champion"].unit == "session" and by_session["champion"].units == 2  # no key: per request
    assert by_session["challenger"].units == 1


def test_calls_that_carry_the_sticky_key_are_one_unit_per_session(tmp_path):
    """The gateway meters an experiment's sticky key (``s:<session>``): two requests of one session, one unit."""
    store = PlatformStore(f"sqlite:///{tmp_path / 'platform.db'}")
    store.create_schema()
    start = datetime.now(timezone.utc)
    rows = [dict(timestamp=start + timedelta(milliseconds=i), tenant="t", pipeline_id="p", request_id=request,
                 component="embedder", variant="champion", deployment_id="d", mode="dedicated",
                 latency_class="interactive", compute_ms=10.0, outcome="ok", shadow=False, unit_key=key)
            for i, (request, key) in enumerate([("r1", "s:a"), ("r2", "s:a"), ("r3", "s:b")])]
    with store.engine.begin() as conn:
        conn.execute(metering_table.insert(), rows)
    seen = observe(store.engine, _experiment("session"), start - timedelta(seconds=1), start + timedelta(seconds=5))
    assert (seen["champion"].calls, seen["champion"].units, seen["champion"].unit) == (3, 2, "session")
