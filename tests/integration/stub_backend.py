"""A tiny real HTTP replica for gateway tests: the Bento call protocol, driven by its inputs.

``POST /v1/chat/completions`` echoes the last message OpenAI-style (streamed
word by word with ``stream: true``). ``POST /invoke {"inputs": {...}}`` echoes ``{"echo": inputs, "replica": name}``
after ``delay_ms``; ``"fail": true`` answers 500, ``"reject": "why"`` answers
400 with BentoML's ``{"error": "why"}`` shape. ``/readyz`` and ``/livez`` are
200. Runs uvicorn in a daemon thread on a free port, so a test can start
several in well under a second.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse, StreamingResponse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stub_app(name: str) -> FastAPI:
    app = FastAPI()
    app.state.calls = 0
    app.state.extra_delay_ms = 0  # added to every /invoke (a slow replica, whatever the inputs)

    @app.post("/invoke")
    async def invoke(body: dict[str, Any] = Body(...)):
        app.state.calls += 1
        inputs = body.get("inputs")
        options = inputs if isinstance(inputs, dict) else {}
        await asyncio.sleep((float(options.get("delay_ms", 0)) + app.state.extra_delay_ms) / 1000)
        if options.get("fail"):
            return JSONResponse({"error": f"{name}: asked to fail"}, status_code=500)
        if options.get("reject"):
            return JSONResponse({"error": str(options["reject"])}, status_code=400)
        return {"echo": inputs, "replica": name}

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any] = Body(...)):
        """OpenAI-shaped echo of the last message, streamed word by word when asked."""
        app.state.calls += 1
        text = str(body["messages"][-1]["content"])
        base = {"id": "chatcmpl-stub", "created": 0, "model": f"stub-{name}"}
        if not body.get("stream"):
            return {**base, "object": "chat.completion", "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                                     "total_tokens": 2},
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}]}

        def event(delta: dict, finish: str | None = None) -> str:
            chunk = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(chunk)}\n\n"

        async def events():
            yield event({"role": "assistant"})
            for word in text.split():
                await asyncio.sleep(0.01)
                yield event({"content": word + " "})
            yield event({}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/readyz")
    @app.get("/livez")
    async def probe():
        return {"status": "ok"}

    return app


class StubReplica:
    """One stub replica server; ``url`` is what goes in the platform DB."""

    def __init__(self, name: str, port: int | None = None):
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = stub_app(name)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name=f"stub-{name}", daemon=True)

    @property
    def calls(self) -> int:
        return self.app.state.calls

    def start(self, timeout_s: float = 10) -> "StubReplica":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"stub replica {self.name} did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=5)


if __name__ == "__main__":  # a stub replica in its own process: `python -m tests.integration.stub_backend PORT NAME`
    import sys

    uvicorn.run(stub_app(sys.argv[2] if len(sys.argv) > 2 else "stub"), host="127.0.0.1", port=int(sys.argv[1]),
                log_level="warning", access_log=False)
