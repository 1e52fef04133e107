"""The OpenAI-compatible serverless adapter's translation (over httpx's MockTransport; the real HTTP path
is in tests/integration/test_gateway.py)."""

import asyncio

import httpx
import pytest

from compoundry.config.models import OpenAIEndpoint
from compoundry.gateway.errors import ComponentFailed
from compoundry.gateway.external import OpenAIBackend
from compoundry.gateway.replica_client import ReplicaClient


def backend(answer: dict, seen: list | None = None) -> OpenAIBackend:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(200, json=answer)
    client = ReplicaClient(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    return OpenAIBackend(OpenAIEndpoint(url="http://endpoint/v1", model="their-model", api_key_env="NOPE_KEY"), client)


def test_chat_inputs_become_an_openai_request_and_the_answer_the_bento_shape(monkeypatch):
    monkeypatch.setenv("NOPE_KEY", "sk-1")
    seen: list[httpx.Request] = []
    answer = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": {"completion_tokens": 1}}
    out = asyncio.run(backend(answer, seen).invoke("llm", {"messages": [{"role": "user", "content": "x"}]}, 5, "c"))
    assert out == {"text": "hi", "usage": {"completion_tokens": 1}, "engine": "openai", "finish_reason": "stop"}
    assert str(seen[0].url) == "http://endpoint/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-1"


@pytest.mark.parametrize(("engine", "inputs", "answer"), [
    ("llm", {"messages": [{"role": "user", "content": "x"}]}, {"choices": []}),
    ("llm", {"prompt": "x"}, {"unexpected": True}),
    ("sentence-transformers", {"texts": ["a"]}, {"data": [{"index": 0}]}),
])
def test_an_answer_in_an_unexpected_shape_is_a_structured_502(engine, inputs, answer):
    with pytest.raises(ComponentFailed, match="unexpected shape"):
        asyncio.run(backend(answer).invoke(engine, inputs, 5, "c"))
