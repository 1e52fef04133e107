"""The metering spool: records survive a killed process, and the next gateway puts them in the database once.

Real files, a real SQLite/PostgreSQL database; "killed" is a sink whose writer never ran and whose spool was
never closed, with its segments' locks released as the kernel releases a dead process's.
"""

from __future__ import annotations

import fcntl
import os

import sqlalchemy as sa

from compoundry.metering import MeteringSink
from compoundry.metering.recovery import recover_spools
from compoundry.metering.spool import Spool, orphaned_segments, read_segment
from compoundry.store.tables import metering_table
from tests.unit.test_metering import rec


def _rows(store) -> list[tuple[str, bool]]:
    with store.engine.connect() as conn:
        return sorted(conn.execute(sa.select(metering_table.c.request_id, metering_table.c.delivered)).all())


def _die(spool: Spool) -> None:
    """What the kernel does to a killed process's files: its locks go, its data stays."""
    for fd in [spool._fd, *(fd for _, fd in spool._finished.values())]:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def test_a_live_process_segments_are_not_anyone_elses_to_recover(tmp_path):
    spool = Spool(tmp_path)
    spool.append(rec(1), delivered=True)
    assert list(orphaned_segments(tmp_path)) == []
    spool.close()


def test_records_of_a_killed_gateway_are_recovered_once_with_their_delivery(store, tmp_path):
    sink = MeteringSink(store.engine, batch_size=2, start=False, spool=Spool(tmp_path))
    sink.record(rec(1))                                  # a direct call: queued at once
    sink.flush_now()                                     # ... and written: its segment is deleted
    answered = sink.hold(rec(2))                         # a request whose answer went out...
    sink.release([(rec(2), answered)], delivered=True)
    sink.hold(rec(3))                                    # ... and one killed before its answer was sent
    _die(sink._spool)
    recovered = recover_spools(tmp_path, store.engine)
    assert recovered == 2
    assert [r for r, _ in _rows(store)] == ["req-1", "req-2", "req-3"]
    assert dict(_rows(store)) == {"req-1": True, "req-2": True, "req-3": False}
    assert recover_spools(tmp_path, store.engine) == 0 and list(tmp_path.glob("*.jsonl")) == []


def test_a_segment_whose_rows_were_written_before_the_kill_is_not_written_twice(store, tmp_path):
    sink = MeteringSink(store.engine, batch_size=10, start=False, spool=Spool(tmp_path))
    for i in range(3):
        sink.record(rec(i))
    sink._spool.settle = lambda segments: None  # killed after the insert, before the segment was deleted
    sink.flush_now()
    _die(sink._spool)
    assert recover_spools(tmp_path, store.engine) == 0
    assert len(_rows(store)) == 3


def test_a_graceful_close_leaves_no_segment_and_a_torn_line_is_skipped(store, tmp_path):
    sink = MeteringSink(store.engine, batch_size=10, start=False, spool=Spool(tmp_path))
    for i in range(25):
        sink.record(rec(i))
    assert sink.close(5) and list(tmp_path.glob("*.jsonl")) == []
    torn = tmp_path / "metering-1-x-000001.jsonl"
    torn.write_text('{"n":1,"r":{"timestamp":"2026-')
    assert read_segment(torn) == []


def test_requests_not_answered_are_stored_not_delivered(store, tmp_path):
    sink = MeteringSink(store.engine, batch_size=10, start=False, spool=Spool(tmp_path))
    held = sink.hold(rec(7))
    sink.release([(rec(7), held)], delivered=False)  # the client went away mid-stream
    sink.close(5)
    assert _rows(store) == [("req-7", False)]


def test_a_delivery_mark_made_after_a_rotation_is_found_with_its_record(store, tmp_path):
    """The answer line is written after the flush that rotated the segment: it goes to the record's segment."""
    sink = MeteringSink(store.engine, batch_size=10, start=False, spool=Spool(tmp_path))
    handle = sink.hold(rec(5))
    sink.record(rec(6))
    sink._spool.rotate()  # a flush started a new segment meanwhile
    sink.release([(rec(5), handle)], delivered=True)
    _die(sink._spool)
    assert recover_spools(tmp_path, store.engine) == 2
    assert dict(_rows(store)) == {"req-5": True, "req-6": True}


def test_an_empty_segment_of_a_killed_gateway_is_cleared_and_a_live_ones_never(store, tmp_path):
    dead, live = Spool(tmp_path), Spool(tmp_path)
    _die(dead)  # killed right after a rotation: its newest segment is empty
    assert recover_spools(tmp_path, store.engine) == 0
    assert list(tmp_path.glob("*.jsonl")) == [live.path]
    live.close()
    assert list(tmp_path.glob("*.jsonl")) == []
