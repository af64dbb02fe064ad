"""The installed ``streamlog`` command in real processes: one records, others
follow and query the same log while it runs."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import load_tool

STREAMLOG = [sys.executable, "-m", "streamlog"]
DEADLINE_S = 30.0
ChildLines = load_tool("crash_trials").ChildLines


def wait_for_lines(lines, predicate, what):
    """Collect ``lines`` (a ChildLines) until ``predicate(lines.lines)``; fail at the deadline or the end of output."""
    if not lines.wait_for(predicate, time.monotonic() + DEADLINE_S):
        pytest.fail(f"no {what} (output ended or timed out); got {lines.lines}")
    return lines.lines


def start(*args, **kwargs):
    return subprocess.Popen([*STREAMLOG, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def run(*args, command=STREAMLOG):
    result = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=DEADLINE_S)
    assert result.returncode == 0, result.stderr
    return result.stdout


def sessions_json(log):
    return json.loads(run("sessions", log, "--json"))


def test_follow_and_range_while_recording_then_sigint(tmp_path, processes):
    log = tmp_path / "live.streamlog"
    recorder = start("record", "synth", log, "--rate", 1000, "--block", 10)
    processes.append(recorder)
    wait_for_lines(ChildLines(recorder.stderr), lambda lines: any("recording session 1" in line for line in lines),
                   "notice that the recorder started")

    follower = start("follow", log, "--format", "jsonl")
    processes.append(follower)
    followed = ChildLines(follower.stdout)
    wait_for_lines(followed, lambda lines: len(lines) >= 20, "20 followed records")

    ranged = [json.loads(line)[0] for line in run("range", log, 0, 9, "--format", "jsonl").splitlines()]
    assert ranged == list(range(10))
    [live] = sessions_json(log)
    assert live["status"] == "live"

    recorder.send_signal(signal.SIGINT)
    assert recorder.wait(DEADLINE_S) == 0
    summary = recorder.stdout.read()
    assert summary.startswith("session 1 closed: ")
    assert follower.wait(DEADLINE_S) == 0  # the session ended, so follow ended by itself

    [closed] = sessions_json(log)
    assert closed["status"] == "closed" and closed["records"] > 20
    assert f": {closed['records']} records, " in summary
    indices = [json.loads(line)[0] for line in followed.rest()]
    assert indices == list(range(indices[0], closed["records"]))  # every record after its start, in order


def test_record_cmd_sigterm_stops_the_child_and_stores_its_status(tmp_path, processes):
    log = tmp_path / "cmd.streamlog"
    ticker = "import itertools, time\nfor i in itertools.count():\n    print(i, flush=True)\n    time.sleep(0.01)\n"
    recorder = start("record", "cmd", log, "--", sys.executable, "-c", ticker)
    processes.append(recorder)
    wait_for_lines(ChildLines(recorder.stderr), lambda lines: any("recording session" in line for line in lines),
                   "notice that the recorder started")
    follower = start("follow", log, "--from-start", "--format", "csv")
    processes.append(follower)
    followed = ChildLines(follower.stdout)
    wait_for_lines(followed, lambda lines: len(lines) >= 6, "header and 5 followed lines")
    assert followed.lines[0] == "value0,value1,value2"
    assert [row.split(",")[1:] for row in followed.lines[1:6]] == [["stdout", str(i)] for i in range(5)]

    recorder.send_signal(signal.SIGTERM)
    assert recorder.wait(DEADLINE_S) == 0
    assert "command exit status -15 (SIGTERM)" in recorder.stdout.read()
    assert follower.wait(DEADLINE_S) == 0
    [session] = sessions_json(log)
    assert session["status"] == "closed"
    assert session["info"]["exit_status"] == -signal.SIGTERM
    assert not os.path.exists(f"/proc/{session['info']['pid']}")  # reaped, not orphaned


def test_console_script(tmp_path):
    script = shutil.which("streamlog")
    if script is None:
        pytest.skip("the streamlog console script is not installed (pip install -e .)")
    log = tmp_path / "script.streamlog"
    summary = run("record", "synth", log, "--count", 5, "--fast", command=[script])
    assert summary.startswith("session 1 closed: 5 records")
    tail = run("tail", log, "-n", 2, "--format", "jsonl", command=[script])
    assert [json.loads(line)[0] for line in tail.splitlines()] == [3, 4]


def recorded_lines(log):
    return [tuple(json.loads(line)) for line in run("range", log, "--format", "jsonl").splitlines()]


def test_record_lines_from_a_fifo(tmp_path, processes):
    # only regular files were accepted: a FIFO, a terminal, /dev/null or <(...) said "no such file"
    fifo, log = tmp_path / "instrument.fifo", tmp_path / "fifo.streamlog"
    os.mkfifo(fifo)
    recorder = start("record", "lines", log, fifo)
    processes.append(recorder)
    deadline = time.monotonic() + DEADLINE_S
    while True:  # a FIFO opens for writing once its reader has it open
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:  # ENXIO: no reader yet
            assert time.monotonic() < deadline and recorder.poll() is None, recorder.stderr.read()
            time.sleep(0.01)
    os.write(writer, b"first\nsecond\nno newline")
    os.close(writer)
    assert recorder.wait(DEADLINE_S) == 0, recorder.stderr.read()  # the writer closed: end of input
    assert recorded_lines(log) == [(1, "first"), (2, "second"), (3, "no newline")]


def test_record_lines_from_a_terminal_until_it_hangs_up(tmp_path, processes):
    master, slave = os.openpty()
    log = tmp_path / "tty.streamlog"
    try:
        recorder = start("record", "lines", log, os.ttyname(slave))
        processes.append(recorder)
        os.write(master, b"reading 1\nreading 2\n")
        deadline = time.monotonic() + DEADLINE_S
        while not os.path.exists(log / "data.mdb") or sessions_json(log)[0]["records"] < 2:
            assert time.monotonic() < deadline and recorder.poll() is None, "the lines never arrived"
            time.sleep(0.01)
    finally:
        os.close(slave)
        os.close(master)  # hangs the terminal up: the end of its input
    assert recorder.wait(DEADLINE_S) == 0, recorder.stderr.read()
    assert recorded_lines(log) == [(1, "reading 1"), (2, "reading 2")]


def test_record_lines_from_dev_null_and_process_substitution(tmp_path):
    run("record", "lines", tmp_path / "null.streamlog", "/dev/null")
    assert sessions_json(tmp_path / "null.streamlog")[0]["records"] == 0
    script = f"{shlex.join(STREAMLOG)} record lines {shlex.quote(str(tmp_path / 'seq.streamlog'))} <(seq 3)"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=DEADLINE_S)
    assert result.returncode == 0, result.stderr
    assert recorded_lines(tmp_path / "seq.streamlog") == [(1, "1"), (2, "2"), (3, "3")]
    missing = subprocess.run([*STREAMLOG, "record", "lines", tmp_path / "x.streamlog", tmp_path / "nope"],
                             capture_output=True, text=True, timeout=DEADLINE_S)
    assert missing.returncode != 0 and "no such file" in missing.stderr
