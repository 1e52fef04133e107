"""Mode routing: dedicated, serverless, auto with spill-over."""

import pytest

from compoundry.core.routing.modes import (
    EXTERNAL,
    REPLICAS,
    DedicatedState,
    choose_backend,
)

HEALTHY = DedicatedState(ready_replicas=2, in_flight=3, threshold_per_replica=2, breaker_open=False)


@pytest.mark.parametrize(("mode", "has_external", "state", "expected"), [
    ("dedicated", True, HEALTHY, REPLICAS),
    ("dedicated", True, DedicatedState(0, 0, 2, False), REPLICAS),  # dedicated never leaves its replicas
    ("serverless", True, HEALTHY, EXTERNAL),
    ("serverless", False, HEALTHY, REPLICAS),  # scale-to-zero replicas of its own
    ("auto", True, HEALTHY, REPLICAS),  # 3 in flight < 2 replicas x 2
    ("auto", True, DedicatedState(2, 4, 2, False), EXTERNAL),  # at the threshold: spill
    ("auto", True, DedicatedState(0, 0, 2, False), EXTERNAL),  # dedicated down
    ("auto", True, DedicatedState(2, 0, 2, True), EXTERNAL),  # breaker open
    ("auto", False, DedicatedState(0, 0, 2, True), REPLICAS),  # nowhere to spill: hold / fail on replicas
])
def test_choose_backend(mode, has_external, state, expected):
    assert choose_backend(mode, has_external, state) == expected
