"""The servers bench/gateway.py measures: a Node stub replica, nginx, a compoundry gateway, a LiteLLM proxy.

Each ``start_*`` returns a started process (registered on an ``ExitStack`` that
stops it) and its base URL; all listen on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from compoundry.store import DeploymentStatus, PlatformStore  # noqa: E402
from compoundry.store.api_key_store import ApiKeys  # noqa: E402
from tests.integration.stub_backend import free_port  # noqa: E402

LITELLM_VENV = ROOT / "bench" / ".litellm-venv"
NGINX_WORKERS = 1  # one worker process, like the one gateway process it is compared with


class MissingTool(RuntimeError):
    pass


def require_tools() -> dict[str, str]:
    """Paths of wrk, nginx and node; :class:`MissingTool` with the install command when one is absent."""
    found = {name: shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
             for name in ("wrk", "nginx", "node")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        hint = "apt-get install -y " + " ".join({"node": "nodejs"}.get(m, m) for m in missing)
        raise MissingTool(f"missing {', '.join(missing)}: install with `{hint}` (Debian/Ubuntu), then re-run")
    return found


def version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError as exc:
        return f"unknown ({exc})"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 30, path: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}{path}", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}{path} not ready within {timeout_s:.0f}s")


def _spawn(stack: ExitStack, command: list[str], log: Path | None = None, **kwargs) -> subprocess.Popen:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed by the stack
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **kwargs)

    def stop():
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log:
            out.close()
    stack.callback(stop)
    return proc


def start_stub(stack: ExitStack, node: str, delay_ms: float) -> str:
    port = free_port()
    proc = _spawn(stack, [node, str(ROOT / "bench" / "stub_server.js"), str(port), str(delay_ms)])
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return url


NGINX_CONF = """daemon off;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream stub {{ server 127.0.0.1:{stub}; keepalive 512; }}
  upstream fast {{ server 127.0.0.1:{fast}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    keepalive_requests 1000000;
    location /fast/ {{ proxy_pass http://fast/; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    location / {{ proxy_pass http://stub; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def start_nginx(stack: ExitStack, nginx: str, tmp: Path, stub_url: str, fast_url: str) -> str:
    """nginx ``proxy_pass`` with keepalive upstreams: ``/`` to the stub, ``/fast/`` to the 0 ms stub."""
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=NGINX_WORKERS, tmp=tmp, port=port, stub=stub_url.rsplit(":", 1)[1],
                                      fast=fast_url.rsplit(":", 1)[1]))
    proc = _spawn(stack, [nginx, "-p", str(tmp), "-c", str(conf)], log=tmp / "nginx.out")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return url


COMPONENTS = """components:
  echo: {model: m-echo, engine: pyfunc, scaling: {target_concurrency: 1024}}
  fast: {model: m-fast, engine: pyfunc, scaling: {target_concurrency: 1024}}
  chat: {model: m-chat, engine: llm, scaling: {target_concurrency: 1024}}
  chat-fast: {model: m-chat-fast, engine: llm, scaling: {target_concurrency: 1024}}
  chat-external: {model: m-chat-external, engine: llm, mode: serverless,
                  serverless: {openai: {url: "STUB_URL/v1", model: stub}}}
"""
PIPELINES = """pipelines:
  fanout:
    steps:
      a: {component: echo, inputs: {text: "${request.text}"}}
      b: {component: echo, inputs: {text: "${request.text}"}}
      c: {component: echo, inputs: {text: "${request.text}"}}
      join: {component: echo, depends_on: [a, b, c], inputs: {text: "${request.text}"}}
"""


def start_gateway(stack: ExitStack, tmp: Path, stub_url: str, fast_url: str, workers: int,
                  fast_path: bool = True) -> tuple[str, str]:
    """A real gateway (``python -m compoundry.platform.gateway_process``, ``workers`` worker processes) routed to
    the stubs, ``chat-external`` to the stub as an external OpenAI-compatible server; (url, api key).
    ``fast_path`` False: every call through FastAPI's routes (``gateway.fast_path: false``)."""
    state = tmp / ("gateway" if fast_path else "gateway-fastapi")
    state.mkdir()
    store = PlatformStore(f"sqlite:///{state / 'platform.db'}")
    store.create_schema()
    for component, url in (("echo", stub_url), ("fast", fast_url), ("chat", stub_url), ("chat-fast", fast_url)):
        engine = "llm" if component.startswith("chat") else "pyfunc"
        store.add_deployment(f"{component}-v1", component, f"m-{component}", "1", engine)
        store.add_replica(f"{component}-v1-a", f"{component}-v1", url, None, DeploymentStatus.READY)
        store.set_route(component, f"{component}-v1")
    _, key = ApiKeys(store).create("bench", ["invoke"])
    store.close()
    config = state / "configs"
    config.mkdir()
    (config / "components.yaml").write_text(COMPONENTS.replace("STUB_URL", stub_url))
    (config / "pipelines.yaml").write_text(PIPELINES)
    # the Node stub takes any number of calls at once: no per-replica cap or lane (target_concurrency 1024) in
    # front of it, so what is measured is what the gateway adds, not admission control
    (config / "platform.yaml").write_text(
        f"gateway: {{replica_concurrency: null, fast_path: {str(fast_path).lower()}}}\n")
    port = free_port()
    env = {**os.environ, "COMPOUNDRY_CONFIG_DIR": str(config), "COMPOUNDRY_STATE_DIR": str(state),
           "COMPOUNDRY_GATEWAY_PORT": str(port), "COMPOUNDRY_DATABASE_URL": f"sqlite:///{state / 'platform.db'}",
           "PYTHONPATH": str(ROOT), "COMPOUNDRY_GATEWAY_WORKERS": str(workers)}
    proc = _spawn(stack, [sys.executable, "-m", "compoundry.platform.gateway_process"], log=state / "gateway.out",
                  cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return url, key


def litellm_binary(venv: Path, create: bool, echo) -> tuple[Path | None, str | None]:
    """``(path to the litellm CLI, None)``, or ``(None, why not)``; creates the venv when asked and absent."""
    binary = venv / "bin" / "litellm"
    if binary.exists():
        return binary, None
    if not create:
        return None, f"no LiteLLM at {venv} (create it: python3.11 -m venv {venv} && " \
                     f"{venv}/bin/pip install 'litellm[proxy]')"
    echo(f"installing litellm[proxy] into {venv} (its own venv, a few minutes)...")
    python = shutil.which("python3.11") or sys.executable
    for step in ([python, "-m", "venv", str(venv)], [str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"]):
        done = subprocess.run(step, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            return None, f"`{' '.join(step)}` failed: {(done.stderr or done.stdout).strip()[-400:]}"
    return (binary, None) if binary.exists() else (None, f"pip installed no {binary}")


LITELLM_CONFIG = """model_list:
  - model_name: stub
    litellm_params: {{model: openai/stub, api_base: "{stub}/v1", api_key: sk-stub}}
  - model_name: stub-fast
    litellm_params: {{model: openai/stub, api_base: "{fast}/v1", api_key: sk-stub}}
litellm_settings:
  telemetry: false
  drop_params: true
general_settings:
  master_key: {key}
"""


def start_litellm(stack: ExitStack, binary: Path, tmp: Path, stub_url: str, fast_url: str) -> tuple[str, str]:
    """LiteLLM's proxy, one worker, no database, a master key (auth on, as for compoundry); (url, key)."""
    key = "sk-bench-master"
    config = tmp / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(stub=stub_url, fast=fast_url, key=key))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "NO_PROXY": "127.0.0.1,localhost",
            "DISABLE_SCHEMA_UPDATE": "True", "LITELLM_TELEMETRY": "False"}
    proc = _spawn(stack, [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                          "--num_workers", "1"], log=tmp / "litellm.out", env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout_s=180, path="/health/liveliness")
    except RuntimeError as exc:
        tail = (tmp / "litellm.out").read_text(errors="replace")[-600:]
        raise RuntimeError(f"{exc}; log tail: {tail}") from exc
    return url, key
