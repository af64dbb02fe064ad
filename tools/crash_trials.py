"""Crash trials: SIGKILL a recorder subprocess at random moments, then check the log it left.

    python tools/crash_trials.py --trials 60 [--seed S] [--modes full,normal,off] [--dir DIR] [--writers N]

Each trial starts ``tools/crash_child.py`` (a StreamBuffer recording
``(i, payload)`` keyed 1, 2, ... at a steady rate into a fresh log) and kills
it with SIGKILL at a random moment of one of three phases:

* ``early``: 0-40 ms after the child says it is opening the log (creating the
  log, the session, the first commits);
* ``running``: 50-1000 ms into the recording;
* ``pruning``: 300-1200 ms into a recording with ``Retention(max_bytes=1 MiB)``
  and 512-byte payloads, so retention prunes after every commit.

After the kill, the trial checks: ``streamlog.Log(path)`` opens without error
and without any repair step; the killed session shows ``crashed``;
``Log.verify()`` reports nothing but the crashed-session note; the stored keys
are gap-free (``1..n``, or ``k..n`` when retention pruned the oldest), every
payload is intact and ``n`` is at most what the source produced and at least
the last ``committed`` count the child printed before it died; a new short
recording then appends a ``closed`` session with a higher id.

With ``--writers N`` (N >= 2) each trial starts N children recording
streams ``w1`` .. ``wN`` of one session (``w1`` creates it, the others join
it by id) at 3,000 records a second each, and SIGKILLs one of them, drawn
at random, in one of two phases: ``running`` (50-1000 ms after its first
``committed`` line, once every writer says ``session``) or ``joining``
(0-40 ms after a joining writer says ``opening``, while it registers and
adds its stream); then it stops the others with SIGINT.  The checks, again with no repair step: the log
opens; the killed writer's stream, if it got one, is ``crashed`` and holds
a gap-free prefix ``1..n`` with ``n`` between its last reported
``committed`` count and what its source produced; every other stream is
``closed`` and holds every record its source produced; the session is
``crashed`` (crashed wins over closed), or ``closed`` when the killed
writer never added its stream; ``Log.verify()`` reports the crashed-session
note alone, naming the killed writer's pid (nothing when closed); a new recording appends a session with a
higher id.

Loss: records the source had produced but the log does not hold, and the
milliseconds between the arrival of the last stored record and the kill.
The trials are seeded (the seed is printed); the exit status is 1 when any
check failed.
"""

import argparse
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, REPO)
sys.path.insert(0, TOOLS)

import streamlog  # noqa: E402
from crash_child import make_progress_file, payload_of, read_progress  # noqa: E402
from streamlog import SourceReader, StreamBuffer, errors  # noqa: E402

CHILD = os.path.join(TOOLS, "crash_child.py")
MODES = ("full", "normal", "off")
PHASES = ("early", "running", "pruning")
MULTI_PHASES = ("running", "joining")
KILL_SPANS_S = {"early": (0.0, 0.040), "running": (0.050, 1.0), "pruning": (0.300, 1.2),  # after the phase's line
                "joining": (0.0, 0.040)}
RATE = 10_000  # records a second
MULTI_RATE = 3_000  # records a second per writer with --writers
PAYLOAD = 64
PRUNING_PAYLOAD = 512
PRUNING_MAX_BYTES = 1 << 20
NEXT_SESSION_RECORDS = 20
DEADLINE_S = 60.0
DURABILITY_NOTE = (
    "A SIGKILL ends the process, not the machine: every commit has reached the OS page cache in every mode, "
    "so the three modes may lose the same on a kill. They differ only on a power cut or OS crash "
    "(normal may undo the last commit, off may lose recent commits), which these trials do not cause.")


@dataclass
class Trial:
    """One kill and what the log held afterwards."""

    number: int
    mode: str
    phase: str
    delay_ms: float
    reported_committed: int = 0
    produced: int = 0
    first_key: Optional[int] = None
    last_key: int = 0
    lost: int = 0
    window_ms: Optional[float] = None
    crashed_session: Optional[int] = None
    next_session: Optional[int] = None
    problems: List[str] = field(default_factory=list)

    @property
    def pruned(self):
        return self.first_key is not None and self.first_key > 1

    def line(self):
        if self.crashed_session is None:
            stored = "no session yet"
        elif self.first_key is None:
            stored = f"session {self.crashed_session} without records"
        else:
            stored = f"session {self.crashed_session} keys {self.first_key}..{self.last_key}"
        window = "n/a" if self.window_ms is None else f"{self.window_ms:.1f} ms"
        verdict = "ok" if not self.problems else "FAILED: " + "; ".join(self.problems)
        return (f"trial {self.number:3d} {self.mode:6s} {self.phase:7s} kill at +{self.delay_ms:6.1f} ms: "
                f"reported committed {self.reported_committed}, produced {self.produced}, {stored}"
                f"{' (pruned)' if self.pruned else ''}, lost {self.lost}, window {window}: {verdict}")


class ShortCount(SourceReader):
    """Records ``(i, b"next")`` for i = 1..n, then ends."""

    def __init__(self, n):
        self.n = n

    def open(self):
        self.i = 0

    def read(self):
        if self.i >= self.n:
            raise StopIteration
        self.i += 1
        return (self.i, b"next")

    def close(self):
        pass

    def key(self, data):
        return data[0]


class ChildLines:
    """Collects the lines of a child's pipe in a thread, so a caller can wait
    for them with a deadline; a line without its newline (cut by a kill) is
    not a line."""

    def __init__(self, pipe):
        self.lines = []
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe):
        for line in pipe:
            if line.endswith("\n"):
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate, deadline):
        """Collect lines until ``predicate(lines)`` holds (True); False when the
        child's output ended or the ``time.monotonic()`` deadline passed first."""
        while not predicate(self.lines):
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                self._queue.put(None)
                return False
            self.lines.append(line)
        return True

    def rest(self):
        """All lines, once the child's stdout has ended."""
        self._thread.join(DEADLINE_S)
        while True:
            line = self._queue.get()
            if line is None:
                return self.lines
            self.lines.append(line)


def newest_starts_with(prefix):
    """A :meth:`ChildLines.wait_for` predicate: the newest line starts with ``prefix``."""
    return lambda lines: bool(lines) and lines[-1].startswith(prefix)


def start_child(path, progress, mode, *, max_bytes=None, payload=PAYLOAD, rate=RATE, stream=None, join=None):
    """Start ``crash_child.py`` recording into ``path`` (into ``stream`` of
    the live session ``join`` when given); stdout is a text pipe."""
    argv = [sys.executable, CHILD, path, progress, "--durability", mode, "--rate", str(rate),
            "--payload", str(payload)]
    if max_bytes:
        argv += ["--max-bytes", str(max_bytes)]
    if stream:
        argv += ["--stream", stream]
    if join is not None:
        argv += ["--join", str(join)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_trial(directory, number, mode, phase, delay_s):
    """Record in a child, SIGKILL it ``delay_s`` after the phase's starting
    line, check the log; return the :class:`Trial` (``problems`` empty when
    every check passed)."""
    trial = Trial(number, mode, phase, delay_s * 1e3)
    path = os.path.join(directory, f"trial-{number}.streamlog")
    progress = os.path.join(directory, f"trial-{number}.progress")
    make_progress_file(progress)
    pruning = phase == "pruning"
    child = start_child(path, progress, mode, max_bytes=PRUNING_MAX_BYTES if pruning else None,
                        payload=PRUNING_PAYLOAD if pruning else PAYLOAD)
    try:
        lines = ChildLines(child.stdout)
        trigger = "opening" if phase == "early" else "session"
        if not lines.wait_for(newest_starts_with(trigger), time.monotonic() + DEADLINE_S):
            child.kill()
            child.wait(DEADLINE_S)
            trial.problems.append(f"the child never printed {trigger!r}: {child.stderr.read().strip()}")
            return trial
        time.sleep(delay_s)  # the random moment of the kill is the point of the trial
        kill_time = time.time()
        child.send_signal(signal.SIGKILL)
        child.wait(DEADLINE_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(DEADLINE_S)
    if child.returncode != -signal.SIGKILL:
        trial.problems.append(f"the child ended before the kill (status {child.returncode}): "
                              f"{child.stderr.read().strip()}")
    child.stderr.close()
    output = lines.rest()
    trial.reported_committed = max([int(line.split()[1]) for line in output if line.startswith("committed ")],
                                   default=0)
    session_reported = any(line.startswith("session ") for line in output)
    trial.produced = read_progress(progress)
    check_log(trial, path, session_reported, PRUNING_PAYLOAD if pruning else PAYLOAD, kill_time)
    return trial


def check_log(trial, path, session_reported, payload, kill_time):
    """Open the killed child's log and check it (see the module docstring);
    add what fails to ``trial.problems`` and fill in the loss figures."""
    problems = trial.problems
    try:
        log = streamlog.Log(path)
    except errors.StreamlogError as exc:
        left = {name: os.path.getsize(os.path.join(path, name)) for name in sorted(os.listdir(path))}
        problems.append(f"the log does not open: {exc!r} (files and sizes: {left})")
        return
    with log:
        sessions = log.sessions()
        if len(sessions) > 1:
            problems.append(f"{len(sessions)} sessions after one recording")
        if not sessions:
            if session_reported:
                problems.append("the session the child reported is not in the log")
            trial.lost = trial.produced
        else:
            check_crashed_session(trial, log, sessions[0], payload)
        record_next_session(trial, log, kill_time)


def check_crashed_session(trial, log, session, payload):
    problems = trial.problems
    trial.crashed_session = session.id
    if session.status != "crashed":
        problems.append(f"session {session.id} is {session.status!r} after the kill, not 'crashed'")
    check_notes(problems, log, session.id)
    trial.first_key, trial.last_key = check_prefix(problems, session, "main", payload,
                                                   pruned=trial.phase == "pruning")
    check_bounds(trial)


def check_notes(problems, log, crashed_id, pid=None):
    """``Log.verify()`` must report the crashed-session note of session
    ``crashed_id`` (naming process ``pid``, the dead writer, when given) and
    nothing else (nothing at all when it is None)."""
    notes = log.verify()
    who = "" if pid is None else f" by process {pid}, which is gone"
    expected = [] if crashed_id is None else [f"session {crashed_id} was left live{who}"]
    if len(notes) != len(expected) or not all(note.startswith(start) for note, start in zip(notes, expected)):
        problems.append(f"verify() reports {notes}")


def check_prefix(problems, session, stream, payload, *, pruned=False):
    """Read ``stream`` of ``session``: its keys must be gap-free, starting at
    1 (or later when ``pruned``), every payload intact and the stream's count
    right; return its ``(first_key, last_key)``, ``(None, 0)`` when empty."""
    keys = []
    for record in session.reader(stream):
        keys.append(record[0])
        if record[1] != payload_of(record[0], payload):
            problems.append(f"stream {stream!r}: record {record[0]} holds a damaged payload")
            break
    count = session.stream_info(stream)["count"]
    if len(keys) != count:
        problems.append(f"stream {stream!r} counts {count} records but holds {len(keys)}")
    if not keys:
        return None, 0
    if keys != list(range(keys[0], keys[0] + len(keys))):
        problems.append(f"stream {stream!r}: the stored keys {keys[0]}..{keys[-1]} have gaps ({len(keys)} records)")
    if keys[0] != 1 and not pruned:
        problems.append(f"stream {stream!r}: the stored keys start at {keys[0]}, not 1, without retention")
    return keys[0], keys[-1]


def check_bounds(trial):
    """The killed writer's last stored key lies between what it reported
    committed and what its source produced; the rest is its loss."""
    if trial.last_key > trial.produced:
        trial.problems.append(f"the log holds key {trial.last_key}, beyond the {trial.produced} records produced")
    if trial.last_key < trial.reported_committed:
        trial.problems.append(f"{trial.reported_committed} records were reported committed before the kill, "
                              f"but the log holds only up to key {trial.last_key}")
    trial.lost = trial.produced - trial.last_key


def record_next_session(trial, log, kill_time=None):
    """Record a short session after the crash: it must append, closed, with a
    higher id, and mark the killed session crashed for good.  With
    ``kill_time`` the loss window is measured from the crashed session's
    ``stop_time`` (the arrival of its last record)."""
    problems = trial.problems
    try:
        with StreamBuffer(ShortCount(NEXT_SESSION_RECORDS), log=log, maxlen=100) as buf:
            # while a writer is alive a session left "live" would show "live": it must be stored crashed now
            crashed = None if trial.crashed_session is None else log.session(trial.crashed_session)
            buf.wait(DEADLINE_S)
    except errors.StreamlogError as exc:
        problems.append(f"the next recording fails: {exc!r}")
        return
    session = buf.session
    trial.next_session = session.id
    if (session.status, session.count) != ("closed", NEXT_SESSION_RECORDS):
        problems.append(f"the next session is {session.status} with {session.count} records")
    if crashed is None:
        return
    if session.id <= crashed.id:
        problems.append(f"the next session got id {session.id}, not above {crashed.id}")
    if crashed.status != "crashed":
        problems.append(f"beside the next writer the killed session shows {crashed.status!r}, not 'crashed'")
    if trial.first_key is not None and kill_time is not None:
        trial.window_ms = (kill_time - crashed.stop_time) * 1e3  # stop_time: arrival of its last record



# -- several writers, one session ------------------------------------------------

@dataclass
class MultiTrial(Trial):
    """One kill among ``writers`` processes recording one session; the
    inherited figures are the killed writer's (``victim``, 0-based: its
    stream is ``w<victim + 1>``), ``others_complete`` counts the survivors
    whose stream ended closed with every record their source produced."""

    writers: int = 3
    victim: int = 0
    stream_stored: bool = False
    others_complete: int = 0
    stop_s: float = 0.0  # the longest a surviving writer took to end after its SIGINT

    def line(self):
        if not self.stream_stored:
            stored = "its stream never stored"
        elif self.first_key is None:
            stored = "its stream without records"
        else:
            stored = f"its keys {self.first_key}..{self.last_key}"
        verdict = "ok" if not self.problems else "FAILED: " + "; ".join(self.problems)
        return (f"trial {self.number:3d} {self.mode:6s} {self.phase:7s} kill w{self.victim + 1} of {self.writers} "
                f"at +{self.delay_ms:6.1f} ms: reported committed {self.reported_committed}, produced "
                f"{self.produced}, {stored}, lost {self.lost}; {self.others_complete} of {self.writers - 1} "
                f"others complete, ended {self.stop_s:.2f} s after SIGINT: {verdict}")


@dataclass
class Writer:
    """One writer process of a multi-writer trial and what it printed."""

    stream: str
    progress: str
    child: subprocess.Popen
    lines: ChildLines

    def reported(self, prefix):
        """The numbers N of its lines ending ``prefix N`` (e.g. ``"committed "``).
        A SIGINT that cuts a line before its newline makes the next one
        continue it (``committed 26stopped 2640``): the part before is not a
        number there, and the last part still counts."""
        numbers = []
        for line in self.lines.lines:
            _, found, number = line.rpartition(prefix)
            if found and number.isdigit():
                numbers.append(int(number))
        return numbers


def start_writer(directory, number, index, path, mode, join):
    """Start writer ``index`` of trial ``number`` on stream ``w<index + 1>``,
    creating the session (``join`` None) or joining session ``join``."""
    stream = f"w{index + 1}"
    progress = os.path.join(directory, f"trial-{number}-{stream}.progress")
    make_progress_file(progress)
    child = start_child(path, progress, mode, rate=MULTI_RATE, stream=stream, join=join)
    return Writer(stream, progress, child, ChildLines(child.stdout))


def end_child(child, signum):
    """Send ``signum`` to ``child`` (unless it has ended) and reap it; return
    its status, None when it did not end within ``DEADLINE_S``."""
    if child.poll() is None:
        child.send_signal(signum)
    try:
        return child.wait(DEADLINE_S)
    except subprocess.TimeoutExpired:
        return None


def stop_survivor(trial, writer):
    """SIGINT a surviving writer and reap it; return its status (None if it
    had to be killed).  One that does not end within ``DEADLINE_S`` is
    looked at (its threads' states and kernel wait channels, its CPU time,
    its Python stacks through SIGUSR1) and given ``DEADLINE_S`` more, so the
    problem says whether it was stuck or only slow (a CPU-starved process
    under ``nice``), and where."""
    child = writer.child
    started = time.monotonic()
    status = end_child(child, signal.SIGINT)
    if status is None:
        seen = describe_process(child.pid)
        child.send_signal(signal.SIGUSR1)
        status = end_child(child, signal.SIGCONT)  # SIGCONT: a signal that changes nothing
        waited = time.monotonic() - started
        if status is None:
            end_child(child, signal.SIGKILL)
            stacks = child.stderr.read()[-4000:]
            trial.problems.append(f"writer {writer.stream} did not end within {waited:.0f} s of its SIGINT; "
                                  f"after {DEADLINE_S:g} s: {seen}; its stacks: {stacks}")
            return None
        trial.problems.append(f"writer {writer.stream} ended only {waited:.0f} s after its SIGINT (after "
                              f"{DEADLINE_S:g} s: {seen})")
    trial.stop_s = max(trial.stop_s, time.monotonic() - started)
    return status


def describe_process(pid):
    """One line about process ``pid`` from /proc: its CPU time and, per
    thread, its name, state (R running or runnable, S sleeping, D in the
    kernel) and kernel wait channel."""
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        threads = []
        for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            state = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()[0]
            wchan = open(f"/proc/{pid}/task/{tid}/wchan").read().strip() or "-"
            threads.append(f"{name} {state} {wchan}")
    except OSError as exc:
        return f"/proc/{pid} unreadable ({exc.strerror})"
    return f"CPU {cpu:.2f} s, threads: {'; '.join(threads)}"


def run_multi_trial(directory, number, mode, phase, victim, delay_s, writers=3):
    """Start ``writers`` recorders of one session (the first creates it, the
    others join it), SIGKILL writer ``victim`` ``delay_s`` after the phase's
    line (``running``: the victim's first ``committed`` line once every
    writer printed ``session``; ``joining``: the victim's own ``opening``,
    victim >= 1), stop the others with SIGINT and check the log; return the
    :class:`MultiTrial`."""
    trial = MultiTrial(number, mode, phase, delay_s * 1e3, writers=writers, victim=victim)
    path = os.path.join(directory, f"trial-{number}.streamlog")
    started = []
    try:
        session_id = None
        for index in range(writers):
            writer = start_writer(directory, number, index, path, mode, session_id)
            started.append(writer)
            trigger = "opening" if (index == victim and phase == "joining") else "session"
            if not writer.lines.wait_for(newest_starts_with(trigger), time.monotonic() + DEADLINE_S):
                end_child(writer.child, signal.SIGKILL)
                trial.problems.append(f"writer {writer.stream} never printed {trigger!r}: "
                                      f"{writer.child.stderr.read().strip()}")
                return trial
            if trigger == "opening":
                time.sleep(delay_s)  # the random moment of the kill is the point of the trial
                end_child(writer.child, signal.SIGKILL)
            elif session_id is None:
                session_id = writer.reported("session ")[0]
        if phase == "running":
            killed = started[victim]
            if not killed.lines.wait_for(newest_starts_with("committed"), time.monotonic() + DEADLINE_S):
                trial.problems.append(f"writer {killed.stream} never printed 'committed': "
                                      f"{killed.child.stderr.read().strip()}")
                return trial
            time.sleep(delay_s)  # the random moment of the kill is the point of the trial
            end_child(started[victim].child, signal.SIGKILL)
        for index, writer in enumerate(started):
            if index == victim:
                status, expected = writer.child.returncode, -signal.SIGKILL
            else:
                status, expected = stop_survivor(trial, writer), 0
            if status is not None and status != expected:
                trial.problems.append(f"writer {writer.stream} ended with status {status}, not {expected}: "
                                      f"{writer.child.stderr.read().strip()}")
    finally:
        for writer in started:
            if end_child(writer.child, signal.SIGKILL) is None:
                writer.child.wait()
            writer.child.stderr.close()
            writer.lines.rest()
    killed = started[victim]
    trial.reported_committed = max(killed.reported("committed "), default=0)
    trial.produced = read_progress(killed.progress)
    check_multi_log(trial, path, started)
    return trial


def check_multi_log(trial, path, started):
    """Open the log of a multi-writer trial with no repair step and check it:
    the killed writer's stream (if it got one) ``crashed`` with a gap-free
    prefix, every other stream ``closed`` and complete, the session
    ``crashed`` (crashed wins) or ``closed`` when the killed writer never
    added its stream, verify()'s notes, and a next session appended."""
    problems = trial.problems
    try:
        log = streamlog.Log(path)
    except errors.StreamlogError as exc:
        problems.append(f"the log does not open: {exc!r}")
        return
    with log:
        sessions = log.sessions()
        if len(sessions) != 1:
            problems.append(f"{len(sessions)} sessions after one recording")
            return
        [session] = sessions
        killed = started[trial.victim]
        trial.stream_stored = killed.stream in session.streams
        if not trial.stream_stored and killed.reported("session "):
            problems.append(f"the stream {killed.stream} the killed writer reported is not in the session")
        expected = "crashed" if trial.stream_stored else "closed"
        if session.status != expected:
            problems.append(f"session {session.id} is {session.status!r}, not {expected!r}")
        if trial.stream_stored:
            if session.stream_status(killed.stream) != "crashed":
                problems.append(f"the killed stream {killed.stream} is {session.stream_status(killed.stream)!r}")
            trial.first_key, trial.last_key = check_prefix(problems, session, killed.stream, PAYLOAD)
        check_bounds(trial)
        for writer in started:
            if writer is not killed and check_complete(problems, session, writer):
                trial.others_complete += 1
        check_notes(problems, log, session.id if trial.stream_stored else None, killed.child.pid)
        trial.crashed_session = session.id if trial.stream_stored else None
        record_next_session(trial, log)
        if trial.crashed_session is None and trial.next_session is not None and trial.next_session <= session.id:
            problems.append(f"the next session got id {trial.next_session}, not above {session.id}")


def check_complete(problems, session, writer):
    """A writer stopped by SIGINT: its stream is ``closed`` and holds every
    record its source produced (``1..produced``, as many as it printed
    ``stopped``); True when so."""
    before = len(problems)
    if writer.stream not in session.streams:
        problems.append(f"the stream {writer.stream} of a surviving writer is not in the session")
        return False
    if session.stream_status(writer.stream) != "closed":
        problems.append(f"the surviving stream {writer.stream} is {session.stream_status(writer.stream)!r}")
    first, last = check_prefix(problems, session, writer.stream, PAYLOAD)
    produced = read_progress(writer.progress)
    if (first or 1, last) != (1, produced) or writer.reported("stopped ") != [produced]:
        problems.append(f"the surviving stream {writer.stream} holds {first}..{last} of the {produced} records "
                        f"produced (it printed {writer.reported('stopped ')}; its last lines "
                        f"{writer.lines.lines[-2:]})")
    return len(problems) == before


def plan_multi(trials, modes, writers, rng):
    """``(mode, phase, victim, delay_s)`` per trial: modes in turn, each
    mode's trials through the phases in turn, the killed writer (a joining
    one for ``joining``) and the kill moment drawn at random."""
    planned = []
    for number in range(trials):
        mode = modes[number % len(modes)]
        phase = MULTI_PHASES[(number // len(modes)) % len(MULTI_PHASES)]
        victim = rng.randrange(writers) if phase == "running" else rng.randrange(1, writers)
        planned.append((mode, phase, victim, rng.uniform(*KILL_SPANS_S[phase])))
    return planned


def summary_multi(results, modes):
    """The per-mode table of a multi-writer run as lines of text."""
    rows = [f"{'mode':6s} {'trials':>6s} {'passed':>6s} {'killed stream lost min':>22s} {'median':>7s} "
            f"{'max':>6s} {'others complete':>15s} {'stop s median':>13s} {'max':>6s}"]
    for mode in modes:
        done = [t for t in results if t.mode == mode]
        if not done:
            continue
        lost = [t.lost for t in done]
        complete = f"{sum(t.others_complete for t in done)} / {sum(t.writers - 1 for t in done)}"
        stops = [t.stop_s for t in done]
        rows.append(f"{mode:6s} {len(done):6d} {sum(not t.problems for t in done):6d} {min(lost):22d} "
                    f"{statistics.median(lost):7g} {max(lost):6d} {complete:>15s} {statistics.median(stops):13.2f} "
                    f"{max(stops):6.2f}")
    return rows


def plan(trials, modes, rng):
    """``(mode, phase, delay_s)`` per trial: modes in turn, each mode's trials
    through the phases in turn, each kill moment drawn at random."""
    planned = []
    for number in range(trials):
        mode = modes[number % len(modes)]
        phase = PHASES[(number // len(modes)) % len(PHASES)]
        planned.append((mode, phase, rng.uniform(*KILL_SPANS_S[phase])))
    return planned


def summary(results, modes):
    """The per-mode table as lines of text."""
    header = (f"{'mode':6s} {'trials':>6s} {'passed':>6s} {'pruned':>6s} {'lost min':>8s} {'median':>7s} "
              f"{'max':>6s} {'window ms median':>16s} {'max':>7s}")
    rows = [header]
    for mode in modes:
        done = [t for t in results if t.mode == mode]
        if not done:
            continue
        lost = [t.lost for t in done]
        windows = [t.window_ms for t in done if t.window_ms is not None]
        window_median = f"{statistics.median(windows):.1f}" if windows else "n/a"
        window_max = f"{max(windows):.1f}" if windows else "n/a"
        rows.append(f"{mode:6s} {len(done):6d} {sum(not t.problems for t in done):6d} "
                    f"{sum(t.pruned for t in done):6d} {min(lost):8d} {statistics.median(lost):7g} "
                    f"{max(lost):6d} {window_median:>16s} {window_max:>7s}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=60, help="kills in all (modes take turns)")
    parser.add_argument("--seed", type=int, help="seed of the kill moments (default: a random one, printed)")
    parser.add_argument("--modes", default=",".join(MODES), help="durability modes, comma-separated")
    parser.add_argument("--dir", help="where the trial logs go (default: a temporary directory, removed)")
    parser.add_argument("--writers", type=int, default=1,
                        help="writer processes recording one session, one of them killed per trial (default 1)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        parser.error(f"--modes takes a comma-separated list of {', '.join(MODES)}, not {args.modes!r}")
    if args.trials < 1:
        parser.error(f"--trials must be at least 1, not {args.trials}")
    if args.writers < 1:
        parser.error(f"--writers must be at least 1, not {args.writers}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2 ** 32)
    multi = args.writers > 1
    rate = f"{args.writers} writers of {MULTI_RATE} records/s each" if multi else f"{RATE} records/s"
    print(f"crash trials: {args.trials} kills, modes {','.join(modes)}, seed {seed}, {rate}, "
          f"commit interval 5 ms", flush=True)
    rng = random.Random(seed)
    planned = plan_multi(args.trials, modes, args.writers, rng) if multi else plan(args.trials, modes, rng)
    results = []
    with tempfile.TemporaryDirectory(prefix="crash-trials-", dir=args.dir) as directory:
        for number, planned_trial in enumerate(planned, 1):
            trial = (run_multi_trial(directory, number, *planned_trial, writers=args.writers) if multi
                     else run_trial(directory, number, *planned_trial))
            results.append(trial)
            print(trial.line(), flush=True)
    print()
    if multi:
        print("\n".join(summary_multi(results, modes)))
        print("lost: records the killed writer's source produced but its stream does not hold; others complete: "
              "surviving streams closed with every record their source produced; stop s: per trial the longest "
              "a surviving writer took from its SIGINT to its exit")
    else:
        print("\n".join(summary(results, modes)))
        print("lost: records produced by the source but not in the log; window: kill time minus the arrival "
              "time of the last stored record")
    print(DURABILITY_NOTE)
    failed = [t.number for t in results if t.problems]
    print(f"seed {seed}: " + (f"{len(failed)} trial(s) FAILED: {failed}" if failed else "every check passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
