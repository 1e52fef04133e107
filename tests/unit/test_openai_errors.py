"""The official ``openai`` client against the gateway app: each refusal becomes the exception OpenAI's own API
would raise (the client picks it by status), with OpenAI's error fields in the body."""

from __future__ import annotations

import openai
import pytest
from starlette.testclient import TestClient

from compoundry.config.settings import PlatformSettings
from compoundry.gateway.app import create_app
from compoundry.store.api_key_store import ApiKeys

CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture
def client(parts, tmp_path):
    """An openai client with a valid key, over the app in-process; the tenant may make 2 requests a minute."""
    (tmp_path / "platform.yaml").write_text(
        "gateway: {auth_required: true, workers: 1, rate_limits: {default: {requests_per_minute: 2}}}\n"
        "autoscaler: {enabled: false}\n")
    settings = PlatformSettings.load(tmp_path)
    _, key = ApiKeys(parts.store).create("acme", ["invoke"])
    with TestClient(create_app(type(parts)(**{**parts.__dict__, "settings": settings}))) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)


def test_refusals_map_to_the_openai_clients_exceptions(client):
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-component", messages=CHAT)
    error = unknown.value.body
    assert (error["code"], error["type"], error["param"]) == ("model_not_found", "invalid_request_error", "model")
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model="embed", messages=[{"role": "robot", "content": "x"}])
    assert invalid.value.body["type"] == "invalid_request_error" and invalid.value.body["param"] == "messages.0.role"
    with pytest.raises(openai.RateLimitError) as limited:  # the third request of the minute
        client.embeddings.create(model="embed", input="x")
    assert limited.value.body["type"] == "rate_limit_error" and limited.value.response.headers["retry-after"]


def test_a_wrong_key_is_the_clients_authentication_error(client):
    stranger = client.with_options(api_key="ck_nope_0000")
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.embeddings.create(model="embed", input="x")
    assert refused.value.body["type"] == "authentication_error"


def test_an_embeddings_call_answers_in_openais_shape(client):
    reply = client.embeddings.create(model="embed", input=["a"])
    assert reply.model == "embed" and reply.data[0].embedding == [0.1, 0.2]
