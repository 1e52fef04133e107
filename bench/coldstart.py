"""Cold starts along a pipeline's dependency chain, on real `bentoml serve` replicas.

A three-step chain (embed -> retrieve -> answer) of sleeper models whose load
times mimic the study's shape (the last model is the slowest to load) runs
behind the real gateway and its autoscaler. After every component has scaled
to zero, the first request's latency is measured, repeated, for:

* **no warming**: each component starts when the request reaches it (the sum);
* **coordinated pre-warming**: the first access starts all three at once (the parallel bound);
* **tiered provisioning**: min 1 replica on the slowest component, the others from zero with pre-warming;
* **scheduled warm-up**: a capacity floor on all three (what a `scheduled-warmup` run writes) before the request.

The *parallel bound* is each component's single cold start measured alone;
pre-warming should come within 10% of the slowest of them. A last scenario
spikes one component to 10x the load of the others and records every
component's replica count. Results: ``bench/results/coldstart.json`` and the
``## Cold starts`` section of ``docs/benchmarks.md``.

    python bench/coldstart.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.registration_to_serving import _replace_section  # noqa: E402
from tests.integration.scaling_fixture import scaling_platform  # noqa: E402

console = Console()
CHAIN = ("embed", "retrieve", "answer")
LOAD_S = {"embed": 2.0, "retrieve": 1.0, "answer": 6.0}  # model load on top of the replica's own start-up
SLOWEST = "answer"


def _components() -> str:
    lines = ["components:"]
    for prefix in ("naive", "warm", "solo"):  # solo: in no pipeline, so nothing pre-warms around it
        for step in CHAIN:
            lines += [f"  {prefix}-{step}:", "    model: compoundry-sleeper", "    engine: pyfunc",
                      "    scaling: {min_replicas: 0, max_replicas: 3, target_concurrency: 2, idle_window_s: 3}",
                      "    timeouts: {request_s: 30, cold_start_s: 120}"]
    return "\n".join(lines) + "\n"


def _pipelines() -> str:
    lines = ["pipelines:"]
    for prefix, prewarm in (("naive", "false"), ("warm", "true")):
        lines += [f"  {prefix}-chain:", f"    prewarm: {prewarm}", "    sla_ms: 300000", "    trust: {pre: []}",
                  "    steps:"]
        previous = None
        for step in CHAIN:
            deps = f", depends_on: [{previous}]" if previous else ""
            lines.append(f"      {step}: {{component: {prefix}-{step}{deps}, inputs: {{data: [{{delay_ms: 5, text: x}}]}}}}")
            previous = step
    return "\n".join(lines) + "\n"


PLATFORM = """
route_refresh_s: 0.2
registry: {webhooks: false}
gateway: {auth_required: false, cold_start_hold_s: {interactive: 120}}
autoscaler: {tick_s: 0.25, window_s: 3, down_stabilization_s: 1}
"""


ERRORS: list[str] = []


def measured(results: list[float], measure, *args) -> None:
    """Append one measurement; a failed first request is recorded as an error, not a crash of the run."""
    try:
        results.append(measure(*args))
        console.log(f"{measure.__name__}{tuple(a for a in args[1:])}: {results[-1]:.2f} s")
    except RuntimeError as exc:
        ERRORS.append(str(exc)[:300])
        console.print(f"[red]{str(exc)[:200]}[/]")


def first_request_s(platform, pipeline: str) -> float:
    started = time.perf_counter()
    response = platform.client.post(f"/v1/pipelines/{pipeline}", json={"inputs": {}})
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{pipeline}: HTTP {response.status_code} {response.text[:300]}")
    return elapsed


def single_cold_s(platform, component: str) -> float:
    started = time.perf_counter()
    response = platform.client.post(f"/v1/components/{component}", json={"inputs": {"data": [{"delay_ms": 5, "text": "x"}]}})
    if response.status_code != 200:
        raise RuntimeError(f"{component}: HTTP {response.status_code} {response.text[:300]}")
    return time.perf_counter() - started


def all_at_zero(platform, components) -> None:
    for c in components:
        platform.wait_replicas(c, 0, timeout_s=120)


def run(repeats: int, workdir: Path | None = None) -> dict:
    naive = [f"naive-{s}" for s in CHAIN]
    warm = [f"warm-{s}" for s in CHAIN]
    load = {f"{p}-{s}": LOAD_S[s] for p in ("naive", "warm", "solo") for s in CHAIN}
    results: dict[str, list[float]] = {k: [] for k in ("no_warming", "prewarming", "tiered", "scheduled")}
    singles: dict[str, list[float]] = {s: [] for s in CHAIN}
    parallel: list[float] = []  # per pre-warming run: the slowest of the replicas started together
    with tempfile.TemporaryDirectory() as tmp, \
            scaling_platform(workdir or Path(tmp), _components(), _pipelines(), PLATFORM, load) as platform:
        total = repeats * (len(CHAIN) + 4)
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("cold starts", total=total)
            for _ in range(repeats):
                for step in CHAIN:  # the parallel bound: each component's cold start alone
                    bar.update(task, description=f"single cold start: {step}")
                    all_at_zero(platform, warm + [f"solo-{s}" for s in CHAIN])
                    measured(singles[step], single_cold_s, platform, f"solo-{step}")
                    bar.advance(task)
                bar.update(task, description="no warming")
                all_at_zero(platform, naive)
                measured(results["no_warming"], first_request_s, platform, "naive-chain")
                bar.advance(task)
                bar.update(task, description="coordinated pre-warming")
                all_at_zero(platform, warm)
                since = datetime.now(timezone.utc)
                measured(results["prewarming"], first_request_s, platform, "warm-chain")
                parallel.append(slowest_ready_since(platform.store, "warm-", since))
                bar.advance(task)
                bar.update(task, description="tiered: slowest component kept warm")
                all_at_zero(platform, warm)
                measured(results["tiered"], _with_floor, platform, [f"warm-{SLOWEST}"], "warm-chain")
                bar.advance(task)
                bar.update(task, description="scheduled warm-up")
                all_at_zero(platform, warm)
                measured(results["scheduled"], _with_floor, platform, warm, "warm-chain")
                bar.advance(task)
        bar_spike = _spike(platform, warm)
    return _summarise(results, singles, bar_spike, repeats, parallel)


def _with_floor(platform, components: list[str], pipeline: str) -> float:
    """Hold min 1 replica on ``components`` (as min_replicas or a scheduled warm-up would), then measure."""
    floors = [platform.capacity.add_floor(c, 1, timedelta(minutes=10), source="bench") for c in components]
    try:
        for c in components:
            platform.wait_replicas(c, 1, timeout_s=120)
        return first_request_s(platform, pipeline)
    finally:
        for f in floors:
            platform.capacity.release(f.id)


def _spike(platform, components: list[str]) -> dict:
    """1 client on the whole pipeline, then 10 more on its first component only: who scales?"""
    stop, counts = threading.Event(), {c: [] for c in components}
    target = components[0]

    def pipeline_client() -> None:
        with httpx.Client(base_url=platform.settings.gateway_url, timeout=120) as client:
            while not stop.is_set():
                client.post("/v1/pipelines/warm-chain", json={"inputs": {}})

    def spike_client() -> None:
        with httpx.Client(base_url=platform.settings.gateway_url, timeout=120) as client:
            while not stop.is_set():
                client.post(f"/v1/components/{target}", json={"inputs": {"data": [{"delay_ms": 200, "text": "spike"}]}})

    def sample() -> dict[str, int]:
        deployments = platform.scaling()["deployments"]
        return {c: deployments[platform.deployments[c]]["replicas"] for c in components}

    with ThreadPoolExecutor(11) as pool:
        pool.submit(pipeline_client)
        time.sleep(15)  # steady: every component warm at its base count
        before = sample()
        spikes = [pool.submit(spike_client) for _ in range(10)]
        for _ in range(40):
            time.sleep(0.5)
            for c, n in sample().items():
                counts[c].append(n)
        stop.set()
        for f in spikes:
            f.result()
    return {"spiked": target, "before": before, "peak_during_spike": {c: max(v) for c, v in counts.items()}}


def slowest_ready_since(store, prefix: str, since: datetime) -> float:
    """The longest start-to-ready among ``prefix`` replicas started after ``since``: on this machine, replicas
    started in parallel share 2 cores, so this, not a cold start measured alone, is what pre-warming can reach."""
    from compoundry.store.tables import Replica

    with store._session() as s:
        rows = s.query(Replica.deployment_id, Replica.started_at, Replica.ready_s).all()
    times = [ready for deployment, started, ready in rows if deployment.startswith(prefix) and ready is not None
             and (started if started.tzinfo else started.replace(tzinfo=timezone.utc)) >= since]
    return max(times, default=float("nan"))


def _summarise(results, singles, spike, repeats, parallel=()) -> dict:
    med = {k: round(statistics.median(v), 2) for k, v in results.items()}
    single_med = {k: round(statistics.median(v), 2) for k, v in singles.items()}
    bound = max(single_med.values())
    together = [t for t in parallel if t == t]  # NaN: no replica recorded
    together_med = round(statistics.median(together), 2) if together else None
    return {
        "repeats": repeats, "load_s": LOAD_S, "first_request_s": results, "median_s": med,
        "single_cold_start_s": singles, "single_median_s": single_med, "parallel_bound_s": bound,
        "sum_of_singles_s": round(sum(single_med.values()), 2),
        "ratios": {"prewarming_vs_bound": round(med["prewarming"] / bound, 3),
                   "prewarming_vs_no_warming": round(med["prewarming"] / med["no_warming"], 3),
                   "tiered_vs_no_warming": round(med["tiered"] / med["no_warming"], 3),
                   "scheduled_vs_no_warming": round(med["scheduled"] / med["no_warming"], 3)},
        "spike": spike, "errors": ERRORS, "prewarm_parallel_ready_s": list(parallel),
        "prewarm_parallel_ready_median_s": together_med,
        "prewarming_vs_parallel_ready": round(med["prewarming"] / together_med, 3) if together_med else None,
    }


def _ratio(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def write_doc(result: dict, path: Path) -> None:
    med, r, s = result["median_s"], result["ratios"], result["spike"]
    others_moved = [c for c in s["before"] if c != s["spiked"] and s["peak_during_spike"][c] != s["before"][c]]
    lines = [
        "## Cold starts", "",
        f"`python bench/coldstart.py --repeats {result['repeats']}`: a three-step chain of real `bentoml serve` "
        f"replicas (sleeper models loading in {', '.join(f'{k} {v:.0f} s' for k, v in result['load_s'].items())}, "
        "plus each replica's own start-up), after scale to zero; medians of the first request's latency. "
        "All replicas share this machine's 2 cores, so parallel starts slow each other down. "
        f"Failed first requests (left out of the medians): {len(result['errors'])}.", "",
        "| first request after scale to zero | median s | vs no warming |", "|---|---|---|",
        f"| no warming (cold starts add up along the chain) | {med['no_warming']:.2f} | 1.00 |",
        f"| coordinated pre-warming | {med['prewarming']:.2f} | {r['prewarming_vs_no_warming']:.2f} |",
        f"| tiered: min 1 on `{SLOWEST}`, the others from zero | {med['tiered']:.2f} | {r['tiered_vs_no_warming']:.2f} |",
        f"| scheduled warm-up active | {med['scheduled']:.2f} | {r['scheduled_vs_no_warming']:.2f} |", "",
        "Single cold starts measured alone (median s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["single_median_s"].items())
        + f"; their sum {result['sum_of_singles_s']:.2f} s, the slowest (the parallel bound) "
        f"{result['parallel_bound_s']:.2f} s.", "",
        "| target | result | met |", "|---|---|---|",
        f"| pre-warming within 10% of the slowest single cold start | {r['prewarming_vs_bound']:.2f}x the bound | "
        f"{'yes' if r['prewarming_vs_bound'] <= 1.10 else 'no'} |",
        f"| pre-warming vs the slowest replica it started (in parallel, sharing 2 cores) | "
        f"{_ratio(result.get('prewarming_vs_parallel_ready'))} ({result.get('prewarm_parallel_ready_median_s')} s) | "
        f"{'yes' if (result.get('prewarming_vs_parallel_ready') or 9) <= 1.10 else 'no'} |",
        f"| no cold start while a scheduled warm-up is active | first request {med['scheduled']:.2f} s | "
        f"{'yes' if med['scheduled'] < 1.0 else 'no'} |",
        f"| 10x spike on `{s['spiked']}` alone scales it alone | {s['spiked']}: {s['before'][s['spiked']]} -> "
        f"{s['peak_during_spike'][s['spiked']]} replicas; others moved: {', '.join(others_moved) or 'none'} | "
        f"{'yes' if not others_moved and s['peak_during_spike'][s['spiked']] > s['before'][s['spiked']] else 'no'} |",
        "",
        "Reading it: a replica's start here is mostly CPU (importing BentoML, MLflow and the model on 2 shared "
        "cores), not the I/O- or GPU-bound load of a real model, so three replicas started at once each take "
        "longer than one started alone. Pre-warming's first request matches the slowest of the replicas it "
        "started together (the second target row): the coordination adds nothing; what is missing to the "
        "study's parallel bound is the machine's parallelism. With model loads that dominate start-up (GPU "
        "weights, downloads) the parallel starts overlap and the two bounds meet. Keeping only the slowest "
        "component warm (tiered) avoids the contended parallel start and is the cheaper win on this machine.",
        "",
    ]
    _replace_section(path, "## Cold starts", "\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "coldstart.json")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the platform's state and logs here (default: a temporary directory)")
    args = parser.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    result = run(args.repeats, args.workdir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    write_doc(result, args.doc)
    console.print_json(json.dumps({k: result[k] for k in ("median_s", "single_median_s", "ratios", "spike")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
