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

from helpers import LIVE_RECORDER

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamlog.__file__)))

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
    script.write_text(LIVE_RECORDER)
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
    (["--max-age", "7y"], "'7y' is not an age"),
    (["--until", "+1h"], "not in the past"),
    (["--until", "someday"], "'someday' is not a time"),
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
    assert result.exit_code == 0, result.output  # an old crash is history: reported, not failed on
    assert "1 crashed" in result.stdout
    assert "history (1, nothing to do):" in result.stdout and "healthy" in result.stdout
    [crashed] = json.loads(run("sessions", tmp_path / "live", "--json").stdout)
    assert crashed["status"] == "crashed" and crashed["pid"] == recorder.pid
    assert f"session {crashed['id']} was left live by process {recorder.pid}" in result.stdout
    strict = run("doctor", tmp_path / "live", "--strict")
    assert strict.exit_code == 1, strict.output  # today's behaviour, on request
    assert "1 problem(s):" in strict.stdout
    assert f"session {crashed['id']} was left live by process {recorder.pid}" in strict.stdout


def test_doctor_on_a_plain_file(tmp_path):
    plain = tmp_path / "data.bin"
    plain.write_bytes(b"\x00" * 100)
    assert_one_line_error(run("doctor", plain), "data.bin")


def test_prune_ages_and_until(log):
    result = run("prune", log, "--max-age", "7d")
    assert result.exit_code == 0 and "Nothing to remove" in result.stdout, result.output
    result = run("prune", log, "--until", "-1h")
    assert result.exit_code == 0 and "Nothing to remove" in result.stdout, result.output
    result = run("prune", log, "--max-age", "1ms")
    assert result.exit_code == 0, result.output
    assert f"sessions removed: {', '.join(map(str, log.ids))}" in result.stdout
    assert session_counts(log) == []


def test_prune_dry_run_prints_what_would_go_and_changes_nothing(log):
    before = session_counts(log)
    result = run("prune", log, "--keep-sessions", 1, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Would remove 50 record(s)" in result.stdout and "nothing was changed" in result.stdout
    assert f"session {log.ids[0]}: all 20 records (the whole session)" in result.stdout
    assert f"session {log.ids[1]}: all 30 records (the whole session)" in result.stdout
    assert session_counts(log) == before
    result = run("prune", log, "--max-age", "1ms", "-n")
    assert result.exit_code == 0 and "Would remove 90 record(s)" in result.stdout, result.output
    assert session_counts(log) == before
    result = run("prune", log, "--max-age", "7d", "-n")
    assert result.exit_code == 0 and "Nothing would be removed" in result.stdout


def test_prune_dry_run_works_while_another_process_records(recorder, tmp_path):
    result = run("prune", tmp_path / "live", "--max-age", "1ms", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Would remove at most 50 record(s)" in result.stdout
    assert "session 1 (being recorded): at most 50 of 50 records" in result.stdout
    assert session_counts(tmp_path / "live") == [(1, 50)]
    real = run("prune", tmp_path / "live", "--max-age", "1ms")  # the live session keeps its newest block
    assert real.exit_code == 0, real.output
    assert session_counts(tmp_path / "live")[0][1] >= 1
    assert recorder.poll() is None


# -- delete, backup, compact ---------------------------------------------------


def test_delete_one_session(log):
    result = run("delete", log, "-s", log.ids[1])
    assert result.exit_code == 0, result.output
    assert f"Deleted session {log.ids[1]} (30 record(s))" in result.stdout
    assert session_counts(log) == [(log.ids[0], 20), (log.ids[2], 40)]
    result = run("delete", log, "-s", "-1")
    assert result.exit_code == 0 and session_counts(log) == [(log.ids[0], 20)]
    assert_one_line_error(run("delete", log, "-s", log.ids[1]), f"has no session {log.ids[1]}")
    assert run("delete", log).exit_code == 2  # -s is required: nothing is deleted by default


def test_delete_of_a_session_being_recorded_is_refused(recorder, tmp_path):
    assert_one_line_error(run("delete", tmp_path / "live", "-s", 1), "session 1", "is being recorded")
    assert session_counts(tmp_path / "live") == [(1, 50)]


def test_backup_and_compacted_backup(log, tmp_path):
    result = run("backup", log, tmp_path / "copy")
    assert result.exit_code == 0, result.output
    assert "3 session(s), 90 record(s)" in result.stdout
    assert session_counts(tmp_path / "copy") == session_counts(log)
    result = run("backup", log, tmp_path / "small", "--compact")
    assert result.exit_code == 0 and "(compacted)" in result.stdout, result.output
    with Log(tmp_path / "small", readonly=True) as small:
        assert [s.range() for s in small.sessions()] == [s.range() for s in Log(log, readonly=True).sessions()]
        assert small.verify() == []
    assert os.stat(tmp_path / "small" / "data.mdb").st_mode & 0o002 == 0


@pytest.mark.parametrize("where", ["existing", "inside", "itself", "no-parent"])
def test_backup_refuses_a_bad_destination(log, tmp_path, where):
    dest = {"existing": tmp_path / "existing", "inside": tmp_path / "log" / "sub", "itself": tmp_path / "log",
            "no-parent": tmp_path / "a" / "b"}[where]
    if where == "existing":
        dest.mkdir()
        (dest / "keep.txt").write_text("mine")
    result = run("backup", log, dest)
    assert_one_line_error(result, str(dest))
    assert session_counts(log) == list(zip(log.ids, (20, 30, 40)))
    if where == "existing":
        assert os.listdir(dest) == ["keep.txt"]


def test_compact_gives_freed_pages_back(tmp_path):
    path = tmp_path / "big"
    record(path, 3000, width=2000)
    record(path, 10)
    size = os.path.getsize(path / "data.mdb")
    assert run("prune", path, "--keep-sessions", 1).exit_code == 0
    assert os.path.getsize(path / "data.mdb") >= size  # LMDB never shrinks its file by itself
    result = run("compact", path)
    assert result.exit_code == 0, result.output
    assert "given back" in result.stdout
    assert os.path.getsize(path / "data.mdb") < size / 10
    with Log(path, readonly=True) as opened:
        assert [s.count for s in opened.sessions()] == [10] and opened.verify() == []
    record(path, 5)  # the compacted log records on
    assert [count for _, count in session_counts(path)] == [10, 5]


def test_compact_is_refused_while_a_recorder_is_live(recorder, tmp_path):
    assert_one_line_error(run("compact", tmp_path / "live"), f"is being recorded by pid {recorder.pid}")
    assert session_counts(tmp_path / "live") == [(1, 50)]


def test_compact_is_refused_while_another_process_reads(log, processes):
    reader = subprocess.Popen([sys.executable, "-c", f"""
import sys, streamlog
log = streamlog.Log({str(log)!r}, readonly=True)
log.sessions()
print("open", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    processes.append(reader)
    assert reader.stdout.readline() == "open\n"
    assert_one_line_error(run("compact", log), "is open in another process")
    reader.stdin.close()
    reader.wait(30)
    assert run("compact", log).exit_code == 0


def test_backup_of_a_live_log_opens_and_verifies_while_the_recording_goes_on(tmp_path, processes):
    log = tmp_path / "busy.streamlog"
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    recorder = subprocess.Popen([sys.executable, "-m", "streamlog", "record", "synth", str(log), "--fast",
                                 "--block", "64", "--max-bytes", "4MiB"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    processes.append(recorder)
    assert "recording session 1" in recorder.stderr.readline()
    counts = []
    for attempt in range(5):
        copy = tmp_path / f"copy{attempt}"
        done = subprocess.run([sys.executable, "-m", "streamlog", "backup", str(log), str(copy)]
                              + (["--compact"] if attempt % 2 else []),
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        with Log(copy, readonly=True) as opened:
            assert opened.verify(crashed=False) == []
            [session] = opened.sessions()
            assert session.status == "crashed"  # live when copied; nothing records the copy
            records = session.range()
            assert records and [r[0] for r in records] == list(range(records[0][0], records[0][0] + len(records)))
            counts.append(session.recorded)
        assert recorder.poll() is None  # the recording went on
    assert counts == sorted(counts) and counts[-1] > counts[0]
    recorder.send_signal(signal.SIGINT)
    out, _ = recorder.communicate(timeout=60)
    assert recorder.returncode == 0 and "session 1 closed" in out
