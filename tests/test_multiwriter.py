"""Several processes writing one log: joined sessions, per-writer liveness,
a killed writer among live ones, shared retention, racing creators."""

import json
import os
import signal

import pytest

import streamlog
from streamlog import Retention, StreamBuffer, errors
from helpers import Counter, Gate, run_python, start_python
from helpers import wait_until as wait_for

DEADLINE_S = 120

# argv: log, stream, session ("new" or an id), count (0: endless), go-file.  Records (i, stream, payload)
# for i = 1.. as fast as it can once the go-file exists; prints "started <session id>" once it is recording.
WRITER = """
import os, sys
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
