"""Blocked-terms filter: whole-word, case-insensitive and robust to trivial Unicode obfuscation.

Both the configured terms and the checked text go through the same normalisation (NFKC, which
folds full-width and compatibility letters such as "ｂａｄ" or "ﬁ"; casefold; zero-width and
soft-hyphen characters removed; whitespace runs collapsed), then one precompiled alternation finds
the first whole-word hit. The decision names the term's *category*, never the term, so a client
cannot probe the list by reading rejections.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Invisible characters people insert to split a word ("b\u200bad"): removed before matching.
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063\ufeff"))
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The canonical form terms and text are compared in (ASCII text takes a fast path)."""
    if text.isascii():
        return _SPACES.sub(" ", text.lower())
    folded = unicodedata.normalize("NFKC", text.translate(_INVISIBLE)).casefold()
    return _SPACES.sub(" ", folded)


@dataclass(frozen=True, slots=True)
class FilterDecision:
    """Whether text may pass; when blocked, the category of the matched term (not the term)."""

    allowed: bool
    category: str | None = None


ALLOWED = FilterDecision(True)


class BlockedTermsFilter:
    """Blocks text containing any configured term as a whole word; terms grouped by category."""

    __slots__ = ("_category", "_pattern")

    def __init__(self, terms: Mapping[str, Iterable[str]]):
        category: dict[str, str] = {}
        for cat, words in terms.items():
            for word in words:
                norm = normalise(word).strip()
                if norm:
                    category.setdefault(norm, cat)  # first category listing a term wins
        self._category = category
        self._pattern = _compile(category) if category else None

    @property
    def size(self) -> int:
        return len(self._category)

    def check(self, text: str) -> FilterDecision:
        if self._pattern is None:
            return ALLOWED
        m = self._pattern.search(normalise(text))
        return ALLOWED if m is None else FilterDecision(False, self._category[m.group()])

    __call__ = check


def _compile(terms: Iterable[str]) -> re.Pattern[str]:
    """One alternation, longest terms first so "bad word" wins over "bad"; whole words only."""
    alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
