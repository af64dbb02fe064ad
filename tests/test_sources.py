"""The ready-made sources, driven directly (open/read/close) and through a
StreamBuffer into a real log."""

import io
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from streamlog import Log, StreamBuffer
from streamlog.sources.command import CommandSource
from streamlog.sources.lines import LineSource
from streamlog.sources.synth import SynthSource, synth_block
from helpers import wait_until

DEADLINE_S = 10.0


def read_until(source, want, deadline_s=DEADLINE_S):
    """Call ``source.read()`` until ``want`` records arrived (or the stream
    ended); return them.  Fails the test at the deadline."""
    records = []
    end = time.monotonic() + deadline_s
    while len(records) < want:
        assert time.monotonic() < end, f"only {len(records)} of {want} records before the deadline: {records}"
        try:
            got = source.read()
        except StopIteration:
            break
        if got is None:
            time.sleep(source.sleep_time_on_read_none_s)
        else:
            records.extend(got)
    return records


def read_all(source):
    """Open the source, read it to its end, close it; return the records."""
    source.open()
    try:
        return read_until(source, sys.maxsize)
    finally:
        source.close()


def ends(source):
    try:
        source.read()
    except StopIteration:
        return True
    return False


def process_gone(pid):
    """True when ``pid`` no longer runs (gone, or a zombie awaiting its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# -- LineSource ---------------------------------------------------------------

def test_lines_of_a_file_numbered_from_one(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("first\nsecond\r\n\nthird é".encode())
    source = LineSource(path)
    assert read_all(source) == [(1, "first"), (2, "second"), (3, ""), (4, "third é")]
    assert source.key((4, "third é")) == 4
    assert source.info["path"] == str(path) and source.info["mode"] == "read"


def test_lines_of_an_empty_file_end_at_once(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    assert read_all(LineSource(path)) == []


def test_lines_undecodable_bytes_are_replaced(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9\n")
    assert read_all(LineSource(path)) == [(1, "caf\ufffd")]
    assert read_all(LineSource(path, encoding="latin-1")) == [(1, "café")]


def test_lines_missing_file_is_a_clear_error_at_open(tmp_path):
    source = LineSource(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="no such file: .*nope.txt"):
        source.open()


def test_lines_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="follow=True needs a file path"):
        LineSource(io.StringIO("x"), follow=True)
    with pytest.raises(LookupError, match="no-such-codec"):
        LineSource(tmp_path / "x", encoding="no-such-codec")
    with pytest.raises(TypeError, match="readable text stream"):
        LineSource(42)


def test_lines_of_a_stream_without_descriptor():
    assert read_all(LineSource(io.StringIO("a\nb\n"))) == [(1, "a"), (2, "b")]


def test_lines_of_a_pipe_do_not_block_while_it_is_silent():
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as stream:
        source = LineSource(stream)
        source.open()
        assert source.read() is None  # nothing written: returns instead of blocking
        os.write(write_fd, b"one\ntw")
        assert read_until(source, 1) == [(1, "one")]
        os.write(write_fd, b"o\n")
        os.close(write_fd)
        assert read_until(source, sys.maxsize) == [(2, "two")]
        assert ends(source)
        source.close()


def test_lines_follow_a_growing_file(tmp_path):
    path = tmp_path / "grow.log"
    path.write_text("old 1\nold 2\n")
    source = LineSource(path, follow=True, poll_s=0.01)
    source.open()
    try:
        assert read_until(source, 2) == [(1, "old 1"), (2, "old 2")]
        assert source.read() is None  # at end of file: waits instead of ending
        with open(path, "a") as f:
            f.write("new 3\nnew ")
            f.flush()
            assert read_until(source, 1) == [(3, "new 3")]
            assert source.read() is None  # the partial line is held back
            f.write("4\n")
        assert read_until(source, 1) == [(4, "new 4")]
        assert source.info["mode"] == "follow" and "restarts" not in source.info
    finally:
        source.close()


def test_lines_follow_detects_truncation(tmp_path):
    path = tmp_path / "trunc.log"
    path.write_text("a long first line\nsecond\n")
    source = LineSource(path, follow=True, poll_s=0.01)
    source.open()
    try:
        assert read_until(source, 2) == [(1, "a long first line"), (2, "second")]
        path.write_text("again\n")  # truncates, then writes less than before
        assert read_until(source, 1) == [(3, "again")]  # numbering keeps counting up
        [restart] = source.info["restarts"]
        assert restart["reason"] == "truncated" and restart["after_line"] == 2
    finally:
        source.close()


def test_lines_follow_detects_a_file_truncated_and_rewritten_longer(tmp_path):
    path = tmp_path / "rewrite.log"
    path.write_text("short\n")
    source = LineSource(path, follow=True, poll_s=0.01)
    source.open()
    try:
        assert read_until(source, 1) == [(1, "short")]
        path.write_text("a much longer first line\n")  # past the read position: size alone cannot tell
        assert read_until(source, 1) == [(2, "a much longer first line")]
        assert source.info["restarts"][0]["reason"] == "truncated"
    finally:
        source.close()


def test_lines_follow_detects_rotation_and_keeps_the_old_tail(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("one\n")
    source = LineSource(path, follow=True, poll_s=0.01)
    source.open()
    try:
        assert read_until(source, 1) == [(1, "one")]
        with open(path, "a") as f:
            f.write("two\nunfinished")
        os.rename(path, tmp_path / "app.log.1")
        path.write_text("fresh\n")
        assert read_until(source, 3) == [(2, "two"), (3, "unfinished"), (4, "fresh")]
        [restart] = source.info["restarts"]
        assert restart["reason"] == "rotated" and restart["after_line"] == 3
    finally:
        source.close()


# -- CommandSource ------------------------------------------------------------

PRINTER = ("import sys\n"
           "print('out 1', flush=True)\n"
           "print('err 1', file=sys.stderr, flush=True)\n"
           "print('out 2')\n"
           "sys.stdout.write('no newline')\n"
           "sys.exit(3)\n")


def test_command_records_both_channels_and_exit_status():
    source = CommandSource([sys.executable, "-c", PRINTER])
    records = read_all(source)
    by_channel = {ch: [line for _, c, line in records if c == ch] for ch in ("stdout", "stderr")}
    assert by_channel == {"stdout": ["out 1", "out 2", "no newline"], "stderr": ["err 1"]}
    keys = [source.key(r) for r in records]
    assert keys == sorted(keys) and all(isinstance(k, int) for k in keys)
    assert abs(keys[0] / 1e6 - time.time()) < 3600  # microseconds since the epoch
    info = source.info
    assert info["exit_status"] == 3 and info["argv"] == [sys.executable, "-c", PRINTER]
    assert info["key_kind"] == "timestamp_us" and isinstance(info["pid"], int)


def test_command_that_cannot_start_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot start command 'no-such-command-xyz'"):
        CommandSource(["no-such-command-xyz", "--flag"]).open()
    with pytest.raises(FileNotFoundError, match="no such file or directory: .*missing-dir"):
        CommandSource([sys.executable, "-c", "pass"], cwd=tmp_path / "missing-dir").open()


def test_command_bad_arguments():
    with pytest.raises(TypeError, match="shlex.split"):
        CommandSource("ls -l")
    with pytest.raises(ValueError, match="argv is empty"):
        CommandSource([])


def test_command_close_stops_the_child_and_its_children():
    spawner = ("import subprocess, sys, time\n"
               "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
               "print(child.pid, flush=True)\n"
               "time.sleep(60)\n")
    source = CommandSource([sys.executable, "-c", spawner], grace_s=5.0)
    source.open()
    [(_, _, grandchild)] = read_until(source, 1)
    source.close()
    assert source.info["exit_status"] == -signal.SIGTERM and source.info["exit_signal"] == "SIGTERM"
    wait_until(lambda: process_gone(int(grandchild)), "the grandchild to end", timeout=DEADLINE_S)


def test_command_close_kills_a_child_that_ignores_sigterm():
    stubborn = ("import signal, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)\n")
    source = CommandSource([sys.executable, "-c", stubborn], grace_s=0.2)
    source.open()
    assert [line for _, _, line in read_until(source, 1)] == ["ready"]
    source.close()
    assert source.info["exit_status"] == -signal.SIGKILL


# -- SynthSource --------------------------------------------------------------

def test_synth_same_seed_gives_identical_records():
    a = read_all(SynthSource(rate_hz=500.0, channels=3, block=50, seed=7, count=20, realtime=False))
    b = read_all(SynthSource(rate_hz=500.0, channels=3, block=50, seed=7, count=20, realtime=False))
    c = read_all(SynthSource(rate_hz=500.0, channels=3, block=50, seed=8, count=20, realtime=False))
    assert [i for i, _ in a] == list(range(20))
    assert all(x.dtype == np.float32 and x.shape == (50, 3) for _, x in a)
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert not np.array_equal(a[0][1], c[0][1])


def test_synth_block_regenerates_from_info():
    source = SynthSource(rate_hz=200.0, channels=2, block=20, seed=3, count=5, realtime=False)
    records = read_all(source)
    info = source.info
    params = {k: info[k] for k in ("rate_hz", "channels", "block", "seed")}
    assert np.array_equal(synth_block(4, **params), records[4][1])


def test_synth_signal_has_the_stated_frequencies():
    source = SynthSource(rate_hz=1000.0, channels=2, block=1000, seed=0, count=1, realtime=False)
    [(_, x)] = read_all(source)
    spectrum = np.abs(np.fft.rfft(x, axis=0))
    peaks_hz = [float(np.argmax(spectrum[:, c])) for c in range(2)]  # 1 Hz per bin
    assert peaks_hz == [round(f) for f in source.info["frequencies_hz"]]


def test_synth_realtime_never_releases_a_block_before_it_is_due():
    source = SynthSource(rate_hz=1000.0, channels=1, block=20, count=5, realtime=True)
    opened = time.monotonic()
    source.open()
    released = []
    deadline = opened + DEADLINE_S
    while len(released) < 5:
        assert time.monotonic() < deadline, f"only {len(released)} blocks released"
        got = source.read()
        now = time.monotonic()
        released.extend((i, now) for i, _ in got or [])
    assert [i for i, _ in released] == [0, 1, 2, 3, 4]
    assert all(at - opened >= (i + 1) * 0.020 for i, at in released)  # block i ends at (i+1)*block/rate
    assert ends(source)
    source.close()


def test_synth_bad_arguments():
    for kwargs, message in [({"rate_hz": 0}, "rate_hz"), ({"rate_hz": float("nan")}, "rate_hz"),
                            ({"channels": 0}, "channels"), ({"block": 2.5}, "block"),
                            ({"seed": -1}, "seed"), ({"count": -1}, "count")]:
        with pytest.raises(ValueError, match=message):
            SynthSource(**kwargs)


def test_synth_count_zero_ends_at_once():
    source = SynthSource(count=0)
    source.open()
    assert ends(source)


# -- through a StreamBuffer into a real log -------------------------------------

def stored(log_path):
    """The last session of the log at ``log_path``: (status, info, records)."""
    with Log(str(log_path), readonly=True, create=False) as log:
        session = log.session(-1)
        return session.status, session.info, session.range()


def test_buffer_records_a_followed_file_live(tmp_path):
    path, log = tmp_path / "app.log", tmp_path / "app.streamlog"
    path.write_text("boot\n")
    with StreamBuffer(LineSource(path, follow=True, poll_s=0.01), log=str(log)) as buf:
        reader = buf.mk_reader()
        assert reader.read(timeout=DEADLINE_S) == (1, "boot")
        with open(path, "a") as f:
            f.write("ready\n")
        assert reader.read(timeout=DEADLINE_S) == (2, "ready")
        path.write_text("after truncation\n")
        assert reader.read(timeout=DEADLINE_S) == (3, "after truncation")
    status, info, records = stored(log)
    assert status == "closed" and records == [(1, "boot"), (2, "ready"), (3, "after truncation")]
    assert info["mode"] == "follow" and info["restarts"][0]["reason"] == "truncated"


def test_buffer_stores_the_exit_status_of_a_command(tmp_path):
    log = tmp_path / "cmd.streamlog"
    buf = StreamBuffer(CommandSource([sys.executable, "-c", PRINTER]), log=str(log), labels={"run": 1}).start()
    assert buf.wait(DEADLINE_S)  # ends by itself once the command exits
    buf.close()
    status, info, records = stored(log)
    assert status == "closed" and info["exit_status"] == 3 and "run" not in info
    with Log(str(log), readonly=True) as opened:
        assert opened.session(-1).labels == {"run": 1}
    assert sorted(line for _, _, line in records) == ["err 1", "no newline", "out 1", "out 2"]


def test_buffer_stop_terminates_a_running_command(tmp_path):
    log = tmp_path / "long.streamlog"
    sleeper = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"
    with StreamBuffer(CommandSource([sys.executable, "-c", sleeper]), log=str(log)) as buf:
        assert buf.mk_reader().read(timeout=DEADLINE_S)[2] == "started"
    status, info, records = stored(log)
    assert status == "closed" and info["exit_status"] == -signal.SIGTERM and len(records) == 1
    assert process_gone(info["pid"])


def test_buffer_stores_synth_blocks_that_regenerate_from_the_session_info(tmp_path):
    log = tmp_path / "synth.streamlog"
    buf = StreamBuffer(SynthSource(rate_hz=800.0, channels=3, block=16, seed=5, count=50, realtime=False),
                       log=str(log)).start()
    assert buf.wait(DEADLINE_S)
    buf.close()
    status, info, records = stored(log)
    assert status == "closed" and [i for i, _ in records] == list(range(50))
    params = {k: info[k] for k in ("rate_hz", "channels", "block", "seed")}
    assert all(np.array_equal(block, synth_block(i, **params)) for i, block in records)


def reads_until_the_end(source, limit=1_000):
    """Call ``source.read()`` until StopIteration; return (records, how many calls returned None)."""
    got, nones = [], 0
    for _ in range(limit):
        try:
            batch = source.read()
        except StopIteration:
            return got, nones
        if batch is None:
            nones += 1
        else:
            got.extend(batch)
    raise AssertionError(f"no end after {limit} reads")


def test_a_16mb_line_is_read_without_a_single_wait(tmp_path):
    # a line longer than one 64 KiB chunk made read() return None once per chunk: the recorder
    # slept 50 ms for each, 16 s for a 16 MB line
    long_line = "x" * (16 << 20)
    path = tmp_path / "long.txt"
    path.write_text(f"short\n{long_line}")  # the last line has no newline
    source = LineSource(path)
    source.open()
    assert reads_until_the_end(source) == ([(1, "short"), (2, long_line)], 0)
    source.close()
    path.write_text(f"{long_line}\nnext\n")
    followed = LineSource(path, follow=True)
    followed.open()
    assert followed.read() == [(1, long_line), (2, "next")]  # one call, while the file has more
    assert followed.read() is None  # nothing new
    followed.close()


def test_a_16mb_line_through_a_pipe_is_one_record(tmp_path):
    long_line = "y" * (16 << 20)
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, f"{long_line}\nlast\n".encode()),
                                              os.close(write_end)))
    with open(read_end, "rb", buffering=0) as stream:
        buf = StreamBuffer(LineSource(stream), log=str(tmp_path / "pipe.streamlog")).start()
        writer.start()
        assert buf.wait(DEADLINE_S)
        writer.join(DEADLINE_S)
        records = buf.mk_reader().read(10)
        buf.close()
    assert [len(line) for _, line in records] == [16 << 20, 4] and records[0] == (1, long_line)
