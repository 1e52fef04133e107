"""PII masking: tables of true and false positives per kind, and properties over generated text."""

import re
import string

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from compoundry.core.trust.masking import (
    ALL_KINDS,
    TOKENS,
    Masker,
    iban_valid,
    luhn_valid,
    mask_pii,
)


@pytest.mark.parametrize(("text", "expected", "kind"), [
    # email
    ("write to jane.doe@example.com please", "write to [EMAIL] please", "email"),
    ("<j_o+tag@mail.example.co.uk>.", "<[EMAIL]>.", "email"),
    ("mailto:ops-team@corp.io", "mailto:[EMAIL]", "email"),
    ("4111111111111111@example.com", "[EMAIL]", "email"),  # one address, not a card
    # cards: Luhn-valid, 13-19 digits, spaces or dashes
    ("card 4111 1111 1111 1111 exp 12/25", "card [CARD] exp 12/25", "card"),
    ("card 4111-1111-1111-1111.", "card [CARD].", "card"),
    ("5500005555555559", "[CARD]", "card"),
    ("amex 3782 822463 10005", "amex [CARD]", "card"),
    ("visa: 4222222222222", "visa: [CARD]", "card"),
    ("on 2024-05-12 4111 1111 1111 1111 ok", "on 2024-05-12 [CARD] ok", "card"),
    # SSN
    ("ssn 123-45-6789", "ssn [SSN]", "ssn"),
    ("ssn 123 45 6789.", "ssn [SSN].", "ssn"),
    # UK National Insurance number
    ("NI AB 12 34 56 C", "NI [NINO]", "nino"),
    ("nino: ab123456d", "nino: [NINO]", "nino"),
    # IBAN (mod-97), spaced or compact, any case; the country length decides where it ends
    ("iban DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX", "iban [IBAN] BIC COBADEFFXXX", "iban"),
    ("GB82WEST12345698765432", "[IBAN]", "iban"),
    ("fr14 2004 1010 0505 0001 3m02 606", "[IBAN]", "iban"),
    ("NL91ABNA0417164300, thanks", "[IBAN], thanks", "iban"),
    # phones: international and national formats
    ("call +44 20 7946 0958 now", "call [PHONE] now", "phone"),
    ("call +1 (415) 555-2671", "call [PHONE]", "phone"),
    ("+14155552671", "[PHONE]", "phone"),
    ("+44 (0)20 7946 0958", "[PHONE]", "phone"),
    ("0044 20 7946 0958", "[PHONE]", "phone"),
    ("(415) 555-2671", "[PHONE]", "phone"),
    ("415.555.2671", "[PHONE]", "phone"),
    ("1-800-555-0199", "[PHONE]", "phone"),
    ("020 7946 0958", "[PHONE]", "phone"),
    ("01 23 45 67 89", "[PHONE]", "phone"),
    ("06.12.34.56.78", "[PHONE]", "phone"),
    ("(030) 1234567 or 0171/1234567", "[PHONE] or [PHONE]", "phone"),
    ("07700900123", "[PHONE]", "phone"),
    ("+49 171 1234 5678", "[PHONE]", "phone"),  # 13 digits, but a '+' phone, never a card
])
def test_masks(text, expected, kind):
    result = mask_pii(text)
    assert result.text == expected
    assert set(result.counts) == {kind}


@pytest.mark.parametrize("text", [
    "where is order 1042?",
    "order #104233 and 104234",
    "invoice 2024-000123",
    "placed on 2024-05-12, 12/05/2024 or 05.12.2024 at 10:30",
    "between 01.01.2024 12:00 and 31.01.2024 18:00",
    "in 1990-2020 sales grew",
    "revenue 1,250,000.00 EUR",
    "ip 192.168.0.1, python 3.11.2",
    "scores 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
    "order 00123456789",
    "ref 20240512103000",  # a timestamp, no separators, not 0-prefixed
    "card 4111 1111 1111 1112",  # Luhn fails
    "4111111111111111111111",  # 22 digits: part of a longer number
    "id a4111111111111111",  # glued to a letter
    "ssn 000-12-3456, 666-12-3456, 912-12-3456, 123-00-4567, 123-45-0000",
    "ssn 123-45-67890",
    "nino QQ 12 34 56 C, GB123456A, AB123456E, AD123456A",  # invalid prefixes / suffix
    "iban DE89 3704 0044 0532 0130 01",  # mod-97 fails
    "iban XX89 3704 0044 0532 0130 00",  # unknown country
    "user@localhost and @handle and a@b",
    "+1 2",
    "call 555-1234",  # 7-digit local numbers are not covered (documented)
    "ssn 123-45-6789 234-56-7890",  # a single space between numbers joins them: ambiguous
    "1234567890",  # bare 10 digits: order numbers look the same
])
def test_leaves_alone(text):
    result = mask_pii(text)
    assert result.text == text
    assert result.counts == {}


def test_counts_per_kind_and_never_values():
    text = "a@b.io c@d.io 4111111111111111, +44 20 7946 0958, 123-45-6789"
    result = mask_pii(text)
    assert result.counts == {"email": 2, "card": 1, "phone": 1, "ssn": 1}
    assert result.total == 5
    assert all(isinstance(v, int) for v in result.counts.values())


def test_masker_kinds_subset():
    text = "a@b.io 4111111111111111"
    assert Masker({"email"}).mask(text).text == "[EMAIL] 4111111111111111"
    with pytest.raises(ValueError, match="unknown PII kinds"):
        Masker({"email", "passport"})


@pytest.mark.parametrize(("digits", "ok"), [
    ("4111111111111111", True), ("79927398713", True), ("79927398710", False), ("0", True),
])
def test_luhn(digits, ok):
    assert luhn_valid(digits) is ok


@pytest.mark.parametrize(("iban", "ok"), [
    ("DE89370400440532013000", True), ("de89370400440532013000", True),
    ("DE8937040044053201300", False),  # one short for DE
    ("DE89370400440532013001", False), ("NO9386011117947", True),
])
def test_iban(iban, ok):
    assert iban_valid(iban) is ok


# --- properties ---------------------------------------------------------------------------------

def luhn_complete(body: str) -> str:
    """``body`` plus the one check digit that makes it Luhn-valid."""
    return next(body + d for d in string.digits if luhn_valid(body + d))


WORDS = st.lists(st.sampled_from(["the", "order", "ref", "is", "a", "on", "Mon", "x", ",", ".", "!"]),
                 max_size=6).map(" ".join)
CARD_BODIES = st.text(string.digits, min_size=15, max_size=15).filter(lambda s: s[0] != "0")
GROUPED = st.sampled_from(["", " ", "-"])


def group(number: str, sep: str) -> str:
    return sep.join(number[i:i + 4] for i in range(0, len(number), 4))


@given(WORDS, CARD_BODIES, GROUPED, WORDS)
@example("card", "411111111111111", " ", "ok")
def test_luhn_valid_card_is_masked(before, body, sep, after):
    card = group(luhn_complete(body), sep)
    result = mask_pii(f"{before} {card} {after}")
    assert result.text == f"{before} [CARD] {after}"
    assert result.counts == {"card": 1}


@given(WORDS, CARD_BODIES, GROUPED, WORDS)
def test_luhn_invalid_card_is_left(before, body, sep, after):
    valid = luhn_complete(body)
    invalid = valid[:-1] + str((int(valid[-1]) + 1) % 10)
    text = f"{before} {group(invalid, sep)} {after}"
    assert "card" not in mask_pii(text).counts


def _iban(country: str, bban: str) -> str:
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


SSNS = st.builds("{:03d}-{:02d}-{:04d}".format,
                 st.integers(1, 899).filter(lambda a: a != 666), st.integers(1, 99), st.integers(1, 9999))
PII = st.one_of(
    CARD_BODIES.map(luhn_complete),
    SSNS,
    st.builds(lambda u, d: f"{u}@{d}.com", st.text(string.ascii_lowercase + "._", min_size=1, max_size=8)
              .filter(lambda u: u[0].isalpha()), st.text(string.ascii_lowercase, min_size=1, max_size=8)),
    st.builds(_iban, st.just("DE"), st.text(string.digits, min_size=18, max_size=18)),
    st.builds("+44 20 {} {}".format, st.text(string.digits, min_size=4, max_size=4),
              st.text(string.digits, min_size=4, max_size=4)),
)


@given(st.lists(st.tuples(WORDS, PII), min_size=1, max_size=4), WORDS)
def test_no_pii_survives(parts, tail):
    text = " ".join(f"{words} {pii}" for words, pii in parts) + f" {tail}"
    masked = mask_pii(text)
    for _, pii in parts:
        assert pii not in masked.text
        core = re.sub(r"\D", "", pii)
        assert len(core) < 6 or core not in re.sub(r"\D", "", masked.text)
    assert masked.total == len(parts)


NOISY = st.text(string.ascii_letters[:8] + string.digits + " +-.()/@_[]", max_size=80)


@settings(max_examples=400)
@given(st.one_of(NOISY, st.lists(st.one_of(WORDS, PII), max_size=5).map(" ".join)))
def test_masking_is_idempotent(text):
    once = mask_pii(text)
    twice = mask_pii(once.text)
    assert twice.text == once.text
    assert twice.counts == {}


@given(st.text(max_size=120))
def test_text_without_digits_or_at_sign_is_unchanged_unless_nino_like(text):
    assume(not any(c.isdigit() for c in text) and "@" not in text)
    assert mask_pii(text).text == text


def test_tokens_cover_every_kind():
    assert set(TOKENS) == ALL_KINDS
    for token in TOKENS.values():
        assert mask_pii(token).text == token
