"""Per-unit sufficient statistics and the delta-method variance of a ratio metric (pure).

The unit of analysis is the unit of assignment: when a session (or user) is
assigned a variant, its calls are not independent (a session that likes the
answers likes most of them), so each unit contributes one pair ``(y, m)`` — the
sum of its metric values and how many it had — and a variant's metric is the
ratio ``sum(y) / sum(m)``. Its variance comes from the delta method (Deng et
al., "Applying the Delta Method in Metric Analytics", 2018):

    Var(R) ≈ (S_yy - 2 R S_ym + R² S_mm) / (n · m̄²)

with the sample (co)variances over units. With one value per unit (a
request-keyed experiment) it is the usual ``s² / n``. Only running sums are
kept, so a caller (the store, the benchmark) can pass aggregates instead of
every value.

CUPED (Deng, Xu, Kohavi & Walker 2013): when units carry a pre-experiment value
``x`` (their metric before the run), the difference is adjusted by ``θ·(x̄₁ − x̄₀)``
with one ``θ`` for both variants (so the estimate stays unbiased: ``x`` was fixed
before assignment) and the variance shrinks by the share ``x`` explains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class UnitSummary:
    """Running sums over units: ``n`` units, each with metric sum ``y`` over ``m`` observations."""

    n: int = 0
    sum_y: float = 0.0
    sum_m: float = 0.0
    sum_yy: float = 0.0
    sum_mm: float = 0.0
    sum_ym: float = 0.0
    sum_x: float = 0.0  # CUPED: pre-experiment value per unit (units without one carry the variant's mean)
    sum_xx: float = 0.0
    sum_xy: float = 0.0
    sum_xm: float = 0.0
    covariate: bool = False

    @classmethod
    def of_pairs(cls, pairs: Sequence[tuple[float, float]]) -> "UnitSummary":
        """From ``(y, m)`` per unit."""
        sy = sm = syy = smm = sym = 0.0
        for y, m in pairs:
            sy, sm, syy, smm, sym = sy + y, sm + m, syy + y * y, smm + m * m, sym + y * m
        return cls(len(pairs), sy, sm, syy, smm, sym)

    @classmethod
    def of_values(cls, values: Sequence[float], unit_keys: Sequence[str] = (),
                  pre: Mapping[str, float] | None = None) -> "UnitSummary":
        """Group values by their unit key (no keys: every value is its own unit); ``pre``: CUPED covariates by key."""
        if not unit_keys:
            return cls.of_pairs([(float(v), 1.0) for v in values])
        if len(unit_keys) != len(values):
            raise ValueError(f"{len(unit_keys)} unit keys for {len(values)} values")
        grouped: dict[str, list[float]] = {}
        for key, value in zip(unit_keys, values):
            pair = grouped.setdefault(key, [0.0, 0.0])
            pair[0] += float(value)
            pair[1] += 1.0
        summary = cls.of_pairs([(y, m) for y, m in grouped.values()])
        known = [pre[k] for k in grouped if k in pre] if pre else []
        if not known:
            return summary
        fill = sum(known) / len(known)
        xs = [(pre.get(k, fill), y, m) for k, (y, m) in grouped.items()]
        return replace(summary, sum_x=sum(x for x, _, _ in xs), sum_xx=sum(x * x for x, _, _ in xs),
                       sum_xy=sum(x * y for x, y, _ in xs), sum_xm=sum(x * m for x, _, m in xs), covariate=True)

    @property
    def observations(self) -> int:
        return round(self.sum_m)

    @property
    def mean(self) -> float | None:
        """The ratio metric: metric sum over observation count (the per-observation mean)."""
        return self.sum_y / self.sum_m if self.sum_m else None

    def _covariances(self) -> tuple[float, float, float]:
        n = self.n
        s_yy = (self.sum_yy - self.sum_y * self.sum_y / n) / (n - 1)
        s_mm = (self.sum_mm - self.sum_m * self.sum_m / n) / (n - 1)
        s_ym = (self.sum_ym - self.sum_y * self.sum_m / n) / (n - 1)
        return s_yy, s_mm, s_ym

    @property
    def variance_of_mean(self) -> float:
        """Delta-method variance of :attr:`mean` (``inf`` with fewer than two units)."""
        if self.n < 2 or not self.sum_m:
            return math.inf
        s_yy, s_mm, s_ym = self._covariances()
        r, m_bar = self.sum_y / self.sum_m, self.sum_m / self.n
        return max(0.0, s_yy - 2 * r * s_ym + r * r * s_mm) / (self.n * m_bar * m_bar)

    @property
    def unit_variance(self) -> float:
        """Variance of one unit's linearised contribution (``n`` times :attr:`variance_of_mean`)."""
        return self.n * self.variance_of_mean

    def _covariate_moments(self) -> tuple[float, float]:
        """``(Var(x), Cov(linearised unit, x))`` over units."""
        n, r, m_bar = self.n, self.sum_y / self.sum_m, self.sum_m / self.n
        s_xx = (self.sum_xx - self.sum_x * self.sum_x / n) / (n - 1)
        s_xy = (self.sum_xy - self.sum_x * self.sum_y / n) / (n - 1)
        s_xm = (self.sum_xm - self.sum_x * self.sum_m / n) / (n - 1)
        return s_xx, (s_xy - r * s_xm) / m_bar


def cuped(a: UnitSummary, b: UnitSummary) -> tuple[float, float, float, float] | None:
    """``(effect, var_a, var_b, theta)``: the CUPED-adjusted difference of means ``a - b`` and its variances.

    None when either side lacks covariates or has fewer than two units, or ``x`` does not vary.
    """
    if not (a.covariate and b.covariate) or a.n < 2 or b.n < 2 or not a.sum_m or not b.sum_m:
        return None
    (vx_a, c_a), (vx_b, c_b) = a._covariate_moments(), b._covariate_moments()
    pooled_vx = (a.n - 1) * vx_a + (b.n - 1) * vx_b
    if pooled_vx <= 0:
        return None
    theta = ((a.n - 1) * c_a + (b.n - 1) * c_b) / pooled_vx
    effect = (a.mean - b.mean) - theta * (a.sum_x / a.n - b.sum_x / b.n)
    var_a = max(0.0, a.unit_variance - 2 * theta * c_a + theta * theta * vx_a) / a.n
    var_b = max(0.0, b.unit_variance - 2 * theta * c_b + theta * theta * vx_b) / b.n
    return effect, var_a, var_b, theta
