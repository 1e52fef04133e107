"""When a failed call is retried on another replica: a table over every condition."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compoundry.core.routing.retry import RETRYABLE, ErrorKind, should_retry

OK = dict(idempotent=True, attempt=1, max_attempts=2, remaining_deadline_s=5.0, expected_call_s=1.0)


@pytest.mark.parametrize(("change", "expected"), [
    ({}, True),
    ({"error_kind": "reset_before_response"}, True),
    ({"error_kind": ErrorKind.TIMEOUT}, False),  # the replica may still be doing the work
    ({"error_kind": "reset_after_response"}, False),
    ({"error_kind": "http_5xx"}, False),
    ({"error_kind": "http_4xx"}, False),
    ({"error_kind": "something_new"}, False),
    ({"idempotent": False}, False),
    ({"attempt": 2}, False),  # max_attempts reached
    ({"attempt": 2, "max_attempts": 3}, True),
    ({"max_attempts": 1}, False),
    ({"remaining_deadline_s": 1.0}, True),  # exactly enough time
    ({"remaining_deadline_s": 0.99}, False),
    ({"remaining_deadline_s": 0.0, "expected_call_s": 0.0}, False),  # deadline already spent
])
def test_should_retry(change, expected):
    args = {"error_kind": ErrorKind.CONNECT, **OK, **change}
    assert should_retry(**args) is expected


@given(st.sampled_from(list(ErrorKind)), st.booleans(), st.integers(1, 5), st.integers(1, 5),
       st.floats(-1, 10), st.floats(0, 10))
def test_a_retry_implies_every_condition(kind, idempotent, attempt, max_attempts, remaining, expected):
    if should_retry(kind, idempotent, attempt, max_attempts, remaining, expected):
        assert kind in RETRYABLE and idempotent and attempt < max_attempts and remaining >= expected
