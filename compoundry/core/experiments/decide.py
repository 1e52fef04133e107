"""What an experiment's evaluation concludes from the observations of its variants (pure).

In order:

1. **Guardrails**: a challenger with at least ``guardrails.min_calls`` calls whose
   error rate or p95 latency breaks a limit → ``rollback`` (the champion takes all
   traffic again), whatever the success metric says.
2. **Sample size**: any variant below ``min_samples`` observations of the success
   metric → ``continue`` ("no decision"), or ``conclude`` once ``max_duration_h`` has
   passed (the control keeps serving).
3. **Test** every challenger against the control at ``alpha / challengers``
   (Bonferroni): a significantly better one → ``promote`` (the largest improvement
   if several); all significantly worse → ``conclude``; otherwise ``continue`` until
   the maximum duration, then ``conclude`` without a winner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from compoundry.core.experiments.stats import (
    Comparison,
    compare_binary,
    compare_continuous,
)

Action = Literal["continue", "promote", "rollback", "conclude"]


@dataclass(frozen=True)
class VariantObservations:
    """What one variant did during the run: every call, and the success metric where it is known."""

    name: str
    calls: int = 0
    errors: int = 0
    latencies_ms: tuple[float, ...] = ()
    values: tuple[float, ...] = ()  # the success metric, one per observed request

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latencies_ms, 95)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    winner: str | None = None
    breaches: tuple[str, ...] = ()
    comparisons: tuple[Comparison, ...] = field(default=())


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


def compare(experiment, observed: Mapping[str, VariantObservations]) -> list[Comparison]:
    """Every challenger against the control, at the Bonferroni-corrected level."""
    control = observed[experiment.control_variant]
    alpha = experiment.alpha / max(1, len(experiment.challengers))
    test = compare_binary if experiment.metric.measure == "binary" else compare_continuous
    return [test(name, control.name, observed[name].values, control.values, alpha) for name in experiment.challengers]


def decide(experiment, observed: Mapping[str, VariantObservations], running_h: float) -> Decision:
    """The next step for a running experiment; ``observed`` has an entry per variant (missing: nothing seen)."""
    observed = {v.name: observed.get(v.name, VariantObservations(v.name)) for v in experiment.variants}
    breaches = guardrail_breaches(experiment, observed)
    if breaches:
        return Decision("rollback", "guardrail breached: " + "; ".join(breaches), breaches=tuple(breaches))
    expired = running_h >= experiment.max_duration_h
    short = {n: len(o.values) for n, o in observed.items() if len(o.values) < experiment.min_samples}
    if short:
        have = ", ".join(f"{n} {k}" for n, k in short.items())
        if expired:
            return Decision("conclude", f"maximum duration {experiment.max_duration_h} h reached with too few "
                                        f"samples ({have} < {experiment.min_samples}); the control keeps serving")
        return Decision("continue", f"no decision: need {experiment.min_samples} samples per variant, have {have}")
    comparisons = compare(experiment, observed)
    maximize = experiment.metric.maximize
    winners = [c for c in comparisons if c.better(maximize)]
    if winners:
        best = max(winners, key=lambda c: c.effect if maximize else -c.effect)
        return Decision("promote", f"{best.challenger} beats {best.control}: {_describe(best)}", best.challenger,
                        comparisons=tuple(comparisons))
    if all(c.worse(maximize) for c in comparisons):
        return Decision("conclude", "every challenger is worse than the control: "
                        + "; ".join(_describe(c) for c in comparisons), comparisons=tuple(comparisons))
    if expired:
        return Decision("conclude", f"no significant difference within {experiment.max_duration_h} h; the control "
                                    "keeps serving", comparisons=tuple(comparisons))
    return Decision("continue", "no significant difference yet: "
                    + "; ".join(_describe(c) for c in comparisons), comparisons=tuple(comparisons))


def _describe(c: Comparison) -> str:
    return (f"{c.challenger} {c.challenger_mean:.4g} vs {c.control} {c.control_mean:.4g}, difference {c.effect:+.4g} "
            f"({100 * (1 - c.alpha):.1f}% CI {c.ci_low:+.4g} to {c.ci_high:+.4g}), p = {c.p_value:.3g} "
            f"({c.test}, n = {c.n_challenger}/{c.n_control})")
