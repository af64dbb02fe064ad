"""``streamlog record ...``, ``follow`` and ``demo`` through click's CliRunner."""

import io
import json
import re
import subprocess
import sys
import textwrap

import click
import pytest
from click.testing import CliRunner

from streamlog import Log, SourceReader
from streamlog.cli import main
from streamlog.cli.recording import run_recording

SUMMARY = re.compile(r"^session (?P<id>\d+) (?P<status>\w+): (?P<count>\d+) records, ", re.M)


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def summary_of(result):
    match = SUMMARY.search(result.stdout)
    assert match, f"no summary line in {result.stdout!r}"
    return match


def stored_session(log_path, session_id=-1):
    with Log(str(log_path), readonly=True, create=False) as log:
        session = log.session(session_id)
        return {"status": session.status, "count": session.count, "info": session.info, "labels": session.labels,
                "first": session.first_key, "last": session.last_key,
                "records": session.range()}


# -- record synth / lines / cmd -----------------------------------------------

def test_record_synth_count_prints_summary_and_stores_info_and_labels(tmp_path):
    log = tmp_path / "s.streamlog"
    result = invoke("record", "synth", log, "--count", 7, "--block", 10, "--fast",
                    "--info", "site=lab", "--info", "note=a=b")
    assert result.exit_code == 0, result.output
    assert "recording session 1" in result.stderr
    assert summary_of(result).group("id", "status", "count") == ("1", "closed", "7")
    assert "keys 0 .. 6" in result.stdout
    stored = stored_session(log)
    assert stored["status"] == "closed" and stored["count"] == 7
    assert stored["labels"] == {"site": "lab", "note": "a=b"}
    assert stored["info"]["source"] == "synth" and stored["info"]["block"] == 10
    assert [i for i, _ in stored["records"]] == list(range(7))


def test_record_synth_duration_ends_a_realtime_recording(tmp_path):
    log = tmp_path / "d.streamlog"
    result = invoke("record", "synth", log, "--duration", 0.3, "--rate", 1000, "--block", 10, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output == ""  # --quiet: no notice, no summary
    stored = stored_session(log)
    assert stored["status"] == "closed" and stored["count"] > 0
    assert [i for i, _ in stored["records"]] == list(range(stored["count"]))


def test_each_run_is_a_new_session(tmp_path):
    log = tmp_path / "many.streamlog"
    for expected_id in ("1", "2"):
        result = invoke("record", "synth", log, "--count", 2, "--fast")
        assert summary_of(result).group("id") == expected_id


def test_record_lines_of_a_file(tmp_path):
    log, text = tmp_path / "l.streamlog", tmp_path / "in.txt"
    text.write_text("alpha\nbeta\ngamma\n")
    result = invoke("record", "lines", log, text, "--max-bytes", "10MB", "--max-sessions", 3,
                    "--durability", "normal")
    assert result.exit_code == 0, result.output
    assert summary_of(result).group("count") == "3"
    stored = stored_session(log)
    assert stored["records"] == [(1, "alpha"), (2, "beta"), (3, "gamma")]
    assert stored["info"]["path"] == str(text)


def test_record_lines_of_stdin(tmp_path):
    log = tmp_path / "stdin.streamlog"
    result = invoke("record", "lines", log, "-", input="one\ntwo\n")
    assert result.exit_code == 0, result.output
    assert stored_session(log)["records"] == [(1, "one"), (2, "two")]


def test_record_cmd_stores_lines_and_exit_status(tmp_path):
    log = tmp_path / "c.streamlog"
    script = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    result = invoke("record", "cmd", log, "--", sys.executable, "-c", script)
    assert result.exit_code == 3, result.output  # record cmd exits with its command's status
    assert "command exit status 3" in result.stdout
    stored = stored_session(log)
    assert sorted((channel, line) for _, channel, line in stored["records"]) == [("stderr", "err"), ("stdout", "out")]
    assert stored["info"]["exit_status"] == 3 and stored["info"]["argv"][1:] == ["-c", script]


@pytest.mark.parametrize("script, status", [("pass", 0), ("import sys; sys.exit(7)", 7),
                                            ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", 128 + 15)])
def test_record_cmd_exits_with_the_commands_status(tmp_path, script, status):
    result = subprocess.run([sys.executable, "-m", "streamlog", "record", "cmd", str(tmp_path / "c.streamlog"), "-q",
                             "--", sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == status, result.stderr


def test_record_cmd_stopped_by_duration_exits_0(tmp_path):
    result = invoke("record", "cmd", tmp_path / "c.streamlog", "--duration", "0.3", "--",
                    sys.executable, "-c", "import time; time.sleep(30)")
    assert result.exit_code == 0, result.output
    assert stored_session(tmp_path / "c.streamlog")["info"]["exit_status"] != 0  # stopped by the recorder


# -- bad input ----------------------------------------------------------------

def one_line_error(result):
    """The error line of a failed command: stderr's last line, the only one starting with "Error:"."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert errors and errors == lines[-1:], result.stderr
    return errors[0]


def test_missing_input_file_is_one_line_error(tmp_path):
    result = invoke("record", "lines", tmp_path / "l.streamlog", tmp_path / "missing.txt")
    assert result.exit_code == 1
    assert "missing.txt" in one_line_error(result) and "no such file" in result.stderr
    assert not (tmp_path / "l.streamlog").exists()  # nothing recorded, no empty session


def test_command_that_does_not_exist_is_one_line_error(tmp_path):
    result = invoke("record", "cmd", tmp_path / "c.streamlog", "--", "no-such-program-xyz", "-v")
    assert result.exit_code == 1
    assert "cannot start command 'no-such-program-xyz'" in one_line_error(result)


@pytest.mark.parametrize("args, message", [
    (["--info", "no-equals-sign"], "'no-equals-sign' is not KEY=VALUE"),
    (["--info", "=value"], "is not KEY=VALUE"),
    (["--max-bytes", "10XB"], "'10XB' is not a size"),
    (["--max-bytes", "10KB"], "at least 1 MiB"),
    (["--durability", "sometimes"], "sometimes"),
    (["--max-record-bytes", "0"], "at least 1 byte"),
    (["--count", "-1"], "-1"),
])
def test_bad_options_are_usage_errors(tmp_path, args, message):
    result = invoke("record", "synth", tmp_path / "x.streamlog", "--fast", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_record_over_max_record_bytes_fails_the_session_and_keeps_the_lines_before(tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("short\n" + "x" * 3000 + "\nafter\n")
    log = tmp_path / "l.streamlog"
    result = invoke("record", "lines", log, text, "--max-record-bytes", "1KiB")
    assert result.exit_code == 1
    assert "over the limit of 1,024 bytes (max_record_bytes)" in one_line_error(result)
    session = Log(log, readonly=True).session(-1)
    assert session.status == "failed" and list(session.irange()) == [(1, "short")]


def test_a_second_recorder_records_a_session_of_its_own_beside_a_live_one(tmp_path):
    log = tmp_path / "locked.streamlog"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from streamlog import StreamBuffer
            from streamlog.sources.synth import SynthSource
            with StreamBuffer(SynthSource(rate_hz=100.0, block=10), log={str(log)!r}):
                print("recording", flush=True)
                sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "recording\n"
        result = invoke("record", "synth", log, "--count", 1, "--fast")
        assert result.exit_code == 0, result.output
        assert [s.status for s in Log(log, readonly=True).sessions()] == ["live", "closed"]
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    assert [(s.status, s.count) for s in Log(log, readonly=True).sessions()][1] == ("closed", 1)


class BrokenSource(SourceReader):
    """Yields two records, then fails."""

    def open(self):
        self.n = 0

    def read(self):
        self.n += 1
        if self.n > 2:
            raise RuntimeError("sensor unplugged")
        return self.n

    def close(self):
        pass

    def key(self, data):
        return data


def record_broken_source(log):
    """Record BrokenSource into ``log`` through the recording loop of the CLI."""
    @click.command()
    def broken():
        run_recording(BrokenSource(), str(log), duration=None, maxlen=10, max_bytes=None,
                      max_age=None, max_sessions=None, durability="full", max_record_bytes=1 << 20, info_pairs=(),
                      quiet=False)

    return CliRunner().invoke(broken)


def test_failed_source_prints_summary_then_error_and_exits_1(tmp_path):
    result = record_broken_source(tmp_path / "b.streamlog")
    assert result.exit_code == 1
    assert summary_of(result).group("status", "count") == ("failed", "2")
    assert "sensor unplugged" in one_line_error(result)


# -- follow -------------------------------------------------------------------

def test_follow_a_finished_session_from_start_prints_all_and_exits(tmp_path):
    log, text = tmp_path / "f.streamlog", tmp_path / "in.txt"
    text.write_text("a\nb\nc\n")
    assert invoke("record", "lines", log, text, "--quiet").exit_code == 0
    result = invoke("follow", log, "--from-start", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [[1, "a"], [2, "b"], [3, "c"]]


def test_follow_without_from_start_skips_what_is_stored(tmp_path):
    log = tmp_path / "f.streamlog"
    assert invoke("record", "synth", log, "--count", 3, "--fast", "--quiet").exit_code == 0
    result = invoke("follow", log)
    assert result.exit_code == 0 and result.stdout == ""
    assert "session 1 is closed: nothing new to follow" in result.stderr


def test_follow_a_failed_session_prints_its_records_then_the_failure(tmp_path):
    log = tmp_path / "b.streamlog"
    assert record_broken_source(log).exit_code == 1
    result = invoke("follow", log, "--from-start")
    assert result.exit_code == 3  # the exit status says the followed session failed
    assert result.stdout.splitlines() == ["1", "2"]
    assert result.stderr.startswith("session 1 failed: ") and "sensor unplugged" in result.stderr


def test_follow_a_missing_log_is_one_line_error(tmp_path):
    result = invoke("follow", tmp_path / "nothing-here")
    assert result.exit_code == 1
    assert "nothing-here" in one_line_error(result)


# -- demo and help ------------------------------------------------------------

def test_demo_records_and_queries(tmp_path):
    result = invoke("demo", "--dir", tmp_path, "--seconds", 0.5)
    assert result.exit_code == 0, result.output
    for command in ("$ streamlog record synth", "$ streamlog sessions", "$ streamlog range", "$ streamlog tail",
                    "streamlog follow", "streamlog export"):
        assert command in result.stdout
    stored = stored_session(tmp_path / "demo.streamlog")
    assert stored["status"] == "closed" and stored["labels"]["purpose"] == "demo"


@pytest.mark.parametrize("command", [["record"], ["record", "lines"], ["record", "cmd"], ["record", "synth"],
                                     ["follow"], ["demo"]])
def test_help_has_an_example(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "Example" in result.stdout


def test_record_lists_its_sources():
    listed = invoke("record", "--help").stdout
    assert all(f"  {name} " in listed for name in ("lines", "cmd", "synth"))
    try:
        import streamlog.cli.audio  # noqa: F401
    except ModuleNotFoundError:
        assert "  audio " not in listed
    else:
        assert "  audio " in listed


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_status_line_on_a_terminal_only(tmp_path):
    from streamlog import StreamBuffer
    from streamlog.cli.recording import StatusLine
    from streamlog.sources.synth import SynthSource

    with StreamBuffer(SynthSource(count=5, realtime=False), log=str(tmp_path / "s.streamlog")) as buf:
        buf.wait(30)
        terminal, pipe = Terminal(), io.StringIO()
        shown, hidden = StatusLine(terminal), StatusLine(pipe)
        for line in (shown, hidden):
            line.update(buf, 2.0)
            line.clear()
    text = terminal.getvalue()
    assert text.startswith("\r5 records  2.5/s  ") and text.rstrip(" ").endswith("\r") and " 2s" in text
    assert pipe.getvalue() == ""
    assert StatusLine(Terminal(), enabled=False).enabled is False  # --quiet


def test_record_prints_no_status_line_into_a_pipe(tmp_path):
    result = subprocess.run([sys.executable, "-m", "streamlog", "record", "synth", str(tmp_path / "p.streamlog"),
                             "--count", "20", "--rate", "2000", "--block", "100"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\r" not in result.stdout
