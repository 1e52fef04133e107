"""The ``## Gateway`` section of docs/benchmarks.md, from bench/results/gateway.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
TARGETS = ("p50 ≤ 1 ms, p99 ≤ 5 ms added at 64 clients on the component route and on the OpenAI chat route to an "
           "external backend; fan-out p99 ≤ 5 ms; at 256 clients no errors and p99 ≤ 2× direct; "
           "≥ 6,000 component calls/s; ≤ 1 ms p50 added at 1 client")


def _f(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "—"
    return f"{a / b:.1f}×"


def latency_table(result: dict) -> list[str]:
    lines = ["| clients | path | p50 / p99 (ms) | added p50 / p99 (ms) | added p50 vs nginx | req/s | errors |",
             "|---|---|---|---|---|---|---|"]
    by = {(r["group"], r["path"], r["clients"]): r for r in result["rows"]}
    for r in result["rows"]:
        nginx = by.get(("invoke", "nginx", r["clients"]))
        vs_nginx = _ratio(r.get("added_p50_ms"), nginx and nginx.get("added_p50_ms")) \
            if r["group"] in ("invoke", "chat") and r["path"] not in ("direct", "nginx") else ""
        added = f"{_f(r.get('added_p50_ms'))} / {_f(r.get('added_p99_ms'))}" if "added_p50_ms" in r else ""
        if r["group"] == "pipeline":
            added = f"fan-out overhead {_f(r.get('overhead_p50_ms'))} / {_f(r.get('overhead_p99_ms'))}"
        lines.append(f"| {r['clients']} | {r['group']}: {r['path']} | {_f(r['p50_ms'])} / {_f(r['p99_ms'])} | "
                     f"{added} | {vs_nginx} | {r['rps']:.0f} | {r['errors']} |")
    return lines


def throughput_table(result: dict) -> list[str]:
    lines = ["| path | " + " | ".join(f"{c} clients req/s (errors)" for c in _levels(result)) + " | best sustained |",
             "|---|" + "---|" * (len(_levels(result)) + 1)]
    paths = list(dict.fromkeys(f"{r['group']}/{r['path']}" for r in result["throughput"]))
    for path in paths:
        cells = []
        for clients in _levels(result):
            r = next((r for r in result["throughput"] if f"{r['group']}/{r['path']}" == path
                      and r["clients"] == clients), None)
            cells.append("—" if r is None else f"{r['rps']:.0f} ({r['errors']})")
        best = result["best_throughput"].get(path)
        best_cell = f"{best['rps']:.0f} ({best['clients']} clients)" if best else "none error-free"
        lines.append(f"| {path} | " + " | ".join(cells) + f" | {best_cell} |")
    return lines


def target_table(result: dict) -> list[str]:
    """Issue 14's targets against this run's figures: met or missed, computed, never written by hand."""
    by = {(r["group"], r["path"], r["clients"]): r for r in result["rows"]}
    gateway, external = by.get(("invoke", "compoundry", 64), {}), by.get(("chat", "compoundry-external", 64), {})
    fanout, single = by.get(("pipeline", "compoundry", 64), {}), by.get(("invoke", "compoundry", 1), {})
    crowd, crowd_direct = by.get(("invoke", "compoundry", 256), {}), by.get(("invoke", "direct", 256), {})
    best = (result["best_throughput"].get("invoke/compoundry") or {}).get("rps")
    vs_direct = (crowd["p99_ms"] / crowd_direct["p99_ms"]
                 if crowd.get("p99_ms") is not None and (crowd_direct.get("p99_ms") or 0) > 0 else None)
    checks = [("added p50 per component call, 64 clients", gateway.get("added_p50_ms"), 1.0, "ms"),
              ("added p99 per component call, 64 clients", gateway.get("added_p99_ms"), 5.0, "ms"),
              ("added p50, chat to an external backend, 64 clients", external.get("added_p50_ms"), 1.0, "ms"),
              ("added p99, chat to an external backend, 64 clients", external.get("added_p99_ms"), 5.0, "ms"),
              ("pipeline fan-out overhead p99, 64 clients", fanout.get("overhead_p99_ms"), 5.0, "ms"),
              ("component p99 vs direct p99, 256 clients", vs_direct, 2.0, "×"),
              ("errors, component calls, 256 clients", crowd.get("errors"), 0, ""),
              ("added p50 per component call, 1 client", single.get("added_p50_ms"), 1.0, "ms")]
    lines = ["| target | this run | verdict |", "|---|---|---|"]
    for name, value, bound, unit in checks:
        verdict = "—" if value is None else ("met" if value <= bound else "missed")
        lines.append(f"| {name} ≤ {bound:g} {unit} | {_f(value)} {unit} | {verdict} |")
    verdict = "—" if best is None else ("met" if best >= 6000 else "missed")
    lines.append(f"| component calls/s ({_workers(result)}) ≥ 6,000 | {_f(best, 0)} | {verdict} |")
    return lines


def fast_path_table(result: dict) -> list[str]:
    """The raw ASGI fast path against the same gateway with ``gateway.fast_path: false``, same run."""
    by = {(r["group"], r["path"], r["clients"]): r for r in result["rows"]}
    lines = ["| clients | added p50 / p99, fast path (ms) | added p50 / p99, FastAPI only (ms) |", "|---|---|---|"]
    for clients in sorted({r["clients"] for r in result["rows"]}):
        fast, plain = by.get(("invoke", "compoundry", clients)), by.get(("invoke", "compoundry-fastapi", clients))
        if fast and plain:
            lines.append(f"| {clients} | {_f(fast.get('added_p50_ms'))} / {_f(fast.get('added_p99_ms'))} | "
                         f"{_f(plain.get('added_p50_ms'))} / {_f(plain.get('added_p99_ms'))} |")
    best = result["best_throughput"]
    fast, plain = (best.get("invoke/compoundry") or {}).get("rps"), (best.get("invoke/compoundry-fastapi") or {}).get("rps")
    lines.append(f"| best sustained calls/s | {_f(fast, 0)} | {_f(plain, 0)} ({_ratio(fast, plain)} with the fast path) |")
    return lines


def _workers(result: dict) -> str:
    workers = result.get("gateway_workers", 1)
    return "one worker process" if workers == 1 else f"{workers} worker processes"


def _levels(result: dict) -> list[int]:
    return sorted({r["clients"] for r in result["throughput"]})


def write_doc(result: dict, extra: str = "") -> None:
    from bench.registration_to_serving import _replace_section

    notes = (ROOT / "bench" / "gateway_notes.md")
    section = (
        f"## Gateway\n\n`{result['command']}` — {result['at']}, {result['machine']}, {result['cpus']} cores, "
        f"Python {result['python']}; {result['wrk']}; {result['nginx']} ({result['nginx_workers']} worker); "
        f"node {result['node']} stub; LiteLLM: {result['litellm']}. Raw: `bench/results/gateway.json`; "
        f"the run took {result['seconds']} s.\n\n"
        f"A Node stub replica with a fixed {result['stub_delay_ms']:g} ms latency, called by wrk "
        f"({result['wrk_threads']} thread, closed loop, each client one keep-alive connection) directly, through "
        f"nginx `proxy_pass` (the floor), through compoundry's gateway ({_workers(result)}: API key, trust layer, "
        "breaker, lane, balancer, metering and its spool, metrics) and, for OpenAI chat completions, through LiteLLM's proxy (one "
        "worker, master key). Added = path percentile minus the direct percentile at the same concurrency. "
        "The pipeline is 3 parallel steps and a join (4 component calls, 2 on the critical path); its fan-out "
        "overhead is the gateway's `overhead_ms` (total minus the critical path's step durations), collected "
        f"from every answer. Targets (issue 14): {TARGETS}.\n\n"
        + "\n".join(latency_table(result)) + "\n\n"
        "Highest sustained throughput (0 ms stub, no errors, same run):\n\n"
        + "\n".join(throughput_table(result)) + "\n\n"
        "The raw ASGI fast path (docs/decisions/0040-raw-asgi-fast-path.md) against the same gateway with "
        "`gateway.fast_path: false`, component route, same run:\n\n"
        + "\n".join(fast_path_table(result)) + "\n\n"
        "Issue 14's targets, from the figures above:\n\n"
        + "\n".join(target_table(result)) + "\n\n"
        + (notes.read_text().strip() + "\n" if notes.exists() else "") + extra)
    _replace_section(DOC, "## Gateway", section)


if __name__ == "__main__":  # re-render the section from the last results: `python bench/gateway_report.py`
    sys.path.insert(0, str(ROOT))
    write_doc(json.loads((ROOT / "bench" / "results" / "gateway.json").read_text()))
