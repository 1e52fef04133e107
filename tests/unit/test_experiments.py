"""Experiments: the statistics, the decision, the deploy plan and the gateway's view of ended runs (pure)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from scipy import stats

from compoundry.config.experiment_config import Experiment
from compoundry.config.models import Component
from compoundry.core.deploy_decisions import WatchedComponent, on_alias_set
from compoundry.core.experiments.decide import VariantObservations, decide, percentile
from compoundry.core.experiments.plan import promotion_deploy, variant_deploys
from compoundry.core.experiments.stats import (
    compare_binary,
    compare_continuous,
    hedges_g,
    wilson_interval,
)
from compoundry.core.routing.route_view import RouteView
from compoundry.core.routing.variants import ActiveExperiments


def _experiment(**overrides) -> Experiment:
    spec = {"component": "embedder", "variants": [{"name": "champion", "alias": "champion", "weight": 90},
                                                  {"name": "challenger", "alias": "challenger", "weight": 10}],
            "min_samples": 50, "metric": {"source": "feedback", "name": "helpful"}}
    return Experiment.model_validate(spec | overrides)


def _binary(name: str, rate: float, n: int, seed: int, calls: int | None = None, errors: int = 0,
            latency_ms: float = 10.0) -> VariantObservations:
    rng = random.Random(seed)
    values = tuple(1.0 if rng.random() < rate else 0.0 for _ in range(n))
    calls = calls if calls is not None else n
    return VariantObservations(name, calls, errors, (latency_ms,) * calls, values)


# --- statistics --------------------------------------------------------------------------------
def test_fisher_p_value_and_newcombe_interval_for_a_known_table():
    c = compare_binary("b", "a", [1.0] * 90 + [0.0] * 10, [1.0] * 70 + [0.0] * 30, alpha=0.05)
    assert c.p_value == pytest.approx(stats.fisher_exact([[90, 10], [70, 30]])[1])
    assert c.p_value < 0.001 and c.significant
    assert c.effect == pytest.approx(0.20) and c.ci_low < 0.20 < c.ci_high
    assert c.ci_low == pytest.approx(0.0903, abs=0.002) and c.ci_high == pytest.approx(0.3052, abs=0.002)  # Newcombe (1998)
    assert c.relative_lift == pytest.approx(0.20 / 0.70) and c.better(maximize=True)


def test_wilson_interval_stays_inside_zero_and_one():
    assert wilson_interval(0, 10, 0.05)[0] == 0.0 and wilson_interval(10, 10, 0.05)[1] == pytest.approx(1.0)
    low, high = wilson_interval(5, 10, 0.05)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)


def test_welch_interval_covers_the_true_difference_and_reports_hedges_g():
    rng = random.Random(7)
    a = [rng.gauss(100, 10) for _ in range(200)]
    b = [rng.gauss(110, 20) for _ in range(150)]
    c = compare_continuous("b", "a", b, a, alpha=0.05)
    welch = stats.ttest_ind(b, a, equal_var=False)
    assert c.p_value == pytest.approx(welch.pvalue) and c.ci_low < 10 < c.ci_high
    assert c.standardised_effect == pytest.approx(hedges_g(b, a)) and c.standardised_effect > 0
    assert c.worse(maximize=False) and not c.better(maximize=False)  # slower is worse for latency


def test_constant_samples_decide_by_their_means():
    same = compare_continuous("b", "a", [5.0] * 10, [5.0] * 10, 0.05)
    assert same.p_value == 1.0 and not same.significant
    assert compare_continuous("b", "a", [4.0] * 10, [5.0] * 10, 0.05).significant


def test_percentile_is_nearest_rank():
    assert percentile(list(range(1, 101)), 95) == 95 and percentile([3.0], 95) == 3.0 and percentile([], 95) is None


# --- the decision ----------------------------------------------------------------------------------
def test_a_clearly_better_challenger_is_promoted():
    d = decide(_experiment(), {"champion": _binary("champion", 0.3, 400, 1), "challenger": _binary("challenger", 0.8, 200, 2)}, 1.0)
    assert d.action == "promote" and d.winner == "challenger" and d.comparisons[0].p_value < 0.001


def test_too_small_a_sample_gives_no_decision_until_the_maximum_duration():
    observed = {"champion": _binary("champion", 0.3, 400, 1), "challenger": _binary("challenger", 0.9, 20, 2)}
    d = decide(_experiment(), observed, running_h=1.0)
    assert d.action == "continue" and d.reason.startswith("no decision") and "challenger 20" in d.reason
    assert decide(_experiment(max_duration_h=24), observed, running_h=25).action == "conclude"


def test_a_guardrail_breach_rolls_back_even_when_the_metric_is_better():
    observed = {"champion": _binary("champion", 0.3, 400, 1),
                "challenger": _binary("challenger", 0.9, 200, 2, errors=30)}  # 15% errors > 5%
    d = decide(_experiment(), observed, 1.0)
    assert d.action == "rollback" and "error rate 0.150 > 0.05" in d.reason


def test_latency_guardrails_absolute_and_relative_to_the_control():
    slow = _binary("challenger", 0.5, 100, 2, latency_ms=400)
    base = _binary("champion", 0.5, 100, 1, latency_ms=100)
    assert decide(_experiment(guardrails={"max_p95_ms": 300}), {"champion": base, "challenger": slow}, 1).action == "rollback"
    d = decide(_experiment(guardrails={"max_p95_ratio": 2}), {"champion": base, "challenger": slow}, 1)
    assert d.action == "rollback" and "2.0 x control" in d.reason


def test_guardrails_wait_for_min_calls():
    few = VariantObservations("challenger", calls=10, errors=10, latencies_ms=(1.0,) * 10)
    d = decide(_experiment(), {"champion": _binary("champion", 0.3, 400, 1), "challenger": few}, 1.0)
    assert d.action == "continue"


def test_no_difference_continues_then_concludes_and_worse_concludes():
    same = {"champion": _binary("champion", 0.5, 300, 1), "challenger": _binary("challenger", 0.5, 300, 3)}
    assert decide(_experiment(), same, 1).action == "continue"
    assert decide(_experiment(max_duration_h=2), same, 3).action == "conclude"
    worse = {"champion": _binary("champion", 0.8, 300, 1), "challenger": _binary("challenger", 0.3, 300, 3)}
    d = decide(_experiment(), worse, 1)
    assert d.action == "conclude" and d.winner is None and "worse" in d.reason


def test_bonferroni_splits_alpha_across_challengers():
    exp = _experiment(variants=[{"name": "a", "version": "1", "weight": 34}, {"name": "b", "version": "2", "weight": 33},
                                {"name": "c", "version": "3", "weight": 33}], alpha=0.05)
    observed = {n: _binary(n, r, 200, s) for n, r, s in (("a", 0.3, 1), ("b", 0.7, 2), ("c", 0.9, 3))}
    d = decide(exp, observed, 1)
    assert {c.alpha for c in d.comparisons} == {0.025} and d.winner == "c"


def test_a_metered_latency_metric_is_minimised():
    exp = _experiment(metric={"source": "metered", "name": "latency_ms"})
    fast = VariantObservations("challenger", 100, 0, (50.0,) * 100, tuple(50.0 + i % 5 for i in range(100)))
    slow = VariantObservations("champion", 100, 0, (80.0,) * 100, tuple(80.0 + i % 5 for i in range(100)))
    d = decide(exp, {"champion": slow, "challenger": fast}, 1)
    assert d.action == "promote" and d.comparisons[0].test.startswith("mSPRT") and d.method == "always_valid"
    fixed = decide(_experiment(metric={"source": "metered", "name": "latency_ms"}, method="fixed", planned_units=100,
                               sticky_key="request"), {"champion": slow, "challenger": fast}, 1)
    assert fixed.action == "promote" and fixed.comparisons[0].test == "Welch's t-test"


def test_config_rejects_an_unknown_control_or_metered_metric():
    with pytest.raises(ValueError, match="control 'nope' is not a variant"):
        _experiment(control="nope")
    with pytest.raises(ValueError, match="unknown metered metric 'clicks'"):
        _experiment(metric={"source": "metered", "name": "clicks"})


# --- deploy plan --------------------------------------------------------------------------------------
def _serving(version: str, variants=()) -> RouteView:
    return RouteView("embedder", f"embedder-v{version}", "emb", version, "pyfunc", (), None, tuple(variants))


def test_variants_not_running_are_deployed_with_the_claim_the_alias_webhook_would_use():
    component = Component(model="emb", engine="pyfunc")
    versions = {"champion": "1", "challenger": "2"}
    requests = variant_deploys(_experiment(), component, _serving("1"), lambda model, alias: versions[alias])
    assert [(r.variant, r.version) for r in requests] == [("challenger", "2")]
    webhook = on_alias_set("emb", "challenger", "2", [WatchedComponent("embedder", "emb", "champion",
                                                                      (("challenger", "challenger"),))], {"embedder": "1"},
                           "webhook", {})
    assert requests[0].reason == webhook[0].reason  # one claim: the webhook will not deploy it again
    running = _serving("1", [RouteView("embedder", "embedder-challenger-v2", "emb", "2", "pyfunc", (), "challenger")])
    assert variant_deploys(_experiment(), component, running, lambda m, a: versions[a]) == []


def test_promotion_deploys_the_winner_as_the_serving_route_unless_it_already_is():
    component = Component(model="emb", engine="pyfunc")
    version, request = promotion_deploy(_experiment(), component, _serving("1"), "challenger", lambda m, a: "2")
    assert version == "2" and request.variant is None and request.reason == "promotion:champion:from:1"
    assert promotion_deploy(_experiment(), component, _serving("2"), "challenger", lambda m, a: "2")[1] is None


# --- the gateway: ended runs stop the split ---------------------------------------------------------------
def test_active_experiments_drop_ended_runs_and_keep_identity_otherwise():
    config = SimpleNamespace(experiments={"embedder-ab": _experiment(), "other": _experiment(component="x")})
    active = ActiveExperiments(lambda: config.experiments)
    first = active()
    assert set(first) == {"embedder-ab", "other"} and active() is first
    active.set_ended(frozenset({"embedder-ab"}))
    assert set(active()) == {"other"}
    second = active()
    active.set_ended(frozenset({"embedder-ab"}))  # the refresher re-reads the same set: no rebuild
    assert active() is second
