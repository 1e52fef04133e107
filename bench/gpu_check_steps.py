"""The GPU check's parts (``bench/gpu_check.py`` runs them): venvs, the model, load, raw vLLM, the gateway.

Stdlib at the top level, like the runner: ``raw_vllm`` imports vLLM inside the GPU venv, ``hold_gateway``
imports the platform inside ``.venv``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENTO_DIR = ROOT / "bentos" / "llm"
PROMPT = [{"role": "user", "content": "Where is my order 1042? It was due on Monday."}]


def gpu_requirements() -> list[str]:
    """The llm Bento's GPU image packages: bentofile's minus torch, + requirements-gpu.txt, + BentoML, pytest."""
    packages, inside = [], False
    for line in (BENTO_DIR / "bentofile.yaml").read_text().splitlines():
        if line.strip() == "packages:":
            inside = True
        elif inside and line.strip().startswith("- "):
            packages.append(line.strip()[2:].strip().strip('"'))
        elif inside and line.strip():
            inside = False
    gpu = [ln.split("#")[0].strip() for ln in (BENTO_DIR / "requirements-gpu.txt").read_text().splitlines()]
    pins = (ROOT / "pyproject.toml").read_text()
    bentoml = next((p.split('"')[1] for p in pins.splitlines() if p.strip().startswith('"bentoml')), "bentoml")
    return [p for p in packages if not p.startswith("torch")] + [g for g in gpu if g] + [bentoml, "pytest>=8"]


def run_logged(command: list[str], log: Path, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(map(str, command))}\n".encode())
        out.flush()
        return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=max(1.0, timeout),
                              env=env, cwd=ROOT)


def tail(log: Path, chars: int = 1500) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def ensure_venv(venv: Path, requirements: list[str], log: Path, timeout: float, editable: bool = False,
                create: bool = True) -> str:
    """Create/update ``venv`` (uv when present, else pip); returns 'reused' or 'installed'. Raises on failure.

    Idempotent: a stamp holds the requirements' hash, so a second run reuses the venv."""
    stamp = venv / ".gpu_check-installed"
    digest = hashlib.sha256("\n".join(requirements + [str(editable)]).encode()).hexdigest()
    python = venv / "bin" / "python"
    if stamp.exists() and stamp.read_text() == digest and python.exists():
        return "reused"
    if not create:
        raise RuntimeError(f"{venv} is missing or out of date and --no-install was given")
    deadline = time.monotonic() + timeout
    uv = shutil.which("uv") or (str(ROOT / ".venv" / "bin" / "uv") if (ROOT / ".venv/bin/uv").exists() else None)
    base = shutil.which("python3.11") or sys.executable
    target = ["-e", str(ROOT)] if editable else []
    if uv:
        steps = [[uv, "venv", "--allow-existing", "--python", base, str(venv)]]
    else:  # uv into the venv first: it installs vLLM's wheels several times faster than pip
        steps = [[base, "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "--quiet", "uv"]]
        uv = str(venv / "bin" / "uv")
    steps.append([uv, "pip", "install", "--python", str(python), *requirements, *target])
    for command in steps:
        done = run_logged(command, log, deadline - time.monotonic())
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(command[:4])} ...` failed (exit {done.returncode}); log: {log}")
    stamp.write_text(digest)
    return "installed"


def python_versions(python: Path) -> dict:
    """torch / vllm / bentoml versions and torch's view of CUDA in that interpreter."""
    code = ("import json, importlib.metadata as m\nout = {}\nfor p in ('torch', 'vllm', 'bentoml', 'transformers'):\n"
            "    try: out[p] = m.version(p)\n    except Exception: out[p] = None\n"
            "import torch\nout['torch_cuda'] = torch.version.cuda\nout['cuda_available'] = torch.cuda.is_available()\n"
            "print(json.dumps(out))")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-500:]}


class ModelUnavailable(RuntimeError):
    pass


MODEL_SCRIPT = """
import sys
from pathlib import Path
import mlflow.pyfunc
from compoundry.registry.demo_models import TinyLLM, build_tiny_llm
spec, work = sys.argv[1], Path(sys.argv[2])
if spec == "tiny":
    hf = build_tiny_llm(work / "hf_model", train_steps=40)
elif Path(spec).is_dir():
    hf = Path(spec)
else:
    from huggingface_hub import snapshot_download
    try:
        hf = Path(snapshot_download(spec, local_dir=str(work / "hf_model")))
    except Exception as exc:
        print(f"MODEL_UNAVAILABLE {type(exc).__name__}: {exc}"[:600])
        sys.exit(42)
mlflow.pyfunc.save_model(str(work / "mlflow_model"), python_model=TinyLLM(), artifacts={"hf_model": str(hf)},
                         pip_requirements=["mlflow"])  # no inference: the Bento never reads them
print(work / "mlflow_model")
"""


def prepare_model(python: Path, spec: str, work: Path, log: Path, timeout: float) -> tuple[Path, Path]:
    """(MLflow model dir for the Bento, HF dir for raw vLLM); :class:`ModelUnavailable` when it cannot be fetched."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_TELEMETRY": "1"}
    done = run_logged([str(python), "-c", MODEL_SCRIPT, spec, str(work)], log, timeout, env)
    if done.returncode == 42:
        raise ModelUnavailable(next((ln for ln in tail(log, 4000).splitlines() if "MODEL_UNAVAILABLE" in ln),
                                    f"could not fetch {spec}"))
    if done.returncode != 0:
        raise RuntimeError(f"preparing the model failed (exit {done.returncode}): {tail(log, 600)}")
    hf = work / "mlflow_model" / "artifacts" / "hf_model"
    return work / "mlflow_model", hf if hf.exists() else Path(spec)


# --------------------------------------------------------------------------- load


def chat_load(base: str, model: str, requests: int, concurrency: int, max_tokens: int, key: str | None = None,
              timeout: float = 120) -> dict:
    """POST /v1/chat/completions ``requests`` times from ``concurrency`` threads; generated tokens per second."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    url = urlsplit(base)
    body = json.dumps({"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    lock, latencies, errors, tokens = threading.Lock(), [], [], [0]
    remaining = [requests]

    def worker() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            started = time.perf_counter()
            try:
                conn.request("POST", "/v1/chat/completions", body, headers)
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
                used = json.loads(payload)["usage"]["completion_tokens"]
            except Exception as exc:  # noqa: BLE001 - every failure is counted, the first few are shown
                with lock:
                    errors.append(str(exc)[:200])
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
                continue
            with lock:
                latencies.append(time.perf_counter() - started)
                tokens[0] += used
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(min(concurrency, requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarise(tokens[0], time.perf_counter() - started, latencies, errors)


def summarise(tokens: int, wall: float, latencies: list[float], errors: list[str]) -> dict:
    ordered = sorted(latencies)

    def pct(q: float):
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4) if ordered else None

    return {"tokens": tokens, "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 1) if wall else None,
            "ok": len(latencies), "errors": len(errors), "first_errors": errors[:3],
            "latency_p50_s": pct(0.5), "latency_p95_s": pct(0.95)}


# --------------------------------------------------------------------------- subcommands in the other venvs


def raw_vllm(hf_dir: str, requests: int, concurrency: int, max_tokens: int) -> dict:
    """In the GPU venv: AsyncLLMEngine tokens/s, then sleep(level=1) and wake_up() times (vLLM sleep mode)."""
    import asyncio
    import uuid

    from transformers import AutoTokenizer
    from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams

    prompt = AutoTokenizer.from_pretrained(hf_dir).apply_chat_template(PROMPT, tokenize=False,
                                                                       add_generation_prompt=True)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    out: dict = {}

    async def one(engine) -> tuple[int, float]:
        started, final = time.perf_counter(), None
        async for final in engine.generate(prompt, params, uuid.uuid4().hex):
            pass
        return len(final.outputs[0].token_ids), time.perf_counter() - started

    async def run() -> None:
        started = time.perf_counter()
        engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(
            model=hf_dir, enable_sleep_mode=True, gpu_memory_utilization=0.3, max_model_len=512,
            enforce_eager=True, disable_log_stats=True))
        out["load_s"] = round(time.perf_counter() - started, 2)
        await one(engine)
        gate = asyncio.Semaphore(concurrency)

        async def limited():
            async with gate:
                return await one(engine)

        started = time.perf_counter()
        done = await asyncio.gather(*(limited() for _ in range(requests)))
        out["load"] = summarise(sum(n for n, _ in done), time.perf_counter() - started, [s for _, s in done], [])
        try:
            used = gpu_memory_used_mib()
            started = time.perf_counter()
            await engine.sleep(1)
            out["sleep_s"] = round(time.perf_counter() - started, 3)
            out["freed_mib"] = used - gpu_memory_used_mib() if used is not None else None
            started = time.perf_counter()
            await engine.wake_up()
            out["wake_s"] = round(time.perf_counter() - started, 3)
            out["first_call_after_wake_s"] = round((await one(engine))[1], 3)
        except Exception as exc:  # noqa: BLE001 - a vLLM without sleep mode still gives its tokens/s
            out["sleep_error"] = f"{type(exc).__name__}: {exc}"[:400]
        try:
            engine.shutdown()
        except Exception:  # noqa: BLE001 - the process exits right after
            pass

    asyncio.run(run())
    return out


def gpu_memory_used_mib() -> int | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
        return int(out.stdout.split()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def hold_gateway(upstream: str, work: Path) -> None:
    """In the platform venv: a gateway routing component ``chat`` to ``upstream``; writes gateway.json, holds it."""
    from contextlib import ExitStack

    from bench.gateway_servers import start_gateway

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the ExitStack then stops the gateway
    with ExitStack() as stack:
        url, key = start_gateway(stack, work, upstream, upstream, workers=1)
        (work / "gateway.json").write_text(json.dumps({"url": url, "key": key}))
        while True:
            time.sleep(1)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    """A server in its own process group (stopped with its workers by :func:`stop`); its pid goes to
    ``gpu_check.pids`` beside the log so that ``gpu_check.sh``'s EXIT trap can kill the group if we die first."""
    out = open(log, "ab")  # noqa: SIM115 - the child holds it; closed with the process
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            cwd=ROOT, start_new_session=True)
    out.close()
    with open(log.parent / "gpu_check.pids", "a") as pids:
        pids.write(f"{proc.pid}\n")
    return proc


def stop(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived their parent
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> float:
    """Seconds until ``url`` answers 200; RuntimeError with the log's tail if the process exits or time runs out."""
    import urllib.request

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before {url} was ready: {tail(log, 1500)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready within {timeout:.0f} s: {tail(log, 1500)}")


def wait_file(path: Path, proc: subprocess.Popen, timeout: float, log: Path) -> Path:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if path.exists():
            return path
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before writing {path.name}: {tail(log, 1500)}")
        time.sleep(0.3)
    raise RuntimeError(f"no {path.name} within {timeout:.0f} s: {tail(log, 1500)}")


def get_json(url: str, method: str = "GET") -> dict | None:
    import urllib.request

    request = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def served_model(base: str) -> str:
    """The model id the Bento's OpenAI routes answer to (``/v1/models``)."""
    listing = get_json(f"{base}/v1/models") or {}
    return next((m.get("id") for m in listing.get("data", []) if m.get("id")), "compoundry-llm")


def junit_counts(path: Path) -> dict:
    """tests / failures / errors / skipped from pytest's junit XML (empty when there is none)."""
    import xml.etree.ElementTree as ET

    if not path.exists():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} if suite is not None else {}


if __name__ == "__main__":
    if ROOT.as_posix() not in sys.path:
        sys.path.insert(0, str(ROOT))
    if sys.argv[1] == "raw":
        print("RAW " + json.dumps(raw_vllm(sys.argv[2], *map(int, sys.argv[3:6]))), flush=True)
        os._exit(0)  # vLLM's background threads must not hold the exit
    elif sys.argv[1] == "hold-gateway":
        hold_gateway(sys.argv[2], Path(sys.argv[3]))
