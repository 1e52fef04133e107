"""Replica choice: table tests of eligibility and saturation, property tests of power of two choices."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compoundry.core.routing.balancer import Balancer, Saturation
from compoundry.gateway.load import LoadBoard


def loaded(loads: dict, limit=None, rng=None) -> Balancer:
    balancer = Balancer(rng or random.Random(0), limit=limit)
    for replica, n in loads.items():
        for _ in range(n):
            balancer.acquire(replica)
    return balancer


class ScriptedRng(random.Random):
    """``sample`` returns a fixed pair: shows which two p2c compared."""

    def __init__(self, pair):
        super().__init__(0)
        self.pair = pair

    def sample(self, population, k):
        assert k == 2 and set(self.pair) <= set(population)
        return list(self.pair)


class RecordingRng(random.Random):
    def __init__(self, seed):
        super().__init__(seed)
        self.sampled = None

    def sample(self, population, k):
        self.sampled = super().sample(population, k)
        return self.sampled


# ------------------------------------------------------------------ eligibility
@pytest.mark.parametrize(("loads", "replicas", "exclude", "limit", "expected"), [
    ({}, [], (), None, None),
    ({}, ["a"], (), None, "a"),
    ({}, ["a"], {"a"}, None, None),
    ({"a": 2}, ["a"], (), 2, None),  # at its limit
    ({"a": 2}, ["a", "b"], (), 2, "b"),
    ({"a": 1, "b": 2}, ["a", "b"], (), None, "a"),  # two replicas: least outstanding
    ({"a": 1, "b": 2}, ["a", "b"], {"a"}, None, "b"),  # a retry goes elsewhere, even to a busier one
    ({"a": 3, "b": 3, "c": 3}, ["a", "b", "c"], (), 3, None),  # all at the limit: caller queues/spills
    ({"a": 0, "b": 5}, ["b", "b", "a", "a"], (), None, "a"),  # duplicates count once
    ({"a": 5, "b": 4}, ["a", "b", "c"], {"c"}, 5, "b"),
])
def test_pick_table(loads, replicas, exclude, limit, expected):
    assert loaded(loads, limit).pick(replicas, exclude) == expected


def test_p2c_takes_the_less_loaded_of_the_sampled_pair_not_the_global_least():
    balancer = loaded({"a": 0, "b": 3, "c": 5}, rng=ScriptedRng(("c", "b")))
    assert balancer.pick(["a", "b", "c"]) == "b"


def test_ties_between_two_are_broken_at_random():
    balancer = Balancer(random.Random(1))
    assert {balancer.pick(["a", "b"]) for _ in range(50)} == {"a", "b"}


def test_limit_can_change_at_runtime():
    balancer = loaded({"a": 2}, limit=2)
    assert balancer.pick(["a"]) is None
    balancer.limit = 3
    assert balancer.pick(["a"]) == "a"


def test_rejects_nonsense_limit():
    with pytest.raises(ValueError):
        Balancer(random.Random(0), limit=0)


# ------------------------------------------------------------------ counting
def test_acquire_release_and_hold():
    balancer = Balancer(random.Random(0))
    balancer.acquire("a")
    balancer.acquire("a")
    balancer.release("a")
    assert balancer.outstanding("a") == 1
    with pytest.raises(RuntimeError), balancer.hold("b"):
        assert balancer.outstanding("b") == 1
        raise RuntimeError("call failed")
    assert balancer.outstanding("b") == 0


def test_release_without_acquire_is_a_bug():
    balancer = loaded({"a": 1})
    balancer.release("a")
    with pytest.raises(ValueError):
        balancer.release("a")


def test_keys_are_generic():
    balancer = loaded({("10.0.0.1", 3000): 1})
    assert balancer.pick([("10.0.0.1", 3000), ("10.0.0.2", 3000)]) == ("10.0.0.2", 3000)


# ------------------------------------------------------------------ saturation
@pytest.mark.parametrize(("loads", "replicas", "limit", "threshold", "expected"), [
    ({}, [], 4, 1.0, Saturation(0, 0, 0, 1.0, True)),  # nothing ready: spill
    ({}, [], None, 1.0, Saturation(0, 0, None, 1.0, True)),
    ({"a": 50}, ["a"], None, 1.0, Saturation(1, 50, None, 0.0, False)),  # no limit: never saturated
    ({"a": 4, "b": 2}, ["a", "b"], 4, 1.0, Saturation(2, 6, 8, 0.75, False)),
    ({"a": 4, "b": 2}, ["a", "b"], 4, 0.75, Saturation(2, 6, 8, 0.75, True)),
    ({"a": 4, "b": 4}, ["a", "b"], 4, 1.0, Saturation(2, 8, 8, 1.0, True)),
    ({"a": 4, "b": 3, "gone": 9}, ["a", "b", "b"], 5, 0.7, Saturation(2, 7, 10, 0.7, True)),  # 7/10 vs 0.7
])
def test_saturation_table(loads, replicas, limit, threshold, expected):
    assert loaded(loads, limit).saturation(replicas, threshold) == expected


# ------------------------------------------------------------------ properties
NAMES = [f"r{i}" for i in range(8)]
STATE = st.tuples(
    st.dictionaries(st.sampled_from(NAMES), st.integers(0, 6)),
    st.lists(st.sampled_from(NAMES), max_size=8),
    st.sets(st.sampled_from(NAMES), max_size=4),
    st.one_of(st.none(), st.integers(1, 6)),
    st.integers(0, 2**32),
)


@settings(max_examples=400, deadline=None)
@given(STATE)
def test_never_picks_excluded_or_at_limit_and_none_only_when_nothing_eligible(state):
    loads, replicas, exclude, limit, seed = state
    balancer = loaded(loads, limit, random.Random(seed))
    picked = balancer.pick(replicas, exclude)
    eligible = {r for r in replicas if r not in exclude and (limit is None or loads.get(r, 0) < limit)}
    if picked is None:
        assert not eligible
    else:
        assert picked in eligible


@settings(max_examples=400, deadline=None)
@given(STATE)
def test_p2c_picks_the_less_loaded_of_the_two_sampled(state):
    loads, replicas, exclude, limit, seed = state
    rng = RecordingRng(seed)
    balancer = loaded(loads, limit, rng)
    picked = balancer.pick(replicas, exclude)
    eligible = balancer.eligible(replicas, exclude)
    if len(eligible) > 2:
        assert picked in rng.sampled
        assert loads.get(picked, 0) == min(loads.get(r, 0) for r in rng.sampled)
    elif eligible:
        assert rng.sampled is None
        assert loads.get(picked, 0) == min(loads.get(r, 0) for r in eligible)  # least outstanding


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(NAMES[:4])), max_size=60))
def test_outstanding_matches_a_plain_counter(ops):
    balancer = Balancer(random.Random(0))
    model = dict.fromkeys(NAMES[:4], 0)
    for acquire, replica in ops:
        if acquire:
            balancer.acquire(replica)
            model[replica] += 1
        elif model[replica]:
            balancer.release(replica)
            model[replica] -= 1
        assert all(balancer.outstanding(r) == n for r, n in model.items())


def test_p2c_spreads_load_evenly():
    """Pick-and-hold 400 calls over 10 replicas: p2c keeps the spread tight (random choice would not)."""
    balancer = Balancer(random.Random(42))
    replicas = [f"r{i}" for i in range(10)]
    for _ in range(400):
        balancer.acquire(balancer.pick(replicas))
    loads = [balancer.outstanding(r) for r in replicas]
    assert sum(loads) == 400
    assert max(loads) - min(loads) <= 4


def test_gateway_processes_sharing_replicas_each_take_their_share_of_the_limit():
    """32 per replica over 3 processes: 11 each (rounded up, never 0), applied to balancers made before too."""
    board = LoadBoard(replica_concurrency=32, processes=1)
    made_before = board.balancer("emb-v1")
    assert made_before.limit == 32
    board.share_among(3)
    assert (made_before.limit, board.balancer("cls-v1").limit, board.share(4)) == (11, 11, 2)
    board.share_among(64)
    assert made_before.limit == 1 and board.share(None) is None
    assert LoadBoard(replica_concurrency=None, processes=4).balancer("x").limit is None
