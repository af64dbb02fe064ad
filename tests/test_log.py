"""The log on disk: other processes, crashes, locking, retention, bad files, disk full."""

import os
import signal
import subprocess
import sys
import time

import lmdb
import msgpack
import pytest

import streamlog
from streamlog import Retention, StreamBuffer, errors
from streamlog.codec import decode_record, encode_record
from helpers import REPO, Counter, run_python, start_python, wait_until

RECORDER = """
import os, sys, time
import streamlog
from streamlog import SourceReader, StreamBuffer

class Ticker(SourceReader):
    sleep_time_on_read_none_s = 0.0005
    def __init__(self, n, every): self.n, self.every = n, every
    def open(self): self.i = 0; self.next_due = time.monotonic()
    def read(self):
        if self.i >= self.n:
            if hold is None or os.path.exists(hold): raise StopIteration
            return None  # ends only once the file argv[5] exists
        if time.monotonic() < self.next_due: return None
        self.next_due += self.every
        self.i += 1
        return (self.i, b"x" * 32)
    def close(self): pass
    def key(self, data): return data[0]

n, every, hold = int(sys.argv[2]), float(sys.argv[3]), (sys.argv[5:] or [None])[0]
with StreamBuffer(Ticker(n, every), log=sys.argv[1], maxlen=100, durability=sys.argv[4]) as buf:
    print("started", buf.session.id, flush=True)
    buf.wait()
print("done", flush=True)
"""


def record(path, n, payload=b"payload", **kwargs):
    with StreamBuffer(Counter(n, payload=payload), log=path, **kwargs) as buf:
        buf.wait(60)
    return buf.session


def test_restart_appends_a_new_session_and_keeps_the_old(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 100)
    record(path, 50)
    log = streamlog.Log(path)
    assert [(s.id, s.count, s.status) for s in log.sessions()] == [(1, 100, "closed"), (2, 50, "closed")]
    assert log.session(1).tail()[0] == 100 and log.session(-1).tail()[0] == 50
    with pytest.raises(errors.SessionNotFound):
        log.session(7)
    with pytest.raises(errors.SessionNotFound):
        log.session(-3)
    stats = log.stats()
    assert stats["records"] == 150 and stats["sessions"] == 2 and stats["format_version"] == 2
    assert log.verify() == []


def test_another_process_replays_a_closed_session(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 3000, maxlen=10)
    out = run_python("""
        import sys, streamlog
        log = streamlog.Log(sys.argv[1], readonly=True)
        s = log.session(-1)
        keys = [r[0] for r in s.reader()]
        print(s.status, s.count, keys == list(range(1, 3001)), s.range(10, 12), s.head()[0], s.tail()[0])
    """, path)
    assert out.stdout.split()[:4] == ["closed", "3000", "True", "[(10,"]
    assert out.stdout.split()[-2:] == ["1", "3000"]


def test_another_process_follows_a_live_session(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    hold = tmp_path / "end-now"  # the recording ends once this file exists, after its 400 records
    recorder = start_python(RECORDER, path, 400, 0.002, "full", hold)
    follower = None
    try:
        assert recorder.stdout.readline().startswith("started")
        follower = start_python("""
            import sys, streamlog
            log = streamlog.Log(sys.argv[1], readonly=True)
            session = log.session(-1)
            print(session.status, flush=True)
            keys = [r[0] for r in session.reader()]
            print(len(keys), keys == list(range(1, 401)))
        """, path)
        assert follower.stdout.readline().split() == ["live"]
        hold.touch()
        out, err = follower.communicate(timeout=60)
        assert out.split() == ["400", "True"], err
        assert recorder.wait(30) == 0
    finally:
        recorder.kill()
        if follower is not None:
            follower.kill()


@pytest.mark.parametrize("durability", ["full", "normal", "off"])
def test_sigkill_leaves_a_crashed_session_with_a_gap_free_prefix(tmp_path, durability):
    """In every durability mode a killed process loses only what was not yet committed."""
    path = str(tmp_path / "rec.streamlog")
    recorder = start_python(RECORDER, path, 10**9, 0.0001, durability)
    try:
        assert recorder.stdout.readline().startswith("started")
        wait_until(lambda: streamlog.Log(path, readonly=True).session(-1).count > 2000, "records")
    finally:
        recorder.send_signal(signal.SIGKILL)
        recorder.wait(10)
    log = streamlog.Log(path)
    session = log.session(-1)
    assert session.status == "crashed"
    keys = [r[0] for r in session.reader()]
    assert len(keys) == session.count > 2000 and keys == list(range(1, len(keys) + 1))
    assert any("crashed" in problem for problem in log.verify())
    record(path, 10)  # a new writer marks the dead session crashed for good and appends
    assert [s.status for s in streamlog.Log(path).sessions()] == ["crashed", "closed"]


def test_a_second_writer_process_records_its_own_session_beside_the_first(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    recorder = start_python(RECORDER, path, 10**9, 0.01, "full")
    try:
        assert recorder.stdout.readline().startswith("started")
        second = record(path, 10)
        assert (second.id, second.status, second.count) == (2, "closed", 10)
        assert streamlog.Log(path).prune(Retention(max_sessions=1)) == 0  # the live session is never removed
        with streamlog.Log(path) as log:
            with StreamBuffer(Counter(10**9), log=log) as buf:
                wait_until(lambda: buf.committed > 0, "a commit")
                assert log.stats()["writer_pids"] == sorted([recorder.pid, os.getpid()])
                assert [s.status for s in log.sessions()] == ["live", "closed", "live"]
    finally:
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(10)
    assert streamlog.Log(path).stats()["writer_pids"] == []


def test_stale_reader_slots_of_dead_processes_are_cleared_on_open(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 10)
    hold = """
        import sys, lmdb
        env = lmdb.open(sys.argv[1], max_dbs=128, readonly=True)
        txn = env.begin() if sys.argv[2] == "txn" else None
        print("holding", flush=True)
        sys.stdin.read()
    """
    # the keeper keeps the environment open, so LMDB does not reset its reader table
    keeper = start_python(hold, path, "open", stdin=subprocess.PIPE)
    holder = start_python(hold, path, "txn", stdin=subprocess.PIPE)
    try:
        assert keeper.stdout.readline().startswith("holding")
        assert holder.stdout.readline().startswith("holding")
        holder.kill()
        holder.wait()
        log = streamlog.Log(path)
        assert log.stats()["stale_readers_cleared"] >= 1
        log.close()
    finally:
        keeper.kill()
        keeper.wait()


def test_retention_by_bytes_bounds_the_file(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    limit = 2 << 20
    with StreamBuffer(Counter(60_000, payload=b"p" * 300), log=path, maxlen=100,
                      retention=Retention(max_bytes=limit)) as buf:
        reader = buf.mk_reader(skip_pruned=True)
        lagging = buf.mk_reader()
        next(lagging)
        next(reader)
        buf.wait(120)
        served = 1  # what the reader had fetched ahead before the prune is still served
        with pytest.raises(errors.RecordsPruned) as caught:
            while True:
                next(lagging)
                served += 1
        assert caught.value.missed > 10_000 and served < 60_000 - caught.value.missed
        skipped = [r[0] for r in reader]  # skip_pruned: goes on at the oldest record still stored
        assert skipped == sorted(skipped) and skipped[-1] == 60_000 and len(skipped) < 59_000
        assert reader.tail()[0] == 60_000
    size = os.path.getsize(os.path.join(path, "data.mdb"))
    session = buf.session
    assert session.recorded == 60_000 and session.count < 60_000
    assert size <= 1.25 * limit, f"data.mdb is {size} bytes for a {limit}-byte limit"
    keys = [r[0] for r in streamlog.Log(path).session(-1).reader()]
    assert keys == list(range(60_001 - len(keys), 60_001))
    with pytest.raises(errors.LogError, match="closed"):
        reader.tail()


def test_retention_by_bytes_trims_the_excess_not_a_whole_batch(tmp_path):
    """Over the limit, pruning removes about the excess: a 2 MB session under a
    1 MiB limit keeps the newest records filling most of the limit."""
    path = str(tmp_path / "rec.streamlog")
    record(path, 4000, payload=b"b" * 512)
    log = streamlog.Log(path)
    limit = 1 << 20
    removed = log.prune(Retention(max_bytes=limit))
    used = log.stats()["bytes_used"]
    assert 0.5 * limit <= used <= 0.8 * limit, f"{used} bytes in use under a {limit}-byte limit"
    keys = [r[0] for r in log.session(-1).reader()]
    assert keys == list(range(4001 - len(keys), 4001)) and len(keys) == 4000 - removed > 1000


def test_a_reader_whose_next_record_was_pruned_is_told_how_many_it_missed(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 5000)
    log = streamlog.Log(path)
    reader = log.session(-1).reader()
    skipper = log.session(-1).reader(skip_pruned=True)
    assert next(reader)[0] == 1 and next(skipper)[0] == 1
    record(path, 10)
    assert log.prune(Retention(max_sessions=1)) == 5000
    assert [s.id for s in log.sessions()] == [2]
    served = 0  # records the reader fetched ahead before the prune are still served
    with pytest.raises(errors.RecordsPruned) as caught:
        while True:
            next(reader)
            served += 1
    assert 1 + served + caught.value.missed == 5000
    with pytest.raises(errors.RecordsPruned):
        next(reader)  # the cursor did not move
    assert sum(1 for _ in skipper) < 5000


def test_retention_by_age_and_sessions_while_recording(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    for _ in range(3):
        record(path, 100)
    record(path, 100, retention=Retention(max_sessions=2))
    assert [s.id for s in streamlog.Log(path).sessions()] == [3, 4]
    time.sleep(0.05)  # records must be older than max_age
    removed = streamlog.Log(path).prune(Retention(max_age_s=0.01))
    assert removed == 200 and streamlog.Log(path).sessions() == []
    assert record(path, 1).id == 5  # session ids are never reused
    with pytest.raises(ValueError, match="at least one limit"):
        streamlog.Log(path).prune(Retention())


def test_map_grows_by_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(streamlog.store, "INITIAL_MAP_SIZE", 1 << 20)
    path = str(tmp_path / "rec.streamlog")
    with StreamBuffer(Counter(40_000, payload=b"m" * 200), log=path, maxlen=100) as buf:
        reader = buf.mk_reader()
        assert sum(1 for _ in reader) == 40_000
    log = streamlog.Log(path)
    assert log.session(-1).count == 40_000 and log.stats()["map_size"] > 1 << 20


def test_paths_that_are_not_logs(tmp_path):
    with pytest.raises(errors.LogNotFound):
        streamlog.Log(tmp_path / "missing", readonly=True)
    with pytest.raises(errors.LogNotFound):
        streamlog.Log(tmp_path / "missing", create=False)
    plain = tmp_path / "notes.txt"
    plain.write_text("hello")
    with pytest.raises(errors.NotALog, match="is a file"):
        streamlog.Log(plain)
    foreign = tmp_path / "foreign"
    env = lmdb.open(str(foreign))
    with env.begin(write=True) as txn:
        txn.put(b"hello", b"world")
    env.close()
    with pytest.raises(errors.NotALog, match="not a streamlog log"):
        streamlog.Log(foreign)
    other = tmp_path / "other"
    other.mkdir()
    (other / "file").write_text("x")
    with pytest.raises(errors.NotALog):
        streamlog.Log(other, readonly=True)


def test_a_newer_format_version_is_refused(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    record(path, 5)
    env = lmdb.open(path, max_dbs=128)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"format", msgpack.packb({"format": "streamlog", "version": 99, "created": 0}), db=meta)
    env.close()
    with pytest.raises(errors.FormatVersionError, match="version 99"):
        streamlog.Log(path)


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    streamlog.store._stores.clear()
    subprocess.run(["umount", "-l", str(mount)])


def test_disk_full_fails_the_session_clearly_and_keeps_what_was_committed(tiny_disk):
    path = str(tiny_disk / "rec.streamlog")
    with StreamBuffer(Counter(10**6, payload=b"d" * 1000), log=path, maxlen=100) as buf:
        reader = buf.mk_reader()
        committed_seen = 0  # the most records the buffer said were committed before it failed
        deadline = time.monotonic() + 120
        while not buf.wait(0.005) and time.monotonic() < deadline:
            committed_seen = max(committed_seen, buf.committed)
        got = []
        with pytest.raises(errors.SourceFailed, match="the disk is full"):
            for r in reader:
                got.append(r[0])
    assert 0 < len(got) < 10**6 and got[:100] == list(range(1, 101))
    session = streamlog.Log(path, readonly=True).session(-1)
    assert session.status == "failed"
    assert "the disk is full" in session.error
    stored = [r[0] for r in session.irange()]
    # every record counted as committed survives; the group whose commit hit the full disk does not
    assert stored == list(range(1, len(stored) + 1)) and len(stored) >= max(committed_seen, 1)
    assert streamlog.Log(path, readonly=True).verify() == []
    doctor = subprocess.run([sys.executable, "-m", "streamlog", "doctor", path], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert doctor.returncode == 0 and "healthy" in doctor.stdout, doctor.stdout + doctor.stderr
    assert f"{len(stored)}" in doctor.stdout


def test_sessions_written_before_labels_had_their_own_field_still_read(tmp_path):
    path = str(tmp_path / "old.streamlog")
    with StreamBuffer(Counter(3), log=path, labels={"subject": "S01"}) as buf:
        assert buf.wait(30)
    env = lmdb.open(path, max_dbs=8)  # rewrite the entry as a log of the first format-1 releases holds it
    sessions = env.open_db(b"sessions", create=False)
    with env.begin(write=True) as txn:
        key, raw = next(iter(txn.cursor(sessions)))
        meta = decode_record(raw)
        assert meta.pop("labels") == {"subject": "S01"}
        meta["info"]["subject"] = "S01"  # labels were merged into the source's info then
        txn.put(key, encode_record(meta), db=sessions)
    env.close()
    session = streamlog.Log(path, readonly=True).session(-1)
    assert session.labels == {} and session.info == {"kind": "counter", "n": 3, "subject": "S01"}
    assert session.range() == [(i, b"payload") for i in range(1, 4)]


def test_a_log_deleted_and_recorded_again_while_an_old_log_object_lives(tmp_path):
    # the process-wide store of the deleted log was reused: recording raised a bare
    # FileNotFoundError for writer.lock
    import shutil

    path = str(tmp_path / "rec.streamlog")
    with StreamBuffer(Counter(5), log=path) as buf:
        assert buf.wait(30)
    old_log = streamlog.Log(path)
    old_session = old_log.session(-1)
    shutil.rmtree(path)
    with StreamBuffer(Counter(3, payload=b"again"), log=path) as buf:
        assert buf.wait(30)
    with streamlog.Log(path, readonly=True) as log:
        [session] = log.sessions()
        assert (session.id, session.status, session.range()) == (1, "closed", [(i, b"again") for i in range(1, 4)])
    assert old_session.count == 5 and old_log.session(-1).count == 5  # the old objects keep what they opened
    pid = os.fork()  # a child refuses the old log's store too, and opens the new log afresh
    if pid == 0:
        try:
            try:
                old_log.session(-1)
            except errors.LogError:
                with streamlog.Log(path, readonly=True) as log:
                    os._exit(0 if log.session(-1).count == 3 else 1)
            os._exit(3)
        finally:
            os._exit(2)
    assert os.waitpid(pid, 0)[1] == 0
    old_log.close()
    with streamlog.Log(path) as log:  # and closing them leaves the new log's store alone
        assert log.session(-1).range() == [(i, b"again") for i in range(1, 4)]
