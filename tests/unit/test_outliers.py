"""Outlier ejection per replica: a run of failures ejects one replica for a growing while; success resets."""

from compoundry.core.routing.outliers import OutlierDetector


def test_a_run_of_failures_ejects_the_replica_for_a_while_then_it_comes_back():
    d = OutlierDetector(consecutive_failures=3, base_ejection_s=5, max_ejection_s=60)
    assert [d.record_failure("a", now=0, peers="ab") for _ in range(3)] == [False, False, True]
    assert d.ejected("a", 4.9) and not d.ejected("a", 5.0)
    assert d.healthy(["a", "b"], 1.0) == ["b"]
    assert d.back_in_s(["a", "b"], 1.0) == 0.0  # b is healthy: nothing to wait for
    assert d.back_in_s(["a"], 1.0) == 4.0


def test_a_success_resets_the_run_and_failures_while_ejected_do_not_extend_it():
    d = OutlierDetector(consecutive_failures=2, base_ejection_s=5)
    d.record_failure("a", 0, peers="ab")
    d.record_success("a")
    assert not d.record_failure("a", 1, peers="ab")  # the run restarted at the success
    assert d.record_failure("a", 1, peers="ab")
    assert not d.record_failure("a", 2, peers="ab") and not d.record_failure("a", 3, peers="ab")  # ejected
    assert not d.ejected("a", 6.0)


def test_each_ejection_lasts_longer_up_to_the_cap():
    d = OutlierDetector(consecutive_failures=1, base_ejection_s=10, max_ejection_s=25)
    waits, now = [], 0.0
    for _ in range(4):
        assert d.record_failure("a", now, peers="ab")
        waits.append(d.back_in_s(["a"], now))
        now += waits[-1]
    assert waits == [10, 20, 25, 25]


def test_the_last_healthy_replica_is_never_ejected_its_failures_are_the_deployments():
    d = OutlierDetector(consecutive_failures=1)
    assert not d.record_failure("only", 0, peers=["only"])
    assert d.record_failure("a", 0, peers="ab") and not d.record_failure("b", 0, peers="ab")  # b is the last
    assert d.healthy("ab", 0.1) == ["b"]
