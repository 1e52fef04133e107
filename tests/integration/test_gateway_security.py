"""The Prediction Service's edge: API keys, scopes, revocation, body limits, crashes without tracebacks.

A real gateway process over real HTTP, routed to a stub replica; the crash
test builds the app in-process from its parts.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from compoundry.config.loader import load_config
from compoundry.config.settings import PlatformSettings
from compoundry.gateway.app import GatewayParts, create_app
from compoundry.store import PlatformStore
from compoundry.store.api_key_store import ApiKeys
from tests.integration.gateway_fixture import route, wait_for

pytestmark = pytest.mark.integration

COMPONENTS = """
components:
  echo: {model: m-echo, engine: pyfunc}
"""


def CONFIGS(stubs) -> dict[str, str]:  # noqa: N802 - reads like the constant it stands for
    return {"components": COMPONENTS, "platform": "route_refresh_s: 0.1\ngateway: {body_timeout_s: 1}\n"}


def seed(store: PlatformStore, stubs) -> None:
    route(store, "echo", [stubs["a"].url])



def test_keys_scopes_and_revocation(gateway, gw):
    store = gw.store
    url = "/v1/components/echo"
    anonymous = httpx.post(f"{gateway.base_url}{url}", json={"inputs": {}})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = gateway.post(url, json={"inputs": {}}, headers={"Authorization": "Bearer ck_nope_nope"})
    assert wrong.status_code == 401
    app_key = {"Authorization": f"Bearer {gw.keys['invoke']}"}
    assert gateway.post(url, json={"inputs": {}}, headers=app_key).status_code == 200
    assert gateway.post(url, json={"inputs": {}}, headers={"X-Api-Key": gw.keys["invoke"],
                                                           "Authorization": ""}).status_code == 200
    forbidden = gateway.get("/control/deployments", headers=app_key)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert gateway.get("/control/deployments").status_code == 200  # the admin key
    assert httpx.get(f"{gateway.base_url}/healthz").status_code == 200  # probes stay open
    doomed_id, doomed = ApiKeys(store).create("acme", ["invoke"], name="revoked in this test")
    wait_for(lambda: gateway.post(url, json={"inputs": {}}, headers={"Authorization": f"Bearer {doomed}"}).status_code
             == 200, timeout_s=5, what="the new key to be accepted")
    doomed_key = {"Authorization": f"Bearer {doomed}"}
    assert gateway.post(url, json={"inputs": {}}, headers=doomed_key).status_code == 200
    assert ApiKeys(store).revoke(doomed_id)
    wait_for(lambda: gateway.post(url, json={"inputs": {}}, headers=doomed_key).status_code == 401,
             timeout_s=5, what="the revoked key to be refused")


def test_an_oversized_body_is_a_413(gateway):
    big = {"inputs": {"text": "x" * (4 * 1024 * 1024 + 10)}}
    response = gateway.post("/v1/components/echo", json=big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"

    def chunks():  # no Content-Length: refused while reading
        yield b'{"inputs": {"text": "'
        for _ in range(5):
            yield b"y" * (1024 * 1024)
        yield b'"}}'
    streamed = gateway.post("/v1/components/echo", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "payload_too_large"


def test_an_unexpected_exception_is_a_json_500_without_traceback(tmp_path, caplog):
    """In process (no lifespan needed): a handler that crashes."""
    (tmp_path / "components.yaml").write_text(COMPONENTS)
    (tmp_path / "platform.yaml").write_text("gateway: {auth_required: false}\n")
    settings = PlatformSettings.load(tmp_path)
    store = PlatformStore(f"sqlite:///{tmp_path / 'p.db'}")
    app = create_app(GatewayParts.build(settings, load_config(tmp_path), store))

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret internals")

    async def get():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/boom", headers={"X-Request-Id": "r-1"})

    response = asyncio.run(get())
    assert response.status_code == 500 and response.headers["x-request-id"] == "r-1"
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error; see the gateway log",
                                         "type": "server_error", "param": None, "request_id": "r-1"}}
    assert "secret internals" in caplog.text  # logged server-side only


@pytest.mark.parametrize("bad", ["x" * 101, "has space", "semi;colon", "quote\"d", "ünïcode"])
def test_a_malformed_request_id_is_refused_before_anything_is_called(gateway, stubs, bad):
    before = stubs["a"].calls
    response = gateway.post("/v1/components/echo", json={"inputs": {}},
                            headers={"X-Request-Id": bad.encode("utf-8")})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == "X-Request-Id"
    assert response.headers["x-request-id"] != bad and len(response.headers["x-request-id"]) == 32  # a fresh id
    assert stubs["a"].calls == before


def test_a_well_formed_request_id_is_echoed(gateway):
    for good in ("abc-123", "tenant:run/42.7_x", "x" * 100):
        assert gateway.post("/v1/components/echo", json={"inputs": {}},
                            headers={"X-Request-Id": good}).headers["x-request-id"] == good


def test_a_body_that_never_arrives_in_full_is_a_408_not_a_held_connection(gateway):
    """Content-Length 100, 10 bytes sent: refused after body_timeout_s (1 s here), in the JSON error shape."""
    import socket
    import time as clock

    host, port = gateway.base_url.host, gateway.base_url.port
    auth = gateway.headers["authorization"]
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(f"POST /v1/components/echo HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inputs\"".encode())
        started = clock.monotonic()
        answer = read_response(conn)
        waited = clock.monotonic() - started
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert '"code":"request_timeout"' in answer.replace(" ", "") and waited < 5


def read_response(conn) -> str:
    """One whole HTTP/1.1 response: headers and body can arrive in separate segments on a busy machine."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    while lengths and len(body) < lengths[0] and (chunk := conn.recv(65536)):
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()
