"""compoundry.core.routing.variants: which variant answers and which route that is (pure, no I/O)."""

from types import SimpleNamespace as NS

from compoundry.core.routing.route_view import ReplicaView, RouteView
from compoundry.core.routing.split import SplitPlan
from compoundry.core.routing.variants import NO_EXPERIMENT, VariantRouter


def experiment(shadow=None, challenger_weight=50, **challenger):
    spec = challenger or {"alias": "challenger"}
    variants = [NS(name="champion", alias="champion", version=None, weight=100 - challenger_weight),
                NS(name="challenger", alias=spec.get("alias"), version=spec.get("version"), weight=challenger_weight)]
    return NS(component="emb", enabled=True, sticky_key="session", variants=variants,
              shadow=NS(variant="challenger", fraction=1.0) if shadow else None)


def route(version="1", ready=True, variant=None, variants=()):
    replicas = (ReplicaView("r", f"http://replica-{version}"),) if ready else ()
    return RouteView("emb", f"emb-v{version}", "m", version, "pyfunc", replicas, variant, variants)


def router(**kwargs):
    return VariantRouter(lambda mapping={"emb-ab": experiment(**kwargs)}: mapping)


def test_no_experiment_means_no_assignment_and_the_serving_route():
    plain = VariantRouter(lambda: {})
    assert plain.assign("emb", session="s", user=None, request_id="r") == NO_EXPERIMENT
    serving = route()
    assert plain.resolve("emb", serving, "champion", None) == (serving, None)


def test_assignment_follows_the_split_plan_of_the_session_key():
    plan = SplitPlan.build("emb-ab", [("champion", 50), ("challenger", 50)])
    r = router()
    for i in range(50):
        got = r.assign("emb", session=f"s{i}", user=None, request_id=f"r{i}")
        assert got.variant == plan.variant_for(f"s:s{i}") and got.sticky and got.experiment == "emb-ab"
        assert got.unit_key == f"s:s{i}"  # metered with the call: the experiment's unit of analysis
    assert r.assign("emb", session=None, user=None, request_id="r1").unit_key is None  # no sticky key


def test_a_variant_with_a_ready_route_of_its_own_gets_it():
    own = route("2", variant="challenger")
    serving = route("1", variants=(own,))
    assert router().resolve("emb", serving, "champion", "challenger") == (own, "challenger")
    assert router().resolve("emb", serving, "champion", "champion") == (serving, "champion")


def test_a_variant_without_a_ready_route_falls_back_to_the_serving_route_and_its_label():
    cold = route("2", ready=False, variant="challenger")
    serving = route("1", variants=(cold,))
    assert router().resolve("emb", serving, "champion", "challenger") == (serving, "champion")
    plain = route("1")
    assert router().resolve("emb", plain, "champion", "challenger") == (plain, "champion")


def test_a_version_variant_that_the_serving_route_runs_needs_no_route_of_its_own():
    serving = route("7")
    assert router(version="7", alias=None).resolve("emb", serving, "champion", "challenger") == (serving, "challenger")


def test_shadow_goes_only_to_a_ready_route_of_its_own():
    own = route("2", variant="challenger")
    assert router(shadow=True).shadow_route("emb", route("1", variants=(own,)), "champion", "challenger") == own
    cold = route("2", ready=False, variant="challenger")
    assert router(shadow=True).shadow_route("emb", route("1", variants=(cold,)), "champion", "challenger") is None
    assert router(shadow=True).shadow_route("emb", route("1"), "champion", None) is None


def test_plans_are_rebuilt_when_a_reload_replaces_the_experiments():
    current = {"emb-ab": experiment(challenger_weight=0)}
    r = VariantRouter(lambda: current)
    assert {r.assign("emb", session=f"s{i}", user=None, request_id="x").variant for i in range(40)} == {"champion"}
    current = {"emb-ab": experiment(challenger_weight=100)}
    assert {r.assign("emb", session=f"s{i}", user=None, request_id="x").variant for i in range(40)} == {"challenger"}
