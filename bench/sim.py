"""Simulator speed at the study's scale, and (``--report``) the generated study report.

Runs every policy over 30 simulated days of the built-in study scenario
(``compoundry/sim/scenarios/study.yaml``: ~1.1 M agent requests a day, doubled
inter-arrival variance, 10-50x spikes, a nightly batch window) on this
machine, timing trace generation + all policies. Writes
``bench/results/sim.json`` and the ``## Simulator`` section of
``docs/benchmarks.md``; with ``--report`` also ``docs/simulation/report.md``
and its charts.

    python bench/sim.py [--days 30] [--workers 2] [--report]
    python bench/sim.py --serverless-variants   # hybrid under other serverless backends (ADR 0042)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.registration_to_serving import _replace_section  # noqa: E402
from compoundry.sim.analyses import evaluate  # noqa: E402
from compoundry.sim.policies import POLICIES  # noqa: E402
from compoundry.sim.run import run_policies  # noqa: E402
from compoundry.sim.scenario import study_scenario  # noqa: E402
from compoundry.sim.traffic import generate  # noqa: E402

RESULT = REPO / "bench" / "results" / "sim.json"
DOC = REPO / "docs" / "benchmarks.md"


def measure(days: float, workers: int) -> tuple[dict, object, object, list]:
    started = time.perf_counter()
    scenario = study_scenario(days=days)
    trace = generate(scenario.traffic, scenario.tick_s)
    generated = time.perf_counter() - started
    outcomes = run_policies(scenario, trace, list(POLICIES), workers=workers,
                            on_done=lambda o: print(f"  {o.policy}: {o.seconds:.1f} s", flush=True))
    wall = time.perf_counter() - started
    full, static = outcomes[-1], outcomes[0]
    first = next(iter(full.pipelines))
    result = {
        "days": days, "tick_s": scenario.tick_s, "requests": trace.total, "ticks": trace.n_ticks,
        "interarrival_cv": trace.cv, "policies": list(POLICIES), "workers": workers,
        "cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0], "python": platform.python_version(),
        "generate_s": round(generated, 2), "wall_s": round(wall, 2),
        "policy_s": {o.policy: round(o.seconds, 2) for o in outcomes},
        "full_policy": full.policy, "within_slo": {o.policy: o.pipelines[first].within_slo for o in outcomes},
        "cost": {o.policy: round(o.cost, 2) for o in outcomes},
        "full_cost_vs_static": round(1 - full.cost / static.cost, 4),
    }
    return result, scenario, trace, outcomes


SERVERLESS_VARIANTS = {  # name -> (overrides of every component's models.serverless, and of the LLM's only)
    "always warm, unlimited (before ADR 0042)": ({"cold_start_s": 0.0, "concurrency_limit": None}, {}),
    "cold starts only (5 s), unlimited": ({"concurrency_limit": None}, {}),
    "defaults: 5 s cold start, 200 in flight": ({}, {}),
    "limit 1,000 in flight": ({"concurrency_limit": 1000}, {}),
    "defaults, LLM endpoint cold start 60 s": ({}, {"cold_start_s": 60.0}),
}


def serverless_variants(days: float, llm: str = "dialogue-llm") -> list[dict]:
    """``hybrid`` on the same trace under each backend of ``SERVERLESS_VARIANTS``."""
    from compoundry.sim.run import run_policy

    base = study_scenario(days=days)
    trace = generate(base.traffic, base.tick_s)
    rows = []
    for name, (every, only_llm) in SERVERLESS_VARIANTS.items():
        models = {c: m.model_copy(update={"serverless": m.serverless.model_copy(
            update={**every, **(only_llm if c == llm else {})})}) for c, m in base.models.items()}
        outcome = run_policy(base.model_copy(update={"models": models}), trace, "hybrid")
        agent = outcome.pipelines[base.traffic.pipeline]
        rows.append({"backend": name, "cost": round(outcome.cost, 2), "within_slo": agent.within_slo,
                     "median_p95_s": agent.median_p95_s, "worst_p95_s": agent.worst_p95_s,
                     "cold_calls": sum(c.serverless_cold_calls for c in outcome.components.values()),
                     "throttled_calls": sum(c.throttled_calls for c in outcome.components.values())})
        print(f"  {name}: {100 * agent.within_slo:.2f}% within SLO, worst P95 {agent.worst_p95_s:,.1f} s", flush=True)
    return rows


def write_doc(r: dict) -> None:
    rows = "\n".join(f"| {p} | {r['policy_s'][p]:.1f} | {100 * r['within_slo'][p]:.2f}% | {r['cost'][p]:,.0f} |"
                     for p in r["policies"])
    section = (
        "## Simulator\n\n"
        f"`python bench/sim.py` — {r['days']:g} simulated days of the study scenario ({r['requests']:,} requests, "
        f"{r['ticks']:,} ticks of {r['tick_s']:g} s, inter-arrival CV {r['interarrival_cv']:g}), all "
        f"{len(r['policies'])} policies, {r['workers']} worker processes on {r['cpus']} CPUs "
        f"(1-minute load average {r['load_average_1m']:.1f} at the end: other work shared the machine).\n\n"
        f"**Wall time: {r['wall_s']:.1f} s** (target: under 60 s), of which trace generation {r['generate_s']:.1f} s. "
        f"`{r['full_policy']}` keeps the agent's P95 within its SLO in {100 * r['within_slo'][r['full_policy']]:.2f}% "
        f"of 5-minute intervals at {100 * r['full_cost_vs_static']:.1f}% lower cost than static. "
        "Details and the study comparison: [simulation/report.md](simulation/report.md).\n\n"
        "| policy | seconds (in its worker) | agent intervals within SLO | cost $ |\n|---|---|---|---|\n"
        f"{rows}\n"
    )
    _replace_section(DOC, "## Simulator", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="also write docs/simulation/report.md and charts")
    parser.add_argument("--serverless-variants", action="store_true",
                        help="only: hybrid under other serverless backends -> bench/results/sim_serverless.json")
    args = parser.parse_args()
    if args.serverless_variants:
        rows = serverless_variants(args.days)
        (RESULT.parent / "sim_serverless.json").write_text(json.dumps(rows, indent=1) + "\n")
        return
    result, scenario, trace, outcomes = measure(args.days, args.workers)
    print(json.dumps({k: v for k, v in result.items() if k not in ("policy_s",)}, indent=2))
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    write_doc(result)
    if args.report:
        from compoundry.sim.report import write_report

        analyses = evaluate(scenario, trace, outcomes)
        meta = {"command": "python bench/sim.py --report", "days": args.days, "tick_s": scenario.tick_s,
                "requests": trace.total, "cv": trace.cv, "seed": scenario.traffic.seed,
                "interval_s": scenario.interval_s}
        path = write_report(REPO / "docs" / "simulation", outcomes, analyses, meta)
        (REPO / "docs" / "simulation" / "results.json").write_text(
            json.dumps({"analyses": analyses, "outcomes": [_brief(o) for o in outcomes]}, indent=1, default=float))
        print(f"report: {path}")


def _brief(outcome) -> dict:
    d = asdict(outcome)
    d.pop("replicas_series")
    for p in d["pipelines"].values():
        p.pop("p95_series")
    return d


if __name__ == "__main__":
    main()
