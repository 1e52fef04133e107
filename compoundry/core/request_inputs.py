"""What a pipeline request must carry: checked at the gateway's edge, before any model is called.

A pipeline's steps read its request through ``${request.<key>...}`` templates.
A key a template reads must be present; a pipeline that declares its
``inputs`` (``pipelines.yaml``) also gets their types and sizes checked. A
wrong input is the client's error (4xx), not a model failing on it later
(which the client would see as a 502). Strings holding lone UTF-16 surrogates
(valid JSON escapes, invalid text) are refused anywhere in the inputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")

#: JSON type names (``pipelines.yaml`` ``inputs.<key>.type``) -> the Python types ``json.loads`` gives.
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,),
}


def problems(inputs: Mapping[str, Any], declared: Mapping[str, Any], referenced: Iterable[str]) -> list[str]:
    """Why ``inputs`` cannot run the pipeline, one line per problem (empty: they can).

    ``declared`` maps a key to its rule (``type``, ``required``, ``max_length``: a
    ``config.models.PipelineInput``); ``referenced`` are the keys templates read, required
    when not declared optional.
    """
    found = []
    optional = {key for key, rule in declared.items() if not rule.required}
    for key in sorted(set(referenced) - optional | {k for k, r in declared.items() if r.required}):
        if key not in inputs or inputs[key] is None:
            found.append(f"inputs.{key} is required")
    for key, rule in declared.items():
        if inputs.get(key) is not None:
            found += _check(f"inputs.{key}", inputs[key], rule)
    found += [f"{where} holds an unpaired UTF-16 surrogate" for where in _surrogates(inputs, "inputs")]
    return found


def _check(where: str, value: Any, rule) -> list[str]:
    kinds = JSON_TYPES[rule.type]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        return [f"{where} must be {'an' if rule.type[0] in 'aeiou' else 'a'} {rule.type}, got {_json_type(value)}"]
    if rule.max_length is not None and isinstance(value, (str, list)) and len(value) > rule.max_length:
        unit = "characters" if isinstance(value, str) else "items"
        return [f"{where} has {len(value)} {unit}; at most {rule.max_length}"]
    return []


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for name, kinds in JSON_TYPES.items():
        if isinstance(value, kinds) and not (isinstance(value, bool) and name != "boolean"):
            return name
    return type(value).__name__


def _surrogates(value: Any, where: str) -> Iterable[str]:
    if isinstance(value, str):
        if _SURROGATE.search(value):
            yield where
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _surrogates(key, where)
            yield from _surrogates(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _surrogates(item, f"{where}[{i}]")
