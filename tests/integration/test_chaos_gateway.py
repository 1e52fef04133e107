"""Chaos: the gateway itself killed under load. No answered call may lose its metering record.

SIGTERM is a graceful stop (the sink flushes); SIGKILL gives no chance to flush: what the buffer held
lives only in the gateway's metering spool, and the next gateway to start puts it in the database.
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest
import sqlalchemy as sa

from compoundry.store import PlatformStore
from compoundry.store.tables import metering_table
from tests.integration.gateway_fixture import route, running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

COMPONENTS = "components:\n  embed: {model: m-embed, engine: pyfunc}\n"
PIPELINES = """
pipelines:
  answer:
    steps:
      first: {component: embed, inputs: {delay_ms: 1, text: "${request.q}"}}
      second: {component: embed, depends_on: [first], inputs: {delay_ms: 1, text: "${steps.first.echo.text}"}}
    output: {text: "${steps.second.echo.text}"}
"""


def _load(base_url: str, headers: dict, stop: threading.Event, answered: list[str]) -> None:
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        i = 0
        while not stop.is_set():
            i += 1
            path, body = (("/v1/pipelines/answer", {"inputs": {"q": "hi"}}) if i % 2 else
                          ("/v1/components/embed", {"inputs": {"delay_ms": 1}}))
            try:
                response = client.post(path, json=body)
            except httpx.TransportError:
                continue  # in flight when the gateway died: not answered
            if response.status_code == 200:
                answered.append(response.headers["x-request-id"])


def _metered(store: PlatformStore) -> dict[str, set[bool]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(metering_table.c.request_id, metering_table.c.delivered)).all()
    out: dict[str, set[bool]] = {}
    for request_id, delivered in rows:
        out.setdefault(request_id, set()).add(bool(delivered))
    return out


@pytest.mark.parametrize("fault", [signal.SIGTERM, signal.SIGKILL], ids=["terminated", "killed"])
def test_every_answered_call_keeps_its_metering_record_when_the_gateway_dies(tmp_path, stubs, fault):
    configs = {"components": COMPONENTS, "pipelines": PIPELINES}
    with running_gateway(tmp_path, configs, lambda store: route(store, "embed", [stubs["a"].url]),
                         expect_exit=True) as gw:
        stop, answered = threading.Event(), []
        workers = [threading.Thread(target=_load, args=(gw.url, dict(gw.client.headers), stop, answered))
                   for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            time.sleep(2.0)
            gw.proc.send_signal(fault)
            gw.proc.wait(15)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        spooled = list((tmp_path / "metering-spool").glob("metering-*.jsonl"))
    assert len(answered) > 50, len(answered)
    if fault == signal.SIGKILL:
        assert spooled  # the killed gateway's segments, left for the next one
        with running_gateway(tmp_path, configs, lambda store: None):  # starting recovers them
            pass
    metered = _metered(PlatformStore(f"sqlite:///{tmp_path / 'platform.db'}"))
    lost = [r for r in answered if r not in metered]
    print(f"\n{fault.name}: {len(answered)} answered, {len(lost)} without a metering record, "
          f"{sum(1 for v in metered.values() if False in v)} request(s) marked not delivered")
    assert lost == []
    assert not list((tmp_path / "metering-spool").glob("metering-*.jsonl"))  # recovered and deleted


def test_a_50000_input_request_is_refused_at_once_and_the_pipeline_keeps_answering(tmp_path, stubs):
    configs = {"components": COMPONENTS, "pipelines": PIPELINES}
    with running_gateway(tmp_path, configs, lambda store: route(store, "embed", [stubs["a"].url])) as gw:
        stop, answered = threading.Event(), []
        worker = threading.Thread(target=_load, args=(gw.url, dict(gw.client.headers), stop, answered))
        worker.start()
        try:
            refusals = [gw.client.post("/v1/components/embed", json={"inputs": {"texts": ["hi"] * 50_000}})
                        for _ in range(6)]
            asked = len(answered)
            time.sleep(1.0)
        finally:
            stop.set()
            worker.join()
    assert {r.status_code for r in refusals} == {413}
    assert refusals[0].json()["error"]["code"] == "request_too_large"
    assert len(answered) > asked  # still answering while and after the big ones were refused
