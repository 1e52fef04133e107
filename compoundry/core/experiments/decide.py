"""What an experiment's evaluation concludes from the observations of its variants (pure).

In order:

1. **Guardrails**: a challenger with at least ``guardrails.min_calls`` calls whose
   error rate or p95 latency breaks a limit → ``rollback`` (the champion takes all
   traffic again), whatever the success metric says.
2. **Sample size**: any variant below ``min_samples`` units (sticky keys with a
   metric value) → ``continue`` ("no decision"), or ``conclude`` once
   ``max_duration_h`` has passed (the control keeps serving). With ``method:
   fixed``, the same until every variant has ``planned_units``.
3. **Test** every challenger against the control at ``alpha / challengers``
   (Bonferroni), per unit of assignment (:mod:`units`). ``always_valid`` (the
   default, :mod:`sequential`) may be evaluated at every look; ``fixed`` tests
   once at the planned horizon and then ends the run either way. A
   significantly better challenger → ``promote`` (the largest improvement if
   several); all significantly worse → ``conclude``; otherwise ``continue`` until
   the maximum duration, then ``conclude`` without a winner.

The decision depends only on the observations and the time: the same data
never gives a different verdict, and a promotion stays a promotion however
late it is evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from compoundry.core.experiments.sequential import (
    compare_always_valid,
    compare_fixed_units,
)
from compoundry.core.experiments.stats import (
    Comparison,
    compare_binary,
    compare_continuous,
)
from compoundry.core.experiments.units import UnitSummary

Action = Literal["continue", "promote", "rollback", "conclude"]


@dataclass(frozen=True)
class VariantObservations:
    """What one variant did during the run: every call, and the success metric where it is known."""

    name: str
    calls: int = 0
    errors: int = 0
    latencies_ms: tuple[float, ...] = ()
    values: tuple[float, ...] = ()  # the success metric, one per observed request
    unit_keys: tuple[str, ...] = ()  # the unit (session, user) of each value; empty: each value is its own unit
    unit: str = "request"  # what unit_keys are
    summary: UnitSummary | None = None  # per-unit sums given directly (instead of values and unit_keys)
    pre_values: Mapping[str, float] = field(default_factory=dict, hash=False)  # CUPED: unit key -> pre-run value

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latencies_ms, 95)

    @cached_property
    def per_unit(self) -> UnitSummary:
        if self.summary is not None:
            return self.summary
        return UnitSummary.of_values(self.values, self.unit_keys, self.pre_values)

    @property
    def units(self) -> int:
        return self.per_unit.n

    @property
    def samples(self) -> int:
        return len(self.values) if self.summary is None else self.summary.observations

    @property
    def mean(self) -> float | None:
        return self.per_unit.mean


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    winner: str | None = None
    breaches: tuple[str, ...] = ()
    comparisons: tuple[Comparison, ...] = field(default=())
    method: str = "always_valid"
    unit: str = "request"  # the unit of analysis the test used


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: a p95 is a latency that really happened)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def guardrail_breaches(experiment, observed: Mapping[str, VariantObservations]) -> list[str]:
    """One line per broken limit, e.g. ``challenger: error rate 0.20 > 0.05 (40 calls)``."""
    rails, control = experiment.guardrails, observed.get(experiment.control_variant)
    breaches = []
    for name in experiment.challengers:
        o = observed.get(name, VariantObservations(name))
        if o.calls < rails.min_calls:
            continue
        if rails.max_error_rate is not None and o.error_rate > rails.max_error_rate:
            breaches.append(f"{name}: error rate {o.error_rate:.3f} > {rails.max_error_rate} ({o.calls} calls)")
        p95 = o.p95_ms
        if rails.max_p95_ms is not None and p95 is not None and p95 > rails.max_p95_ms:
            breaches.append(f"{name}: p95 {p95:.1f} ms > {rails.max_p95_ms} ms ({o.calls} calls)")
        if (rails.max_p95_ratio is not None and p95 is not None and control is not None
                and control.calls >= rails.min_calls and control.p95_ms):
            if p95 > rails.max_p95_ratio * control.p95_ms:
                breaches.append(f"{name}: p95 {p95:.1f} ms > {rails.max_p95_ratio} x control's "
                                f"{control.p95_ms:.1f} ms")
    return breaches


DEFAULT_PLANNED_UNITS = 1000  # always_valid: units per variant where the interval is tightest


def analysis_unit(observed: Mapping[str, VariantObservations]) -> str:
    """The unit the observations were grouped by (``request`` when any variant could not group)."""
    units = {o.unit for o in observed.values()}
    return units.pop() if len(units) == 1 else "request"


def compare(experiment, observed: Mapping[str, VariantObservations]) -> list[Comparison]:
    """Every challenger against the control, at the Bonferroni-corrected level."""
    control = observed[experiment.control_variant]
    alpha = experiment.alpha / max(1, len(experiment.challengers))
    if experiment.method == "always_valid":
        v_opt = (experiment.planned_units or DEFAULT_PLANNED_UNITS) / 2  # effective units of two equal arms
        return [compare_always_valid(name, control.name, observed[name].per_unit, control.per_unit, alpha, v_opt,
                                     experiment.cuped) for name in experiment.challengers]
    if analysis_unit(observed) != "request" or experiment.cuped:
        return [compare_fixed_units(name, control.name, observed[name].per_unit, control.per_unit, alpha,
                                    experiment.cuped) for name in experiment.challengers]
    test = compare_binary if experiment.metric.measure == "binary" else compare_continuous
    return [test(name, control.name, observed[name].values, control.values, alpha) for name in experiment.challengers]


def decide(experiment, observed: Mapping[str, VariantObservations], running_h: float) -> Decision:
    """The next step for a running experiment; ``observed`` has an entry per variant (missing: nothing seen)."""
    observed = {v.name: observed.get(v.name, VariantObservations(v.name)) for v in experiment.variants}
    method, unit = experiment.method, analysis_unit(observed)
    done = _partial(Decision, method=method, unit=unit)
    breaches = guardrail_breaches(experiment, observed)
    if breaches:
        return done("rollback", "guardrail breached: " + "; ".join(breaches), breaches=tuple(breaches))
    expired = running_h >= experiment.max_duration_h
    need = experiment.min_samples if method == "always_valid" else max(experiment.min_samples,
                                                                       experiment.planned_units)
    short = {n: o.units for n, o in observed.items() if o.units < need}
    if short:
        have = ", ".join(f"{n} {k}" for n, k in short.items())
        if expired:
            return done("conclude", f"maximum duration {experiment.max_duration_h} h reached with too few "
                                    f"{unit}s ({have} < {need}); the control keeps serving")
        horizon = "the fixed horizon is " if method == "fixed" else "need "
        return done("continue", f"no decision: {horizon}{need} {unit}s per variant, have {have}")
    comparisons = compare(experiment, observed)
    tested = _partial(done, comparisons=tuple(comparisons))
    maximize = experiment.metric.maximize
    winners = [c for c in comparisons if c.better(maximize)]
    if winners:
        best = max(winners, key=lambda c: c.effect if maximize else -c.effect)
        return tested("promote", f"{best.challenger} beats {best.control}: {_describe(best)}", best.challenger)
    if all(c.worse(maximize) for c in comparisons):
        return tested("conclude", "every challenger is worse than the control: "
                      + "; ".join(_describe(c) for c in comparisons))
    if method == "fixed":
        return tested("conclude", "no significant improvement at the fixed horizon (tested once); the control "
                                  "keeps serving: " + "; ".join(_describe(c) for c in comparisons))
    if expired:
        return tested("conclude", f"no significant difference within {experiment.max_duration_h} h; the control "
                                  "keeps serving")
    return tested("continue", "no significant difference yet: " + "; ".join(_describe(c) for c in comparisons))


def _partial(make, **fixed):
    return lambda *args, **kwargs: make(*args, **(fixed | kwargs))


def _describe(c: Comparison) -> str:
    kind = "always-valid " if c.test.startswith("mSPRT") else ""
    return (f"{c.challenger} {c.challenger_mean:.4g} vs {c.control} {c.control_mean:.4g}, difference {c.effect:+.4g} "
            f"({kind}{100 * (1 - c.alpha):.1f}% CI {c.ci_low:+.4g} to {c.ci_high:+.4g}), p = {c.p_value:.3g} "
            f"({c.test}, {c.n_challenger}/{c.n_control} units)")
