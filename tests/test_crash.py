"""A real recorder process killed, interrupted, terminated, and replaced.

* SIGKILL at seeded random moments (two per durability mode) through the
  trial function of ``tools/crash_trials.py``, whose module docstring lists
  what each trial checks (the tool runs 60 and more of them);
* SIGKILL of one of three writers recording one session, twice, through
  the tool's multi-writer trial function (``--writers 3``);
* SIGINT to a library script and SIGINT/SIGTERM to the CLI: the process
  exits 0 and the session is ``closed`` with every record read before the stop;
* two recorders on one log: the second is refused naming the first's pid,
  and takes over without any cleanup once the first is killed.

Every child is a real ``sys.executable`` process recording into a real LMDB
log in ``tmp_path``; nothing is timed, only counted.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import streamlog
from helpers import REPO, load_tool, run_python, wait_until
from streamlog import Retention, StreamBuffer
from streamlog.cli import main
from streamlog.sources.command import CommandSource

DEADLINE_S = 60.0
SEED = 61125


crash_trials = load_tool("crash_trials")  # with the progress-file helpers of tools/crash_child.py


def start_recorder(processes, path, progress, mode="full"):
    """A crash_child.py recorder, once it has printed its first committed count."""
    crash_trials.make_progress_file(progress)
    child = crash_trials.start_child(str(path), str(progress), mode)
    processes.append(child)
    lines = crash_trials.ChildLines(child.stdout)
    assert lines.wait_for(crash_trials.newest_starts_with("committed"), time.monotonic() + DEADLINE_S), \
        child.stderr.read()
    return child, lines


def reported_committed(output):
    return max(int(line.split()[1]) for line in output if line.startswith("committed "))


def stored_keys(session):
    return [record[0] for record in session.reader()]


# -- SIGKILL at random moments ------------------------------------------------

# two trials per mode, the three phases twice over the three modes
PHASES_BY_MODE = {"full": ("early", "pruning"), "normal": ("running", "early"), "off": ("pruning", "running")}


@pytest.mark.parametrize("mode", sorted(PHASES_BY_MODE))
def test_sigkill_at_random_moments_leaves_a_log_that_opens_with_a_crashed_gap_free_prefix(tmp_path, mode):
    rng = random.Random(f"{SEED}-{mode}")
    for number, phase in enumerate(PHASES_BY_MODE[mode], 1):
        delay_s = rng.uniform(*crash_trials.KILL_SPANS_S[phase])
        trial = crash_trials.run_trial(str(tmp_path), number, mode, phase, delay_s)
        assert trial.problems == [], trial.line()
        assert trial.next_session == (trial.crashed_session or 0) + 1
        if phase != "early":  # killed while recording: records were committed, and every one reported is kept
            assert trial.last_key >= trial.reported_committed > 0, trial.line()


def test_sigkill_of_one_of_three_writers_leaves_its_stream_crashed_and_the_others_closed_and_complete(tmp_path):
    # the tool's plan: one kill while all three record, one while a joining writer joins
    planned = crash_trials.plan_multi(2, ["full"], 3, random.Random(f"{SEED}-writers"))
    assert [phase for _, phase, _, _ in planned] == ["running", "joining"]
    for number, (mode, phase, victim, delay_s) in enumerate(planned, 1):
        trial = crash_trials.run_multi_trial(str(tmp_path), number, mode, phase, victim, delay_s, writers=3)
        assert trial.problems == [], trial.line()
        assert trial.others_complete == 2, trial.line()
        assert trial.next_session == 2, trial.line()  # one session per trial's log, the next one appended
        if phase == "running":  # killed while recording: its stream exists, and every record reported is kept
            assert trial.stream_stored and trial.last_key >= trial.reported_committed > 0, trial.line()


# what a recorder killed while LMDB created a new log leaves (seen in SIGKILL trials 0-4 ms after "opening")
INTERRUPTED_CREATIONS = {"lock.mdb only": {"lock.mdb": b""},
                         "lock.mdb and an empty data.mdb": {"lock.mdb": b"", "data.mdb": b""}}


@pytest.mark.parametrize("left", sorted(INTERRUPTED_CREATIONS))
def test_a_log_whose_creation_was_killed_opens_and_records(tmp_path, left):
    path = tmp_path / "rec.streamlog"
    path.mkdir()
    for name, content in INTERRUPTED_CREATIONS[left].items():
        (path / name).write_bytes(content)
    with pytest.raises(streamlog.errors.LogNotFound, match="creation was interrupted"):
        streamlog.Log(path, readonly=True)
    with StreamBuffer(crash_trials.ShortCount(20), log=str(path)) as buf:
        buf.wait(DEADLINE_S)
    with streamlog.Log(path) as log:
        [session] = log.sessions()
        assert (session.id, session.status, stored_keys(session)) == (1, "closed", list(range(1, 21)))
        assert log.verify() == []


# what a recorder killed between creating its session and its first commit leaves (seen in the random trials):
# a live session whose stream has no records database yet
KILLED_BEFORE_FIRST_COMMIT = """
import os, signal, sys, streamlog
log = streamlog.Log(sys.argv[1])
log.begin_writing()
log.catalog.create_session("main", {}, {}, "full")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_session_killed_before_its_first_commit_is_marked_crashed_and_later_pruned(tmp_path):
    path = tmp_path / "rec.streamlog"
    assert run_python(KILLED_BEFORE_FIRST_COMMIT, path, check=False, timeout=DEADLINE_S).returncode == -signal.SIGKILL
    with streamlog.Log(path) as log:
        with StreamBuffer(crash_trials.ShortCount(20), log=log) as buf:
            buf.wait(DEADLINE_S)
        assert [(s.id, s.status, s.count) for s in log.sessions()] == [(1, "crashed", 0), (2, "closed", 20)]
        assert [note.split(" was left live")[0] for note in log.verify()] == ["session 1"]
        with StreamBuffer(crash_trials.ShortCount(20), log=log, retention=Retention(max_sessions=1)) as buf:
            buf.wait(DEADLINE_S)
        assert [(s.id, s.status, s.count) for s in log.sessions()] == [(3, "closed", 20)]
        assert log.verify() == []


# -- SIGINT and SIGTERM -----------------------------------------------------------


def test_sigint_makes_a_library_recorder_close_its_session_with_every_record_read(tmp_path, processes):
    path, progress = tmp_path / "rec.streamlog", tmp_path / "progress"
    child, lines = start_recorder(processes, path, progress)
    child.send_signal(signal.SIGINT)
    assert child.wait(DEADLINE_S) == 0, child.stderr.read()
    output = lines.rest()
    assert output[-1].startswith("stopped ")
    produced = crash_trials.read_progress(progress)
    with streamlog.Log(path) as log:
        session = log.session(-1)
        assert session.status == "closed" and session.error is None
        assert stored_keys(session) == list(range(1, produced + 1))
        assert session.count == int(output[-1].split()[1]) == produced >= reported_committed(output) > 0
        assert log.verify() == []


# prints 0, 1, 2, ... one line each, and after each line how many it has printed into the file argv[1]
PRODUCER = """
import itertools, os, sys, time
printed = os.open(sys.argv[1], os.O_WRONLY)
for i in itertools.count():
    print(i, flush=True)
    os.pwrite(printed, str(i + 1).encode().ljust(12), 0)
    time.sleep(0.001)
"""


def printed_so_far(path):
    text = path.read_text().strip()
    return int(text) if text else 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_makes_the_cli_recorder_close_its_session_with_every_line_printed_before_it(
        tmp_path, processes, signum):
    log, printed = tmp_path / "cmd.streamlog", tmp_path / "printed"
    printed.write_text("")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    recorder = subprocess.Popen([sys.executable, "-m", "streamlog", "record", "cmd", str(log), "--",
                                 sys.executable, "-c", PRODUCER, str(printed)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    processes.append(recorder)
    wait_until(lambda: printed_so_far(printed) >= 50, "the command to print 50 lines", timeout=DEADLINE_S)
    before_signal = printed_so_far(printed)
    recorder.send_signal(signum)
    stdout, stderr = recorder.communicate(timeout=DEADLINE_S)
    assert recorder.returncode == 0, stderr
    with streamlog.Log(log) as opened:
        [session] = opened.sessions()
        lines = [record[1:] for record in session.reader()]
        assert session.status == "closed" and opened.verify() == []
    assert lines == [("stdout", str(i)) for i in range(len(lines))]
    assert len(lines) >= before_signal
    assert stdout.startswith(f"session {session.id} closed: {len(lines)} records, ")
    assert session.info["exit_status"] == -signal.SIGTERM  # stopping the recording stopped the command


# prints argv[2] lines at once, then says so in the file argv[1] and keeps running
BURST = """
import sys, time
for i in range(int(sys.argv[2])):
    print(i)
sys.stdout.flush()
open(sys.argv[1], "w").write("printed")
time.sleep(600)
"""


def test_stopping_a_command_recording_keeps_the_lines_the_command_printed_before_the_stop(tmp_path):
    flag = tmp_path / "flag"
    source = CommandSource([sys.executable, "-c", BURST, str(flag), "500"])
    with StreamBuffer(source, log=str(tmp_path / "cmd.streamlog")) as buf:
        wait_until(flag.exists, "the command to print its lines", timeout=DEADLINE_S)
        buf.stop()  # the lines are in the pipe, most likely not read yet
        lines = [record[2] for record in buf.session.reader()]
    assert lines == [str(i) for i in range(500)]
    assert buf.session.status == "closed"


# -- two recorders on one log ----------------------------------------------------

RECORD_FIVE = """
import sys
from streamlog import StreamBuffer
from streamlog.sources.synth import SynthSource
with StreamBuffer(SynthSource(count=5, realtime=False), log=sys.argv[1]) as buf:
    buf.wait(60)
print(buf.session.id, buf.session.status)
"""


def test_a_second_recorder_records_beside_the_first_and_a_third_marks_the_killed_one_crashed(tmp_path, processes):
    path = tmp_path / "rec.streamlog"
    first, first_lines = start_recorder(processes, path, tmp_path / "first.progress")
    second, second_lines = start_recorder(processes, path, tmp_path / "second.progress")

    first.send_signal(signal.SIGKILL)
    assert first.wait(DEADLINE_S) == -signal.SIGKILL
    first_committed = reported_committed(first_lines.rest())
    with streamlog.Log(path, readonly=True) as log:
        assert [s.status for s in log.sessions()] == ["crashed", "live"]
        assert log.session(1).stop_time is None  # not yet stored: no writer opened the log since
    assert run_python(RECORD_FIVE, path, timeout=DEADLINE_S).stdout.split() == ["3", "closed"]
    cli = subprocess.run([sys.executable, "-m", "streamlog", "record", "synth", str(path), "--count", "5", "--fast"],
                         capture_output=True, text=True, timeout=DEADLINE_S,
                         env=dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert cli.returncode == 0, cli.stderr
    second.send_signal(signal.SIGINT)
    assert second.wait(DEADLINE_S) == 0, second.stderr.read()
    second_lines.rest()

    with streamlog.Log(path) as log:
        crashed, closed, *short = log.sessions()
        assert [(s.status, s.count) for s in short] == [("closed", 5), ("closed", 5)]
        assert (crashed.id, crashed.status, crashed.pid) == (1, "crashed", first.pid)
        assert (closed.id, closed.status, closed.pid) == (2, "closed", second.pid)
        kept = stored_keys(crashed)
        assert kept == list(range(1, len(kept) + 1)) and len(kept) >= first_committed > 0
        assert crashed.stop_time is not None  # marked crashed for good, stopped at its last record
        produced = crash_trials.read_progress(tmp_path / "second.progress")
        assert stored_keys(closed) == list(range(1, produced + 1))
        assert [note.split(" was left live")[0] for note in log.verify()] == ["session 1"]
    listed = CliRunner().invoke(main, ["sessions", str(path)])
    assert listed.exit_code == 0 and listed.output.splitlines()[-1] == (
        f"session 1 crashed: its recorder (pid {first.pid}) died; it holds what was committed before")
