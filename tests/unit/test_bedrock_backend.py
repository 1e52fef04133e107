"""The Bedrock serverless backend against botocore's Stubber (a real client, stubbed responses)."""

import asyncio

import boto3
import pytest
from botocore.stub import Stubber

from compoundry.config.models import BedrockModel
from compoundry.gateway.errors import (
    ComponentFailed,
    ComponentUnavailable,
    InvalidInput,
    InvalidRequest,
)
from compoundry.gateway.external import BedrockBackend

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture
def stubbed():
    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    with Stubber(client) as stubber:
        yield BedrockBackend(BedrockModel(model_id=MODEL), client=client), stubber
        stubber.assert_no_pending_responses()


def converse_response(text: str, stop: str = "end_turn") -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": stop,
            "usage": {"inputTokens": 11, "outputTokens": 3, "totalTokens": 14}, "metrics": {"latencyMs": 120}}


def test_bento_protocol_call_becomes_a_converse_request(stubbed):
    backend, stubber = stubbed
    expected = {"modelId": MODEL, "system": [{"text": "be brief"}],
                "messages": [{"role": "user", "content": [{"text": "Where is my order?"}]}],
                "inferenceConfig": {"maxTokens": 16, "temperature": 0.0}}
    stubber.add_response("converse", converse_response("On its way."), expected)
    inputs = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Where is my order?"}],
              "max_tokens": 16}
    out = asyncio.run(backend.invoke("llm", inputs, 5, "dialogue-llm"))
    assert out == {"text": "On its way.", "engine": "bedrock", "finish_reason": "stop",
                   "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}


def test_openai_chat_request_gets_an_openai_shaped_answer(stubbed):
    backend, stubber = stubbed
    stubber.add_response("converse", converse_response("Hi", stop="max_tokens"))
    body = {"model": "dialogue-llm", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
    out = asyncio.run(backend.openai("/v1/chat/completions", body, 5, "dialogue-llm"))
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["content"] == "Hi"
    assert out["choices"][0]["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(("code", "error"), [
    ("ThrottlingException", ComponentUnavailable),
    ("ValidationException", InvalidInput),
    ("InternalServerException", ComponentFailed),
])
def test_bedrock_errors_become_structured_gateway_errors(stubbed, code, error):
    backend, stubber = stubbed
    stubber.add_client_error("converse", service_error_code=code, service_message="nope", http_status_code=400)
    with pytest.raises(error) as raised:
        asyncio.run(backend.invoke("llm", {"prompt": "x"}, 5, "dialogue-llm"))
    assert raised.value.details["bedrock_error"] == code


def test_streaming_and_non_llm_engines_are_refused_clearly(stubbed):
    backend, _ = stubbed
    with pytest.raises(InvalidRequest, match="streaming"):
        backend.stream("/v1/chat/completions", {}, 5, "dialogue-llm")
    with pytest.raises(InvalidRequest, match="llm components only"):
        asyncio.run(backend.invoke("sentence-transformers", {"texts": ["a"]}, 5, "embedder"))
