"""LLM Bento: the compoundry `/invoke` protocol plus OpenAI-compatible `/v1` routes.

The MLflow model is a pyfunc whose artifact `hf_model` is a Hugging Face
directory; this service downloads it and serves it with vLLM on a CUDA machine
or transformers on CPU (`engines.choose_engine`, env `COMPOUNDRY_LLM_ENGINE`).
"""

import json
import time
import uuid
from pathlib import Path

import bentoml
from bentoml.exceptions import InvalidArgument
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from bentos.common import ServiceInfo, bad_request, engine_options, timed_load
from bentos.llm.engines import detect_engine, make_engine

DEFAULT_MAX_TOKENS = 64
openai_app = FastAPI(title="compoundry llm (OpenAI-compatible)")


def hf_dir_from_model(uri: str) -> Path:
    """Download the MLflow model and return its `hf_model` artifact directory."""
    import mlflow.artifacts
    from mlflow.models import Model

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    flavor = Model.load(str(local)).flavors.get("python_function", {})
    artifact = (flavor.get("artifacts") or {}).get("hf_model")
    if not artifact:
        raise RuntimeError(f"{uri} has no 'hf_model' artifact (log the Hugging Face directory under that key)")
    return local / artifact["path"]


def served_name(uri: str, options: dict) -> str:
    if options.get("served_model_name"):
        return str(options["served_model_name"])
    parts = uri.split("/")
    return parts[1] if uri.startswith("models:/") and len(parts) > 1 else "compoundry-llm"


class BadRequest(ValueError):
    pass


def parse_request(body: object, defaults: dict) -> tuple[list[dict] | None, str | None, int, float]:
    """Validate `{messages|prompt, max_tokens, temperature}`; raises BadRequest with a readable message."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    messages, prompt = body.get("messages"), body.get("prompt")
    if messages is None and prompt is None:
        raise BadRequest("one of 'messages' (list of {role, content}) or 'prompt' (string) is required")
    if messages is not None:
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise BadRequest("'messages' must be a non-empty list of {role: str, content: str}")
    elif not isinstance(prompt, str):
        raise BadRequest("'prompt' must be a string")
    max_tokens = body.get("max_tokens", defaults["max_tokens"])
    if max_tokens is None:
        max_tokens = defaults["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest("'max_tokens' must be a positive integer")
    temperature = body.get("temperature", 0.0)
    if temperature is None:
        temperature = 0.0
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise BadRequest("'temperature' must be a number between 0 and 2")
    return messages, prompt, int(max_tokens), float(temperature)


def _openai_error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": status}},
                        status_code=status)


def _sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


@bentoml.service(name="compoundry-llm", workers=1, traffic={"timeout": 300})
@bentoml.asgi_app(openai_app, path="/v1")
class LLMService:
    def __init__(self) -> None:
        self.options = engine_options()
        self.state = ServiceInfo(engine=detect_engine())
        self.engine = timed_load(self.state, lambda uri: make_engine(self.state.engine, hf_dir_from_model(uri),
                                                                     self.options))
        self.model_id = served_name(self.state.model_uri, self.options)
        self.state.extra["served_model_name"] = self.model_id
        self.defaults = {"max_tokens": int(self.options.get("max_new_tokens", DEFAULT_MAX_TOKENS))}

    def __is_ready__(self) -> bool:
        return self.state.ready

    def _prompt(self, messages: list[dict] | None, prompt: str | None) -> str:
        return self.engine.render(messages) if messages is not None else prompt

    # ---------------------------------------------------------------- compoundry protocol

    @bentoml.api
    async def invoke(self, inputs: dict) -> dict:
        try:
            messages, prompt, max_tokens, temperature = parse_request(inputs, self.defaults)
        except BadRequest as exc:
            return bad_request(InvalidArgument(f"inputs: {exc}"))
        result = await self.engine.complete(self._prompt(messages, prompt), max_tokens, temperature)
        return {"text": result.text, "usage": result.usage, "engine": self.engine.name,
                "finish_reason": result.finish_reason}

    @bentoml.api
    def info(self) -> dict:
        return self.state.as_dict()

    # ---------------------------------------------------------------- OpenAI-compatible /v1

    @openai_app.get("/models")
    async def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_id, "object": "model", "created": int(time.time()),
                                            "owned_by": "compoundry", "engine": self.engine.name}]}

    @openai_app.post("/chat/completions")
    async def chat_completions(self, request: Request):
        return await self._openai(request, chat=True)

    @openai_app.post("/completions")
    async def completions(self, request: Request):
        return await self._openai(request, chat=False)

    async def _openai(self, request: Request, chat: bool):
        try:
            body = await request.json()
        except ValueError:
            return _openai_error("the body must be JSON")
        if isinstance(body, dict) and chat and body.get("messages") is None:
            return _openai_error("'messages' is required")
        if isinstance(body, dict) and not chat and body.get("prompt") is None:
            return _openai_error("'prompt' is required")
        try:
            messages, prompt, max_tokens, temperature = parse_request(body, self.defaults)
        except BadRequest as exc:
            return _openai_error(str(exc))
        text_prompt = self._prompt(messages, prompt)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        base = {"id": rid, "created": int(time.time()), "model": self.model_id}
        if body.get("stream"):
            return StreamingResponse(self._stream(base, text_prompt, max_tokens, temperature, chat),
                                     media_type="text/event-stream")
        result = await self.engine.complete(text_prompt, max_tokens, temperature)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                      "finish_reason": result.finish_reason}
        else:
            choice = {"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}
        return {**base, "object": "chat.completion" if chat else "text_completion", "choices": [choice],
                "usage": result.usage}

    async def _stream(self, base: dict, prompt: str, max_tokens: int, temperature: float, chat: bool):
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(piece: str | None, finish: str | None = None, role: bool = False) -> str:
            if chat:
                delta = {"role": "assistant"} if role else ({"content": piece} if piece is not None else {})
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece or "", "finish_reason": finish, "logprobs": None}
            return _sse({**base, "object": kind, "choices": [choice]})

        if chat:
            yield chunk(None, role=True)
        try:
            async for piece in self.engine.stream(prompt, max_tokens, temperature):
                yield chunk(piece)
            yield chunk(None, finish="stop")
        except Exception as exc:  # the status line is already sent: report in-band
            yield _sse({"error": {"message": str(exc), "type": "server_error"}})
        yield _sse("[DONE]")
