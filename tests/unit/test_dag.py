"""compoundry.core.dag: tables for the rules, hypothesis for the invariants on random DAGs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compoundry.core.dag import (
    ancestors,
    critical_path,
    find_cycle,
    iter_template_strings,
    referenced_step,
    template_references,
    topological_levels,
)

SUPPORT = {"embed": [], "retrieve": ["embed"], "classify": [], "lookup": ["classify"],
           "answer": ["retrieve", "classify", "lookup"]}


@pytest.mark.parametrize("edges, cycle", [
    ({}, None),
    ({"a": []}, None),
    ({"a": ["a"]}, ["a", "a"]),
    ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
    ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
    ({"x": [], "a": ["x", "b"], "b": ["c"], "c": ["b"]}, ["b", "c", "b"]),
    ({"a": ["missing"]}, None),  # unknown dependencies are not cycles
    (SUPPORT, None),
])
def test_find_cycle(edges, cycle):
    assert find_cycle(edges) == cycle


@pytest.mark.parametrize("deps, levels", [
    ({}, []),
    ({"a": []}, [["a"]]),
    ({"a": [], "b": []}, [["a", "b"]]),
    ({"b": ["a"], "a": []}, [["a"], ["b"]]),
    ({"a": [], "b": ["a"], "c": ["a", "b"]}, [["a"], ["b"], ["c"]]),
    (SUPPORT, [["embed", "classify"], ["retrieve", "lookup"], ["answer"]]),
])
def test_topological_levels(deps, levels):
    assert topological_levels(deps) == levels


@pytest.mark.parametrize("deps, match", [
    ({"a": ["b"], "b": ["a"]}, "cycle: a -> b -> a"),
    ({"a": ["nope"]}, "unknown"),
])
def test_topological_levels_rejects(deps, match):
    with pytest.raises(ValueError, match=match):
        topological_levels(deps)


@pytest.mark.parametrize("node, expected", [
    ("embed", set()),
    ("retrieve", {"embed"}),
    ("answer", {"embed", "retrieve", "classify", "lookup"}),
    ("unknown", set()),
])
def test_ancestors(node, expected):
    assert ancestors(SUPPORT, node) == expected


@pytest.mark.parametrize("value, refs", [
    ("plain", set()),
    ("${request.question}", set()),
    ("${steps.embed.embeddings}", {"embed"}),
    ("${ steps.kb-lookup }", {"kb-lookup"}),
    ({"messages": [{"content": "I: ${steps.classify.predictions[0].label} K: ${steps.retrieve.predictions[0]}"}]},
     {"classify", "retrieve"}),
    ({"data": ["${steps.a_b[0]}", 3, None, True]}, {"a_b"}),
    ({"${steps.key}": "x"}, set()),  # keys are not templates
])
def test_template_references(value, refs):
    assert template_references(value) == refs


def test_iter_template_strings_locations():
    value = {"a": ["x", {"b": "y"}], "n": 1}
    assert list(iter_template_strings(value, ("root",))) == [(("root", "a", 0), "x"), (("root", "a", 1, "b"), "y")]


@pytest.mark.parametrize("expr, step", [("steps.a.b", "a"), ("steps.a[0]", "a"), ("request.q", None), ("steps", None)])
def test_referenced_step(expr, step):
    assert referenced_step(expr) == step


@pytest.mark.parametrize("started, ended, path", [
    ({}, {}, []),
    # retrieve (ends 0.5) is what answer waited for: embed -> retrieve -> answer
    ({"embed": 0, "classify": 0, "retrieve": 0.2, "lookup": 0.1, "answer": 0.5},
     {"embed": 0.2, "classify": 0.1, "retrieve": 0.5, "lookup": 0.3, "answer": 1.0},
     ["embed", "retrieve", "answer"]),
    # lookup ran long: classify -> lookup -> answer
    ({"embed": 0, "classify": 0, "retrieve": 0.2, "lookup": 0.1, "answer": 0.9},
     {"embed": 0.2, "classify": 0.1, "retrieve": 0.5, "lookup": 0.9, "answer": 1.2},
     ["classify", "lookup", "answer"]),
    # lookup did not run (absent from ended): it is ignored
    ({"embed": 0, "classify": 0, "retrieve": 0.2, "answer": 0.6},
     {"embed": 0.2, "classify": 0.6, "retrieve": 0.5, "answer": 1.0},
     ["classify", "answer"]),
    # the last step to end need not be a sink of the DAG
    ({"embed": 0, "classify": 0}, {"embed": 0.2, "classify": 0.7}, ["classify"]),
    # tie on end time: the dependency that started earlier ran longer and wins
    ({"embed": 0, "classify": 0.1, "retrieve": 0.2, "lookup": 0.2, "answer": 0.5},
     {"embed": 0.2, "classify": 0.2, "retrieve": 0.5, "lookup": 0.5, "answer": 1.0},
     ["embed", "retrieve", "answer"]),
])
def test_critical_path(started, ended, path):
    assert critical_path(SUPPORT, started, ended) == path


# --------------------------------------------------------------------------- properties
@st.composite
def dags(draw, max_nodes=12):
    """Random DAGs: node i may only depend on nodes before it, so there is never a cycle."""
    n = draw(st.integers(0, max_nodes))
    names = [f"s{i}" for i in range(n)]
    deps = {}
    for i, name in enumerate(names):
        deps[name] = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=i)) if i else []
    order = draw(st.permutations(names))
    return {name: deps[name] for name in order}


@st.composite
def runs(draw):
    """A DAG plus plausible timings: each step starts after its dependencies end (some never run)."""
    deps = draw(dags())
    started, ended = {}, {}
    for level in topological_levels(deps):
        for node in level:
            if any(d not in ended for d in deps[node]) or draw(st.integers(0, 9)) == 0:
                continue  # skipped (a dependency did not run) or failed before ending
            start = max((ended[d] for d in deps[node]), default=0.0) + draw(st.integers(0, 5))
            started[node] = float(start)
            ended[node] = float(start + draw(st.integers(0, 10)))
    return deps, started, ended


@given(dags())
@settings(max_examples=200)
def test_levels_respect_dependencies(deps):
    levels = topological_levels(deps)
    where = {node: i for i, level in enumerate(levels) for node in level}
    assert sorted(where) == sorted(deps)  # every node exactly once
    assert sum(map(len, levels)) == len(deps)
    for node, ds in deps.items():
        assert all(where[d] < where[node] for d in ds)
        if where[node] > 0:  # nothing is later than it has to be
            assert any(where[d] == where[node] - 1 for d in ds)
    assert find_cycle(deps) is None


@given(dags(), st.data())
def test_adding_a_back_edge_makes_a_cycle(deps, data):
    chains = [(n, d) for n, ds in deps.items() for d in ds]
    if not chains:
        return
    node, dep = data.draw(st.sampled_from(chains))
    cyclic = {n: list(ds) for n, ds in deps.items()}
    cyclic[dep] = cyclic[dep] + [node]
    cycle = find_cycle(cyclic)
    assert cycle is not None and cycle[0] == cycle[-1]
    for a, b in zip(cycle, cycle[1:]):
        assert b in cyclic[a]


@given(runs())
@settings(max_examples=200)
def test_critical_path_is_a_chain_ending_at_the_latest_step(run):
    deps, started, ended = run
    path = critical_path(deps, started, ended)
    if not ended:
        assert path == []
        return
    assert ended[path[-1]] == max(ended.values())
    for earlier, later in zip(path, path[1:]):
        assert earlier in deps[later]
        # the step waited for the dependency that ended last among those that ran
        assert ended[earlier] == max(ended[d] for d in deps[later] if d in ended)
    assert not [d for d in deps[path[0]] if d in ended]  # the chain starts at a step with nothing before it
    assert set(path) <= ancestors(deps, path[-1]) | {path[-1]}
