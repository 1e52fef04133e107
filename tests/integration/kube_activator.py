"""Knative's part of the test-only node agent: one activator per Knative Service and the KPA's scale to zero.

The activator is the Service's address (what Knative reports as ``status.url``): a request that arrives
while the service is at zero is held while its pod starts (the real Bento), then proxied, as Knative's
activator does. With no request in flight for the stable window (plus the retention period) and a
``min-scale`` of 0, the pod is stopped: scaled to zero. One pod at most per Service.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.integration.stub_backend import free_port

KPA = "autoscaling.knative.dev/"
READY_TIMEOUT_S = 120


def idle_seconds(annotations: dict) -> float:
    """The stable window plus the scale-to-zero retention, as KPA waits them (``"6s"`` -> 6.0)."""
    return sum(float(annotations.get(f"{KPA}{key}", "0s").rstrip("s") or 0)
               for key in ("window", "scale-to-zero-pod-retention-period"))


class Activator:
    def __init__(self, start_pod: Callable[[], object], stop_pod: Callable[[object], None],
                 ready: Callable[[object], bool], pod_url: Callable[[object], str]):
        self.start_pod, self.stop_pod, self.ready, self.pod_url = start_pod, stop_pod, ready, pod_url
        self.pod = None
        self.starts = 0  # pods started: one per scale from zero
        self.idle_s, self.min_scale = 60.0, 0
        self._in_flight, self._last = 0, time.monotonic()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="knative-activator", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def configure(self, annotations: dict) -> None:
        self.idle_s, self.min_scale = idle_seconds(annotations), int(annotations.get(f"{KPA}min-scale", "0"))

    def forward(self, method: str, path: str, headers: dict, body: bytes) -> httpx.Response:
        with self._lock:
            self._in_flight += 1
            if self.pod is None:  # at zero: the activator holds the request and asks for a pod
                self.pod = self.start_pod()
                self.starts += 1
            pod = self.pod
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not self.ready(pod) and time.monotonic() < deadline:
                time.sleep(0.1)
            return httpx.request(method, self.pod_url(pod) + path, headers=headers, content=body, timeout=60)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._last = time.monotonic()

    def tick(self) -> None:
        """KPA: scale to zero after the idle time with nothing in flight (never below ``min-scale``)."""
        with self._lock:
            idle = self._in_flight == 0 and time.monotonic() - self._last >= self.idle_s
            if self.pod is None or self.min_scale > 0 or not idle:
                return
            pod, self.pod = self.pod, None
        self.stop_pod(pod)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            pod, self.pod = self.pod, None
        if pod is not None:
            self.stop_pod(pod)


def _handler(activator: Activator):
    class Handler(BaseHTTPRequestHandler):
        def _proxy(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            try:
                answer = activator.forward(self.command, self.path, headers, body)
            except httpx.HTTPError as exc:
                self.send_error(502, str(exc))
                return
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(key, value)
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _proxy  # noqa: N815 - http.server's names

        def log_message(self, *args) -> None:
            pass
    return Handler
