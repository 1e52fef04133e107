"""Benchmark (issue 3): what the Prediction Service adds to a call, next to nginx and LiteLLM, in one run.

A Node stub replica with a fixed latency (20 ms by default, the targets' level) is called, at 1, 64 and 256
concurrent clients, with wrk (native, closed loop, ``--latency``):

* **invoke**: directly, through nginx ``proxy_pass`` (the floor: keepalive
  upstream, one worker) and through a real compoundry gateway process (API key,
  trust layer, breaker, lane, balancer, metering, metrics); ``compoundry-fastapi``
  is a second gateway with ``gateway.fast_path: false`` (every call through
  FastAPI's routes), the baseline of the raw ASGI fast path;
* **pipeline**: compoundry's 3-parallel-steps + join pipeline; the fan-out
  overhead (time beyond the critical path) is read from each answer's
  ``overhead_ms`` by the wrk script;
* **chat**: OpenAI chat completions directly, through compoundry's
  ``/v1/chat/completions`` to a replica and (``compoundry-external``) to the
  stub as an external OpenAI-compatible server (``mode: serverless``), and
  through LiteLLM's proxy (``litellm[proxy]`` in its own venv,
  bench/.litellm-venv), when it installs and starts.

Then the highest sustained throughput (zero errors) against a 0 ms stub.
Added latency = path percentile minus the direct percentile at the same
concurrency. Paths are interleaved level by level; every run is short.

Writes bench/results/gateway.json and the ``## Gateway`` section of docs/benchmarks.md.
Run: ``.venv/bin/python bench/gateway.py`` (needs ``apt-get install nginx wrk`` and node).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import gateway_servers as servers  # noqa: E402
from bench.gateway_report import write_doc  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gateway.json"
LUA = ROOT / "bench" / "wrk_report.lua"
INVOKE_BODY = json.dumps({"inputs": {"text": "hello"}})
PIPELINE_BODY = json.dumps({"inputs": {"text": "hello"}})
console = Console()


def chat_body(model: str) -> str:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}]})


def wrk(tools: dict, url: str, body: str, connections: int, duration_s: float, threads: int,
        auth: str | None = None, overhead: bool = False) -> dict:
    """One wrk run; its Lua script's JSON report plus req/s and milliseconds."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    env = {**os.environ, "WRK_BODY": body, "WRK_AUTH": auth or "", "WRK_OVERHEAD": "1" if overhead else "0",
           "WRK_OUT": path}
    command = [tools["wrk"], f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
               "--timeout", "10s", "--latency", "-s", str(LUA), url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration_s + 60)
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}") from None
    finally:
        Path(path).unlink(missing_ok=True)
    latency = report.pop("latency_us")
    overheads = sorted(report.pop("overhead_ms"))
    errors = report["errors"]
    row = {"requests": report["requests"], "rps": report["requests"] / (report["duration_us"] / 1e6),
           "errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"] + errors["non200"],
           "error_detail": errors, "first_error": report["first_error"] or None,
           **{f"{k}_ms": v / 1000 for k, v in latency.items()}}
    if overhead and overheads:
        row |= {"overhead_p50_ms": statistics.median(overheads), "overhead_p99_ms": _pct(overheads, 0.99),
                "overhead_max_ms": overheads[-1], "overhead_samples": len(overheads)}
    return row


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def plan(urls: dict, keys: dict, litellm: bool) -> tuple[list[tuple], list[tuple]]:
    """(latency paths, throughput paths): (group, name, url, body, auth, parse overhead)."""
    gw, key = urls["compoundry"], keys["compoundry"]
    plain, plain_key = urls["compoundry-fastapi"], keys["compoundry-fastapi"]  # the same gateway without its fast path
    latency = [("invoke", "direct", f"{urls['stub']}/invoke", INVOKE_BODY, None, False),
               ("invoke", "nginx", f"{urls['nginx']}/invoke", INVOKE_BODY, None, False),
               ("invoke", "compoundry", f"{gw}/v1/components/echo", INVOKE_BODY, key, False),
               ("invoke", "compoundry-fastapi", f"{plain}/v1/components/echo", INVOKE_BODY, plain_key, False),
               ("pipeline", "compoundry", f"{gw}/v1/pipelines/fanout", PIPELINE_BODY, key, True),
               ("chat", "direct", f"{urls['stub']}/v1/chat/completions", chat_body("stub"), None, False),
               ("chat", "compoundry", f"{gw}/v1/chat/completions", chat_body("chat"), key, False),
               ("chat", "compoundry-external", f"{gw}/v1/chat/completions", chat_body("chat-external"), key, False)]
    throughput = [("invoke", "direct", f"{urls['fast']}/invoke", INVOKE_BODY, None, False),
                  ("invoke", "nginx", f"{urls['nginx']}/fast/invoke", INVOKE_BODY, None, False),
                  ("invoke", "compoundry", f"{gw}/v1/components/fast", INVOKE_BODY, key, False),
                  ("invoke", "compoundry-fastapi", f"{plain}/v1/components/fast", INVOKE_BODY, plain_key, False),
                  ("chat", "compoundry", f"{gw}/v1/chat/completions", chat_body("chat-fast"), key, False)]
    if litellm:
        latency.append(("chat", "litellm", f"{urls['litellm']}/v1/chat/completions", chat_body("stub"),
                        keys["litellm"], False))
        throughput.append(("chat", "litellm", f"{urls['litellm']}/v1/chat/completions", chat_body("stub-fast"),
                           keys["litellm"], False))
    return latency, throughput


def run(args, tools: dict) -> dict:
    litellm_note = None
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="compoundry-gw-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with console.status("starting stubs, nginx, the gateway..."):
            urls = {"stub": servers.start_stub(stack, tools["node"], args.delay_ms),
                    "fast": servers.start_stub(stack, tools["node"], 0)}
            urls["nginx"] = servers.start_nginx(stack, tools["nginx"], tmp, urls["stub"], urls["fast"])
            urls["compoundry"], gw_key = servers.start_gateway(stack, tmp, urls["stub"], urls["fast"], args.workers)
            urls["compoundry-fastapi"], plain_key = servers.start_gateway(stack, tmp, urls["stub"], urls["fast"],
                                                                          args.workers, fast_path=False)
        keys = {"compoundry": gw_key, "compoundry-fastapi": plain_key}
        if args.litellm == "none":
            litellm_note = "skipped (--litellm none)"
        else:
            venv = Path(args.litellm) if args.litellm else servers.LITELLM_VENV
            binary, litellm_note = servers.litellm_binary(venv, create=args.litellm is None, echo=console.print)
            if binary is not None:
                try:
                    with console.status("starting LiteLLM's proxy (slow import)..."):
                        urls["litellm"], keys["litellm"] = servers.start_litellm(stack, binary, tmp, urls["stub"],
                                                                                  urls["fast"])
                    litellm_note = _litellm_version(binary)
                except RuntimeError as exc:
                    litellm_note = f"did not start: {exc}"
        if "litellm" not in urls:
            console.print(f"[yellow]LiteLLM: {litellm_note}; carrying on without it")
        latency_paths, throughput_paths = plan(urls, keys, "litellm" in urls)
        levels = [int(c) for c in args.clients.split(",")]
        total = len(latency_paths) * (len(levels) + 1) + len(throughput_paths) * len(args.tp_clients.split(","))
        rows, tput = [], []
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("warm-up", total=total)
            for group, name, url, body, auth, parse in latency_paths:  # connections, JIT-free but caches warm
                progress.update(task, description=f"warm-up {group}/{name}")
                wrk(tools, url, body, 16, 1, args.wrk_threads, auth, parse)
                progress.advance(task)
            for clients in levels:
                for group, name, url, body, auth, parse in latency_paths:
                    progress.update(task, description=f"{clients:>3} clients {group}/{name}")
                    rows.append({"group": group, "path": name, "clients": clients,
                                 **wrk(tools, url, body, clients, args.duration, args.wrk_threads, auth, parse)})
                    progress.advance(task)
            for clients in (int(c) for c in args.tp_clients.split(",")):
                for group, name, url, body, auth, parse in throughput_paths:
                    progress.update(task, description=f"throughput {clients} clients {group}/{name}")
                    tput.append({"group": group, "path": name, "clients": clients,
                                 **wrk(tools, url, body, clients, args.tp_duration, args.wrk_threads, auth, parse)})
                    progress.advance(task)
        gateway_log = (tmp / "gateway" / "gateway.out").read_text(errors="replace")[-2000:]
    return {"rows": rows, "throughput": tput, "litellm": litellm_note, "gateway_log_tail": gateway_log or None}


def _litellm_version(binary: Path) -> str:
    out = subprocess.run([str(binary.parent / "python"), "-c", "import importlib.metadata as m; "
                          "print(m.version('litellm'))"], capture_output=True, text=True, timeout=60)
    return f"litellm {out.stdout.strip() or 'unknown version'}"


def summarise(result: dict) -> dict:
    """Added latency per path (vs direct at the same concurrency), ratios to nginx, best throughput."""
    direct = {(r["group"], r["clients"]): r for r in result["rows"] if r["path"] == "direct"}
    for r in result["rows"]:
        base = direct.get((r["group"], r["clients"]))
        if base is not None and r["path"] != "direct":
            r["added_p50_ms"] = r["p50_ms"] - base["p50_ms"]
            r["added_p99_ms"] = r["p99_ms"] - base["p99_ms"]
    best: dict[str, dict] = {}
    for r in result["throughput"]:
        key = f"{r['group']}/{r['path']}"
        if r["errors"] == 0 and r["rps"] > best.get(key, {}).get("rps", 0):
            best[key] = {"rps": r["rps"], "clients": r["clients"]}
    result["best_throughput"] = best
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,64,256", help="concurrency levels for latency")
    parser.add_argument("--duration", type=int, default=4, help="seconds per latency run")
    parser.add_argument("--tp-clients", default="64,256", help="concurrency levels for throughput")
    parser.add_argument("--tp-duration", type=int, default=6, help="seconds per throughput run")
    parser.add_argument("--delay-ms", type=float, default=20, help="the stub's fixed latency (the targets' 20 ms)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (each takes a core's share)")
    parser.add_argument("--litellm", default=None, metavar="PATH",
                        help="LiteLLM venv (default: bench/.litellm-venv, created if absent; 'none' skips)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="gateway worker processes (default: one per core, as `compoundry up`)")
    args = parser.parse_args()
    try:
        tools = servers.require_tools()
    except servers.MissingTool as exc:
        console.print(f"[red]{exc}")
        return 2
    started = time.time()
    result = summarise(run(args, tools))
    argv = " ".join(sys.argv[1:])
    result |= {"benchmark": "gateway", "stub_delay_ms": args.delay_ms, "wrk_threads": args.wrk_threads,
               "nginx_workers": servers.NGINX_WORKERS, "cpus": os.cpu_count(), "gateway_workers": args.workers,
               "machine": f"{host.machine()} {host.node()}", "python": sys.version.split()[0],
               "wrk": servers.version([tools["wrk"], "-v"]), "nginx": servers.version([tools["nginx"], "-v"]),
               "node": servers.version([tools["node"], "--version"]), "seconds": round(time.time() - started),
               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": f"python bench/gateway.py{' ' + argv if argv else ''}"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    if not args.no_doc:
        write_doc(result)
    _print(result)
    return 0


def _print(result: dict) -> None:
    for r in result["rows"]:
        extra = f" overhead p50/p99 {r['overhead_p50_ms']:.2f}/{r['overhead_p99_ms']:.2f}" \
            if "overhead_p50_ms" in r else ""
        added = f" added {r['added_p50_ms']:.2f}/{r['added_p99_ms']:.2f}" if "added_p50_ms" in r else ""
        console.print(f"{r['clients']:>4} {r['group']:>8}/{r['path']:<19} p50 {r['p50_ms']:7.2f} p99 "
                      f"{r['p99_ms']:7.2f} ms{added}{extra} {r['rps']:8.0f} req/s errors {r['errors']}")
    for r in result["throughput"]:
        console.print(f"tput {r['clients']:>4} {r['group']:>8}/{r['path']:<19} {r['rps']:8.0f} req/s "
                      f"errors {r['errors']}")
    console.print(f"LiteLLM: {result['litellm']}")


if __name__ == "__main__":
    sys.exit(main())
