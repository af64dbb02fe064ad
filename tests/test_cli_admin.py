"""The maintenance CLI commands (prune, doctor) on real logs, with real
recording subprocesses holding the writer lock or killed mid-session."""

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

import streamlog
from streamlog import Log, ReadBatch, SourceReader, StreamBuffer
from streamlog.cli import main

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamlog.__file__)))

# Records 50 records into the log named by argv[1], prints "ready" once they
# are readable, then keeps the session live (idle source) until stdin closes.
RECORDER = """
import sys
from streamlog import ReadBatch, SourceReader, StreamBuffer

class FiftyThenIdle(SourceReader):
    def __init__(self):
        self.sent = False
    def open(self):
        pass
    def read(self):
        if self.sent:
            return None
        self.sent = True
        return ReadBatch((i, "tick") for i in range(50))
    def close(self):
        pass
    def key(self, data):
        return data[0]

with StreamBuffer(FiftyThenIdle(), log=sys.argv[1], commit_interval_s=0.001) as buf:
    reader = buf.mk_reader()
    for _ in range(50):
        next(reader)
    print("ready", flush=True)
    sys.stdin.read()
"""


class CountSource(SourceReader):
    """Records ``(i, "x" * width)`` for i in range(n), then ends."""

    def __init__(self, n, width=10):
        self.n = n
        self.width = width
        self._sent = False

    def open(self):
        pass

    def read(self):
        if self._sent:
            raise StopIteration
        self._sent = True
        return ReadBatch((i, "x" * self.width) for i in range(self.n))

    def close(self):
        pass

    def key(self, data):
        return data[0]


def record(path, n, width=10):
    with StreamBuffer(CountSource(n, width), log=str(path)) as buf:
        for _ in buf.mk_reader():
            pass
        return buf.session.id


class RecordedLog(str):
    """A log's path, with ``ids``: the ids of its sessions, oldest first."""

    ids = ()


@pytest.fixture
def log(tmp_path):
    """A log with three closed sessions of 20, 30 and 40 records."""
    path = RecordedLog(tmp_path / "log")
    path.ids = tuple(record(path, n) for n in (20, 30, 40))
    return path


@pytest.fixture
def recorder(tmp_path):
    """Start a subprocess recording into ``tmp_path/"live"``; yields the Popen once
    its 50 records are readable.  Ended (stdin closed) at teardown if alive."""
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "live")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        line = proc.stdout.readline()
        assert line == "ready\n", proc.stderr.read()
        yield proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *fragments, exit_code=1):
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "Error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def session_counts(path):
    with Log(path, readonly=True) as opened:
        return [(s.id, s.count) for s in opened.sessions()]


# -- prune ---------------------------------------------------------------------


def test_prune_needs_a_limit(log):
    assert_one_line_error(run("prune", log), "at least one limit", exit_code=2)
    assert session_counts(log) == list(zip(log.ids, (20, 30, 40)))


@pytest.mark.parametrize("args, fragment", [
    (["--max-bytes", "lots"], "'lots' is not a size"),
    (["--max-bytes", "10KB"], "1 MiB"),
    (["--max-age", "0"], "--max-age"),
    (["--keep-sessions", "0"], "--keep-sessions"),
])
def test_prune_bad_limits_are_usage_errors(log, args, fragment):
    assert_one_line_error(run("prune", log, *args), fragment, exit_code=2)


def test_prune_keep_sessions_reports_what_went(log):
    result = run("prune", log, "--keep-sessions", 1)
    assert result.exit_code == 0, result.output
    assert "Removed 50 record(s)" in result.stdout
    assert f"sessions removed: {log.ids[0]}, {log.ids[1]}" in result.stdout
    assert "Now 1 session(s), 40 record(s)" in result.stdout
    assert session_counts(log) == [(log.ids[2], 40)]


def test_prune_within_limits_removes_nothing(log):
    result = run("prune", log, "--max-age", 3600, "--max-bytes", "1GiB")
    assert result.exit_code == 0, result.output
    assert "Nothing to remove" in result.stdout
    assert session_counts(log) == list(zip(log.ids, (20, 30, 40)))


def test_prune_missing_log(tmp_path):
    assert_one_line_error(run("prune", tmp_path / "nope", "--keep-sessions", 1), "nope")
    assert not (tmp_path / "nope").exists()


def test_prune_while_another_process_records_keeps_its_live_session(recorder, tmp_path):
    result = run("prune", tmp_path / "live", "--keep-sessions", 1)
    assert result.exit_code == 0, result.output
    assert "Nothing to remove" in result.stdout
    assert [s.status for s in Log(tmp_path / "live", readonly=True).sessions()] == ["live"]


# -- doctor ----------------------------------------------------------------------


def test_doctor_healthy_log(log):
    result = run("doctor", log)
    assert result.exit_code == 0, result.output
    assert "format    version 2" in result.stdout
    assert "sessions  3 (3 closed)" in result.stdout
    assert "records   90" in result.stdout
    assert "healthy" in result.stdout


def test_doctor_reports_a_live_writer_without_complaint(recorder, tmp_path):
    result = run("doctor", tmp_path / "live")
    assert result.exit_code == 0, result.output
    assert f"writers   pid {recorder.pid} recording" in result.stdout
    assert "1 live" in result.stdout


def test_doctor_reports_a_crashed_session(recorder, tmp_path):
    recorder.send_signal(signal.SIGKILL)
    recorder.wait(timeout=30)
    result = run("doctor", tmp_path / "live")
    assert result.exit_code == 1, result.output
    assert "1 crashed" in result.stdout
    assert "1 problem(s):" in result.stdout
    [crashed] = json.loads(run("sessions", tmp_path / "live", "--json").stdout)
    assert crashed["status"] == "crashed" and crashed["pid"] == recorder.pid
    assert f"session {crashed['id']} was left live by process {recorder.pid}" in result.stdout


def test_doctor_on_a_plain_file(tmp_path):
    plain = tmp_path / "data.bin"
    plain.write_bytes(b"\x00" * 100)
    assert_one_line_error(run("doctor", plain), "data.bin")
