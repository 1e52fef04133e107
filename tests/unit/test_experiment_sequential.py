"""Always-valid experiments (issue 16): the mixture boundary against its reference implementation, the
delta-method variance against a bootstrap, the unit of analysis, fixed horizon, and properties of the decision."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compoundry.config.experiment_config import Experiment
from compoundry.core.experiments.decide import VariantObservations, decide
from compoundry.core.experiments.evaluation_report import (
    evaluation_markdown,
    evaluation_result,
)
from compoundry.core.experiments.sequential import (
    always_valid_p,
    best_rho,
    compare_always_valid,
    half_width,
    log_mixture,
    mixture_bound,
)
from compoundry.core.experiments.units import UnitSummary


def _experiment(**overrides) -> Experiment:
    spec = {"component": "embedder", "variants": [{"name": "champion", "alias": "champion", "weight": 50},
                                                  {"name": "challenger", "alias": "challenger", "weight": 50}],
            "min_samples": 50, "metric": {"source": "feedback", "name": "helpful"}}
    return Experiment.model_validate(spec | overrides)


def _sessions(name: str, rate: float, sessions: int, seed: int, calls_per_session: int = 4) -> VariantObservations:
    """Session-keyed feedback: each session has its own taste around ``rate``."""
    rng = random.Random(seed)
    values, keys = [], []
    for s in range(sessions):
        p = min(1.0, max(0.0, rate + rng.uniform(-0.3, 0.3)))
        for _ in range(calls_per_session):
            values.append(1.0 if rng.random() < p else 0.0)
            keys.append(f"{name}-s{s}")
    return VariantObservations(name, len(values), 0, (10.0,) * len(values), tuple(values), tuple(keys), "session")


# --- the boundary: confseq's reference values (Howard et al. 2021; confseq test/uniform_boundaries_unittest.cpp) ---
def test_normal_mixture_matches_the_confseq_reference_values():
    rho = best_rho(100, 0.05)
    assert rho == pytest.approx(12.60056, abs=1e-5)
    assert log_mixture(10, 100, rho) == pytest.approx(-0.6510052, abs=1e-6)
    assert mixture_bound(100, 0.05, rho) == pytest.approx(30.35209, abs=1e-5)
    assert log_mixture(mixture_bound(100, 0.05, rho), 100, rho) == pytest.approx(math.log(20))  # bound = 1/alpha


def test_the_p_value_is_johari_et_al_msprt_with_the_same_mixture():
    """Johari et al. (2017): Λ = sqrt(V/(V+τ²)) exp(τ²θ²/(2V(V+τ²))), here with τ² = pooled variance / ρ."""
    a = UnitSummary.of_values([1.0] * 130 + [0.0] * 70)
    b = UnitSummary.of_values([1.0] * 100 + [0.0] * 100)
    c = compare_always_valid("a", "b", a, b, alpha=0.05, v_opt=500)
    var = a.variance_of_mean + b.variance_of_mean
    pooled = (a.n * a.unit_variance + b.n * b.unit_variance) / (a.n + b.n)
    tau2 = pooled / best_rho(500, 0.05)
    johari = math.sqrt(var / (var + tau2)) * math.exp(tau2 * 0.15 ** 2 / (2 * var * (var + tau2)))
    assert c.effect == pytest.approx(0.15) and c.p_value == pytest.approx(1 / johari)
    assert c.ci_low < 0.15 < c.ci_high and (c.p_value < 0.05) == (c.ci_low > 0)  # interval and p-value agree


def test_always_valid_is_wider_than_fixed_horizon_and_shrinks_with_data():
    se, rho = 0.01, best_rho(500, 0.05)
    assert half_width(se, 500, 0.05, rho) > 1.96 * se
    assert half_width(0.01 / math.sqrt(4), 2000, 0.05, rho) < half_width(0.01, 500, 0.05, rho)


def test_type_one_error_holds_under_continuous_monitoring():
    """400 null runs, looked at after every one of 200 batches: the mixture boundary is crossed ≤ alpha of the time."""
    rng = np.random.default_rng(3)
    batches = rng.normal(size=(400, 200, 2, 10)).sum(axis=3)  # two arms, 10 units per batch each
    diff = np.cumsum(batches[:, :, 1] - batches[:, :, 0], axis=1) / (10 * np.arange(1, 201))
    v = 10 * np.arange(1, 201) / 2  # effective units, unit variance
    z = diff * np.sqrt(v)
    rho = best_rho(500, 0.05)
    log_m = 0.5 * np.log(rho / (v + rho)) + z * z * v / (2 * (v + rho))
    crossed = (log_m >= math.log(20)).any(axis=1).mean()
    naive = (np.abs(z) > 1.96).any(axis=1).mean()
    assert crossed <= 0.05 and naive > 0.2  # peeking at a fixed-horizon test would be wrong a quarter of the time


# --- the delta method against a bootstrap ---------------------------------------------------------------
def test_delta_method_variance_of_a_ratio_metric_matches_a_bootstrap():
    rng = np.random.default_rng(11)
    m = 1 + rng.poisson(2.0, 600)
    y = rng.binomial(m, rng.beta(2, 3, 600)).astype(float)
    summary = UnitSummary.of_pairs(list(zip(y.tolist(), m.astype(float).tolist())))
    picks = rng.integers(0, 600, size=(4000, 600))
    boot = y[picks].sum(axis=1) / m[picks].sum(axis=1)
    assert summary.mean == pytest.approx(y.sum() / m.sum())
    assert summary.variance_of_mean == pytest.approx(boot.var(ddof=1), rel=0.1)
    naive = summary.mean * (1 - summary.mean) / m.sum()  # every call independent
    assert summary.variance_of_mean > 1.3 * naive  # sessions differ: per-call analysis is overconfident


def test_one_value_per_unit_is_the_ordinary_variance_of_a_mean():
    values = [3.0, 5.0, 4.0, 8.0, 1.0]
    s = UnitSummary.of_values(values)
    assert s.variance_of_mean == pytest.approx(np.var(values, ddof=1) / 5)
    grouped = UnitSummary.of_values([1.0, 0.0, 1.0, 1.0], ["a", "a", "b", "c"])
    assert (grouped.n, grouped.sum_y, grouped.sum_m, grouped.observations) == (3, 3.0, 4.0, 4)
    with pytest.raises(ValueError):
        UnitSummary.of_values([1.0], ["a", "b"])


# --- the decision: unit, method --------------------------------------------------------------------------
def test_a_session_keyed_experiment_is_analysed_per_session_and_the_artifact_says_so():
    observed = {"champion": _sessions("champion", 0.4, 150, 1), "challenger": _sessions("challenger", 0.75, 120, 2)}
    d = decide(_experiment(), observed, 1.0)
    assert d.action == "promote" and d.unit == "session" and d.method == "always_valid"
    assert (d.comparisons[0].n_control, d.comparisons[0].n_challenger) == (150, 120)
    run = type("Run", (), {"id": "r1", "started_at": __import__("datetime").datetime(2026, 1, 1)})()
    result = evaluation_result("ab", run, observed, d)
    assert result["unit"] == "session" and result["variants"]["challenger"]["units"] == 120
    assert result["variants"]["challenger"]["samples"] == 480
    markdown = evaluation_markdown("ab", _experiment(), run, observed, d, 1.0)
    assert "Unit of analysis: **session** (champion 150, challenger 120)" in markdown and "always-valid" in markdown


def test_min_samples_counts_units_and_a_request_fallback_is_flagged():
    few = {"champion": _sessions("champion", 0.4, 30, 1), "challenger": _sessions("challenger", 0.4, 100, 2)}
    d = decide(_experiment(), few, 1.0)
    assert d.action == "continue" and "50 sessions per variant, have champion 30" in d.reason
    flat = {n: VariantObservations(n, 200, 0, (), o.values) for n, o in few.items()}  # no session keys known
    d = decide(_experiment(), flat, 1.0)
    run = type("Run", (), {"id": "r1", "started_at": __import__("datetime").datetime(2026, 1, 1)})()
    assert d.unit == "request" and "carry no session key" in evaluation_markdown("ab", _experiment(), run, flat, d, 1)


def test_fixed_horizon_needs_planned_units_waits_for_them_and_tests_once():
    with pytest.raises(ValueError, match="method: fixed needs planned_units"):
        _experiment(method="fixed")
    exp = _experiment(method="fixed", planned_units=100)
    same = {"champion": _sessions("champion", 0.5, 100, 1), "challenger": _sessions("challenger", 0.5, 80, 2)}
    assert decide(exp, same, 1).reason.startswith("no decision: the fixed horizon is 100 sessions")
    same["challenger"] = _sessions("challenger", 0.5, 100, 3)
    d = decide(exp, same, 1)
    assert d.action == "conclude" and "tested once" in d.reason and d.comparisons[0].test.startswith("z-test")
    better = same | {"challenger": _sessions("challenger", 0.8, 100, 3)}
    assert decide(exp, better, 1).action == "promote"


# --- properties ----------------------------------------------------------------------------------------------
variant_data = st.tuples(st.floats(0.05, 0.95), st.integers(0, 120), st.integers(0, 40), st.integers(0, 10_000))


@settings(max_examples=60, deadline=None)
@given(variant_data, variant_data, st.floats(0, 400), st.floats(0, 400), st.sampled_from(["always_valid", "fixed"]))
def test_a_decision_never_changes_without_new_data(control, challenger, h1, h2, method):
    """Same observations, any later time: a promotion stays a promotion (never a rollback); rollbacks stay too."""
    def obs(name, spec):
        rate, n, errors, seed = spec
        rng = random.Random(seed)
        values = tuple(1.0 if rng.random() < rate else 0.0 for _ in range(n))
        return VariantObservations(name, max(n, errors), errors, (10.0,) * max(n, errors), values)

    exp = _experiment(method=method, planned_units=60, max_duration_h=200, guardrails={"min_calls": 20})
    observed = {"champion": obs("champion", control), "challenger": obs("challenger", challenger)}
    early, late = sorted((h1, h2))
    first, again, later = decide(exp, observed, early), decide(exp, observed, early), decide(exp, observed, late)
    assert first == again
    if first.action in ("promote", "rollback"):
        assert later.action == first.action and later.winner == first.winner


@settings(max_examples=200, deadline=None)
@given(st.floats(1, 1e6), st.floats(1, 1e6), st.floats(1e-4, 0.3), st.floats(1, 1e5))
def test_more_units_never_widen_the_always_valid_interval(v1, v2, alpha, v_opt):
    """At a fixed per-unit variance (σ = 1), the interval's half-width σ·u(v)/v only shrinks as units come in."""
    rho = best_rho(v_opt, alpha)
    small, large = sorted((v1, v2))
    assert half_width(1 / math.sqrt(large), large, alpha, rho) <= half_width(1 / math.sqrt(small), small, alpha, rho) \
        * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 10), st.floats(0, 10), st.floats(1, 1e5), st.floats(1, 1e5))
def test_the_p_value_falls_as_the_evidence_grows(z1, z2, v, v_opt):
    rho = best_rho(v_opt, 0.05)
    small, large = sorted((z1, z2))
    assert always_valid_p(large, v, rho) <= always_valid_p(small, v, rho)


# --- CUPED ------------------------------------------------------------------------------------------------------
def _arm(rng, n: int, lift: float = 0.0) -> UnitSummary:
    """Units whose pre-experiment rate ``x`` predicts their rate during the run."""
    x = rng.beta(2, 3, n)
    m = 1.0 + rng.poisson(2.0, n)
    y = rng.binomial(m.astype(int), np.clip(x + lift, 0, 1)).astype(float)
    return UnitSummary(n, y.sum(), m.sum(), (y * y).sum(), (m * m).sum(), (y * m).sum(),
                       x.sum(), (x * x).sum(), (x * y).sum(), (x * m).sum(), True)


def test_cuped_is_unbiased_its_variance_is_right_and_smaller():
    from compoundry.core.experiments.units import cuped

    rng = np.random.default_rng(5)
    effects, variances, plain = [], [], []
    for _ in range(400):
        a, b = _arm(rng, 300, lift=0.05), _arm(rng, 300)
        effect, var_a, var_b, theta = cuped(a, b)
        effects.append(effect)
        variances.append(var_a + var_b)
        plain.append(a.variance_of_mean + b.variance_of_mean)
    assert np.mean(effects) == pytest.approx(0.05, abs=0.004)  # the true lift, unbiased
    assert np.var(effects, ddof=1) == pytest.approx(np.mean(variances), rel=0.2)  # its variance is honest
    assert np.mean(variances) < 0.7 * np.mean(plain)  # and smaller than without the covariate


def test_decide_uses_cuped_when_asked_and_units_carry_pre_experiment_values():
    rng = random.Random(4)
    observed = {}
    for name, lift in (("champion", 0.0), ("challenger", 0.08)):
        values, keys, pre = [], [], {}
        for s in range(200):
            taste = rng.uniform(0.1, 0.8)
            pre[f"{name}{s}"] = taste
            for _ in range(3):
                values.append(1.0 if rng.random() < taste + lift else 0.0)
                keys.append(f"{name}{s}")
        observed[name] = VariantObservations(name, len(values), 0, (), tuple(values), tuple(keys), "session", None,
                                             pre)
    plain, adjusted = decide(_experiment(), observed, 1), decide(_experiment(cuped=True), observed, 1)
    width = [c.comparisons[0].ci_high - c.comparisons[0].ci_low for c in (plain, adjusted)]
    assert "CUPED" in adjusted.comparisons[0].test and "CUPED" not in plain.comparisons[0].test
    assert width[1] < 0.85 * width[0]
