"""Pure DAG logic for pipelines: cycles, parallel levels, template references, critical path.

No I/O and no pydantic: the config validator and the gateway's pipeline executor
both call these on plain mappings of ``step -> its dependencies``, so the rules
the validator enforces are exactly the ones the executor relies on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

#: One ``${...}`` template expression; group 1 is the path inside the braces.
TEMPLATE_RE = re.compile(r"\$\{\s*([^}]*?)\s*\}")
#: The step named by a ``steps.<name>`` path (names may hold letters, digits, ``_`` and ``-``).
_STEP_PATH_RE = re.compile(r"^steps\.([A-Za-z0-9_-]+)")
#: The request input named by a ``request.<key>`` path.
_REQUEST_PATH_RE = re.compile(r"^request\.([A-Za-z0-9_-]+)")

Deps = Mapping[str, Iterable[str]]


def find_cycle(edges: Deps) -> list[str] | None:
    """Return one dependency cycle as ``[a, b, ..., a]`` (each node depends on the next), or None.

    Nodes that only appear as dependencies count as having none. The search
    follows mapping and dependency order, so the answer is deterministic.
    """
    graph = {node: list(deps) for node, deps in edges.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in graph:
        if state.get(root):
            continue
        path: list[str] = [root]
        stack: list[Iterator[str]] = [iter(graph.get(root, ()))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph.get(nxt, ())))
    return None


def topological_levels(deps: Deps) -> list[list[str]]:
    """Group nodes into levels that can run in parallel: every dependency sits in an earlier level.

    A node's level is the length of its longest dependency chain, so each level
    starts as soon as the one before it is done. Order inside a level follows
    the mapping. Raises ValueError on a cycle or an unknown dependency, which
    a validated pipeline never has.
    """
    graph = {node: list(d) for node, d in deps.items()}
    for node, ds in graph.items():
        unknown = [d for d in ds if d not in graph]
        if unknown:
            raise ValueError(f"{node!r} depends on unknown node(s) {unknown}")
    cycle = find_cycle(graph)
    if cycle:
        raise ValueError("dependency cycle: " + " -> ".join(cycle))
    level: dict[str, int] = {}

    def depth(node: str) -> int:
        # iterative so deep chains do not hit the recursion limit
        todo = [node]
        while todo:
            cur = todo[-1]
            missing = [d for d in graph[cur] if d not in level]
            if missing:
                todo.extend(missing)
                continue
            todo.pop()
            level[cur] = 1 + max((level[d] for d in graph[cur]), default=-1)
        return level[node]

    levels: list[list[str]] = []
    for node in graph:
        n = depth(node)
        while len(levels) <= n:
            levels.append([])
    for node in graph:
        levels[level[node]].append(node)
    return levels


def ancestors(deps: Deps, node: str) -> set[str]:
    """All transitive dependencies of ``node`` (itself excluded unless it sits on a cycle)."""
    seen: set[str] = set()
    todo = list(deps.get(node, ()))
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        todo.extend(deps.get(cur, ()))
    return seen


def iter_template_strings(value: Any, loc: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """Yield ``(location, string)`` for every string inside a JSON value (dict values, list items).

    The location is the key/index path, which the config loader turns into a file line.
    """
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from iter_template_strings(item, loc + (key,))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from iter_template_strings(item, loc + (i,))


def template_expressions(text: str) -> list[str]:
    """The paths of all ``${path}`` expressions in one string, e.g. ``['steps.embed.embeddings']``."""
    return TEMPLATE_RE.findall(text)


def referenced_step(expression: str) -> str | None:
    """The step a template path reads (``steps.classify.predictions[0]`` -> ``classify``), else None."""
    match = _STEP_PATH_RE.match(expression)
    return match.group(1) if match else None


def referenced_request_keys(value: Any) -> set[str]:
    """Request input keys read by ``${request.KEY...}`` anywhere inside a JSON value."""
    keys: set[str] = set()
    for _, text in iter_template_strings(value):
        for expr in template_expressions(text):
            match = _REQUEST_PATH_RE.match(expr)
            if match:
                keys.add(match.group(1))
    return keys


def template_references(value: Any) -> set[str]:
    """Step names referenced by ``${steps.NAME...}`` anywhere inside a JSON value."""
    names: set[str] = set()
    for _, text in iter_template_strings(value):
        for expr in template_expressions(text):
            step = referenced_step(expr)
            if step:
                names.add(step)
    return names


def critical_path(deps: Deps, started: Mapping[str, float], ended: Mapping[str, float]) -> list[str]:
    """The chain of steps that decided when the pipeline finished, in execution order.

    Start at the step that ended last; repeatedly step back to the dependency
    that ended last (the one it was waiting for); stop at a step with no
    dependency that ran. Steps absent from ``ended`` did not run and are
    ignored. Ties go to the step that started earlier (it ran longer).
    """
    if not ended:
        return []

    def rank(step: str) -> tuple[float, float]:
        return ended[step], -started.get(step, ended[step])

    current = max(ended, key=rank)
    chain = [current]
    seen = {current}
    while True:
        ran = [d for d in deps.get(current, ()) if d in ended and d not in seen]
        if not ran:
            break
        current = max(ran, key=rank)
        chain.append(current)
        seen.add(current)
    chain.reverse()
    return chain
