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
