"""The evaluation of an experiment as markdown (the Prefect artifact) and as a plain dict (the flow's result)."""

from __future__ import annotations

from dataclasses import asdict


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def variants_table(observed) -> str:
    """One row per variant; ``samples`` says the units too when they are sessions or users (7 columns: the CLI)."""
    rows = ["| variant | calls | errors | error rate | p95 ms | samples | metric mean |", "|---|---|---|---|---|---|---|"]
    for o in observed.values():
        samples = f"{o.samples} ({o.units} {o.unit}s)" if o.unit != "request" else str(o.samples)
        rows.append(f"| {o.name} | {o.calls} | {o.errors} | {o.error_rate:.3f} | {_fmt(o.p95_ms)} | {samples} | "
                    f"{_fmt(o.mean)} |")
    return "\n".join(rows)


def unit_note(experiment, observed, decision) -> str:
    """Which unit the test used, how many each variant had, and why when it is not the unit of assignment."""
    counts = ", ".join(f"{o.name} {o.units}" for o in observed.values())
    note = (f"Unit of analysis: **{decision.unit}** ({counts}); each unit counts once: its metric sum over its "
            "count, with the delta-method variance.")
    if decision.unit != experiment.unit:
        note += (f" The experiment is keyed by {experiment.unit}, but the observations carry no {experiment.unit} "
                 "key, so each call counts as its own unit: intervals are too narrow if calls of one "
                 f"{experiment.unit} are alike.")
    if getattr(experiment, "cuped", False) and not any("CUPED" in c.test for c in decision.comparisons):
        note += " CUPED was asked for, but no unit had a pre-experiment value: the test is unadjusted."
    return note


METHODS = {"always_valid": "always-valid (mixture SPRT): safe at every look",
           "fixed": "fixed horizon: one test at the planned units"}


def comparisons_table(comparisons) -> str:
    if not comparisons:
        return "_No test run (see the decision)._"
    rows = ["| challenger vs control | test | difference | CI | relative | p | alpha | effect size (g) |",
            "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        lift = f"{100 * c.relative_lift:+.1f}%" if c.relative_lift is not None else "–"
        rows.append(f"| {c.challenger} vs {c.control} | {c.test} | {c.effect:+.4g} | "
                    f"[{c.ci_low:+.4g}, {c.ci_high:+.4g}] | {lift} | {c.p_value:.3g} | {c.alpha:.3g} | "
                    f"{_fmt(c.standardised_effect, 3)} |")
    return "\n".join(rows)


def evaluation_markdown(name: str, experiment, run, observed, decision, running_h: float) -> str:
    metric = experiment.metric
    return "\n\n".join([
        f"# Experiment `{name}`: {decision.action}",
        f"**Decision:** {decision.reason}",
        f"Component `{experiment.component}`, run `{run.id}` started {run.started_at:%Y-%m-%d %H:%M} UTC "
        f"({running_h:.2f} h ago). Metric: {metric.source} `{metric.name}` ({metric.measure}, "
        f"{'higher' if metric.maximize else 'lower'} is better); control `{experiment.control_variant}`; "
        f"min samples {experiment.min_samples} per variant; alpha {experiment.alpha}; method "
        f"{METHODS.get(decision.method, decision.method)}.",
        unit_note(experiment, observed, decision),
        "## Variants", variants_table(observed),
        "## Tests", comparisons_table(decision.comparisons),
    ]) + "\n"


def evaluation_result(name: str, run, observed, decision) -> dict:
    return {
        "experiment": name, "run": run.id, "action": decision.action, "reason": decision.reason,
        "winner": decision.winner, "breaches": list(decision.breaches), "method": decision.method,
        "unit": decision.unit,
        "variants": {n: {"calls": o.calls, "errors": o.errors, "error_rate": round(o.error_rate, 4),
                         "p95_ms": o.p95_ms, "samples": o.samples, "units": o.units, "mean": o.mean}
                     for n, o in observed.items()},
        "comparisons": [asdict(c) | {"significant": c.significant} for c in decision.comparisons],
    }
