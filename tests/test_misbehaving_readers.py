"""Readers that misbehave cannot stop the recorder, hold back retention, or corrupt the log.

* a reader thread that stalls (it never holds a read transaction between calls);
* a reader process killed inside a read transaction (its stale LMDB reader
  slot would pin pages: the recorder frees it after its commits, the doctor
  names and frees it);
* a process that forks after opening a log (the child must open it again).
"""

import json
import os
import signal
import subprocess
import sys
import threading

import streamlog
from streamlog import Retention, StreamBuffer, errors
from streamlog.store import DATA_FILE

from helpers import REPO, Counter, start_python
from helpers import wait_until as wait_for

LIMIT = 1 << 20
PAYLOAD = b"x" * 1000
# retention keeps the pages in use under LIMIT; the file (which LMDB never
# shrinks) may run past it by what commits add between prunes
FILE_BOUND = int(1.5 * LIMIT) + (256 << 10)


def data_file_size(path):
    return os.path.getsize(os.path.join(path, DATA_FILE))


def test_a_stalled_reader_thread_holds_back_neither_the_recorder_nor_retention(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    n = 12 * LIMIT // len(PAYLOAD)  # twelve times the byte limit
    resume = threading.Event()
    served, outcome = [], {}
    with StreamBuffer(Counter(n, PAYLOAD), log=path, maxlen=100, durability="off",
                      retention=Retention(max_bytes=LIMIT)) as buf:
        reader = buf.mk_reader()

        def read_then_stall():
            served.extend(reader.next()[0] for _ in range(5))
            resume.wait(120)
            try:
                while True:
                    served.append(reader.next()[0])
            except errors.RecordsPruned as exc:
                outcome["missed"] = exc.missed
            reader.skip_pruned = True
            outcome["after_skip"] = reader.next()[0]

        thread = threading.Thread(target=read_then_stall, daemon=True)
        thread.start()
        wait_for(lambda: len(served) == 5, what="the reader's first records")
        assert buf.wait(120), "the recorder did not finish while the reader stalled"
        assert buf.committed == n and thread.is_alive() and len(served) == 5
        resume.set()
        thread.join(60)
    log = streamlog.Log(path, readonly=True)
    session = log.session(-1)
    first_kept = session.head()[0]
    assert session.recorded == n and session.count < n // 4
    assert data_file_size(path) <= FILE_BOUND
    assert served == list(range(1, len(served) + 1))  # what it had fetched ahead is served in order
    assert outcome == {"missed": first_kept - 1 - served[-1], "after_skip": first_kept}
    assert log.verify() == []


RECORDER = """
import json, queue, sys, time
import streamlog
from streamlog import Retention, SourceReader, StreamBuffer

class Commands(SourceReader):
    '''Records (i, payload) as many as the main thread asks for.'''
    sleep_time_on_read_none_s = 0.001
    def __init__(self, todo): self.todo, self.i = todo, 0
    def open(self): pass
    def read(self):
        try:
            self.todo.get_nowait()
        except queue.Empty:
            return None
        self.i += 1
        return (self.i, b"x" * 1000)
    def close(self): pass
    def key(self, data): return data[0]

todo = queue.Queue()
buf = StreamBuffer(Commands(todo), log=sys.argv[1], maxlen=100, durability="off",
                   retention=Retention(max_bytes=int(sys.argv[2]))).start()
total = 0
for line in sys.stdin:
    command, *args = line.split()
    if command == "write":
        for _ in range(int(args[0])):
            todo.put(None)
        total += int(args[0])
        deadline = time.monotonic() + 120
        while buf.committed < total and time.monotonic() < deadline:
            time.sleep(0.005)
        print(json.dumps({"committed": buf.committed, **buf.log.stats()}), flush=True)
    elif command == "quit":
        break
buf.stop()
print(json.dumps({"problems": buf.log.verify()}), flush=True)
buf.close()
"""

READ_AND_HOLD = """
import sys, streamlog
log = streamlog.Log(sys.argv[1], readonly=True)
with log.store.read() as txn:
    txn.stat()
    print("reading", flush=True)
    sys.stdin.read()
"""


def ask(recorder, command):
    recorder.stdin.write(command + "\n")
    recorder.stdin.flush()
    return json.loads(recorder.stdout.readline())


def kill_inside_a_read_transaction(path):
    """Start a process that opens the log and begins a read transaction; SIGKILL it there."""
    holder = start_python(READ_AND_HOLD, path, stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "reading\n", holder.stderr.read()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    return holder.pid


def doctor(path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "streamlog", "doctor", path], capture_output=True, text=True,
                          timeout=60, env=env)


def test_a_reader_killed_inside_a_read_transaction_pins_no_space_for_long(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    recorder = start_python(RECORDER, path, LIMIT, stdin=subprocess.PIPE)
    try:
        assert ask(recorder, "write 200")["committed"] == 200

        # the recorder is idle (no commits), so the stale slot stays until the doctor frees it
        dead = kill_inside_a_read_transaction(path)
        report = doctor(path)
        assert report.returncode == 0, report.stdout + report.stderr
        readers_line = next(line for line in report.stdout.splitlines() if line.startswith("readers"))
        assert f"cleared 1 stale slot(s) of dead process(es) {dead}" in readers_line
        again = doctor(path)
        assert "no stale slots" in again.stdout and str(dead) not in again.stdout

        # another one dies reading; the recorder writes twelve times the limit past it
        kill_inside_a_read_transaction(path)
        stats = ask(recorder, f"write {12 * LIMIT // len(PAYLOAD)}")
        assert stats["committed"] == 200 + 12 * LIMIT // len(PAYLOAD)
        assert stats["bytes_on_disk"] == data_file_size(path) <= FILE_BOUND
        assert stats["stale_readers_cleared"] >= 1
        assert ask(recorder, "quit") == {"problems": []}
        assert recorder.wait(30) == 0
    finally:
        recorder.kill()
        recorder.wait(10)


FORK = """
import json, os, queue, sys, time
import streamlog
from streamlog import Retention, SourceReader, StreamBuffer, errors

class Numbers(SourceReader):
    sleep_time_on_read_none_s = 0.001
    def __init__(self, items): self.items = items
    def open(self): pass
    def read(self):
        try:
            item = self.items.get_nowait()
        except queue.Empty:
            return None
        if item is None:
            raise StopIteration
        return item
    def close(self): pass
    def key(self, data): return data[0]

def outcome(call):
    try:
        call()
    except errors.LogError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"

path = sys.argv[1]
log = streamlog.Log(path)
items = queue.Queue()
for i in range(1, 1001):
    items.put((i, b"done"))
items.put(None)
with StreamBuffer(Numbers(items), log=log) as finished:
    finished.wait(60)
items = queue.Queue()
buf = StreamBuffer(Numbers(items), log=log, durability=log.durability).start()
for i in range(1, 501):
    items.put((i, b"live"))
while buf.committed < 500:
    time.sleep(0.001)
stored_reader = log.session(finished.session.id).reader()
live_reader = buf.mk_reader()
assert len(live_reader.read(500)) == 500

child = os.fork()
if child == 0:
    report = {
        "log": outcome(log.sessions),
        "reader": outcome(stored_reader.next),
        "live_reader": outcome(live_reader.next),
        "prune": outcome(lambda: log.prune(Retention(max_sessions=1))),
        "close": outcome(log.close),
    }
    fresh = streamlog.Log(path, readonly=True)
    report["finished"] = [r[0] for r in fresh.session(finished.session.id).reader()] == list(range(1, 1001))
    live = fresh.session(buf.session.id)
    report["live"] = [live.status, live.count >= 500]
    report["write"] = outcome(lambda: streamlog.Log(path).prune(Retention(max_sessions=1)))
    print(json.dumps(report), flush=True)
    os._exit(0)

for i in range(501, 5001):
    items.put((i, b"live"))
_, status = os.waitpid(child, 0)
items.put(None)
buf.wait(60)
buf.stop()
keys = [r[0] for r in buf.session.reader()]
print(json.dumps({"child_status": status, "keys_ok": keys == list(range(1, 5001)),
                  "problems": log.verify(), "parent": os.getpid()}), flush=True)
"""


def test_a_log_used_across_fork_fails_clearly_in_the_child_and_the_parent_records_on(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    process = start_python(FORK, path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    child, parent = map(json.loads, out.splitlines())
    assert parent == {"child_status": 0, "keys_ok": True, "problems": [], "parent": parent["parent"]}
    pid = parent["parent"]
    fork_error = (f"LogError: this log ({path}) was opened in process {pid} before a fork; "
                  f"open it again in the child")
    assert child == {
        "log": fork_error, "reader": fork_error, "prune": fork_error, "close": "no error",
        "live_reader": (f"LogError: this reader's buffer records in process {pid}, not in this forked child; "
                        f"open the log again in the child to read it"),
        "finished": True, "live": ["live", True],
        "write": "no error",  # a log opened afresh in the child writes beside the parent
    }
