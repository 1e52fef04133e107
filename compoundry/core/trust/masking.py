"""PII masking with precompiled regexes and checksum validation, for the gateway hot path.

Every request's text passes through :func:`mask_pii` before a model, a log line or a metering
record sees it, so this is plain ``re`` (no NLP models) and each rule is cheap: a regex finds a
*candidate*, a validator (Luhn, mod-97, SSN ranges, digit counts) decides, and only then is the
span replaced by a token such as ``[CARD]``. Results carry counts per kind, never the values.

Rules run in a fixed order (email before the digit rules so an address full of digits is one
``[EMAIL]``; IBAN before cards; cards before phones). Tokens contain no digits or ``@``; a
candidate glued to a token's bracket is treated like one glued to the letter or digit the token
replaced, and every digit rule shares one symmetric boundary (not right after or before
"digit + one of ``-. /``"), so masking masked text changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

EMAIL, PHONE, CARD, SSN, NINO, IBAN = "email", "phone", "card", "ssn", "nino", "iban"
TOKENS: Mapping[str, str] = MappingProxyType({
    EMAIL: "[EMAIL]", PHONE: "[PHONE]", CARD: "[CARD]", SSN: "[SSN]", NINO: "[NINO]", IBAN: "[IBAN]",
})
ALL_KINDS: frozenset[str] = frozenset(TOKENS)

# A check gets a candidate match and returns (start, end, replacement, count), or None to keep it.
Hit = tuple[int, int, str, int]
Check = Callable[[re.Match[str]], "Hit | None"]


@dataclass(frozen=True, slots=True)
class MaskResult:
    """Masked text and how many spans of each kind were replaced (only kinds with hits)."""

    text: str
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# --- email -------------------------------------------------------------------------------------

# Anchored on "@" (a literal the regex engine scans for quickly); the local part is found by
# walking back from it in _check_email rather than by a regex tried at every position.
_EMAIL_RE = re.compile(r"@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
_LOCAL_PUNCT = frozenset(".%+-")


def _check_email(m: re.Match[str]) -> Hit | None:
    text, start = m.string, m.start()
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] in _LOCAL_PUNCT
                         or text[start - 1] == "_"):
        start -= 1
    return (start, m.end(), TOKENS[EMAIL], 1) if start < m.start() else None


def _whole(token: str) -> Check:
    """A check for rules whose regex alone is precise enough: mask the whole match."""
    return lambda m: (m.start(), m.end(), token, 1)


# --- IBAN (ISO 13616: country code, 2 check digits, BBAN; mod-97 == 1) ------------------------

_IBAN_LENGTHS: dict[str, int] = {
    cc: int(n) for cc, n in re.findall(r"([A-Z]{2}):(\d+)", (
        "AD:24 AE:23 AL:28 AT:20 AZ:28 BA:20 BE:16 BG:22 BH:22 BR:29 BY:28 CH:21 CR:22 CY:28 "
        "CZ:24 DE:22 DK:18 DO:28 EE:20 EG:29 ES:24 FI:18 FO:18 FR:27 GB:22 GE:22 GI:23 GL:18 "
        "GR:27 GT:28 HR:21 HU:28 IE:22 IL:23 IQ:23 IS:26 IT:27 JO:30 KW:30 KZ:20 LB:28 LC:32 "
        "LI:21 LT:20 LU:20 LV:21 LY:25 MC:27 MD:24 ME:22 MK:19 MR:27 MT:31 MU:30 NL:18 NO:15 "
        "PK:24 PL:28 PS:29 PT:25 QA:29 RO:24 RS:22 SA:24 SC:31 SD:18 SE:24 SI:19 SK:24 SM:27 "
        "ST:25 SV:28 TL:23 TN:24 TR:26 UA:29 VA:22 VG:24 XK:20"
    ))
}
# Greedy candidate; the country's registered length then decides where the IBAN really ends.
_IBAN_RE = re.compile(r"(?<![A-Za-z0-9\]])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}")


def iban_valid(iban: str) -> bool:
    """ISO 7064 mod 97-10 over a compact IBAN (letters A=10..Z=35), with the country's length."""
    iban = iban.upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _check_iban(m: re.Match[str]) -> Hit | None:
    cand = m.group()
    length = _IBAN_LENGTHS.get(cand[:2].upper())
    if length is None:
        return None
    compact, end = [], 0
    for end, ch in enumerate(cand, 1):  # walk until `length` alphanumerics are taken
        if ch.isalnum():
            compact.append(ch)
            if len(compact) == length:
                break
    if len(compact) < length or (end < len(cand) and cand[end].isalnum()):
        return None  # too short, or glued to more letters/digits: not a clean IBAN
    return (m.start(), m.start() + end, TOKENS[IBAN], 1) if iban_valid("".join(compact)) else None


# --- payment cards (13-19 digits, Luhn) --------------------------------------------------------

# A maximal run of digit blocks joined by single spaces/dashes, not glued to letters or a '+'.
# (The lookbehinds follow the first \d so the engine can skip ahead to digits.)
_CARD_RUN_RE = re.compile(r"\d(?<![\w+\]]\d)(?<!\d[-. /]\d)(?:[ -]?\d){12,}(?![-. /]?\d)(?![\w\[])")
_BLOCK_RE = re.compile(r"\d+")


def luhn_valid(digits: str) -> bool:
    """The Luhn mod-10 check used by every card scheme: catches typos, rejects ~90% of noise."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_window(blocks: list[str], i: int) -> int | None:
    """Last block index of the longest Luhn-valid 13-19 digit card starting at block ``i``.

    Blocks before the last of a card have 4+ digits (4-4-4-4, 4-6-5...), so lists of small
    numbers or a date glued to a card never form a window.
    """
    best, digits = None, ""
    for j in range(i, len(blocks)):
        digits += blocks[j]
        if len(digits) > 19:
            break
        if len(digits) >= 13 and luhn_valid(digits):
            best = j
        if len(blocks[j]) < 4:
            break
    return best


def _check_card(m: re.Match[str]) -> Hit | None:
    run, base = m.group(), m.start()
    spans = [(b.start(), b.end()) for b in _BLOCK_RE.finditer(run)]
    blocks = [run[s:e] for s, e in spans]
    out, last, count, i = [], 0, 0, 0
    while i < len(blocks):
        j = _card_window(blocks, i)
        if j is None:
            i += 1
            continue
        out += (run[last:spans[i][0]], TOKENS[CARD])
        last, count, i = spans[j][1], count + 1, j + 1
    if not count:
        return None
    out.append(run[last:])
    return base, m.end(), "".join(out), count


# --- US Social Security number -------------------------------------------------------------------

# Area 000, 666 and 900-999 (ITINs), group 00 and serial 0000 are never issued.
_SSN_RE = re.compile(
    r"(?<![\w\]-])(?<!\d[-. /])(?!000|666|9)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w\[])(?![-. /]\d)"
)

# --- UK National Insurance number --------------------------------------------------------------

# Prefix letters exclude D F I Q U V (and O second) and the never-issued BG GB KN NK NT TN ZZ.
_NINO_RE = re.compile(
    r"(?<![A-Za-z0-9\]])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9\[])",
    re.IGNORECASE,
)

# --- phone numbers -----------------------------------------------------------------------------

_PHONE_RE = re.compile(
    r"(?<![\w+\]])(?!(?<=\d[-. /])\d)(?:"
    # international: +CC or 00CC then blocks; separators optional around "(0)"/"(20)"
    r"(?P<intl>(?:\+|00)\d+(?:(?:[ .-]?\(\d+\)[ .-]?|[ .-])\d+)*)"
    # North American 3-3-4: area and exchange never start with 0 or 1
    r"|(?P<nanp>(?:1[-. ])?(?:\([2-9]\d\d\) ?|[2-9]\d\d[-. ])[2-9]\d\d[-. ]\d{4})"
    # national trunk prefix 0, grouped: 020 7946 0958, 01 23 45 67 89, (030) 1234567, 0171/1234567
    r"|(?P<nat>(?:\(0\d+\) ?|0\d+[ ./-])\d{2,}(?:[ ./-]\d{2,})*)"
    # national trunk prefix 0 written solid: 07700900123
    r"|(?P<solid>0[1-9]\d{8,9})"
    r")(?![\w\[])(?![-. /]\d)"
)
_SEP_RE = re.compile(r"[ ./-]")


def _check_phone(m: re.Match[str]) -> Hit | None:
    kind = m.lastgroup
    text = m.group(kind)
    digits = sum(ch.isdigit() for ch in text)
    if kind == "intl":
        if text.startswith("00"):  # 00CC dialling prefix: only when grouped, not a bare 00123...
            ok = 8 <= digits - 2 <= 15 and not text.isdigit()
        else:
            ok = 8 <= digits <= 15  # E.164: at most 15 digits
    elif kind == "nat":
        # one separator style throughout, so "01.01.2024 12" (date then hour) is not a phone
        ok = 9 <= digits <= 12 and len(set(_SEP_RE.findall(text.split(")")[-1]))) <= 1
    else:
        ok = True
    return (m.start(), m.end(), TOKENS[PHONE], 1) if ok else None


# --- the pass ----------------------------------------------------------------------------------

# Every digit rule needs 6+ digits close together (NINO has 6, the others more): one scan of
# this rules out the common question that mentions a year or an order number.
_DIGIT_CLUSTER = re.compile(r"\d(?:[ ./()-]{0,3}\d){5}")


@dataclass(frozen=True, slots=True)
class _Rule:
    """One PII kind: candidate regex, validating check, and a cheap necessary-condition filter.

    ``quick`` starts with a digit so the engine skips through text fast; most texts fail it and
    never pay for the full pattern's lookarounds. A match of the full pattern starts at most
    ``back`` characters before the first ``quick`` match, so the full scan starts there.
    """

    kind: str
    pattern: re.Pattern[str]
    check: Check
    quick: re.Pattern[str] | None = None
    back: int = 0
    needs_digit: bool = True


_RULES: tuple[_Rule, ...] = (
    _Rule(EMAIL, _EMAIL_RE, _check_email, needs_digit=False),
    _Rule(IBAN, _IBAN_RE, _check_iban, re.compile(r"\d(?<=[A-Za-z]{2}\d)\d"), 2),
    _Rule(CARD, _CARD_RUN_RE, _check_card),
    _Rule(SSN, _SSN_RE, _whole(TOKENS[SSN]), re.compile(r"\d\d\d[- ]\d\d[- ]\d\d\d\d")),
    _Rule(NINO, _NINO_RE, _whole(TOKENS[NINO]), re.compile(r"\d\d ?\d\d ?\d\d ?[A-Da-d]"), 3),
    # every accepted phone has 8+ digits with at most a few punctuation chars between them
    _Rule(PHONE, _PHONE_RE, _check_phone, re.compile(r"\d(?:[ ./()-]{0,3}\d){7}"), 4),
)


def _apply(rule: _Rule, text: str, pos: int = 0) -> tuple[str, int]:
    """Replace every candidate from ``pos`` its check accepts; a rejected one is retried one on."""
    out, last, count = [], 0, 0
    search = rule.pattern.search
    while (m := search(text, pos)) is not None:
        hit = rule.check(m)
        if hit is None:
            pos = m.start() + 1
            continue
        start, end, replacement, n = hit
        out += (text[last:max(start, last)], replacement)
        last = pos = end
        count += n
    if not count:
        return text, 0
    out.append(text[last:])
    return "".join(out), count


class Masker:
    """Masks a chosen set of PII kinds (default all); reusable and thread-safe."""

    __slots__ = ("_rules", "kinds")

    def __init__(self, kinds: Iterable[str] | None = None):
        chosen = ALL_KINDS if kinds is None else frozenset(kinds)
        unknown = chosen - ALL_KINDS
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {sorted(ALL_KINDS)}")
        self.kinds = chosen
        self._rules = tuple(r for r in _RULES if r.kind in chosen)

    def __call__(self, text: str) -> MaskResult:
        return self.mask(text)

    def mask(self, text: str) -> MaskResult:
        counts: dict[str, int] = {}
        has_digits = _DIGIT_CLUSTER.search(text) is not None
        for rule in self._rules:
            if rule.needs_digit and not has_digits:
                continue
            pos = 0
            if rule.quick is not None:
                if (q := rule.quick.search(text)) is None:
                    continue
                pos = max(0, q.start() - rule.back)
            text, n = _apply(rule, text, pos)
            if n:
                counts[rule.kind] = n
        return MaskResult(text, counts)


_DEFAULT = Masker()


def mask_pii(text: str) -> MaskResult:
    """Mask every supported PII kind in ``text`` with the default :class:`Masker`."""
    return _DEFAULT.mask(text)
