"""Bounded work per call: how many inputs, how long a text, how many tokens one call may ask a model for.

A body under the gateway's byte limit can still hold 50,000 texts to embed or a 3 MB question: work that
holds a replica for minutes after its caller gave up. Each component's ``limits`` bound it, checked on
the call's inputs before any replica sees them. Pure: the caller passes the inputs and the limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Keys of an OpenAI-style body that ask for completion tokens.
TOKEN_KEYS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class Violation:
    """Which limit a call breaks; ``too_large``: the request's size (413), else a parameter's value (400)."""

    message: str
    limit: str
    too_large: bool


def limit_violation(inputs: Any, max_inputs: int, max_chars: int, max_tokens: int) -> Violation | None:
    """The first limit ``inputs`` break, or ``None``.

    ``max_inputs`` bounds every list (texts, rows, messages), ``max_chars`` every string, and
    ``max_tokens`` the completion tokens a body asks for. A walk that stops at the first breach:
    O(size of the inputs), microseconds for an ordinary call.
    """
    if isinstance(inputs, dict):
        for key in TOKEN_KEYS:
            asked = inputs.get(key)
            if isinstance(asked, int) and not isinstance(asked, bool) and asked > max_tokens:
                return Violation(f"{key} {asked} is above this component's limit of {max_tokens}",
                                 "max_tokens", too_large=False)
    stack: list[tuple[str, Any]] = [("inputs", inputs)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if len(value) > max_chars:
                return Violation(f"{where} has {len(value)} characters; this component takes at most {max_chars}",
                                 "max_chars", too_large=True)
        elif isinstance(value, list):
            if len(value) > max_inputs:
                return Violation(f"{where} has {len(value)} items; this component takes at most {max_inputs} "
                                 "per call (split it into several calls)", "max_inputs", too_large=True)
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value) if isinstance(v, (str, list, dict)))
        elif isinstance(value, dict):
            stack.extend((f"{where}.{k}", v) for k, v in value.items() if isinstance(v, (str, list, dict)))
    return None
