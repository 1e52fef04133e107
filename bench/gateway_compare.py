"""Re-render the ``## Gateway`` section with a side-by-side table of earlier runs of the same benchmark.

    python bench/gateway_compare.py "before=bench/results/gateway-before-reliability.json" \\
        "after, 1 worker=bench/results/gateway-one-worker.json" "after, 2 workers=bench/results/gateway.json"

Each run is ``label=path`` of a ``bench/gateway.py`` result; the last one is the section's own run. Runs
made minutes apart on the same machine compare; runs from other days do not (these machines are noisy).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway_report import write_doc  # noqa: E402


def _row(result: dict, group: str, clients: int) -> dict:
    return next((r for r in result["rows"] if (r["group"], r["path"], r["clients"]) == (group, "compoundry", clients)),
                {})


def _pair(a, b) -> str:
    return "—" if a is None else f"{a:.2f} / {b:.2f}"


def _best(result: dict, path: str) -> str:
    best = (result["best_throughput"].get(path) or {}).get("rps")
    return "errors at every level" if best is None else f"{best:,.0f}"


def comparison(runs: list[tuple[str, dict]]) -> str:
    figures = [
        ("invoke added p50 / p99, 1 client (ms)", lambda r: _pair(_row(r, "invoke", 1).get("added_p50_ms"),
                                                                  _row(r, "invoke", 1).get("added_p99_ms"))),
        ("invoke added p50 / p99, 64 clients (ms)", lambda r: _pair(_row(r, "invoke", 64).get("added_p50_ms"),
                                                                    _row(r, "invoke", 64).get("added_p99_ms"))),
        ("invoke req/s, 64 clients (5 ms stub)", lambda r: f"{_row(r, 'invoke', 64).get('rps', 0):,.0f}"),
        ("invoke added p50 / p99, 256 clients (ms)", lambda r: _pair(_row(r, "invoke", 256).get("added_p50_ms"),
                                                                     _row(r, "invoke", 256).get("added_p99_ms"))),
        ("chat added p50 / p99, 64 clients (ms)", lambda r: _pair(_row(r, "chat", 64).get("added_p50_ms"),
                                                                  _row(r, "chat", 64).get("added_p99_ms"))),
        ("pipeline fan-out overhead p50 / p99, 64 clients (ms)",
         lambda r: _pair(_row(r, "pipeline", 64).get("overhead_p50_ms"), _row(r, "pipeline", 64).get("overhead_p99_ms"))),
        ("errors, all latency rows", lambda r: str(sum(x.get("errors", 0) for x in r["rows"]))),
        ("best sustained invoke req/s (0 ms stub)", lambda r: _best(r, "invoke/compoundry")),
        ("best sustained chat req/s (0 ms stub)", lambda r: _best(r, "chat/compoundry")),
        ("nginx best sustained req/s, same run", lambda r: _best(r, "invoke/nginx")),
    ]
    head = "| figure | " + " | ".join(f"{label} ({r['at']})" for label, r in runs) + " |"
    lines = [head, "|---|" + "---|" * len(runs)]
    lines += [f"| {name} | " + " | ".join(f(r) for _, r in runs) + " |" for name, f in figures]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    runs = [(label, json.loads(Path(path).read_text())) for label, path in (a.split("=", 1) for a in argv)]
    extra = ("\n**Side by side, same machine, same session** (`python bench/gateway_compare.py ...`): "
             + ", ".join(f"{label}: `{path}`" for label, path in (a.split("=", 1) for a in argv)) + ".\n\n"
             + comparison(runs) + "\n")
    write_doc(runs[-1][1], extra)
    print(comparison(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
