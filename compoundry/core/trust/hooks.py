"""Named text hooks run over every string of a request (pre) or response (post) payload.

Pipelines and components name their hooks in config (``pre: [mask_pii, block_terms]``,
``post: [mask_pii]``); :func:`build_pipeline` resolves the names once at load time, so an unknown
name fails there and not on a request. :func:`apply_hooks` walks a JSON-like payload (dicts,
lists, strings; keys untouched) and returns a new payload plus a :class:`TrustReport` with
counts only. A blocked string stops the walk with a :class:`Rejection` the gateway turns into
a 4xx ``blocked_content`` error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from compoundry.core.trust.filters import BlockedTermsFilter
from compoundry.core.trust.masking import Masker

BLOCKED_CONTENT = "blocked_content"


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """What one hook did to one string: the new text, masked counts, or a blocking category."""

    text: str
    counts: Mapping[str, int] = field(default_factory=dict)
    blocked: str | None = None


TextHook = Callable[[str], HookOutcome]


@dataclass(frozen=True, slots=True)
class TrustSettings:
    """What built-in hooks are configured with: blocked terms by category, PII kinds to mask."""

    blocked_terms: Mapping[str, Sequence[str]] = field(default_factory=dict)
    pii_kinds: frozenset[str] | None = None  # None: every supported kind


HookFactory = Callable[[TrustSettings], TextHook]


def _mask_pii(settings: TrustSettings) -> TextHook:
    masker = Masker(settings.pii_kinds)

    def hook(text: str) -> HookOutcome:
        result = masker.mask(text)
        return HookOutcome(result.text, result.counts)

    return hook


def _block_terms(settings: TrustSettings) -> TextHook:
    check = BlockedTermsFilter(settings.blocked_terms).check

    def hook(text: str) -> HookOutcome:
        decision = check(text)
        return HookOutcome(text) if decision.allowed else HookOutcome(text, blocked=decision.category)

    return hook


BUILTIN_HOOKS: Mapping[str, HookFactory] = MappingProxyType({
    "mask_pii": _mask_pii,
    "block_terms": _block_terms,
})


@dataclass(frozen=True, slots=True)
class Rejection:
    """A blocked payload: ``status``/``code`` for the gateway's error body; never the term."""

    category: str
    path: str  # where in the payload, e.g. "messages[1].content"
    code: str = BLOCKED_CONTENT
    status: int = 400

    def error_body(self) -> dict[str, Any]:
        return {"error": {
            "code": self.code,
            "message": f"the request was blocked by the content policy ({self.category})",
            "category": self.category,
            "path": self.path,
        }}


@dataclass(frozen=True, slots=True)
class TrustReport:
    """Counts for metering and metrics: masked spans per kind, strings seen, and any rejection."""

    masked: Mapping[str, int] = field(default_factory=dict)
    strings: int = 0
    rejection: Rejection | None = None

    @property
    def blocked(self) -> bool:
        return self.rejection is not None


@dataclass(frozen=True, slots=True)
class TrustPipeline:
    """The resolved hooks for one pipeline or component: ``pre`` on requests, ``post`` on replies."""

    pre: tuple[TextHook, ...] = ()
    post: tuple[TextHook, ...] = ()

    def on_request(self, payload: Any) -> tuple[Any, TrustReport]:
        return apply_hooks(payload, self.pre)

    def on_response(self, payload: Any) -> tuple[Any, TrustReport]:
        return apply_hooks(payload, self.post)


def resolve_hooks(names: Iterable[str], settings: TrustSettings = TrustSettings(),
                  registry: Mapping[str, HookFactory] = BUILTIN_HOOKS) -> tuple[TextHook, ...]:
    """Hook names to callables, in order; unknown names fail here, at config load time."""
    names = list(names)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown trust hooks {unknown}; known: {sorted(registry)}")
    return tuple(registry[n](settings) for n in names)


def build_pipeline(pre: Iterable[str] = (), post: Iterable[str] = (),
                   settings: TrustSettings = TrustSettings(),
                   registry: Mapping[str, HookFactory] = BUILTIN_HOOKS) -> TrustPipeline:
    """A :class:`TrustPipeline` from configured hook names (e.g. a pipeline's ``trust:`` block)."""
    return TrustPipeline(resolve_hooks(pre, settings, registry), resolve_hooks(post, settings, registry))


class _Blocked(Exception):
    """Unwinds the walk at the first blocked string."""

    def __init__(self, rejection: Rejection):
        self.rejection = rejection


class _Walk:
    """One payload traversal: applies hooks to strings, accumulates counts."""

    __slots__ = ("hooks", "masked", "strings")

    def __init__(self, hooks: Sequence[TextHook]):
        self.hooks, self.masked, self.strings = hooks, {}, 0

    def value(self, node: Any, path: str) -> Any:
        if isinstance(node, str):
            return self.text(node, path)
        if isinstance(node, Mapping):
            return {k: self.value(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            items = [self.value(v, f"{path}[{i}]") for i, v in enumerate(node)]
            return items if isinstance(node, list) else tuple(items)
        return node  # numbers, booleans, None: left as they are

    def text(self, text: str, path: str) -> str:
        self.strings += 1
        for hook in self.hooks:
            outcome = hook(text)
            if outcome.blocked is not None:
                raise _Blocked(Rejection(outcome.blocked, path or "$"))
            text = outcome.text
            for kind, n in outcome.counts.items():
                self.masked[kind] = self.masked.get(kind, 0) + n
        return text


def apply_hooks(payload: Any, hooks: Sequence[TextHook]) -> tuple[Any, TrustReport]:
    """Apply ``hooks`` to every string value of ``payload`` (not keys); input is not mutated.

    On a block the payload comes back as ``None`` with the report's ``rejection`` set, so nothing
    half-masked can be forwarded or logged by mistake.
    """
    if not hooks:
        return payload, TrustReport()
    walk = _Walk(hooks)
    try:
        result = walk.value(payload, "")
    except _Blocked as blocked:
        return None, TrustReport(dict(walk.masked), walk.strings, blocked.rejection)
    return result, TrustReport(dict(walk.masked), walk.strings)
