"""The installed ``streamlog`` command in real processes: one records, others
follow and query the same log while it runs."""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading

import pytest

STREAMLOG = [sys.executable, "-m", "streamlog"]
DEADLINE_S = 30.0


class PipeLines:
    """Collects the lines of a child's pipe in a background thread, so the
    test can wait for them with a deadline instead of blocking on the pipe."""

    def __init__(self, pipe):
        self.lines = []
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe):
        for line in pipe:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate, what):
        """Collect lines until ``predicate(self.lines)`` holds; fail at the deadline or at end of output."""
        while not predicate(self.lines):
            try:
                line = self._queue.get(timeout=DEADLINE_S)
            except queue.Empty:
                pytest.fail(f"timed out waiting for {what}; got {self.lines}")
            if line is None:
                pytest.fail(f"output ended before {what}; got {self.lines}")
            self.lines.append(line)
        return self.lines

    def rest(self):
        """Every line up to the end of the output (the child has exited)."""
        self._thread.join(DEADLINE_S)
        while True:
            line = self._queue.get_nowait()
            if line is None:
                return self.lines
            self.lines.append(line)


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
    notices = PipeLines(recorder.stderr)
    notices.wait_for(lambda lines: any("recording session 1" in line for line in lines), "the recorder to start")

    follower = start("follow", log, "--format", "jsonl")
    processes.append(follower)
    followed = PipeLines(follower.stdout)
    followed.wait_for(lambda lines: len(lines) >= 20, "20 followed records")

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
    PipeLines(recorder.stderr).wait_for(lambda lines: any("recording session" in line for line in lines),
                                        "the recorder to start")
    follower = start("follow", log, "--from-start", "--format", "csv")
    processes.append(follower)
    followed = PipeLines(follower.stdout)
    followed.wait_for(lambda lines: len(lines) >= 6, "a header and 5 followed lines")
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
