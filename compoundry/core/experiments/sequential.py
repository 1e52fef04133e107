"""Always-valid comparison of a challenger with the control: the normal-mixture mSPRT (pure).

Why: the evaluation runs every hour and on demand, and acts on the first
significant result. A fixed-horizon p-value checked at every look crosses
``alpha`` by chance far more often than ``alpha`` (15-30 % over two weeks of
hourly looks). A mixture sequential probability ratio test (Robbins 1970;
Johari, Koomen, Pekelis & Walsh, "Always Valid Inference", 2017) gives a
p-value and a confidence sequence that hold *simultaneously for every look*:
P(the interval ever excludes the true difference) ≤ alpha, however often and
whenever it is evaluated.

The statistic is the two-sided normal mixture of Howard, Ramdas, McAuliffe &
Sekhon (2021, eq. 14; the ``confseq`` package's ``TwoSidedNormalMixture``), in
standardised units: with ``z`` the difference over its (delta-method) standard
error and ``v`` the *effective units* (the pooled per-unit variance over the
difference's variance: ``n0·n1/(n0+n1)`` for equal variances),

    log M = ½ log(ρ / (v + ρ)) + z² v / (2 (v + ρ))

and the always-valid p-value is ``min(1, 1/M)``. ``ρ`` (the mixture's
precision) is chosen so the interval is tightest at ``v_opt`` effective units
(Howard et al., Prop. 3); the mixture prior on the standardised effect is
``N(0, 1/ρ)``. The variance is estimated, so the guarantee is asymptotic
(Waudby-Smith et al., "Time-uniform central limit theory", 2023): that is why
``min_samples`` still gates the first decision.
"""

from __future__ import annotations

import math

from compoundry.core.experiments.stats import Comparison
from compoundry.core.experiments.units import UnitSummary, cuped

TEST_NAME = "mSPRT (normal mixture, always valid)"


def best_rho(v_opt: float, alpha: float) -> float:
    """Mixture precision whose boundary is tightest at intrinsic time ``v_opt`` (confseq's ``best_rho``)."""
    if v_opt <= 0:
        raise ValueError("v_opt must be positive")
    log_inv = math.log(1 / alpha)
    return v_opt / (2 * log_inv + math.log(1 + 2 * log_inv))


def log_mixture(s: float, v: float, rho: float) -> float:
    """Log of the two-sided normal-mixture martingale at sum ``s`` (σ = 1) and intrinsic time ``v``."""
    return 0.5 * math.log(rho / (v + rho)) + s * s / (2 * (v + rho))


def mixture_bound(v: float, alpha: float, rho: float) -> float:
    """``u(v)``: P(∃ v: |S_v| ≥ u(v)) ≤ alpha for a 1-sub-Gaussian sum (Howard et al. 2021, eq. 14)."""
    return math.sqrt((v + rho) * (math.log1p(v / rho) + 2 * math.log(1 / alpha)))


def always_valid_p(z: float, v: float, rho: float) -> float:
    """``min(1, 1/M)`` for a standardised difference ``z`` after ``v`` effective units."""
    return min(1.0, math.exp(-log_mixture(z * math.sqrt(v), v, rho))) if v > 0 else 1.0


def half_width(se: float, v: float, alpha: float, rho: float) -> float:
    """Half-width of the confidence sequence in the metric's units (``se``: the difference's standard error)."""
    return se * mixture_bound(v, alpha, rho) / math.sqrt(v)


def _difference(a: UnitSummary, b: UnitSummary, adjust: bool) -> tuple[float, float, float, str]:
    """``(effect, variance, pooled per-unit variance, note)`` of ``a - b``, CUPED-adjusted when asked and possible."""
    adjusted = cuped(a, b) if adjust else None
    if adjusted is None:
        var = a.variance_of_mean + b.variance_of_mean
        pooled = (a.n * a.unit_variance + b.n * b.unit_variance) / (a.n + b.n) if not math.isinf(var) else math.inf
        return (a.mean or 0.0) - (b.mean or 0.0), var, pooled, ""
    effect, var_a, var_b, theta = adjusted
    return effect, var_a + var_b, (a.n * a.n * var_a + b.n * b.n * var_b) / (a.n + b.n), f", CUPED θ={theta:.3g}"


def compare_always_valid(challenger: str, control: str, a: UnitSummary, b: UnitSummary, alpha: float,
                         v_opt: float, adjust: bool = False) -> Comparison:
    """Challenger ``a`` against control ``b``: difference of ratio means, its confidence sequence, its p-value."""
    mean_a, mean_b = a.mean or 0.0, b.mean or 0.0
    effect, var, pooled, note = _difference(a, b, adjust)
    name = TEST_NAME + note
    if math.isinf(var):  # fewer than two units on a side: no evidence yet
        return Comparison(challenger, control, name, b.n, a.n, mean_b, mean_a, effect, -math.inf, math.inf, 1.0, alpha)
    if var == 0:  # both constant: the difference is exact
        p = 0.0 if effect != 0 else 1.0
        return Comparison(challenger, control, name, b.n, a.n, mean_b, mean_a, effect, effect, effect, p, alpha)
    v = pooled / var  # effective units
    rho = best_rho(v_opt, alpha)
    se = math.sqrt(var)
    half = half_width(se, v, alpha, rho)
    g = effect / math.sqrt(pooled) if pooled > 0 else None
    return Comparison(challenger, control, name, b.n, a.n, mean_b, mean_a, effect, effect - half, effect + half,
                      always_valid_p(effect / se, v, rho), alpha, g)


def compare_fixed_units(challenger: str, control: str, a: UnitSummary, b: UnitSummary, alpha: float,
                        adjust: bool = False) -> Comparison:
    """Fixed-horizon z-test of the difference of ratio means with the delta-method variance (clustered units)."""
    from statistics import NormalDist

    mean_a, mean_b = a.mean or 0.0, b.mean or 0.0
    effect, var, pooled, note = _difference(a, b, adjust)
    name = "z-test (delta method, fixed horizon)" + note
    if math.isinf(var) or var == 0:
        p = 0.0 if var == 0 and effect != 0 else 1.0
        low, high = (effect, effect) if var == 0 else (-math.inf, math.inf)
        return Comparison(challenger, control, name, b.n, a.n, mean_b, mean_a, effect, low, high, p, alpha)
    se, normal = math.sqrt(var), NormalDist()
    z = normal.inv_cdf(1 - alpha / 2)
    p = 2 * (1 - normal.cdf(abs(effect) / se))
    return Comparison(challenger, control, name, b.n, a.n, mean_b, mean_a, effect, effect - z * se, effect + z * se,
                      p, alpha, effect / math.sqrt(pooled) if pooled > 0 else None)
