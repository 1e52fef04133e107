"""The generated report: ``docs/simulation/report.md`` and its PNG charts (I/O only; numbers come in).

``write_report(out_dir, outcomes, analyses, meta)`` is called by
``python bench/sim.py --report`` and ``compoundry simulate run --report DIR``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def policy_table(outcomes: list, static_cost: float | None) -> list[str]:
    pipelines = list(outcomes[0].pipelines)
    head = ["policy", "cost $", "vs static"] + [f"{p}: within SLO / median P95 / worst P95 (s)" for p in pipelines] \
        + ["calls held for a cold start", "replica starts", "serverless calls: cold / throttled"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for o in outcomes:
        cells = [o.policy, f"{o.cost:,.0f}", _pct(1 - o.cost / static_cost) if static_cost else "-"]
        cells += [f"{100 * x.within_slo:.2f}% / {x.median_p95_s:.2f} / {x.worst_p95_s:,.1f}" for x in o.pipelines.values()]
        cells += [f"{sum(c.held_calls for c in o.components.values()):,}",
                  f"{sum(c.replica_starts for c in o.components.values()):,}",
                  f"{sum(c.serverless_cold_calls for c in o.components.values()):,} / "
                  f"{sum(c.throttled_calls for c in o.components.values()):,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def provisioning_table(outcomes: list) -> list[str]:
    components = list(outcomes[0].components)
    lines = ["| policy | " + " | ".join(f"{c}: over / under (replica-h)" for c in components) + " |",
             "|---|" + "---|" * len(components)]
    for o in outcomes:
        cells = [f"{o.components[c].over_hours:,.0f} / {o.components[c].under_hours:,.1f}"
                 + (" (serverless)" if o.components[c].mode == "serverless" else "") for c in components]
        lines.append(f"| {o.policy} | " + " | ".join(cells) + " |")
    return lines


def charts(out_dir: Path, outcomes: list, analyses: dict, interval_s: float) -> list[str]:
    """Write the PNGs; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [o.policy for o in outcomes]
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    ax[0].bar(names, [o.cost for o in outcomes], color="#4c72b0")
    ax[0].set_ylabel("cost over the trace, $")
    first = next(iter(outcomes[0].pipelines))
    ax[1].bar(names, [100 * o.pipelines[first].within_slo for o in outcomes], color="#55a868")
    ax[1].set_ylim(90, 100.2)
    ax[1].axhline(99.5, color="red", lw=1, ls="--", label="target 99.5%")
    ax[1].axhline(98.0, color="gray", lw=1, ls=":", label="study 98%")
    ax[1].set_ylabel(f"{first}: intervals within SLO, %")
    ax[1].legend(loc="lower right")
    for a in ax:
        a.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out_dir / "policies.png", dpi=110)
    plt.close(fig)

    week = int(7 * 86400 / interval_s)
    fig, ax = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    hours = np.arange(week) * interval_s / 3600
    for o in outcomes:
        if o.policy in ("static", "scheduled", "hybrid"):
            series = o.replicas_series.get("dialogue-llm", [])[:week]
            ax[0].plot(hours[: len(series)], series, lw=0.8, label=o.policy)
            p95 = np.array(o.pipelines[first].p95_series[:week], dtype=float)
            ax[1].plot(hours[: len(p95)], p95, lw=0.8, label=o.policy)
    ax[0].set_ylabel("dialogue-llm replicas")
    ax[0].legend()
    ax[1].set_yscale("log")
    ax[1].axhline(outcomes[0].pipelines[first].sla_s, color="red", lw=1, ls="--")
    ax[1].set_ylabel(f"{first} P95 per 5 min, s")
    ax[1].set_xlabel("hours since Monday 00:00 (first week)")
    fig.tight_layout()
    fig.savefig(out_dir / "week.png", dpi=110)
    plt.close(fig)

    c = analyses["cascade"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels = ["no warming", "pre-warming", "LLM kept warm"]
    ours = [c["formula_s"]["naive"], c["formula_s"]["prewarm"], c["formula_s"]["llm_warm"]]
    ax.bar(np.arange(3) - 0.2, ours, 0.4, label="compoundry (formula = simulator)")
    ax.bar(np.arange(2) + 0.2, [c["study_s"]["naive"], c["study_s"]["prewarm"]], 0.4, label="study")
    ax.set_xticks(range(3), labels)
    ax.set_ylabel("first request's cold-start delay, s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "cascade.png", dpi=110)
    plt.close(fig)
    return ["policies.png", "week.png", "cascade.png"]


def write_report(out_dir: Path, outcomes: list, analyses: dict, meta: dict) -> Path:
    """Markdown + charts into ``out_dir``; returns the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    charts(out_dir, outcomes, analyses, meta["interval_s"])
    from compoundry.sim.report_text import render

    path = out_dir / "report.md"
    path.write_text(render(outcomes, analyses, meta, policy_table, provisioning_table))
    return path
