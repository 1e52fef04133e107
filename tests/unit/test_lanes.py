"""Priority lanes: (class, deadline, arrival) order, bounded queues, early shedding, asyncio adapter."""

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compoundry.core.routing.lanes import (
    CLASS_RANK,
    Admitted,
    Entry,
    Lane,
    LaneQueue,
    Shed,
)

INF = float("inf")


def order(e: Entry) -> tuple:
    return (CLASS_RANK[e.latency_class], e.deadline, e.seq)


# --------------------------------------------------------------------------- pure core: tables
def test_pop_order_class_then_deadline_then_arrival():
    q = LaneQueue(concurrency=10, capacity=10)
    q.in_flight = 10  # all busy: everything queues
    specs = [("batch", 5.0, "b5"), ("interactive", 9.0, "i9"), ("batch", 1.0, "b1"),
             ("interactive", 9.0, "i9-later"), ("interactive", 2.0, "i2"), ("batch", INF, "b-inf")]
    for cls, deadline, name in specs:
        assert isinstance(q.offer(Entry(cls, deadline, name), now=0.0), Admitted)
    q.in_flight = 0
    popped = [q.pop(now=0.5).payload for _ in specs]
    assert popped == ["i2", "i9", "i9-later", "b1", "b5", "b-inf"]
    assert q.pop(now=0.5) is None


def test_pop_needs_a_free_slot_and_release_frees_it():
    q = LaneQueue(concurrency=1, capacity=4)
    q.offer(Entry("batch", INF, "a"), 0.0)
    q.offer(Entry("batch", INF, "b"), 0.0)
    assert q.pop(0.0).payload == "a"
    assert q.pop(0.0) is None  # the one slot is taken
    q.release(2.0)
    assert q.pop(0.0).payload == "b"
    assert q.service_s == 2.0
    with pytest.raises(RuntimeError):
        LaneQueue(concurrency=1, capacity=1).release()


def test_full_queue_displaces_batch_for_interactive_and_refuses_lower_priority():
    q = LaneQueue(concurrency=1, capacity=2, initial_service_s=1.0)
    q.in_flight = 1
    first, second = Entry("batch", 100.0, "b1"), Entry("batch", 50.0, "b2")
    q.offer(first, 0.0), q.offer(second, 0.0)
    late_batch = q.offer(Entry("batch", 200.0, "b3"), 0.0)
    assert isinstance(late_batch, Shed) and late_batch.reason == "queue_full" and late_batch.retry_after_s > 0
    result = q.offer(Entry("interactive", 10.0, "i1"), 0.0)
    assert isinstance(result, Admitted) and result.position == 0
    displaced, shed = result.displaced
    assert displaced is first and shed.reason == "displaced" and shed.retry_after_s > 0
    assert [e.payload for e in q.entries()] == ["i1", "b2"]


def test_equal_rank_newcomer_is_the_one_refused():
    q = LaneQueue(concurrency=1, capacity=1)
    q.in_flight = 1
    q.offer(Entry("interactive", 5.0, "old"), 0.0)
    assert q.offer(Entry("interactive", 5.0, "new"), 0.0).reason == "queue_full"


def test_doomed_request_shed_at_once_with_retry_after():
    q = LaneQueue(concurrency=2, capacity=100, initial_service_s=1.0)
    q.in_flight = 2
    for i in range(4):  # 4 ahead over 2 slots of 1 s: a newcomer waits ~2.5 s and needs 1 s more
        assert isinstance(q.offer(Entry("interactive", 100.0, i), 0.0), Admitted)
    assert q.expected_wait(4) == pytest.approx(2.5)
    shed = q.offer(Entry("batch", 3.0, "doomed"), 0.0)  # batch: behind all four interactive
    assert isinstance(shed, Shed) and shed.reason == "deadline" and shed.retry_after_s == pytest.approx(2.5)
    assert isinstance(q.offer(Entry("batch", 3.6, "fits"), 0.0), Admitted)
    assert isinstance(q.offer(Entry("interactive", 3.0, "ahead"), 0.0), Admitted)  # earliest deadline: first
    assert isinstance(q.offer(Entry("batch", 3.0, "past"), 5.0), Shed)  # deadline already passed


def test_no_early_shedding_without_a_service_estimate():
    q = LaneQueue(concurrency=1, capacity=10)
    q.in_flight = 1
    assert isinstance(q.offer(Entry("interactive", 0.001, "x"), 0.0), Admitted)


def test_free_slot_means_no_wait():
    q = LaneQueue(concurrency=4, capacity=10, initial_service_s=10.0)
    q.in_flight = 1
    assert q.expected_wait(0) == 0 and q.expected_wait(2) == 0 and q.expected_wait(3) == pytest.approx(2.5)
    assert isinstance(q.offer(Entry("interactive", 10.5, "x"), 0.0), Admitted)


def test_expire_removes_passed_deadlines_and_pop_skips_them():
    q = LaneQueue(concurrency=1, capacity=10)
    q.in_flight = 1
    for d in (1.0, 2.0, 3.0):
        q.offer(Entry("interactive", d, d), 0.0)
    q.offer(Entry("batch", 1.5, "b"), 0.0)
    gone = q.expire(2.0)
    assert [e.payload for e, _ in gone] == [1.0, 2.0, "b"]
    assert all(s.reason == "expired" and s.retry_after_s > 0 for _, s in gone)
    q.in_flight = 0
    assert q.pop(10.0) is None and len(q) == 0  # 3.0 passed too: skipped, never started


def test_ewma_and_remove_and_fast_path():
    q = LaneQueue(concurrency=1, capacity=5, alpha=0.5)
    assert q.acquire() and not q.acquire()
    q.release(4.0)
    q.in_flight = 1
    q.release(2.0)
    assert q.service_s == pytest.approx(3.0)
    q.in_flight = 1
    e = Entry("batch", INF, "x")
    q.offer(e, 0.0)
    q.in_flight = 0
    assert not q.acquire()  # someone is waiting: no overtaking through the fast path
    assert q.remove(e) and not q.remove(e) and len(q) == 0


# --------------------------------------------------------------------------- pure core: properties
OPS = st.lists(st.one_of(
    st.tuples(st.just("offer"), st.sampled_from(["interactive", "batch"]), st.floats(0.1, 30)),
    st.tuples(st.just("pop")),
    st.tuples(st.just("release"), st.floats(0, 5)),
    st.tuples(st.just("tick"), st.floats(0, 3)),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(OPS, st.integers(1, 3), st.integers(0, 6), st.floats(0, 2))
def test_model_invariants(ops, concurrency, capacity, service):
    q = LaneQueue(concurrency=concurrency, capacity=capacity, initial_service_s=service)
    now, queued = 0.0, []  # queued: the reference model of what must be waiting
    for op in ops:
        if op[0] == "offer":
            entry = Entry(op[1], now + op[2])
            result = q.offer(entry, now)
            if isinstance(result, Shed):
                assert result.retry_after_s > 0
                if result.reason == "queue_full":
                    assert len(queued) == capacity and all(order(x) < order(entry) for x in queued)
            else:
                queued.append(entry)
                if result.displaced:
                    worst, shed = result.displaced
                    assert worst is max(queued, key=order) and shed.retry_after_s > 0
                    assert shed.reason == "displaced"
                    queued.remove(worst)
        elif op[0] == "pop":
            live = [x for x in queued if x.deadline > now]
            got = q.pop(now)
            if got is None:
                assert not live or q.in_flight >= concurrency
            else:
                assert got is min(live, key=order)  # (class, deadline, arrival) order
                assert not (got.latency_class == "batch" and any(x.latency_class == "interactive" for x in live))
            queued = [x for x in queued if x.deadline > now and x is not got]
        elif op[0] == "release" and q.in_flight:
            q.release(op[1])
        elif op[0] == "tick":
            now += op[1]
            expired = q.expire(now)
            assert {id(e) for e, _ in expired} == {id(x) for x in queued if x.deadline <= now}
            queued = [x for x in queued if x.deadline > now]
        assert len(q) <= capacity
        assert [id(e) for e in q.entries()] == [id(x) for x in sorted(queued, key=order)]
        assert 0 <= q.in_flight <= concurrency


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["interactive", "batch"]), st.floats(1, 1e6)), max_size=40))
def test_drain_is_sorted(specs):
    q = LaneQueue(concurrency=1, capacity=len(specs))
    q.in_flight = 1
    for cls, d in specs:
        q.offer(Entry(cls, d), 0.0)
    q.in_flight = 0
    drained = []
    while (e := q.pop(0.0)) is not None:
        drained.append(e)
        q.release()
    assert len(drained) == len(specs)
    assert [order(e) for e in drained] == sorted(order(e) for e in drained)


# --------------------------------------------------------------------------- asyncio adapter
async def hold(lane, cls, deadline, log, name, gate):
    async with lane.slot(cls, deadline):
        log.append(name)
        await gate.wait()


def test_adapter_admits_in_priority_order_when_slots_free():
    async def main():
        lane, log, gate = Lane(concurrency=1, capacity=10), [], asyncio.Event()
        now = time.monotonic()
        blocker = asyncio.create_task(hold(lane, "batch", INF, log, "blocker", gate))
        await asyncio.sleep(0.01)
        waiters = [asyncio.create_task(hold(lane, cls, now + d, log, name, gate)) for cls, d, name in
                   [("batch", 50, "b-late"), ("batch", 20, "b-early"), ("interactive", 60, "i-late"),
                    ("interactive", 30, "i-early")]]
        await asyncio.sleep(0.01)
        assert log == ["blocker"] and len(lane.queue) == 4
        gate.set()
        await asyncio.gather(blocker, *waiters)
        return log, lane.queue.in_flight

    log, in_flight = asyncio.run(main())
    assert log == ["blocker", "i-early", "i-late", "b-early", "b-late"]
    assert in_flight == 0


def test_adapter_sheds_displaced_batch_and_full_queue():
    async def main():
        lane, log, gate = Lane(concurrency=1, capacity=1), [], asyncio.Event()
        blocker = asyncio.create_task(hold(lane, "interactive", INF, log, "blocker", gate))
        await asyncio.sleep(0.01)
        batch = asyncio.create_task(hold(lane, "batch", INF, log, "batch", gate))
        await asyncio.sleep(0.01)
        urgent = asyncio.create_task(hold(lane, "interactive", INF, log, "urgent", gate))
        await asyncio.sleep(0.01)
        with pytest.raises(Shed) as refused:
            async with lane.slot("batch"):
                pass
        with pytest.raises(Shed) as displaced:
            await batch
        gate.set()
        await asyncio.gather(blocker, urgent)
        return log, refused.value, displaced.value

    log, refused, displaced = asyncio.run(main())
    assert log == ["blocker", "urgent"]
    assert refused.reason == "queue_full" and refused.retry_after_s > 0
    assert displaced.reason == "displaced" and displaced.retry_after_s > 0


def test_adapter_expires_waiter_at_its_deadline_and_keeps_accounting():
    async def main():
        lane, log, gate = Lane(concurrency=1, capacity=4), [], asyncio.Event()
        blocker = asyncio.create_task(hold(lane, "batch", INF, log, "blocker", gate))
        await asyncio.sleep(0.01)
        start = time.monotonic()
        with pytest.raises(Shed) as expired:
            async with lane.slot("interactive", time.monotonic() + 0.05):
                log.append("never")
        waited = time.monotonic() - start
        gate.set()
        await blocker
        async with lane.slot("interactive", time.monotonic() + 1):
            log.append("after")
        return log, expired.value, waited, lane.queue

    log, expired, waited, queue = asyncio.run(main())
    assert expired.reason == "expired" and expired.retry_after_s > 0
    assert 0.04 <= waited < 1.0
    assert log == ["blocker", "after"] and queue.in_flight == 0 and len(queue) == 0


def test_adapter_cancelled_waiter_leaves_queue_and_slot_passes_on():
    async def main():
        lane, log, gate = Lane(concurrency=1, capacity=4), [], asyncio.Event()
        blocker = asyncio.create_task(hold(lane, "batch", INF, log, "blocker", gate))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(hold(lane, "interactive", INF, log, "gone", gate))
        stays = asyncio.create_task(hold(lane, "batch", INF, log, "stays", gate))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        assert len(lane.queue) == 1
        gate.set()
        await asyncio.gather(blocker, stays)
        return log, lane.queue.in_flight

    log, in_flight = asyncio.run(main())
    assert log == ["blocker", "stays"] and in_flight == 0


def test_adapter_body_error_releases_slot_and_records_service_time():
    async def main():
        lane = Lane(concurrency=1, capacity=1)
        with pytest.raises(ValueError):
            async with lane.slot("interactive"):
                await asyncio.sleep(0.02)
                raise ValueError("boom")
        return lane.queue

    queue = asyncio.run(main())
    assert queue.in_flight == 0 and queue.service_s >= 0.015


def test_separate_lanes_do_not_block_each_other():
    async def main():
        slow, fast, log, gate = Lane(concurrency=1, capacity=4), Lane(concurrency=1, capacity=4), [], asyncio.Event()
        blocker = asyncio.create_task(hold(slow, "interactive", INF, log, "slow", gate))
        await asyncio.sleep(0.01)
        async with fast.slot("batch", time.monotonic() + 0.5):
            log.append("fast")
        gate.set()
        await blocker
        return log

    assert asyncio.run(main()) == ["slow", "fast"]


def test_resize_hands_new_slots_to_waiters():
    async def main():
        lane, log, gate = Lane(concurrency=1, capacity=4), [], asyncio.Event()
        tasks = [asyncio.create_task(hold(lane, "interactive", INF, log, n, gate)) for n in ("a", "b", "c")]
        await asyncio.sleep(0.01)
        assert log == ["a"]
        lane.resize(3)
        await asyncio.sleep(0.01)
        snapshot = list(log)
        gate.set()
        await asyncio.gather(*tasks)
        return snapshot

    assert asyncio.run(main()) == ["a", "b", "c"]
