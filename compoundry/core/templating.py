"""Render pipeline step inputs and outputs: ``${request.x}``, ``${steps.name.key[0].label}``.

Rules (docs/architecture.md, "Pipeline step templating"):

- a string that is exactly one ``${path}`` becomes the referenced value itself (any JSON type);
- ``${path}`` among other text is interpolated: strings as is, other values as compact JSON;
- dict values and list items are rendered recursively; keys and non-strings are left alone.

``None`` (JSON null) is the output of an optional step that failed without a
fallback. Reading *through* it (``${steps.lookup.predictions[0]}`` when
``lookup`` is None) gives None rather than an error, so dependents of such a
step still run; a whole-string template then yields ``null`` and an
interpolated one yields the empty string (a prompt should not read "null").
A key or index that does not exist in a real value is a :class:`TemplateError`
naming the path: that is a config or a replica-contract bug, not a missing
optional result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from compoundry.core.dag import TEMPLATE_RE

_SEGMENT_RE = re.compile(r"\.?([A-Za-z0-9_-]+)|\[(-?\d+)\]")


class TemplateError(ValueError):
    """A template path that cannot be resolved; ``path`` is the text inside ``${...}``."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"${{{path}}}: {reason}")
        self.path = path
        self.reason = reason


@lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[str | int, ...]:
    """``steps.a.b[0].c`` -> ``('steps', 'a', 'b', 0, 'c')``; cached: pipelines reuse the same paths."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(path):
        match = _SEGMENT_RE.match(path, pos)
        key, index = match.groups() if match else (None, None)
        dotted = bool(match) and match.group(0).startswith(".")
        if not match or (key is not None and dotted != (pos > 0)):
            raise TemplateError(path, f"invalid path syntax at position {pos}")
        parts.append(key if key is not None else int(index))
        pos = match.end()
    if not parts or not isinstance(parts[0], str):
        raise TemplateError(path, "empty path")
    return tuple(parts)


def lookup(path: str, context: Mapping[str, Any]) -> Any:
    """The value at ``path`` in ``context``; None once a None is met on the way."""
    value: Any = context
    for part in parse_path(path):
        if value is None:
            return None
        if isinstance(part, int):
            if not isinstance(value, list):
                raise TemplateError(path, f"[{part}] indexes a {_kind(value)}, not a list")
            if not -len(value) <= part < len(value):
                raise TemplateError(path, f"index {part} out of range (length {len(value)})")
            value = value[part]
        else:
            if not isinstance(value, Mapping):
                raise TemplateError(path, f"key {part!r} looked up in a {_kind(value)}, not an object")
            if part not in value:
                known = ", ".join(sorted(map(str, value))[:10]) or "none"
                raise TemplateError(path, f"no key {part!r} (keys: {known})")
            value = value[part]
    return value


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside a JSON value against ``context``."""
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, Mapping):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [render(item, context) for item in value]
    return value


def _render_string(text: str, context: Mapping[str, Any]) -> Any:
    if "${" not in text:
        return text
    whole = TEMPLATE_RE.fullmatch(text)
    if whole:
        return lookup(whole.group(1), context)
    return TEMPLATE_RE.sub(lambda m: _as_text(lookup(m.group(1), context)), text)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(type(value), type(value).__name__)
