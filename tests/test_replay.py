"""A stored session replayed as a live source: records, keys and order as
recorded, at the original pace (or faster), through a live pipeline, from
Python and from the CLI."""

import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import streamlog
from streamlog import ReadBatch, SourceReader, StreamBuffer
from streamlog.cli import main
from streamlog.sources.replay import ReplaySource
from streamlog.sources.synth import SynthSource
from audio_helpers import DEADLINE_S, record


class Paced(SourceReader):
    """``count`` records ``(i, {"v": i * 1.5})``, record ``i`` due ``i * period_s`` after open."""

    def __init__(self, count, period_s):
        self.count, self.period_s = count, period_s

    def open(self):
        self.i = 0
        self.t0 = time.monotonic()

    def read(self):
        if self.i >= self.count:
            raise StopIteration
        if time.monotonic() < self.t0 + self.i * self.period_s:
            return None
        self.i += 1
        return (self.i - 1, {"v": (self.i - 1) * 1.5})

    def close(self):
        pass

    def key(self, data):
        return data[0]

    sleep_time_on_read_none_s = 0.001


class OpenedAt(ReplaySource):
    """A ReplaySource that notes the wall-clock time (µs) its schedule started at, in ``opened_us``
    (just after: the schedule starts at the end of ``open()``)."""

    def open(self):
        super().open()
        self.opened_us = time.time_ns() // 1000


def arrivals(session):
    return np.array([e.arrival_us for e in session.ientries()], dtype=np.int64)


def test_replay_as_fast_as_possible_feeds_a_live_pipeline_every_record(tmp_path):
    with streamlog.Log(tmp_path / "old.log") as old_log:
        old = record(SynthSource(rate_hz=1000, channels=2, block=50, count=200, realtime=False), old_log)
        with StreamBuffer(ReplaySource(old, speed=None), log=tmp_path / "new.log") as buf:
            reader = buf.mk_reader()
            got = list(reader)
        new = streamlog.Log(tmp_path / "new.log").session(-1)
        expected = old.range()
        assert len(got) == 200
        assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(got, expected))
        assert [e.key for e in new.ientries()] == list(range(200))
        assert new.info["replay_of"] == {"log": old_log.path, "session": old.id, "stream": "main", "speed": None}
        assert new.info["rate_hz"] == 1000 and np.array_equal(new.to_numpy().values, old.to_numpy().values)


def test_replay_keeps_the_original_pace_scaled_by_speed_and_is_never_early(tmp_path):
    with streamlog.Log(tmp_path / "old.log") as old_log:
        old = record(Paced(30, 0.01), old_log)
        source = OpenedAt(old, speed=2.0)
        with StreamBuffer(source, log=tmp_path / "new.log") as buf:
            assert buf.wait(DEADLINE_S)
        new = streamlog.Log(tmp_path / "new.log").session(-1)
        assert new.range() == old.range() and new.count == 30
        before, after = arrivals(old), arrivals(new)
        due = (before - before[0]) / 2.0
        # the schedule runs from open(), not from the first replayed record (which a loaded machine may delay)
        assert np.all(after - source.opened_us >= due - 1000)  # 1 ms for the arrival clock's rounding
        assert (before[-1] - before[0]) >= 29 * 10_000 - 1000


def test_replay_of_a_key_range_and_of_an_arrival_time_range(tmp_path):
    with streamlog.Log(tmp_path / "old.log") as old_log:
        old = record(Paced(40, 0.0), old_log)
        part = record(ReplaySource(old, speed=None, start=10, stop=19), streamlog.Log(tmp_path / "a.log"))
        assert part.range() == old.range(10, 19)
        times = arrivals(old)
        by_time = record(ReplaySource(old, speed=None, start=times[5] / 1e6, stop=times[30] / 1e6, by="time"),
                         streamlog.Log(tmp_path / "b.log"))
        inside = [r for r, t in zip(old.range(), times) if times[5] <= t <= times[30]]
        assert by_time.range() == inside and len(inside) >= 26


def test_a_bad_speed_is_refused(tmp_path):
    with streamlog.Log(tmp_path / "old.log") as old_log:
        old = record(Paced(3, 0.0), old_log)
        for speed in (0, -1, float("nan"), "fast", True):
            with pytest.raises(ValueError, match="speed must be a positive number or None"):
                ReplaySource(old, speed=speed)


def test_record_replay_from_the_cli(tmp_path):
    old_path, new_path = tmp_path / "old.log", tmp_path / "new.log"
    with streamlog.Log(old_path) as old_log:
        first = record(Paced(12, 0.0), old_log)
        record(Paced(5, 0.0), old_log)
        expected = first.range()
    result = CliRunner().invoke(main, ["record", "replay", str(new_path), str(old_path), "-s", "1", "--speed", "4"])
    assert result.exit_code == 0, result.output
    assert "session 1 closed: 12 records" in result.stdout
    with streamlog.Log(new_path, readonly=True) as log:
        assert log.session(-1).range() == expected and log.session(-1).info["replay_of"]["speed"] == 4.0
    done = subprocess.run([sys.executable, "-m", "streamlog", "record", "replay", str(new_path), str(old_path),
                           "-s", "2", "--fast", "-q"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with streamlog.Log(new_path, readonly=True) as log:
        assert [s.count for s in log.sessions()] == [12, 5]
    bad = subprocess.run([sys.executable, "-m", "streamlog", "record", "replay", str(new_path), str(old_path),
                          "-s", "9"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [f"Error: log {old_path} has no session 9"]


def test_batches_of_replayed_records_keep_their_keys(tmp_path):
    class Batches(Paced):
        def read(self):
            if self.i >= self.count:
                raise StopIteration
            batch = ReadBatch((i, {"v": i}) for i in range(self.i, self.i + 10))
            self.i += 10
            return batch

    with streamlog.Log(tmp_path / "old.log") as old_log:
        old = record(Batches(100, 0.0), old_log)
        new = record(ReplaySource(old, speed=1.0), streamlog.Log(tmp_path / "new.log"))
        assert [e.key for e in new.ientries()] == list(range(100)) and new.range() == old.range()
