"""External serverless backends: any OpenAI-compatible URL, or an Amazon Bedrock model.

The study's portability lesson: a component's serverless capacity may live
outside the platform (a vLLM server, NVIDIA NIM, Bedrock). Each adapter speaks
the same two dialects the gateway uses with its own replicas — the Bento
``/invoke`` protocol (``{messages|prompt, max_tokens, temperature}`` →
``{text, usage}``; ``{texts}`` → ``{embeddings, dim}``) and the OpenAI routes —
so the dispatcher puts it behind the same breaker, metering and prices.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import contextmanager
from typing import Any

from compoundry.core.routing.retry import ErrorKind
from compoundry.core.routing.route_view import RouteView
from compoundry.gateway.errors import (
    ComponentFailed,
    ComponentUnavailable,
    InvalidInput,
    InvalidRequest,
)

DEFAULT_MAX_TOKENS = 64


class OpenAIBackend:
    """An OpenAI-compatible server; ``client`` is the gateway's shared :class:`ReplicaClient`."""

    kind = "openai"

    def __init__(self, endpoint, client):
        self.endpoint = endpoint
        self.client = client
        self.url = endpoint.url.rstrip("/")
        self.model = endpoint.model

    def headers(self) -> dict[str, str]:
        key = os.environ.get(self.endpoint.api_key_env) if self.endpoint.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def invoke(self, engine: str, inputs: Any, timeout: float, component: str) -> dict:
        if engine == "sentence-transformers":
            texts = _texts(inputs)
            body = await self.client.post(self.url, "/embeddings", {"model": self.model, "input": texts}, timeout,
                                          component, headers=self.headers())
            with _unexpected_answer(component, self.url):
                vectors = [item["embedding"] for item in sorted(body["data"], key=lambda d: d["index"])]
            return {"embeddings": vectors, "dim": len(vectors[0]) if vectors else 0}
        chat = "messages" in inputs
        body = {"model": self.model, "max_tokens": inputs.get("max_tokens") or DEFAULT_MAX_TOKENS,
                "temperature": inputs.get("temperature", 0.0),
                **({"messages": inputs["messages"]} if chat else {"prompt": inputs.get("prompt", "")})}
        answer = await self.client.post(self.url, "/chat/completions" if chat else "/completions", body, timeout,
                                        component, headers=self.headers())
        with _unexpected_answer(component, self.url):
            choice = answer["choices"][0]
            text = choice["message"]["content"] if chat else choice.get("text", "")
        return {"text": text, "usage": answer.get("usage", {}), "engine": self.kind,
                "finish_reason": choice.get("finish_reason")}

    async def openai(self, path: str, body: dict, timeout: float, component: str) -> dict:
        """Pass an OpenAI request through, naming the endpoint's own model."""
        return await self.client.post(self.url, _strip_v1(path), {**body, "model": self.model}, timeout, component,
                                      headers=self.headers())

    def stream(self, path: str, body: dict, timeout: float, component: str):
        return self.client.stream(self.url, _strip_v1(path), {**body, "model": self.model}, timeout, component,
                                  headers=self.headers())


class BedrockBackend:
    """A Bedrock model through boto3's Converse API (blocking, so it runs in a worker thread)."""

    kind = "bedrock"

    def __init__(self, model, client=None):
        import boto3

        self.model = model.model_id
        self.client = client or boto3.client("bedrock-runtime", region_name=model.region)

    async def invoke(self, engine: str, inputs: Any, timeout: float, component: str) -> dict:
        if engine != "llm":
            raise InvalidRequest(f"{component}: Bedrock serves llm components only")
        answer = await asyncio.wait_for(asyncio.to_thread(self._converse, inputs, component), timeout)
        return answer

    async def openai(self, path: str, body: dict, timeout: float, component: str) -> dict:
        if not path.endswith("/chat/completions"):
            raise InvalidRequest(f"{component}: only chat completions are served from Bedrock", status=400,
                                 code="not_supported")
        result = await self.invoke("llm", body, timeout, component)
        return {"id": "chatcmpl-bedrock", "object": "chat.completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                             "finish_reason": result["finish_reason"]}], "usage": result["usage"]}

    def stream(self, path: str, body: dict, timeout: float, component: str):
        raise InvalidRequest(f"{component}: streaming from Bedrock is not supported yet; call without stream",
                             status=400, code="not_supported")

    def _converse(self, inputs: dict, component: str) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        messages = inputs.get("messages") or [{"role": "user", "content": inputs.get("prompt", "")}]
        system = [{"text": m["content"]} for m in messages if m.get("role") == "system"]
        turns = [{"role": m["role"], "content": [{"text": m["content"]}]} for m in messages if m.get("role") != "system"]
        request = {"modelId": self.model, "messages": turns,
                   "inferenceConfig": {"maxTokens": int(inputs.get("max_tokens") or DEFAULT_MAX_TOKENS),
                                       "temperature": float(inputs.get("temperature", 0.0))}}
        if system:
            request["system"] = system
        try:
            response = self.client.converse(**request)
        except ClientError as exc:
            raise _bedrock_error(exc, component) from exc
        except BotoCoreError as exc:
            error = ComponentFailed(f"{component}: Bedrock unreachable: {exc}", {"component": component})
            error.error_kind = ErrorKind.CONNECT
            raise error from exc
        usage = response.get("usage", {})
        text = "".join(part.get("text", "") for part in response["output"]["message"]["content"])
        return {"text": text, "engine": self.kind, "finish_reason": _STOP.get(response.get("stopReason"), "stop"),
                "usage": {"prompt_tokens": usage.get("inputTokens", 0), "completion_tokens": usage.get("outputTokens", 0),
                          "total_tokens": usage.get("totalTokens", 0)}}


_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def _bedrock_error(exc, component: str):
    code = exc.response.get("Error", {}).get("Code", "")
    message = exc.response.get("Error", {}).get("Message", str(exc))
    where = {"component": component, "bedrock_error": code}
    if code in ("ThrottlingException", "ServiceUnavailableException", "ModelNotReadyException"):
        return ComponentUnavailable(f"{component}: Bedrock {code}: {message}", where, retry_after=2.0)
    if code in ("ValidationException",):
        return InvalidInput(f"{component}: {message}", where)
    return ComponentFailed(f"{component}: Bedrock {code}: {message}", where)


@contextmanager
def _unexpected_answer(component: str, url: str):
    """An endpoint whose JSON lacks the OpenAI fields: a structured 502, not a gateway crash."""
    try:
        yield
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ComponentFailed(f"{component}: {url} answered in an unexpected shape ({type(exc).__name__}: {exc})",
                              {"component": component, "endpoint": url}) from exc


def external_backend(serverless, client):
    """The adapter for a component's ``serverless:`` block, or None."""
    if serverless is None:
        return None
    if serverless.openai is not None:
        return OpenAIBackend(serverless.openai, client)
    return BedrockBackend(serverless.bedrock)


def _texts(inputs: Any) -> list[str]:
    texts = inputs.get("texts") if isinstance(inputs, dict) else None
    if not isinstance(texts, list):
        raise InvalidInput("inputs: 'texts' must be a list of strings")
    return texts


def _strip_v1(path: str) -> str:
    return path[3:] if path.startswith("/v1/") else path


def external_route(component: str, config, external) -> RouteView:
    """An external endpoint as a route, so breakers, metering and replies treat it like a deployment."""
    return RouteView(component=component, deployment_id=f"external:{component}", model_name=external.kind,
                     model_version=external.model, engine=config.engine, replicas=())
