"""Several processes writing one log: joined sessions, per-writer liveness,
a killed writer among live ones, shared retention, racing creators."""

import json
import os
import signal
import subprocess

import pytest
from click.testing import CliRunner

import streamlog
from streamlog import Retention, StreamBuffer, errors
from streamlog.cli import main
from helpers import PACED_RECORDER, Counter, Gate, run_python, start_python
from helpers import wait_until as wait_for
from test_misbehaving_readers import kill_inside_a_read_transaction

DEADLINE_S = 120

# argv: log, stream, session ("new" or an id), count (0: endless), go-file.  Records (i, stream, payload)
# for i = 1.. as fast as it can once the go-file exists; prints "started <session id>" once it is recording,
# and at the end the records it committed and the map size of its process.
WRITER = """
import os, sys
import streamlog
from streamlog import SourceReader, StreamBuffer

class Burst(SourceReader):
    sleep_time_on_read_none_s = 0.001
    def __init__(self, stream, count, go): self.stream, self.count, self.go = stream, count, go
    def open(self): self.i = 0; self.going = False
    def read(self):
        if not self.going:
            self.going = os.path.exists(self.go)
            return None
        if self.count and self.i >= self.count: raise StopIteration
        self.i += 1
        return (self.i, self.stream, b"x" * 64)
    def close(self): pass
    def key(self, data): return data[0]

path, stream, session, count, go = sys.argv[1:6]
session = None if session == "new" else int(session)
with StreamBuffer(Burst(stream, int(count), go), log=path, stream=stream, session=session, maxlen=1000) as buf:
    print("started", buf.session.id, flush=True)
    buf.wait()
    print(buf.committed, streamlog.Log(path).stats()["map_size"], flush=True)
"""

# argv: log, session id, streams...  Follows every stream in a thread of its own; prints "following",
# then one JSON line {stream: [keys]} once every stream has ended.
FOLLOWER = """
import json, sys, threading
import streamlog
path, session_id, streams = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
session = streamlog.Log(path, readonly=True).session(session_id)
readers = {stream: session.reader(stream) for stream in streams}
seen = {stream: [] for stream in streams}
def follow(stream):
    seen[stream] = [record[0] for record in readers[stream]]
threads = [threading.Thread(target=follow, args=(stream,)) for stream in streams]
for thread in threads:
    thread.start()
print("following", flush=True)
for thread in threads:
    thread.join()
print(json.dumps(seen), flush=True)
"""


def start_writer(processes, path, stream, session, count, go):
    process = start_python(WRITER, path, stream, session, count, go)
    processes.append(process)
    line = process.stdout.readline()
    assert line.startswith("started"), process.stderr.read()
    return process, int(line.split()[1])


def test_three_writers_one_killed_half_way_and_a_follower_of_all_three(tmp_path, processes):
    path, go, count = tmp_path / "lab.streamlog", tmp_path / "go", 20_000
    eeg, session_id = start_writer(processes, path, "eeg", "new", count, go)
    audio, joined = start_writer(processes, path, "audio", session_id, 0, go)  # endless: killed half-way
    markers, joined_too = start_writer(processes, path, "markers", session_id, count, go)
    assert joined == joined_too == session_id
    follower = start_python(FOLLOWER, path, session_id, "eeg", "audio", "markers")
    processes.append(follower)
    assert follower.stdout.readline() == "following\n", follower.stderr.read()
    go.touch()

    with streamlog.Log(path, readonly=True) as log:
        wait_for(lambda: log.session(session_id).stream_info("audio")["recorded"] >= count // 2,
                 timeout=DEADLINE_S, what="half of the audio stream")
        audio.send_signal(signal.SIGKILL)
        assert audio.wait(DEADLINE_S) == -signal.SIGKILL
        assert eeg.wait(DEADLINE_S) == 0 and markers.wait(DEADLINE_S) == 0
        out, err = follower.communicate(timeout=DEADLINE_S)
        assert follower.returncode == 0, err
        seen = json.loads(out)

        session = log.session(session_id)
        assert session.status == "crashed"  # crashed wins over closed
        assert {stream: session.stream_status(stream) for stream in session.streams} == {
            "eeg": "closed", "audio": "crashed", "markers": "closed"}
        assert session.stop_time is not None  # the last writer to end stored the outcome
        for stream in ("eeg", "markers"):
            assert [r[0] for r in session.irange(stream=stream)] == list(range(1, count + 1)) == seen[stream]
        stored = [r[0] for r in session.irange(stream="audio")]
        assert len(stored) >= count // 2 and stored == list(range(1, len(stored) + 1)) == seen["audio"]
        assert session.stream_pid("audio") == audio.pid and session.pid == eeg.pid
        assert log.stats()["writer_pids"] == []


def test_joining_the_newest_live_session_from_this_process(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    with pytest.raises(errors.SessionNotFound, match="no live session to join"):
        StreamBuffer(Counter(3), log=path, session="join", stream="eeg").start()
    items = __import__("queue").Queue()
    with StreamBuffer(Gate(items), log=path) as main:
        with StreamBuffer(Counter(5), log=path, session="join", stream="eeg") as eeg:
            eeg.wait(DEADLINE_S)
        assert eeg.session.id == main.session.id and main.session.refresh().status == "live"
        with pytest.raises(errors.StreamNameTaken, match="already has a stream 'eeg' \\(closed"):
            StreamBuffer(Counter(5), log=path, session="join", stream="eeg").start()
        with pytest.raises(errors.StreamNameTaken, match="already has a stream 'main'"):
            StreamBuffer(Counter(5), log=path, session=main.session.id).start()
        with pytest.raises(ValueError, match="session must be None, 'join'"):
            StreamBuffer(Counter(5), log=path, session="newest")
        items.put((1, "x"))
        items.put(StopIteration)
        main.wait(DEADLINE_S)
    session = streamlog.Log(path).session(-1)
    assert session.status == "closed" and session.streams == ["main", "eeg"]
    assert session.count == 1 and session.stream_info("eeg")["count"] == 5
    with pytest.raises(errors.SessionNotFound, match="is closed, not live"):
        StreamBuffer(Counter(3), log=path, session=session.id, stream="late").start()


def test_a_failed_stream_fails_the_session_once_every_stream_ended(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    items = __import__("queue").Queue()
    with StreamBuffer(Gate(items), log=path) as main:
        with StreamBuffer(Counter(5, fail_at=3), log=path, session="join", stream="probe") as probe:
            probe.wait(DEADLINE_S)
        assert main.session.refresh().status == "live"
        items.put(StopIteration)
        main.wait(DEADLINE_S)
    session = streamlog.Log(path).session(-1)
    assert (session.status, session.stream_status("main"), session.stream_status("probe")) == (
        "failed", "closed", "failed")
    assert session.error == "stream 'probe': read() failed: RuntimeError: sensor unplugged at 3"
    assert list(session.irange()) == []  # the main stream itself ended cleanly


# argv: log, limit; records 1 KiB records into a new session until 6 MiB went in, under Retention(max_bytes)
RETAINED = """
import sys
from streamlog import Retention, SourceReader, StreamBuffer
class Chunks(SourceReader):
    def open(self): self.i = 0
    def read(self):
        if self.i >= 6 * 1024: raise StopIteration
        self.i += 1
        return (self.i, b"r" * 1024)
    def close(self): pass
    def key(self, data): return data[0]
with StreamBuffer(Chunks(), log=sys.argv[1], retention=Retention(max_bytes=int(sys.argv[2]))) as buf:
    buf.wait()
print(buf.committed)
"""


def test_retention_by_bytes_holds_with_three_writers_at_once(tmp_path):
    path, limit = tmp_path / "rec.streamlog", 2 << 20
    writers = [start_python(RETAINED, path, limit) for _ in range(3)]
    outs = [w.communicate(timeout=DEADLINE_S) for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0], [err for _, err in outs]
    assert [out.split() for out, _ in outs] == [[str(6 * 1024)]] * 3
    assert os.path.getsize(path / "data.mdb") <= 1.25 * limit
    with streamlog.Log(path) as log:
        assert log.verify() == []
        kept = [s.id for s in log.sessions()]  # a session that ended first may be emptied, then dropped
        assert kept and set(kept) <= {1, 2, 3}
        assert log.stats()["bytes_used"] <= limit


# argv: parent directory, trials.  Per trial two forked children wait at one pipe, then both record ten
# records into the same new log while a third opens it read-only until it exists (never seeing a log
# half made); prints the children's exit statuses, one list per trial.
RACE = """
import json, os, sys
from streamlog import Log, StreamBuffer, errors
from streamlog.sources.synth import SynthSource

def read_until_it_exists(path):
    while True:
        try:
            with Log(path, readonly=True, create=False):
                return 0
        except errors.LogNotFound:
            continue
        except errors.NotALog as exc:
            print(repr(exc), file=sys.stderr, flush=True)
            return 5

base, trials = sys.argv[1], int(sys.argv[2])
statuses = []
for trial in range(trials):
    start, go = os.pipe()
    children = []
    for role in ("writer", "writer", "reader"):
        pid = os.fork()
        if pid == 0:
            os.close(go)
            os.read(start, 1)
            if role == "reader":
                os._exit(read_until_it_exists(f"{base}/log{trial}"))
            try:
                with StreamBuffer(SynthSource(count=10, realtime=False), log=f"{base}/log{trial}") as buf:
                    buf.wait(60)
                os._exit(0 if buf.session.status == "closed" else 3)
            except BaseException as exc:
                print(repr(exc), file=sys.stderr, flush=True)
                os._exit(4)
        children.append(pid)
    os.close(start)
    os.write(go, b"ggg")
    os.close(go)
    statuses.append([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children])
print(json.dumps(statuses))
"""


def test_fifty_races_of_two_processes_creating_one_new_log(tmp_path):
    result = run_python(RACE, tmp_path, 50, timeout=300)
    assert json.loads(result.stdout) == [[0, 0, 0]] * 50, result.stderr
    for trial in range(50):
        with streamlog.Log(tmp_path / f"log{trial}", create=False) as log:
            assert [(s.id, s.status, s.count) for s in log.sessions()] == [(1, "closed", 10), (2, "closed", 10)]
            assert log.verify() == []


# WRITER with a 1 MiB initial map, so the map must grow many times while the other writers write.
SMALL_MAP_WRITER = "import streamlog.store\nstreamlog.store.INITIAL_MAP_SIZE = 1 << 20\n" + WRITER


def test_the_map_grows_while_three_writers_write_and_every_one_carries_on(tmp_path, processes):
    path, go, count = tmp_path / "lab.streamlog", tmp_path / "go", 60_000
    writers = []
    for stream in ("a", "b", "c"):
        writer = start_python(SMALL_MAP_WRITER, path, stream, writers[0][1] if writers else "new", count, go)
        processes.append(writer)
        line = writer.stdout.readline()
        assert line.startswith("started"), writer.stderr.read()
        writers.append((writer, int(line.split()[1])))
    go.touch()
    outs = [writer.communicate(timeout=DEADLINE_S) for writer, _ in writers]
    assert [writer.returncode for writer, _ in writers] == [0, 0, 0], [err for _, err in outs]
    with streamlog.Log(path, create=False) as log:
        used = log.stats()["bytes_used"]
        session = log.session(writers[0][1])
        assert session.status == "closed" and log.verify() == []
        for stream in ("a", "b", "c"):
            assert [r[0] for r in session.irange(stream=stream)] == list(range(1, count + 1))
    assert used > 8 << 20  # the map began at 1 MiB: it grew at least four times
    for out, _ in outs:
        committed, map_size = map(int, out.split())
        assert committed == count and map_size >= used  # each writer grew the map or adopted another's growth


def test_a_reader_killed_inside_a_read_transaction_is_cleared_by_one_of_three_writers(tmp_path, processes):
    path, limit = str(tmp_path / "rec.streamlog"), 2 << 20
    with streamlog.Log(path) as log:  # opened before the kill: opening clears stale slots by itself
        retention = json.dumps({"max_bytes": limit})
        writers = [start_python(PACED_RECORDER, path, retention, 2000, 1024, stdin=subprocess.PIPE) for _ in range(3)]
        processes.extend(writers)
        assert all(w.stdout.readline().startswith("started") for w in writers), [w.stderr.read() for w in writers]
        recorded = lambda: sum(s.recorded for s in log.sessions())
        wait_for(lambda: recorded() > 3 * limit // 1024, "the writers to record three times the limit",
                 timeout=DEADLINE_S)
        dead = kill_inside_a_read_transaction(path)
        wait_for(lambda: dead not in {pid for pid, _ in log.store.reader_slots()},
                 "a writer to clear the dead reader's slot", timeout=DEADLINE_S)
        after = recorded()
        wait_for(lambda: recorded() > after + 12 * limit // 1024, "twelve times the limit more", timeout=DEADLINE_S)
        assert log.stats()["stale_readers_cleared"] == 0  # not this process: a writer
        for writer in writers:
            writer.stdin.close()  # they stop at once, not one after another
        outs = [(w.stdout.read(), w.stderr.read()) for w in writers]
        assert [w.wait(DEADLINE_S) for w in writers] == [0, 0, 0], [err for _, err in outs]
        assert sum(int(out.split()[1]) for out, _ in outs) >= 1
        assert os.path.getsize(os.path.join(path, "data.mdb")) <= 1.25 * limit
        assert log.verify() == []


# argv: log, n.  Records one record into each of n new sessions, one after the other; prints each id.
SESSIONS = """
import sys
from streamlog import SourceReader, StreamBuffer
class One(SourceReader):
    def open(self): self.done = False
    def read(self):
        if self.done: raise StopIteration
        self.done = True
        return (1, "x")
    def close(self): pass
    def key(self, data): return data[0]
for _ in range(int(sys.argv[2])):
    with StreamBuffer(One(), log=sys.argv[1]) as buf:
        buf.wait()
    print(buf.session.id, flush=True)
"""


def test_session_ids_are_never_reused_across_writers_and_a_killed_one(tmp_path, processes):
    path = str(tmp_path / "rec.streamlog")
    writers = [start_python(SESSIONS, path, 30) for _ in range(3)]
    processes.extend(writers)
    victim = writers[1]
    printed = [victim.stdout.readline() for _ in range(10)]  # killed somewhere in its 11th .. 30th session
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(DEADLINE_S) == -signal.SIGKILL
    printed += victim.stdout.read().splitlines()
    outs = [w.communicate(timeout=DEADLINE_S) for w in (writers[0], writers[2])]
    assert [w.returncode for w in (writers[0], writers[2])] == [0, 0], [err for _, err in outs]
    ids = [int(line) for line in printed] + [int(word) for out, _ in outs for word in out.split()]
    assert len(ids) == len(set(ids)) >= 70
    with streamlog.Log(path, create=False) as log:
        sessions = log.sessions()
        assert [s.id for s in sessions] == list(range(1, len(sessions) + 1)) and set(ids) <= {s.id for s in sessions}
        assert {s.status for s in sessions} <= {"closed", "crashed"}
        assert sum(s.status == "crashed" for s in sessions) <= 1  # the victim's, if it died recording
        newest = sessions[-1].id
        log.prune(Retention(max_sessions=1))
        log.delete_session(newest)
        assert log.sessions() == []
    assert run_python(SESSIONS, path, 1).stdout.split() == [str(newest + 1)]


# argv: log, limit, go-file.  Waits for the go-file, then prunes the log to Retention(max_bytes=limit);
# prints the records it removed.
PRUNER = """
import os, sys
import streamlog
log = streamlog.Log(sys.argv[1], create=False)
while not os.path.exists(sys.argv[3]):
    pass
print(log.prune(streamlog.Retention(max_bytes=int(sys.argv[2]))), flush=True)
"""


def test_three_processes_pruning_at_once_remove_the_excess_once(tmp_path, processes):
    path, go, limit = str(tmp_path / "rec.streamlog"), tmp_path / "go", 1 << 20
    with StreamBuffer(Counter(4000, payload=b"b" * 512), log=path) as buf:
        buf.wait(DEADLINE_S)
    pruners = [start_python(PRUNER, path, limit, go) for _ in range(3)]
    processes.extend(pruners)
    go.touch()
    outs = [p.communicate(timeout=DEADLINE_S) for p in pruners]
    assert [p.returncode for p in pruners] == [0, 0, 0], [err for _, err in outs]
    removed = [int(out) for out, _ in outs]
    with streamlog.Log(path, create=False) as log:
        used, kept = log.stats()["bytes_used"], [r[0] for r in log.session(1).irange()]
        assert log.verify() == []
    assert 0.5 * limit <= used <= 0.8 * limit, f"{used} bytes in use under a {limit}-byte limit"
    assert sum(removed) == 4000 - len(kept) and kept == list(range(4001 - len(kept), 4001))


def test_the_crash_note_names_the_dead_writer_not_the_creator(tmp_path, processes):
    path, go = tmp_path / "lab.streamlog", tmp_path / "go"
    creator, session_id = start_writer(processes, path, "eeg", "new", 2000, go)
    victim, _ = start_writer(processes, path, "audio", session_id, 0, go)  # endless: killed
    go.touch()
    with streamlog.Log(path, readonly=True) as log:
        wait_for(lambda: log.session(session_id).stream_info("audio")["recorded"] > 0, "the victim's records",
                 timeout=DEADLINE_S)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(DEADLINE_S) == -signal.SIGKILL and creator.wait(DEADLINE_S) == 0
    note = (f"session {session_id} was left live by process {victim.pid}, which is gone (crashed; its records "
            f"up to the crash are kept)")
    with streamlog.Log(path, create=False) as log:
        session = log.session(session_id)
        assert (session.status, session.pid, session.crashed_pids) == ("crashed", creator.pid, [victim.pid])
        assert log.verify() == [note]
    doctor = CliRunner().invoke(main, ["doctor", str(path)])
    assert doctor.exit_code == 0 and f"  - {note}\n" in doctor.output, doctor.output
    listed = CliRunner().invoke(main, ["sessions", str(path)])
    assert listed.exit_code == 0 and listed.output.splitlines()[-1] == (
        f"session {session_id} crashed: its recorder (pid {victim.pid}) died; it holds what was committed before")
    [summary] = json.loads(CliRunner().invoke(main, ["sessions", str(path), "--json"]).output)
    assert (summary["pid"], summary["crashed_pids"]) == (creator.pid, [victim.pid])


# argv: log.  Holds one write transaction open until a line comes on stdin; prints "writing", then "done".
HOLD_A_WRITE = """
import sys, streamlog
log = streamlog.Log(sys.argv[1], create=False)
def work(txn):
    print("writing", flush=True)
    sys.stdin.readline()
log.store.write(work)
print("done", flush=True)
"""


def blocked_flock_waiters():
    """Pids waiting for an ``flock`` now (the kernel's lock table, /proc/locks)."""
    with open("/proc/locks") as table:
        return {int(line.split()[5]) for line in table if " -> FLOCK " in line}


def test_writers_wait_for_their_turn_in_a_kernel_lock_and_one_killed_waiting_stops_no_other(tmp_path, processes):
    """Writers of other processes wait for a write transaction in a kernel ``flock``, never asleep in LMDB's
    shared mutex: a process killed while woken there, before it took the mutex, left the next waiter asleep
    for ever (a survivor of crash_trials --writers 3 hung so)."""
    path = tmp_path / "rec.streamlog"
    with StreamBuffer(Counter(10), log=path) as buf:
        buf.wait(DEADLINE_S)
    holder = start_python(HOLD_A_WRITE, path, stdin=subprocess.PIPE)
    processes.append(holder)
    assert holder.stdout.readline() == "writing\n", holder.stderr.read()
    waiters = [start_python(SESSIONS, path, 1) for _ in range(2)]
    processes.extend(waiters)
    wait_for(lambda: {w.pid for w in waiters} <= blocked_flock_waiters(), "both writers to wait in the flock",
             timeout=DEADLINE_S)
    waiters[0].send_signal(signal.SIGKILL)
    assert waiters[0].wait(DEADLINE_S) == -signal.SIGKILL
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline() == "done\n" and holder.wait(DEADLINE_S) == 0
    out, err = waiters[1].communicate(timeout=DEADLINE_S)
    assert waiters[1].returncode == 0 and out.split() == ["2"], err
    with streamlog.Log(path, create=False) as log:
        assert [(s.id, s.status) for s in log.sessions()] == [(1, "closed"), (2, "closed")]
