"""A tiny real HTTP replica for gateway tests: the Bento call protocol, driven by its inputs.

``POST /invoke {"inputs": {...}}`` echoes ``{"echo": inputs, "replica": name}``
after ``delay_ms``; ``"fail": true`` answers 500, ``"reject": "why"`` answers
400 with BentoML's ``{"error": "why"}`` shape. ``/readyz`` and ``/livez`` are
200. Runs uvicorn in a daemon thread on a free port, so a test can start
several in well under a second.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stub_app(name: str) -> FastAPI:
    app = FastAPI()
    app.state.calls = 0

    @app.post("/invoke")
    async def invoke(body: dict[str, Any] = Body(...)):
        app.state.calls += 1
        inputs = body.get("inputs")
        options = inputs if isinstance(inputs, dict) else {}
        await asyncio.sleep(float(options.get("delay_ms", 0)) / 1000)
        if options.get("fail"):
            return JSONResponse({"error": f"{name}: asked to fail"}, status_code=500)
        if options.get("reject"):
            return JSONResponse({"error": str(options["reject"])}, status_code=400)
        return {"echo": inputs, "replica": name}

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
