"""Two-sample tests for one challenger against the control, with effect size and confidence interval.

* binary metrics (success, thumbs up): Fisher's exact test, valid at any sample
  size; the interval for the difference in rates is Newcombe's hybrid score
  interval (from Wilson intervals), which stays sensible near 0 and 1 where the
  Wald interval collapses;
* continuous metrics (latency, a rating): Welch's t-test (no equal-variance
  assumption) and its interval for the difference in means; Hedges' g as the
  standardised effect size.

``effect`` is always challenger minus control.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Comparison:
    challenger: str
    control: str
    test: str
    n_control: int
    n_challenger: int
    control_mean: float
    challenger_mean: float
    effect: float  # challenger - control, in the metric's units
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float
    standardised_effect: float | None = None  # Hedges' g (continuous only)

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    @property
    def relative_lift(self) -> float | None:
        return self.effect / self.control_mean if self.control_mean else None

    def better(self, maximize: bool) -> bool:
        """Significantly better in the metric's direction."""
        return self.significant and (self.effect > 0 if maximize else self.effect < 0)

    def worse(self, maximize: bool) -> bool:
        return self.significant and (self.effect < 0 if maximize else self.effect > 0)


def wilson_interval(successes: int, n: int, alpha: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    z = stats.norm.ppf(1 - alpha / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def compare_binary(challenger: str, control: str, challenger_values: Sequence[float],
                   control_values: Sequence[float], alpha: float) -> Comparison:
    """Rates of 1s; values are 0/1 (anything > 0.5 counts as a success)."""
    n1, n0 = len(challenger_values), len(control_values)
    s1 = sum(1 for v in challenger_values if v > 0.5)
    s0 = sum(1 for v in control_values if v > 0.5)
    p1, p0 = (s1 / n1 if n1 else 0.0), (s0 / n0 if n0 else 0.0)
    _, p_value = stats.fisher_exact([[s1, n1 - s1], [s0, n0 - s0]])
    l1, u1 = wilson_interval(s1, n1, alpha)
    l0, u0 = wilson_interval(s0, n0, alpha)
    d = p1 - p0
    low = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return Comparison(challenger, control, "Fisher's exact test", n0, n1, p0, p1, d, low, high, float(p_value), alpha)


def compare_continuous(challenger: str, control: str, challenger_values: Sequence[float],
                       control_values: Sequence[float], alpha: float) -> Comparison:
    """Difference in means by Welch's t-test."""
    a, b = list(map(float, challenger_values)), list(map(float, control_values))
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    if len(set(a)) <= 1 and len(set(b)) <= 1:  # both constant: the t statistic is undefined
        p_value = 0.0 if mean_a != mean_b and len(a) > 1 and len(b) > 1 else 1.0
        low = high = mean_a - mean_b
    else:
        result = stats.ttest_ind(a, b, equal_var=False)
        p_value = float(result.pvalue)
        interval = result.confidence_interval(1 - alpha)
        low, high = float(interval.low), float(interval.high)
        if math.isnan(p_value):  # a single observation on one side: no evidence yet
            p_value, low, high = 1.0, -math.inf, math.inf
    return Comparison(challenger, control, "Welch's t-test", len(b), len(a), mean_b, mean_a, mean_a - mean_b,
                      low, high, p_value, alpha, hedges_g(a, b))


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Standardised difference in means, with the small-sample correction."""
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return None
    m1, m2 = sum(a) / n1, sum(b) / n2
    v1 = sum((x - m1) ** 2 for x in a) / (n1 - 1)
    v2 = sum((x - m2) ** 2 for x in b) / (n2 - 1)
    pooled = math.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
    if pooled == 0:
        return None
    return (m1 - m2) / pooled * (1 - 3 / (4 * (n1 + n2) - 9))
