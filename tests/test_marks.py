"""``streamlog mark`` / ``streamlog.mark`` and ``record --join --stream``:
short-lived and joining writers beside a recording in another process."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

import streamlog
from streamlog import errors
from streamlog.cli import main
from helpers import REPO
from helpers import wait_until

DEADLINE_S = 120
ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def start_cli(processes, *args):
    process = subprocess.Popen([sys.executable, "-m", "streamlog", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV)
    processes.append(process)
    return process


def live_session(path):
    def found():
        try:
            with streamlog.Log(path, readonly=True, create=False) as log:
                return any(s.status == "live" for s in log.sessions())
        except errors.LogNotFound:
            return False
    wait_until(found, "a live session", timeout=DEADLINE_S)
    return streamlog.Log(path, readonly=True).session(-1)  # the log stays open for the session's readers


def stop(process):
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 0, err
    return out


def test_two_hundred_marks_during_a_recording_each_within_its_call(tmp_path, processes):
    path = tmp_path / "lab.streamlog"
    recorder = start_cli(processes, "record", "synth", path, "--rate", 10_000, "--quiet")
    session = live_session(path)
    followed = []
    follower = threading.Thread(target=lambda: followed.extend(session.refresh().reader("markers",
                                                                                        timeout=DEADLINE_S)))
    windows = []
    runner = CliRunner()
    for i in range(190):
        before = time.time_ns() // 1000
        result = runner.invoke(main, ["mark", str(path), f"trial {i}"] + (["--data", f'{{"n": {i}}}'] if i % 2 else []))
        windows.append((before, time.time_ns() // 1000))
        assert result.exit_code == 0, (i, result.output)
        assert int(result.output) >= before, (i, result.output)
        if i == 0:
            follower.start()  # the markers stream exists now
    for i in range(190, 200):  # the last ten as their own processes, as from a shell
        before = time.time_ns() // 1000
        done = subprocess.run([sys.executable, "-m", "streamlog", "mark", str(path), f"trial {i}", "--session",
                               str(session.id)], capture_output=True, text=True, env=ENV, timeout=DEADLINE_S)
        windows.append((before, time.time_ns() // 1000))
        assert done.returncode == 0 and int(done.stdout) >= before, done.stderr
    stop(recorder)
    follower.join(DEADLINE_S)

    with streamlog.Log(path) as log:
        session = log.session(session.id)
        assert (session.status, session.stream_status("markers")) == ("closed", "closed")
        markers = list(session.irange(stream="markers"))
    assert [m[1] for m in markers] == [f"trial {i}" for i in range(200)]
    assert [m[2] for m in markers if len(m) == 3] == [{"n": i} for i in range(1, 190, 2)]
    assert all(lo <= m[0] <= hi for m, (lo, hi) in zip(markers, windows))
    assert followed == markers, (len(followed), len(markers))  # a follower of the shared stream ends with the session, not before
    main_stream = list(session.irange())
    assert main_stream and markers[0][0] >= session.start_time * 1e6 and markers[-1][0] <= session.stop_time * 1e6


def test_mark_refuses_clearly(tmp_path):
    path = tmp_path / "lab.streamlog"
    runner = CliRunner()
    missing = runner.invoke(main, ["mark", str(path), "x"])
    assert missing.exit_code == 1 and "no log at" in missing.stderr and not path.exists()
    with streamlog.StreamBuffer(__import__("helpers").Counter(3), log=path) as buf:
        buf.wait(DEADLINE_S)
    closed = runner.invoke(main, ["mark", str(path), "x"])
    assert closed.exit_code == 1 and closed.stderr.strip() == f"Error: log {path} has no live session to mark"
    bad = runner.invoke(main, ["mark", str(path), "x", "--data", "{nope"])
    assert bad.exit_code == 2 and "not JSON" in bad.stderr
    items = __import__("queue").Queue()
    with streamlog.StreamBuffer(__import__("helpers").Gate(items), log=path) as live:
        taken = runner.invoke(main, ["mark", str(path), "x", "--stream", "main"])
        assert taken.exit_code == 1 and f"written by pid {os.getpid()}; mark into another stream" in taken.stderr
        t = streamlog.mark(path, "first", t=time.time() + 60)
        with pytest.raises(errors.KeyOrderError, match="earlier than the newest marker"):
            streamlog.mark(path, "explicitly earlier", t=time.time())
        assert streamlog.mark(path, "now, raised to the newest") == t
        items.put(StopIteration)
        live.wait(DEADLINE_S)
    with streamlog.Log(path) as log:
        assert [m[1] for m in log.session(-1).irange(stream="markers")] == ["first", "now, raised to the newest"]


def test_record_join_exits_1_when_the_joined_stream_fails(tmp_path, processes):
    """The session stays live (another process records it), but the joined
    stream failed: the command says so on stderr and exits 1; the session's
    creator then reports the session failed (failed wins over closed)."""
    path = tmp_path / "lab.streamlog"
    recorder = start_cli(processes, "record", "synth", path, "--rate", 10_000, "--quiet")
    session = live_session(path)
    failed = CliRunner().invoke(main, ["record", "lines", str(path), "-", "--join", "--stream", "notes",
                                       "--max-record-bytes", "64"], input="short\n" + "x" * 200 + "\nlater\n")
    assert failed.exit_code == 1, failed.output
    assert failed.stdout.startswith(f"session {session.id} live, stream 'notes' failed: 1 records")
    assert failed.stderr.splitlines()[-1] == (f"Error: stream 'notes' of session {session.id} failed: the record with "
                                              f"key 2 of stream 'notes' is 204 bytes encoded, over the limit of 64 "
                                              f"bytes (max_record_bytes)")
    recorder.send_signal(signal.SIGINT)
    _, err = recorder.communicate(timeout=DEADLINE_S)
    assert recorder.returncode == 1 and err.startswith(f"Error: session {session.id} failed: stream 'notes': ")
    with streamlog.Log(path) as log:
        [session] = log.sessions()  # failed wins over closed: the session failed, its main stream closed
        assert session.status == "failed"
        assert session.stream_status("notes") == "failed" and session.stream_status("main") == "closed"
        assert list(session.irange(stream="notes")) == [(1, "short")]


def test_record_join_stream_records_beside_another_process(tmp_path, processes):
    path = tmp_path / "lab.streamlog"
    runner = CliRunner()
    nothing = runner.invoke(main, ["record", "synth", str(path), "--join", "--stream", "eeg", "--count", "5"])
    assert nothing.exit_code == 1 and nothing.stderr.strip() == f"Error: log {path} has no live session to join"
    recorder = start_cli(processes, "record", "synth", path, "--rate", 10_000, "--quiet")
    session = live_session(path)
    joined = runner.invoke(main, ["record", "synth", str(path), "--join", "--stream", "eeg", "--count", "50",
                                  "--fast"])
    assert joined.exit_code == 0, joined.output
    assert joined.stdout.startswith(f"session {session.id} live, stream 'eeg' closed: 50 records")
    by_id = runner.invoke(main, ["record", "synth", str(path), "--join", str(session.id), "--stream", "emg",
                                 "--count", "7", "--fast", "--quiet"])
    assert by_id.exit_code == 0, by_id.output
    taken = runner.invoke(main, ["record", "synth", str(path), "--join", "--stream", "eeg", "--count", "1"])
    assert taken.exit_code == 1 and "already has a stream 'eeg' (closed" in taken.stderr
    labelled = runner.invoke(main, ["record", "synth", str(path), "--join", "--info", "a=b", "--count", "1"])
    assert labelled.exit_code == 2 and "--info labels a new session" in labelled.stderr
    bad_id = runner.invoke(main, ["record", "synth", str(path), "--join", "x", "--count", "1"])
    assert bad_id.exit_code == 2 and "'x' is not a session id" in bad_id.stderr
    stop(recorder)
    with streamlog.Log(path) as log:
        [session] = log.sessions()
        assert session.status == "closed" and session.streams == ["main", "eeg", "emg"]
        assert [session.stream_info(s)["count"] for s in ("eeg", "emg")] == [50, 7] and session.count > 0
