"""A cost report as markdown: the Prefect artifact's body and what the CLI prints with ``--markdown``."""

from __future__ import annotations

from compoundry.gates.validation import markdown_table
from compoundry.reports.cost import CostReport


def markdown_summary(report: CostReport, location: str, written: dict[str, str] | None = None, top: int = 10) -> str:
    """Totals, the counterfactual, cost per pipeline and component, where the latency goes, and the files."""
    t = report.totals
    parts = [
        f"# Cost report {report.since:%Y-%m-%d %H:%M} – {report.until:%Y-%m-%d %H:%M} UTC",
        f"**{t['actual']:.4f}** for {int(t['calls'])} calls. The same traffic all-dedicated: "
        f"{t['all_dedicated']:.4f}; all-serverless: {t['all_serverless']:.4f}.",
        "Dedicated and auto replicas cost replica-seconds × `replica_hour`, shared by compute time; serverless and "
        "external calls cost `per_call` + `per_1k_tokens` (docs/cost-reports.md).",
    ]
    retired = [f"{kind}s {', '.join(f'`{n}`' for n in sorted(names))}"
               for kind, names in sorted(report.retired.items()) if names]
    if retired:
        parts.append(f"Retired (no longer configured; priced as when they ran, `retired` column): {'; '.join(retired)}.")
    for title, name in (("Cost per pipeline", "by_pipeline"), ("Cost per component", "by_component"),
                        ("What if (per pipeline)", "counterfactual_by_pipeline"),
                        ("Latency: critical path per pipeline", "latency_by_pipeline"),
                        ("Latency: each component's share of the critical path", "critical_path_shares")):
        rows = report.tables[name].head(top).to_dict("records")
        parts.append(f"## {title}\n\n" + (markdown_table(rows) if rows else "_nothing in this window_\n"))
    files = written or {}
    charts = [f"- chart `{w}`" for n, w in files.items() if n.endswith(".png")]
    tables = [f"- table `{w}`" for n, w in files.items() if not n.endswith(".png")]
    parts.append(f"## Files in `{location}`\n\n" + "\n".join(charts + tables))
    return "\n\n".join(parts) + "\n"
