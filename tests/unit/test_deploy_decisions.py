"""Which registry changes deploy what: table tests of the pure policy."""

from compoundry.core.deploy_decisions import (
    WatchedComponent,
    on_alias_set,
    on_poll,
    on_version_created,
)

EMB = WatchedComponent("embedder", "emb-model", "champion")
EMB_B = WatchedComponent("embedder-b", "emb-model", "champion")
CLS = WatchedComponent("classifier", "cls-model", "champion")
ALL = [EMB, EMB_B, CLS]


def names(requests):
    return sorted((r.component, r.version, r.reason) for r in requests)


def test_new_version_deploys_every_component_of_its_model():
    assert names(on_version_created("emb-model", "2", {}, ALL, "webhook")) == [
        ("embedder", "2", "version"), ("embedder-b", "2", "version")]


def test_component_tag_narrows_to_one_component():
    tags = {"compoundry.component": "embedder-b"}
    assert names(on_version_created("emb-model", "2", tags, ALL, "webhook")) == [("embedder-b", "2", "version")]


def test_deploy_false_tag_registers_without_deploying():
    assert on_version_created("emb-model", "2", {"compoundry.deploy": "false"}, ALL, "webhook") == []


def test_unknown_model_deploys_nothing():
    assert on_version_created("other", "1", {}, ALL, "webhook") == []


def test_alias_move_to_unserved_version_redeploys():
    requests = on_alias_set("cls-model", "champion", "1", ALL, {"classifier": "2"}, "webhook")
    assert names(requests) == [("classifier", "1", "alias:champion:from:2")]


def test_alias_set_by_the_deploy_flow_itself_is_ignored():
    assert on_alias_set("cls-model", "champion", "2", ALL, {"classifier": "2"}, "webhook") == []


def test_other_alias_is_ignored():
    assert on_alias_set("cls-model", "challenger", "3", ALL, {"classifier": "2"}, "webhook") == []


def test_poll_deploys_newest_version_once_and_both_paths_share_claim_keys():
    polled = on_poll("cls-model", "3", {}, "2", "champion", [CLS], {"classifier": "2"})
    hooked = on_version_created("cls-model", "3", {}, [CLS], "webhook")
    assert names(polled) == names(hooked) == [("classifier", "3", "version")]


def test_poll_with_everything_served_is_quiet():
    assert on_poll("cls-model", "3", {}, "3", "champion", [CLS], {"classifier": "3"}) == []


def test_poll_deploys_first_version_when_nothing_is_routed():
    assert names(on_poll("cls-model", "1", {}, None, "champion", [CLS], {})) == [("classifier", "1", "version")]


def test_poll_sees_alias_rollback():
    polled = on_poll("cls-model", "3", {}, "1", "champion", [CLS], {"classifier": "3"})
    assert names(polled) == [("classifier", "1", "alias:champion:from:3")]


EMB_AB = WatchedComponent("embedder", "emb-model", "champion", (("challenger", "challenger"),))


def test_moving_a_variant_alias_deploys_that_version_as_the_variant_route():
    requests = on_alias_set("emb-model", "challenger", "3", [EMB_AB], {"embedder": "2"}, "webhook", {})
    assert [(r.component, r.version, r.variant, r.reason) for r in requests] == [
        ("embedder", "3", "challenger", "variant:challenger:alias:challenger:from:None")]
    assert requests[0].parameters["variant"] == "challenger"


def test_a_variant_alias_already_routed_deploys_nothing():
    assert on_alias_set("emb-model", "challenger", "3", [EMB_AB], {"embedder": "2"}, "webhook",
                        {("embedder", "challenger"): "3"}) == []


def test_without_an_enabled_experiment_a_challenger_alias_deploys_nothing():
    assert on_alias_set("emb-model", "challenger", "3", [EMB], {"embedder": "2"}, "webhook", {}) == []


def test_watched_components_list_only_enabled_experiments_other_aliases():
    from types import SimpleNamespace as NS

    from compoundry.core.deploy_decisions import watched_components

    variants = [NS(name="champion", alias="champion"), NS(name="challenger", alias="challenger"),
                NS(name="pinned", alias=None)]
    config = NS(components={"embedder": NS(model="emb-model", alias="champion"),
                            "classifier": NS(model="cls-model", alias="champion")},
                experiments={"on": NS(enabled=True, component="embedder", variants=variants),
                             "off": NS(enabled=False, component="classifier", variants=variants)})
    watched = {t.name: t for t in watched_components(config)}
    assert watched["embedder"].variant_aliases == (("challenger", "challenger"),)
    assert watched["classifier"].variant_aliases == ()


# --- intent ordering -----------------------------------------------------------------------------
from compoundry.core.deploy_decisions import (  # noqa: E402
    ALIAS,
    MANUAL,
    VERSION,
    DeployIntent,
    RouteIntent,
    superseded_by,
    trigger_of,
)


def test_triggers_follow_the_claim_reason():
    assert trigger_of("version") == VERSION
    assert trigger_of("alias:champion:from:3") == ALIAS
    assert trigger_of("variant:b:alias:challenger:from:None") == ALIAS
    assert trigger_of("manual") == MANUAL and trigger_of("run:abc") == MANUAL


def test_a_route_set_by_a_newer_intent_is_never_replaced():
    assert "newer intent" in superseded_by(DeployIntent("4", 7, ALIAS), RouteIntent("1", 8), "4", "4")


def test_alias_race_the_last_alias_position_wins():
    """champion → v4 then → v1 0.3 s later (v1 already routed): the v4 deploy must not switch."""
    v4 = DeployIntent("4", 7, ALIAS)
    assert "moved on to v1" in superseded_by(v4, RouteIntent("1", 3), alias_now="1", alias_at_start="4")
    assert superseded_by(v4, RouteIntent("1", 3), alias_now="4", alias_at_start="4") is None


def test_concurrent_registrations_the_newer_version_wins_in_either_order():
    route = RouteIntent("3", 2)
    v4, v5 = DeployIntent("4", 10, VERSION), DeployIntent("5", 11, VERSION)
    # v5 first: routes v5 and moves champion to it; then v4 is older than the route
    assert superseded_by(v5, route, "3", "3") is None
    assert superseded_by(v4, RouteIntent("5", 11), "5", "3") is not None
    # v4 first (its claim was older): v5 still commits, the alias equals the route (moved by a flow)
    assert superseded_by(v4, route, "3", "3") is None
    assert superseded_by(v5, RouteIntent("4", 10), "4", "3") is None


def test_a_late_registration_never_replaces_a_newer_version_unless_an_alias_says_so():
    assert "newer" in superseded_by(DeployIntent("4", 12, VERSION), RouteIntent("5", 11), "5", "5")
    assert superseded_by(DeployIntent("4", 12, ALIAS), RouteIntent("5", 11), "4", "4") is None
    assert superseded_by(DeployIntent("4", 12, MANUAL), RouteIntent("5", 11), "5", "5") is None


def test_an_operator_alias_move_stops_a_registration_deploy_in_flight():
    """v6 registered (alias at v3), then the operator points champion at v2 before v6 switches."""
    assert "moved to v2" in superseded_by(DeployIntent("6", 20, VERSION), RouteIntent("3", 5), "2", "3")
    # ... and once the rollback deploy has routed v2, its newer intent stops v6 too
    assert "newer intent" in superseded_by(DeployIntent("6", 20, VERSION), RouteIntent("2", 21), "2", "3")


def test_between_registrations_the_version_decides_not_the_claim_order():
    """v4's late webhook claimed after v5's: v4 routes first with the newer intent; v5 must still win."""
    routed_by_v4 = RouteIntent("4", 12, VERSION)
    assert superseded_by(DeployIntent("5", 11, VERSION), routed_by_v4, "4", "3") is None
    # but an operator's newer command is never overtaken by an older registration
    assert "newer intent" in superseded_by(DeployIntent("5", 11, VERSION), RouteIntent("2", 12, ALIAS), "2", "3")


def test_a_newer_command_still_on_its_way_wins_over_a_registration_that_started_after_it():
    """v4 registered (#7), rollback to v2 (#8), and the v4 flow gets the lease first: it must not switch."""
    pending = [DeployIntent("2", 8, ALIAS)]
    assert "newer command" in superseded_by(DeployIntent("4", 7, VERSION), RouteIntent("3", 5, VERSION), "2", "2",
                                            pending)
    # a pending *older* version's registration does not stop a newer one
    assert superseded_by(DeployIntent("5", 7, VERSION), RouteIntent("3", 5), "3", "3",
                         [DeployIntent("4", 8, VERSION)]) is None
    assert "newer version" in superseded_by(DeployIntent("4", 7, VERSION), RouteIntent("3", 5), "3", "3",
                                            [DeployIntent("5", 8, VERSION)])


def test_a_version_already_routed_is_not_deployed_again_unless_by_hand():
    assert "already routed" in superseded_by(DeployIntent("4", 9, VERSION), RouteIntent("4", 3), "4", "4")
    assert "already routed" in superseded_by(DeployIntent("4", 9, ALIAS), RouteIntent("4", 3), "4", "4")
    assert superseded_by(DeployIntent("4", 9, MANUAL), RouteIntent("4", 3), "4", "4") is None


def test_a_promotion_is_an_operator_command_not_an_alias_move():
    """The promote flow deploys first and moves the alias after: it must not wait for the alias to move."""
    assert trigger_of("promotion:champion:from:1") == MANUAL
