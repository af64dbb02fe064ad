"""Durable named cursors: a named reader resumes after its last
acknowledgement, in another process, after SIGKILL too; ``ack="auto"``;
independent names; deleting; ``streamlog cursors``."""

import json
import os
import queue
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import streamlog
from streamlog import StreamBuffer, errors
from streamlog.cli import main
from helpers import PACED_RECORDER, REPO, Gate, run_python, start_python, wait_until
from test_log import record

DEADLINE_S = 120

ACK_EACH_BATCH = """
import sys, streamlog
reader = streamlog.Log(sys.argv[1], create=False).session(-1).reader(name="spectro")
while True:
    batch = reader.read(10)
    print("got", *[record[0] for record in batch], flush=True)
    reader.ack()
    print("acked", batch[-1][0], flush=True)
"""

FOLLOW_AUTO = """
import sys, streamlog
reader = streamlog.Log(sys.argv[1], create=False).session(-1).reader(name="spectro", ack="auto")
print(" ".join(str(record[0]) for record in reader), flush=True)
"""

AUTO_THEN_KILLED = """
import os, signal, sys, streamlog
reader = streamlog.Log(sys.argv[1], create=False).session(-1).reader(name=sys.argv[2], ack="auto")
for _ in range(3):
    if sys.argv[3] == "read":
        print(" ".join(str(record[0]) for record in reader.read(10)), flush=True)
    else:
        print(next(reader)[0], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_after(code, *args):
    """Run ``code`` until it kills itself; its stdout."""
    child = start_python(code, *args)
    out, err = child.communicate(timeout=DEADLINE_S)
    assert child.returncode == -signal.SIGKILL, err
    return out


def test_a_named_cursor_killed_mid_stream_resumes_at_its_last_ack_in_a_new_process(tmp_path, processes):
    path = str(tmp_path / "rec.streamlog")
    items = queue.Queue()
    with StreamBuffer(Gate(items), log=path) as buf:
        for i in range(1, 61):
            items.put((i, "x"))
        first = start_python(ACK_EACH_BATCH, path)
        processes.append(first)
        lines = []
        while sum(line[0] == "got" for line in lines) < 4:  # kill it while it reads the live session
            line = first.stdout.readline()
            assert line, first.stderr.read()
            lines.append(line.split())
        first.send_signal(signal.SIGKILL)
        assert first.wait(DEADLINE_S) == -signal.SIGKILL
        lines += [line.split() for line in first.stdout.read().splitlines()]
        second = start_python(FOLLOW_AUTO, path)  # resumes while the session is live, and follows it
        processes.append(second)
        for i in range(61, 101):
            items.put((i, "x"))
        items.put(StopIteration)
        buf.wait(DEADLINE_S)
        out, err = second.communicate(timeout=DEADLINE_S)
    assert second.returncode == 0, err
    resumed = [int(word) for word in out.split()]
    batches = [[int(word) for word in line[1:]] for line in lines if line[0] == "got"]
    delivered = [key for batch in batches for key in batch]
    assert delivered == list(range(1, len(delivered) + 1))  # in order, nothing skipped before the kill
    acked = resumed[0] - 1
    assert resumed == list(range(acked + 1, 101))  # nothing skipped after the resumption
    ends = [batch[-1] for batch in batches]
    assert acked in ends and ends.index(acked) >= 2  # the end of a batch it acked (the 3rd at least: it printed "got" for a 4th)
    # repeated: only the batch after the last ack, which the kill left unacknowledged
    assert [key for key in delivered if key > acked] == (batches[ends.index(acked) + 1:] or [[]])[0]
    last_printed_ack = max(int(line[1]) for line in lines if line[0] == "acked")
    assert acked in (last_printed_ack, *ends[ends.index(last_printed_ack) + 1:][:1])
    with streamlog.Log(path, readonly=True) as log:
        [cursor] = log.cursors()
    assert (cursor.name, cursor.session, cursor.stream, cursor.seq, cursor.lag) == ("spectro", 1, "main", 99, 0)


@pytest.mark.parametrize("how, resumes_at", [("read", 21), ("next", 3)])
def test_ack_auto_acknowledges_each_batch_when_the_next_read_starts(tmp_path, how, resumes_at):
    path = str(tmp_path / "rec.streamlog")
    record(path, 100)
    out = killed_after(AUTO_THEN_KILLED, path, "auto", how)
    assert out.split() == [str(i) for i in range(1, 31 if how == "read" else 4)]
    with streamlog.Log(path, create=False) as log:
        [cursor] = log.cursors()
        assert (cursor.seq, cursor.lag) == (resumes_at - 2, 100 - resumes_at + 1)
        assert log.session(1).reader(name="auto").next()[0] == resumes_at  # the last batch comes again


def test_two_named_cursors_are_independent_and_a_deleted_one_starts_afresh(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 100)
    killed_after(AUTO_THEN_KILLED, path, "a", "read")  # acked 1..20
    with streamlog.Log(path, create=False) as log:
        session = log.session(1)
        b = session.reader(name="b")
        assert [r[0] for r in b.read(5)] == [1, 2, 3, 4, 5]
        b.ack()
        b.read(5)  # not acked
        assert [(c.name, c.seq, c.lag) for c in log.cursors()] == [("a", 19, 80), ("b", 4, 95)]
        assert session.reader(name="a").next()[0] == 21
        assert session.reader(name="b").next()[0] == 6
        log.delete_cursor("a")
        assert [c.name for c in log.cursors()] == ["b"]
        assert session.reader(name="a").next()[0] == 1
        assert session.reader().next()[0] == 1  # an unnamed reader stores nothing
        assert [c.name for c in log.cursors()] == ["a", "b"]


def test_an_acknowledged_cursor_resumes_when_the_stream_grows(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    items = queue.Queue()
    with StreamBuffer(Gate(items), log=path) as buf:
        for i in range(1, 11):
            items.put((i, "x"))
        with streamlog.Log(path, create=False) as log:
            reader = log.session(-1).reader(name="live")
            assert [reader.next()[0] for _ in range(10)] == list(range(1, 11))
            reader.ack()
            for i in range(11, 21):
                items.put((i, "x"))
            items.put(StopIteration)
            buf.wait(DEADLINE_S)
            assert [r[0] for r in log.session(-1).reader(name="live")] == list(range(11, 21))


def test_a_named_reader_of_the_live_buffer_resumes_after_its_ack_and_is_stored_in_the_log(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    items = queue.Queue()
    with StreamBuffer(Gate(items), log=path) as buf:
        for i in range(1, 11):
            items.put((i, "x"))
        reader = buf.mk_reader(name="live")
        assert [reader.next()[0] for _ in range(6)] == list(range(1, 7))
        reader.ack()
        assert [reader.next()[0] for _ in range(2)] == [7, 8]  # not acknowledged
        again = buf.mk_reader(name="live", ack="auto")
        assert again.next()[0] == 7
        assert again.next()[0] == 8  # acknowledges 7
        with pytest.raises(errors.ConfigurationError, match="needs a named reader"):
            buf.mk_reader(ack="auto")
        with pytest.raises(errors.BadCursorName, match="bad cursor name"):
            buf.mk_reader(name="a b")
        items.put(StopIteration)
        buf.wait(DEADLINE_S)
    with streamlog.Log(path, create=False) as log:
        [cursor] = log.cursors()
        assert (cursor.name, cursor.session, cursor.seq) == ("live", 1, 6)  # records 1..7 (seq 0..6)
        assert log.session(1).reader(name="live").next()[0] == 8


def test_bad_uses_of_named_cursors_are_clear_errors(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 10)
    record(path, 10)
    with streamlog.Log(path, create=False) as log:
        for bad in ("", "a b", "-x", "x" * 129, "ü", "a/b"):
            with pytest.raises(errors.BadCursorName, match="bad cursor name"):
                log.session(1).reader(name=bad)
        with pytest.raises(errors.BadCursorName, match="is a str"):
            log.session(1).reader(name=3)
        log.session(1).reader(name="spectro")
        with pytest.raises(errors.CursorError, match="follows session 1 stream 'main', not session 2"):
            log.session(2).reader(name="spectro")
        with pytest.raises(errors.CursorError, match="has no name"):
            log.session(1).reader().ack()
        with pytest.raises(errors.ConfigurationError, match="needs a named reader"):
            log.session(1).reader(ack="auto")
        with pytest.raises(errors.ConfigurationError, match="'manual' or 'auto'"):
            log.session(1).reader(name="x", ack="sometimes")
        with pytest.raises(errors.CursorNotFound, match="no cursor 'nope' .*spectro"):
            log.delete_cursor("nope")
        reader = log.session(1).reader(name="gone")
        reader.next()
        log.delete_cursor("gone")
        with pytest.raises(errors.CursorNotFound, match="was deleted"):
            reader.ack()
    with streamlog.Log(path, readonly=True) as log:
        with pytest.raises(errors.LogError, match="read-only"):
            log.session(1).reader(name="spectro")
        assert [c.name for c in log.cursors()] == ["spectro"]  # nothing stored by the refused calls


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_cursors_command_lists_and_deletes(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 100)
    result = run("cursors", path)
    assert result.exit_code == 0 and "no named cursors" in result.output
    killed_after(AUTO_THEN_KILLED, path, "spectro", "read")
    result = run("cursors", path)
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header.split()[:5] == ["NAME", "SESSION", "STREAM", "ACKED", "LAG"]
    assert row.split()[:5] == ["spectro", "1", "main", "19", "80"]
    listed = json.loads(run("cursors", path, "--json").output)
    assert [(c["name"], c["session"], c["stream"], c["seq"], c["lag"]) for c in listed] == [
        ("spectro", 1, "main", 19, 80)]
    result = run("cursors", path, "--delete", "nope")
    assert result.exit_code == 1 and "no cursor 'nope'" in result.stderr and "Traceback" not in result.output
    result = run("cursors", path, "--delete", "a b")
    assert result.exit_code == 1 and "bad cursor name" in result.stderr
    result = run("cursors", path, "--delete", "spectro")
    assert result.exit_code == 0 and "Deleted cursor 'spectro'" in result.output
    assert json.loads(run("cursors", path, "--json").output) == []


def test_the_cursors_command_in_a_subprocess(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 100)
    killed_after(AUTO_THEN_KILLED, path, "spectro", "next")
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-m", "streamlog", "cursors", path, "--json"], capture_output=True,
                          text=True, env=env, timeout=DEADLINE_S, check=True)
    assert [(c["name"], c["seq"], c["lag"]) for c in json.loads(done.stdout)] == [("spectro", 1, 98)]
    done = subprocess.run([sys.executable, "-m", "streamlog", "cursors", path, "--delete", "other"],
                          capture_output=True, text=True, env=env, timeout=DEADLINE_S)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "no cursor 'other'" in done.stderr


def test_a_cursor_outlives_its_session(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 100)
    record(path, 100)
    with streamlog.Log(path, create=False) as log:
        first = log.session(1).reader(name="old")
        first.read(10)
        first.ack()
        log.session(2).reader(name="new")
        log.delete_session(1)
        assert [(c.name, c.session, c.seq, c.lag) for c in log.cursors()] == [("new", 2, -1, 100),
                                                                               ("old", 1, 9, None)]


def test_records_pruned_after_a_cursor_are_reported_when_it_resumes(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 3000, payload=b"x" * 2000)
    with streamlog.Log(path, create=False) as log:
        reader = log.session(1).reader(name="slow")
        reader.read(10)
        reader.ack()
        assert log.prune(streamlog.Retention(max_bytes=1 << 20)) > 0
        oldest = log.session(1).head()[0]
        with pytest.raises(errors.RecordsPruned) as pruned:
            log.session(1).reader(name="slow").next()
        assert pruned.value.missed == oldest - 11
        assert log.session(1).reader(name="slow", skip_pruned=True).next()[0] == oldest


# argv: log, session id, cursor name, n.  Reads n records with the named reader, acknowledges them and
# prints their keys.
READ_AND_ACK = """
import sys, streamlog
reader = streamlog.Log(sys.argv[1], create=False).session(int(sys.argv[2])).reader(name=sys.argv[3])
keys = [reader.next()[0] for _ in range(int(sys.argv[4]))]
reader.ack()
print(*keys, flush=True)
"""


@pytest.mark.parametrize("limit", [{"max_age_s": 0.5}, {"max_sessions": 1}])
def test_keep_unacked_holds_back_age_and_session_limits_for_a_lagging_cursor(tmp_path, processes, limit):
    path = str(tmp_path / "rec.streamlog")
    first, second = record(path, 3000, payload=b"k" * 1000), record(path, 3000, payload=b"k" * 1000)
    assert run_python(READ_AND_ACK, path, first.id, "slow", 100).stdout.split() == [str(i) for i in range(1, 101)]
    aged = streamlog.Log(path, create=False).session(second.id).stop_time + 0.5
    wait_until(lambda: time.time() > aged, "every stored record to be older than max_age_s")
    recorder = start_python(PACED_RECORDER, path, json.dumps(dict(limit, keep_unacked=True)), 1000, 100,
                            stdin=subprocess.PIPE)
    processes.append(recorder)
    assert recorder.stdout.readline().startswith("started 3"), recorder.stderr.read()
    with streamlog.Log(path, readonly=True) as log:
        # oldest first: once the session without a cursor went, the lagging one was pruned as far as it may be
        wait_until(lambda: [s.id for s in log.sessions()] == [1, 3], "the session without a cursor to go",
                   timeout=DEADLINE_S)
        kept = [r[0] for r in log.session(1).irange()]
    recorder.stdin.close()
    assert recorder.wait(DEADLINE_S) == 0, recorder.stderr.read()
    assert 1 < kept[0] <= 101, "whole blocks up to the acknowledged record 100 go, nothing after it"
    assert kept == list(range(kept[0], 3001))
    resumed = run_python(READ_AND_ACK, path, first.id, "slow", 2900).stdout.split()
    assert resumed == [str(i) for i in range(101, 3001)]  # nothing it had not acknowledged was removed


# argv: log, limit, go-file.  Records (i, 1 KiB) for i = 1..6144 (6 MiB) under
# Retention(max_bytes=limit, max_age_s=3600, keep_unacked=True), pausing after the 10th record until the
# go-file exists; prints "started <id>", then the records committed.
BYTES_RECORDER = """
import os, sys
from streamlog import Retention, SourceReader, StreamBuffer
class Chunks(SourceReader):
    sleep_time_on_read_none_s = 0.001
    def open(self): self.i = 0
    def read(self):
        if self.i == 10 and not os.path.exists(sys.argv[3]): return None
        if self.i >= 6 * 1024: raise StopIteration
        self.i += 1
        return (self.i, b"r" * 1024)
    def close(self): pass
    def key(self, data): return data[0]
retention = Retention(max_bytes=int(sys.argv[2]), max_age_s=3600, keep_unacked=True)
with StreamBuffer(Chunks(), log=sys.argv[1], retention=retention) as buf:
    print("started", buf.session.id, flush=True)
    buf.wait()
print(buf.committed, flush=True)
"""

# argv: log, cursor name.  The named reader's next read (RecordsPruned expected), then the same name with
# skip_pruned=True to the end of the session, acknowledged; prints "missed N" and the keys it read.
RESUME_AFTER_PRUNED = """
import sys, streamlog
from streamlog import errors
session = streamlog.Log(sys.argv[1], create=False).session(-1)
try:
    session.reader(name=sys.argv[2]).next()
except errors.RecordsPruned as exc:
    print("missed", exc.missed, flush=True)
reader = session.reader(name=sys.argv[2], skip_pruned=True)
print(*[record[0] for record in reader], flush=True)
reader.ack()
"""


def test_keep_unacked_gives_way_to_max_bytes_and_the_cursor_is_told_exactly_what_it_missed(tmp_path, processes):
    path, go, limit = str(tmp_path / "rec.streamlog"), tmp_path / "go", 2 << 20
    recorder = start_python(BYTES_RECORDER, path, limit, go)
    processes.append(recorder)
    assert recorder.stdout.readline().startswith("started 1"), recorder.stderr.read()
    assert run_python(READ_AND_ACK, path, 1, "slow", 10).stdout.split() == [str(i) for i in range(1, 11)]
    go.touch()
    out, err = recorder.communicate(timeout=DEADLINE_S)
    assert recorder.returncode == 0 and out.split() == [str(6 * 1024)], err
    assert os.path.getsize(os.path.join(path, "data.mdb")) <= 1.25 * limit
    with streamlog.Log(path, readonly=True) as log:
        oldest = log.session(1).head()[0]
        [cursor] = log.cursors()
    assert oldest > 11 and (cursor.seq, cursor.lag) == (9, 6 * 1024 - 10)
    missed, resumed = run_python(RESUME_AFTER_PRUNED, path, "slow").stdout.splitlines()
    assert missed == f"missed {oldest - 11}"  # records 11 .. oldest - 1 went before the cursor passed them
    assert resumed.split() == [str(i) for i in range(oldest, 6 * 1024 + 1)]
    with streamlog.Log(path, readonly=True) as log:
        assert [(c.seq, c.lag) for c in log.cursors()] == [(6 * 1024 - 1, 0)]
        assert log.verify() == []


def test_prune_keep_unacked_from_the_shell(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 3000, payload=b"k" * 1000)
    record(path, 10)
    with streamlog.Log(path, create=False) as log:
        reader = log.session(1).reader(name="slow")
        reader.read(100)
        reader.ack()
    result = run("prune", path, "--keep-sessions", "1", "--keep-unacked")
    assert result.exit_code == 0, result.output
    with streamlog.Log(path, readonly=True) as log:
        kept = [r[0] for r in log.session(1).irange()]
    assert 1 < kept[0] <= 101 and kept == list(range(kept[0], 3001))
    assert f"session 1: 3000 -> {len(kept)} records" in result.output
    result = run("prune", path, "--keep-sessions", "1")
    assert result.exit_code == 0 and "sessions removed: 1" in result.output
