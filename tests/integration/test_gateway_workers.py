"""`gateway.workers`: several gateway processes behind the one gateway port, as `compoundry up` starts them.

Real worker processes (uvicorn's supervisor), real HTTP: calls are answered by more than one worker, exactly
one leads the autoscaler and `/v1/scaling` answers the same from any of them, `/metrics` counts every
worker's calls, a killed worker is replaced, and no worker outlives its supervisor.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from compoundry.host.processes import pid_alive
from compoundry.store.leases import Leases
from tests.integration.gateway_fixture import route, running_gateway, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

COMPONENTS = "components:\n  embed: {model: m-embed, engine: pyfunc}\n"


def _fresh(gw, method: str, path: str, **kwargs) -> httpx.Response:
    """On a new connection each time: a kept-alive one stays with the worker that accepted it."""
    return httpx.request(method, gw.url + path, headers=dict(gw.client.headers), timeout=10, **kwargs)


def _calls_counted(exposition: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
               if line.startswith('compoundry_component_calls_total{component="embed"'))


def _pid(gateway: str) -> int:
    return int(gateway.split(":")[1])


def test_workers_share_the_port_one_leads_and_none_outlives_the_supervisor(tmp_path, stubs):
    seed = lambda store: route(store, "embed", [stubs["a"].url])  # noqa: E731
    with running_gateway(tmp_path, {"components": COMPONENTS}, seed, env={"COMPOUNDRY_GATEWAY_WORKERS": "2"},
                         expect_exit=True) as gw:
        leases = Leases(gw.store)
        wait_for(lambda: leases.holder("autoscaler"), timeout_s=30, what="a leader")
        answered_by = set()
        for _ in range(60):
            assert _fresh(gw, "POST", "/v1/components/embed", json={"inputs": {"delay_ms": 1}}).status_code == 200
            answered_by.add(_fresh(gw, "GET", "/v1/scaling").json()["gateway"])
        assert len(answered_by) == 2, answered_by  # both workers serve the one port
        counted = {_calls_counted(_fresh(gw, "GET", "/metrics").text) for _ in range(6)}
        assert counted == {60.0}, counted  # whichever worker answers the scrape counts every worker's calls
        assert leases.holder("autoscaler") in answered_by  # one of them leads...
        follower_view = wait_for(lambda: next((v for v in (_fresh(gw, "GET", "/v1/scaling").json() for _ in range(10))
                                               if not v["leader"]), None), timeout_s=30, what="a follower's answer")
        assert "embed-v1" in follower_view["deployments"]  # ... and a follower answers with the leader's view
        killed = _pid(leases.holder("autoscaler"))
        os.kill(killed, signal.SIGKILL)  # the leading worker dies
        wait_for(lambda: (h := leases.holder("autoscaler")) and _pid(h) != killed and pid_alive(_pid(h)),
                 timeout_s=30, what="another worker to lead")
        codes = [_fresh(gw, "POST", "/v1/components/embed", json={"inputs": {"delay_ms": 1}}).status_code
                 for _ in range(20)]
        assert set(codes) == {200}
        wait_for(lambda: len({_fresh(gw, "GET", "/v1/scaling").json()["gateway"] for _ in range(20)} - answered_by),
                 timeout_s=30, what="uvicorn to replace the killed worker")
        live = {_pid(_fresh(gw, "GET", "/v1/scaling").json()["gateway"]) for _ in range(40)}

        gw.proc.send_signal(signal.SIGKILL)  # the supervisor itself
        gw.proc.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(pid_alive(p) for p in live):
            time.sleep(0.2)
        assert not any(pid_alive(p) for p in live)  # the workers died with it (PR_SET_PDEATHSIG)
