"""``streamlog follow --wait / --all`` and its exit status, in real processes: a follower
started before the log exists, recorders that come and go, one killed mid-session."""

import json
import os
import queue
import signal
import subprocess
import sys
import time

import pytest

from helpers import LIVE_RECORDER, Gate, load_tool, wait_until

from streamlog import StreamBuffer

STREAMLOG = [sys.executable, "-m", "streamlog"]
DEADLINE_S = 60.0
ChildLines = load_tool("crash_trials").ChildLines

def start(*args, **kwargs):
    return subprocess.Popen([*STREAMLOG, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def record_synth(log, count):
    result = subprocess.run([*STREAMLOG, "record", "synth", str(log), "--count", str(count), "--fast", "-q",
                             "--block", "2", "--channels", "1"], capture_output=True, text=True, timeout=DEADLINE_S)
    assert result.returncode == 0, result.stderr


def wait_for(lines, predicate, what):
    if not lines.wait_for(predicate, time.monotonic() + DEADLINE_S):
        pytest.fail(f"no {what} (output ended or timed out); got {lines.lines}")
    return lines.lines


def keys(lines):
    return [json.loads(line)[0] for line in lines]


def test_follow_wait_all_follows_each_new_session_of_a_log_that_did_not_exist(tmp_path, processes):
    log = tmp_path / "later.streamlog"
    follower = start("follow", log, "--wait", "--all", "-f", "jsonl")
    processes.append(follower)
    followed = ChildLines(follower.stdout)
    told = ChildLines(follower.stderr)
    wait_for(told, lambda lines: any("waiting for log" in line for line in lines), "the wait notice")
    record_synth(log, 3)
    wait_for(followed, lambda lines: len(lines) >= 3, "records of session 1")
    record_synth(log, 4)
    lines = wait_for(followed, lambda lines: len(lines) >= 7, "records of session 2")
    found = [json.loads(line) for line in lines]  # --all: each record beside its session
    assert [(r["session"], r["record"][0]) for r in found] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3)]
    assert follower.poll() is None  # --all goes on waiting
    follower.send_signal(signal.SIGINT)
    assert follower.wait(DEADLINE_S) == 130


def test_follow_wait_on_a_log_without_sessions_then_exits_0_when_the_session_closes(tmp_path, processes):
    log = tmp_path / "empty.streamlog"
    subprocess.run([sys.executable, "-c", f"import streamlog; streamlog.Log({str(log)!r}).close()"], check=True,
                   timeout=DEADLINE_S)
    without_wait = subprocess.run([*STREAMLOG, "follow", str(log)], capture_output=True, text=True,
                                  timeout=DEADLINE_S)
    assert without_wait.returncode == 1 and "--wait" in without_wait.stderr
    follower = start("follow", log, "--wait", "-f", "jsonl")
    processes.append(follower)
    told = ChildLines(follower.stderr)
    wait_for(told, lambda lines: any("waiting for a first session" in line for line in lines), "the wait notice")
    record_synth(log, 5)
    assert follower.wait(DEADLINE_S) == 0, told.rest()
    assert keys(follower.stdout.read().splitlines()) == [0, 1, 2, 3, 4]


def test_follow_wait_skips_a_closed_session_and_waits_for_the_next(tmp_path, processes):
    log = tmp_path / "closed.streamlog"
    record_synth(log, 2)
    follower = start("follow", log, "--wait", "-f", "jsonl")
    processes.append(follower)
    told = ChildLines(follower.stderr)
    wait_for(told, lambda lines: any("waiting for a session after 1" in line for line in lines), "the wait notice")
    record_synth(log, 3)
    assert follower.wait(DEADLINE_S) == 0, told.rest()
    assert keys(follower.stdout.read().splitlines()) == [0, 1, 2]  # session 2 from its start, none of session 1


def test_follow_of_a_session_whose_recorder_is_killed_exits_4(tmp_path, processes):
    log = tmp_path / "killed.streamlog"
    recorder = subprocess.Popen([sys.executable, "-c", LIVE_RECORDER, str(log)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    processes.append(recorder)
    wait_for(ChildLines(recorder.stdout), lambda lines: "ready" in lines, "ready from the recorder")
    follower = start("follow", log, "--from-start", "-f", "jsonl")
    processes.append(follower)
    followed = ChildLines(follower.stdout)
    wait_for(followed, lambda lines: len(lines) >= 50, "the stored records")
    recorder.kill()
    recorder.wait(DEADLINE_S)
    assert follower.wait(DEADLINE_S) == 4
    assert keys(followed.rest()) == list(range(50))
    assert "session 1 crashed" in follower.stderr.read()


def test_follow_until_stops_at_that_time_with_status_0(tmp_path, processes):
    log = tmp_path / "until.streamlog"
    recorder = subprocess.Popen([sys.executable, "-c", LIVE_RECORDER, str(log)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    processes.append(recorder)
    wait_for(ChildLines(recorder.stdout), lambda lines: "ready" in lines, "ready from the recorder")
    result = subprocess.run([*STREAMLOG, "follow", str(log), "--since", "-1h", "--until", "+0.5s", "-f", "jsonl"],
                            capture_output=True, text=True, timeout=DEADLINE_S)
    assert result.returncode == 0, result.stderr
    assert keys(result.stdout.splitlines()) == list(range(50))
    assert recorder.poll() is None  # the session is still live: follow stopped at --until


def test_follow_into_a_closed_pipe_exits_quietly(tmp_path):
    log = tmp_path / "pipe.streamlog"
    record_synth(log, 200)
    pipeline = subprocess.run(["bash", "-o", "pipefail", "-c",
                               f"{sys.executable} -m streamlog follow {log} --from-start | head -n 1"],
                              capture_output=True, text=True, timeout=DEADLINE_S)
    assert pipeline.stdout.count("\n") == 1 and "Traceback" not in pipeline.stderr


def test_follow_since_on_a_closed_session_prints_what_arrived_since(tmp_path):
    from click.testing import CliRunner

    from streamlog.cli import main

    log = tmp_path / "since.streamlog"
    record_synth(log, 4)
    result = CliRunner().invoke(main, ["follow", str(log), "--since", "-1h", "-f", "jsonl"])
    assert result.exit_code == 0, result.output
    assert keys(result.stdout.splitlines()) == [0, 1, 2, 3]
    result = CliRunner().invoke(main, ["follow", str(log), "--since", "+1h", "-f", "jsonl"])
    assert result.exit_code == 0 and result.stdout == ""
    result = CliRunner().invoke(main, ["follow", str(log), "-s", "1", "--until", "-1h"])
    assert result.exit_code == 0 and result.stdout == ""


def test_follow_sleeps_on_the_notification_channel_and_leaves_it_when_done(tmp_path, processes):
    """The follower registers in notify/ (so the recorder's commits wake it
    instead of a polling loop), prints each record committed while it
    sleeps, and removes its entry when the session closes."""
    log = tmp_path / "woken.streamlog"
    items = queue.Queue()
    with StreamBuffer(Gate(items), log=log, commit_interval_s=0.001) as buffer:
        items.put((0, "first"))
        wait_until(lambda: buffer.committed == 1, "the first record committed")
        follower = start("follow", log, "--from-start", "-f", "jsonl")
        processes.append(follower)
        followed = ChildLines(follower.stdout)
        channel = log / "notify"
        wait_until(lambda: channel.is_dir() and any(name.startswith(f"{follower.pid}-")
                                                    for name in os.listdir(channel)),
                   "the follower's entry in notify/", timeout=DEADLINE_S)
        for key in range(1, 6):
            items.put((key, "woken"))
            wait_for(followed, lambda lines, key=key: len(lines) == key + 1, f"record {key}")
        items.put(StopIteration)
    assert follower.wait(DEADLINE_S) == 0
    assert keys(followed.rest()) == list(range(6))
    assert not any(name.startswith(f"{follower.pid}-") for name in os.listdir(channel))
