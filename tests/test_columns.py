"""Session.icolumns: stored streams block by block, column by column, on
real recordings (format 2 blocks, the format-1 log of tests/data, a session
being recorded meanwhile), checked against Session.ientries."""

import shutil
import threading
import time

import numpy as np
import pytest

import streamlog
from streamlog import ReadBatch, SourceReader, StreamBuffer
from streamlog.reader import Columns
from streamlog.records.v2 import BLOCK_RECORDS
from audio_helpers import DEADLINE_S, record
from test_format import V1_LOG


class Records(SourceReader):
    """Hands out ``records`` in ReadBatches of ``batch``; once ``hold`` of them
    are out, hands out nothing (the session stays live) until ``release`` is set."""

    sleep_time_on_read_none_s = 0.001

    def __init__(self, records, batch=500, hold=None, release=None):
        self.records, self.batch, self.hold, self.release = records, batch, hold, release

    def open(self):
        self.i = 0

    def read(self):
        if self.hold is not None and self.i >= self.hold and not self.release.is_set():
            return None
        if self.i >= len(self.records):
            raise StopIteration
        end = len(self.records) if self.hold is None or self.release.is_set() else self.hold
        chunk = self.records[self.i:min(end, self.i + self.batch)]
        self.i += len(chunk)
        return ReadBatch(chunk)

    def close(self):
        pass

    def key(self, data):
        return data["n"] if type(data) is dict else data[0]


def rows(blocks):
    """``(key, arrival_us, record)`` of every record of ``blocks`` (Columns), checking each block's shape."""
    out = []
    for block in blocks:
        assert isinstance(block, Columns) and len(block.keys) > 0
        assert block.times_us.dtype == np.int64 and len(block.times_us) == len(block.keys) == len(block.records)
        out.extend(zip(block.keys, block.times_us.tolist(), block.records))
    return out


def entry_rows(entries):
    return [(e.key, e.arrival_us, e.record) for e in entries]


def test_a_session_of_many_blocks_reads_as_ientries_does_block_by_block(lab_log):
    written = [(i, i * 0.5, f"r{i % 7}") for i in range(10_000)]
    session = record(Records(written), lab_log)
    blocks = list(session.icolumns())
    assert len(blocks) >= 10_000 // BLOCK_RECORDS and all(len(b.keys) <= BLOCK_RECORDS for b in blocks)
    got = rows(blocks)
    assert got == entry_rows(session.ientries())
    assert [key for key, _, _ in got] == list(range(10_000)) and [r for _, _, r in got] == written
    assert all(type(key) is int for key, _, _ in got)


def test_key_bounds_are_inclusive_and_keys_decode_as_stored(lab_log):
    session = record(Records([(i, -i) for i in range(5_000)]), lab_log)
    assert [key for key, _, _ in rows(session.icolumns(1_000, 3_000))] == list(range(1_000, 3_001))
    assert [key for key, _, _ in rows(session.icolumns(4_990))] == list(range(4_990, 5_000))
    assert [key for key, _, _ in rows(session.icolumns(None, 0))] == [0]
    assert list(session.icolumns(5_000)) == [] and list(session.icolumns(7, 6)) == []
    floats = record(Records([(i / 2, i) for i in range(3_000)]), lab_log)
    got = rows(floats.icolumns(10, 1_000))
    assert got == entry_rows(floats.ientries(10, 1_000))
    assert [key for key, _, _ in got] == [i / 2 for i in range(20, 2_001)] and type(got[0][0]) is float
    big = [(-5, 0), (0, 1), (2**56 - 1, 2), (2**56, 3), (2**70, 4)] + [(2**70 + i, 5 + i) for i in range(1, 200)]
    big_session = record(Records(big), lab_log)
    assert rows(big_session.icolumns()) == entry_rows(big_session.ientries())
    assert [key for key, _, _ in rows(big_session.icolumns())] == [k for k, _ in big]


def test_since_and_until_select_by_arrival_time_inclusive(lab_log):
    session = record(Records([(i, i) for i in range(6_000)], batch=50), lab_log)
    every = entry_rows(session.ientries())
    t0, t1 = every[1_500][1], every[4_200][1]
    assert t0 < t1
    got = rows(session.icolumns(since=t0 / 1e6, until=t1 / 1e6))
    assert got == entry_rows(session.ientries(since=t0 / 1e6, until=t1 / 1e6))
    assert got == [row for row in every if t0 <= row[1] <= t1] and got[0][1] == t0 and got[-1][1] == t1
    assert rows(session.icolumns(2_000, 3_000, since=t0 / 1e6)) == [r for r in every if 2_000 <= r[0] <= 3_000]
    assert list(session.icolumns(since=every[-1][1] / 1e6 + 1)) == []


def test_each_stream_of_a_session_reads_alone(lab_log):
    joined = threading.Event()  # the main stream ends (and with it the session) only once the side one joined
    with StreamBuffer(Records([(i, "main") for i in range(3_000)], hold=1_000, release=joined), log=lab_log) as buf:
        other = StreamBuffer(Records([(i * 10, "side") for i in range(1_500)]), log=lab_log, session=buf.session,
                             stream="side")
        with other:
            joined.set()
            assert buf.wait(DEADLINE_S) and other.wait(DEADLINE_S)
        session = buf.session.refresh()
    assert rows(session.icolumns(stream="side")) == entry_rows(session.ientries(stream="side"))
    assert {r for _, _, (_, r) in rows(session.icolumns(stream="side"))} == {"side"}
    assert len(rows(session.icolumns())) == 3_000


def test_a_format_1_log_reads_through_the_same_method(tmp_path):
    path = tmp_path / "old.streamlog"
    shutil.copytree(V1_LOG, path)
    with streamlog.Log(path, readonly=True) as log:
        assert log.format_version == 1
        s1, s2, _ = log.sessions()
        assert rows(s1.icolumns()) == entry_rows(s1.ientries())
        assert [key for key, _, _ in rows(s1.icolumns(100, 102))] == [100, 101, 102]
        assert rows(s1.icolumns(stream="markers")) == entry_rows(s1.ientries(stream="markers"))
        t = next(s1.ientries(150)).arrival_us / 1e6
        assert rows(s1.icolumns(since=t, until=t)) == entry_rows(s1.ientries(since=t, until=t)) != []
        got = rows(s2.icolumns(("a", 3), ("a", 5)))
        assert [key for key, _, _ in got] == [("a", 3), ("a", 4), ("a", 5)]
        assert all(np.array_equal(r[1], np.full(2048, i, dtype=np.int16)) for _, _, r in got for i in [r[0][1]])


def test_a_session_being_recorded_gives_its_committed_records_without_gaps_or_repeats(tmp_path):
    release = threading.Event()
    written = [(i, i * 2) for i in range(20_000)]
    path = tmp_path / "live.log"
    with StreamBuffer(Records(written, hold=5_000, release=release), log=path, maxlen=1_000) as buf:
        with streamlog.Log(path, readonly=True) as log:
            deadline = time.monotonic() + DEADLINE_S
            while log.session(buf.session.id).count < 5_000:
                assert time.monotonic() < deadline, "the first records were not committed"
                time.sleep(0.001)
            session = log.session(buf.session.id)
            assert session.status == "live"
            assert rows(session.icolumns()) == [(k, t, r) for (k, t, r) in entry_rows(session.ientries())]
            assert [key for key, _, _ in rows(session.icolumns())] == list(range(5_000))
            blocks = session.icolumns()
            first = next(blocks)  # the scan goes on while the rest is recorded
            release.set()
            got = rows([first]) + rows(blocks)
            keys = [key for key, _, _ in got]
            assert keys == list(range(len(keys))) and len(keys) >= 5_000
            assert [r for _, _, r in got] == written[:len(keys)]
        assert buf.wait(DEADLINE_S)
    with streamlog.Log(path, readonly=True) as log:
        assert [r for _, _, r in rows(log.session(-1).icolumns())] == written


def test_to_pandas_and_to_numpy_read_block_by_block_as_record_by_record(lab_log):
    pd = pytest.importorskip("pandas")
    from streamlog.frames import flatten

    def make(i):  # uniform flat dicts for a few blocks, then fields that come, go, nest and clash
        if i < 3_000:
            return {"n": i, "x": i / 4, "ok": i % 2 == 0}
        if i < 3_500:
            return {"x": i / 4, "n": i, "extra": f"e{i}"}
        if i < 4_000:
            return {"n": i, "time": -i, "pos": {"a": i % 3}}
        return (i, {"n": i}) if i % 2 else (i, 0.5 * i)
    written = [make(i) for i in range(4_500)]
    session = record(Records(written, batch=700), lab_log)
    assert session.status == "closed" and session.count == 4_500
    got = session.to_pandas()
    cells = [flatten(e.record[1] if type(e.record) is tuple else e.record) for e in session.ientries()]
    expected = pd.DataFrame({"key": list(range(4_500)),
                             "time": pd.to_datetime([e.arrival_us for e in session.ientries()], unit="us", utc=True)
                             .as_unit("ns"),
                             **{name: [c.get(name) for c in cells] for name in dict.fromkeys(
                                 name for c in cells for name in c)}})
    pd.testing.assert_frame_equal(got, expected)
    pairs = record(Records([(i, i * 0.5) for i in range(3_000)] + [(3_000, (1, 2.5))]), lab_log)
    assert [e.key for e in pairs.ientries()][-1] == 3_000
    numbers = pairs.to_numpy(stop=2_999)
    assert np.array_equal(numbers.values, np.arange(3_000) * 0.5) and np.array_equal(numbers.keys, np.arange(3_000))
