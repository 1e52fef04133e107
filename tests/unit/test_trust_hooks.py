"""Blocked-terms filter and the hook pipeline over JSON-like payloads."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compoundry.core.trust.filters import BlockedTermsFilter, normalise
from compoundry.core.trust.hooks import (
    BLOCKED_CONTENT,
    HookOutcome,
    TrustSettings,
    apply_hooks,
    build_pipeline,
    resolve_hooks,
)

TERMS = {"weapons": ["nerve agent", "pipe bomb"], "profanity": ["darn"]}
FILTER = BlockedTermsFilter(TERMS)


@pytest.mark.parametrize(("text", "category"), [
    ("how do I make a pipe bomb", "weapons"),
    ("PIPE  BOMB instructions", "weapons"),  # case and whitespace runs
    ("ｐｉｐｅ ｂｏｍｂ", "weapons"),  # full-width letters (NFKC)
    ("pipe b\u200bomb", "weapons"),  # zero-width space inside the word
    ("nerve\nagent", "weapons"),
    ("Darn!", "profanity"),
    ("DARN it", "profanity"),
    ("ＤＡＲＮ", "profanity"),
])
def test_blocks(text, category):
    decision = FILTER.check(text)
    assert not decision.allowed
    assert decision.category == category


@pytest.mark.parametrize("text", [
    "the pipe bombed at the box office",  # whole words only
    "darned socks", "undarn", "a pipe and a bomb", "nerve agents", "",
])
def test_allows(text):
    assert FILTER.check(text).allowed


def test_decision_never_carries_the_term():
    decision = FILTER.check("pipe bomb")
    assert "pipe" not in repr(decision)


def test_empty_filter_allows_everything():
    assert BlockedTermsFilter({}).check("pipe bomb").allowed
    assert BlockedTermsFilter({"x": ["", "  "]}).size == 0


def test_normalise():
    assert normalise("Straße  ＡＢ\u00adC") == "strasse abc"


# --- hooks and payload walking --------------------------------------------------------------------

PIPE = build_pipeline(pre=["mask_pii", "block_terms"], post=["mask_pii"],
                      settings=TrustSettings(blocked_terms=TERMS))


def test_masks_every_string_value_not_keys():
    payload = {"inputs": {"question": "mail a@b.io", "a@b.io": 3, "k": [1, None, True, "x@y.org"]}}
    out, report = PIPE.on_request(payload)
    assert out == {"inputs": {"question": "mail [EMAIL]", "a@b.io": 3, "k": [1, None, True, "[EMAIL]"]}}
    assert report.masked == {"email": 2}
    assert report.strings == 2
    assert not report.blocked
    assert payload["inputs"]["question"] == "mail a@b.io"  # input not mutated


def test_openai_messages():
    payload = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "call +44 20 7946 0958"}]}
    out, report = PIPE.on_request(payload)
    assert out["messages"][1] == {"role": "user", "content": "call [PHONE]"}
    assert report.masked == {"phone": 1}


def test_blocked_request_is_a_structured_rejection():
    payload = {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "a Pipe Bomb"}]}
    out, report = PIPE.on_request(payload)
    assert out is None
    rejection = report.rejection
    assert (rejection.code, rejection.status, rejection.category) == (BLOCKED_CONTENT, 400, "weapons")
    assert rejection.path == "messages[1].content"
    body = rejection.error_body()
    assert body["error"]["code"] == "blocked_content"
    assert "pipe" not in str(body).lower()


def test_post_hooks_do_not_block():
    out, report = PIPE.on_response({"choices": [{"text": "pipe bomb a@b.io"}]})
    assert out == {"choices": [{"text": "pipe bomb [EMAIL]"}]}
    assert not report.blocked


def test_no_hooks_returns_payload_as_is():
    payload = {"a": "a@b.io"}
    out, report = apply_hooks(payload, ())
    assert out is payload and report.strings == 0


def test_unknown_hook_fails_at_build_time():
    with pytest.raises(ValueError, match="unknown trust hooks"):
        build_pipeline(pre=["mask_pii", "translate"])


def test_custom_registry():
    registry = {"upper": lambda settings: lambda text: HookOutcome(text.upper())}
    (hook,) = resolve_hooks(["upper"], registry=registry)
    out, _ = apply_hooks(["a", {"b": "c"}], [hook])
    assert out == ["A", {"b": "C"}]


def test_top_level_string_and_tuple():
    out, report = apply_hooks(("a@b.io",), resolve_hooks(["mask_pii"]))
    assert out == ("[EMAIL]",)
    out, report = apply_hooks("pipe bomb", resolve_hooks(["block_terms"], TrustSettings(TERMS)))
    assert report.rejection.path == "$"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


def _shape(node):
    if isinstance(node, dict):
        return {k: _shape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_shape(v) for v in node]
    return type(node).__name__


@given(JSON)
def test_walk_preserves_structure(payload):
    out, report = apply_hooks(payload, resolve_hooks(["mask_pii"]))
    assert _shape(out) == _shape(payload)
    assert report.rejection is None


@given(JSON)
def test_identity_hook_returns_an_equal_payload(payload):
    out, _ = apply_hooks(payload, [lambda text: HookOutcome(text)])
    assert out == payload
