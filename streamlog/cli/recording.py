"""What every ``streamlog record ...`` command shares.

* :data:`record` -- the ``record`` click group; :func:`recording_command`
  registers a subcommand on it (``record lines/cmd/synth`` in
  :mod:`.record`, ``record audio`` in :mod:`.audio`): the command's
  function returns the source to record (or a :class:`Recording` with the
  source and the steps around it), and :func:`run_recording` does the rest;
* :func:`recording_options` -- duration, RAM, retention, durability, info
  labels, quiet, a Redis mirror, a group to share the log with;
* the run itself: a session from start to a stop request (SIGINT/SIGTERM),
  ``--duration`` or the end of the source, a live status line on a
  terminal, a one-line summary, exit status 1 for a failed session (or the
  recorded command's own status, see :attr:`Recording.exit_status`).
"""

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import click

from streamlog import Log, Retention, StreamBuffer
from streamlog.catalog import DEFAULT_STREAM
from streamlog.cli.common import SIZE, format_bytes, format_duration, log_argument
from streamlog.export import is_terminal
from streamlog.notation import format_key, is_time_keyed

__all__ = ["record", "recording_command", "recording_options", "Recording", "run_recording", "parse_info",
           "make_retention", "stop_requested_on_signals", "summary_line", "StatusLine", "STOP_POLL_S"]

STOP_POLL_S = 0.1   # how often the recording loop checks for a stop request or the deadline
STATUS_EVERY_S = 0.5  # how often the status line is redrawn


@click.group(short_help="Record a source into a log.")
def record():
    """Record a source into a log (created if missing), one new session per
    run, until Ctrl-C, SIGTERM, --duration or the end of the source; then
    print a one-line summary.  On a terminal a status line (records, rate,
    bytes, elapsed time) is kept current on stderr while it runs.

    \b
    Example:
      streamlog record synth data.streamlog --duration 10
    """


def recording_options(command):
    """Add the options every ``record`` subcommand shares."""
    options = [
        click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                     help="Stop after this many seconds (default: until Ctrl-C or the end of the source)."),
        click.option("--maxlen", type=click.IntRange(min=1), default=10_000, show_default=True,
                     help="Records kept in RAM for live readers."),
        click.option("--max-bytes", type=SIZE, metavar="SIZE",
                     help="Retention: keep the log within about this size (e.g. 10MB, 1GiB; at least 1MiB)."),
        click.option("--max-age", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                     help="Retention: drop records older than this."),
        click.option("--max-sessions", type=click.IntRange(min=1), metavar="N",
                     help="Retention: keep only the newest N sessions."),
        click.option("--durability", type=click.Choice(["full", "normal", "off"]), default="full", show_default=True,
                     help="full: fsync every commit; normal: no meta-page fsync; off: no fsync."),
        click.option("--max-record-bytes", type=SIZE, default="256MiB", show_default=True, metavar="SIZE",
                     callback=_at_least_one_byte,
                     help="A larger record ends the session as failed (every record before it is kept)."),
        click.option("--info", "info_pairs", multiple=True, metavar="KEY=VALUE",
                     help="Label the session KEY=VALUE (repeatable); kept apart from the source's own info."),
        click.option("--quiet", "-q", is_flag=True,
                     help="Print neither the start notice, the status line nor the summary."),
        click.option("--join", "join", is_flag=False, flag_value="join", default=None, metavar="[ID]",
                     callback=_session_to_join,
                     help="Record into a live session (the newest, or session ID) instead of a new one; "
                          "another process may be recording its other streams."),
        click.option("--stream", default=DEFAULT_STREAM, show_default=True, metavar="NAME",
                     help="The name of the stream recorded (one writer per stream name in a session)."),
        click.option("--mirror", "mirror_url", metavar="URL", callback=_redis_url_naming_a_rig,
                     help="Also copy the session to Redis while recording: redis://HOST:PORT/DB?name=RIG "
                          "(a child process; see `streamlog mirror`)."),
        click.option("--group", metavar="GROUP",
                     help="Share the log with GROUP (a name or gid): its files become group-owned and "
                          "group-writable (never world-writable) and its directory setgid, so members may "
                          "follow it live and record into it."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _redis_url_naming_a_rig(ctx, param, value):
    from streamlog.remote import layout

    if value is not None and (not layout.is_remote_url(value) or layout.split_url(value)[1] is None):
        raise click.BadParameter(f"{value!r} is not a redis:// URL naming the rig (?name=RIG)")
    return value


def _session_to_join(ctx, param, value):
    if value is None or value == "join":
        return value
    try:
        session_id = int(value)
    except ValueError:
        session_id = 0
    if session_id < 1:
        raise click.BadParameter(f"{value!r} is not a session id (a positive int)")
    return session_id


def _at_least_one_byte(ctx, param, value):
    if value < 1:
        raise click.BadParameter(f"must be at least 1 byte, not {value}")
    return value


def parse_info(pairs):
    """``("site=lab", "run=3")`` -> ``{"site": "lab", "run": "3"}``; values stay text.

    Raises :class:`click.BadParameter` for an item without ``=`` or with an
    empty key.
    """
    info = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="'--info'")
        info[key.strip()] = value
    return info


def make_retention(max_bytes, max_age, max_sessions):
    """A Retention from the command-line limits, or None when none is given."""
    if max_bytes is None and max_age is None and max_sessions is None:
        return None
    try:
        return Retention(max_bytes=max_bytes, max_age_s=max_age, max_sessions=max_sessions)
    except ValueError as exc:  # click already range-checked the others: only --max-bytes can be refused here
        raise click.BadParameter(str(exc), param_hint="'--max-bytes'") from exc


@contextlib.contextmanager
def stop_requested_on_signals():
    """Within the block, SIGINT and SIGTERM set the yielded Event instead of
    interrupting; the previous handlers are restored afterwards.  Off the
    main thread (where handlers cannot be installed) the Event is only set
    by the caller."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class Recording:
    """A source to record and what a command does around it (all optional).

    * ``during(buffer, stop)``: a context manager entered once the session
      started and left before it stops (e.g. markers typed on stdin); it may
      set the ``stop`` Event;
    * ``finish(buffer)``: called after the stop request, before the buffer
      stops (e.g. let an audio stream hand over what it captured);
    * ``notice``: the start notice's description of the source;
    * ``summary(session)``: text appended to the summary line;
    * ``exit_status(session)``: the command's exit status when the source
      ended by itself and the session did not fail (not called, and the
      status is 0, after a stop request or ``--duration``).
    """

    source: object
    during: Optional[Callable] = None
    finish: Optional[Callable] = None
    notice: Optional[str] = None
    summary: Optional[Callable] = None
    exit_status: Optional[Callable] = None


def run_recording(source, log, *, duration, maxlen, max_bytes, max_age, max_sessions, durability, max_record_bytes,
                  info_pairs, quiet, mirror_url=None, join=None, stream=DEFAULT_STREAM, group=None):
    """Record ``source`` (a SourceReader or a :class:`Recording`) into ``log``
    until a stop request (SIGINT/SIGTERM), ``duration`` seconds or the end of
    the source; print the summary.  ``group``: share the log with it first
    (``streamlog.Log(log, group=...)``).

    Exits with status 1 after the summary when the session failed, else with
    the recording's ``exit_status`` when the source ended by itself.
    """
    recipe = source if isinstance(source, Recording) else Recording(source)
    if join is not None and info_pairs:
        raise click.UsageError("--info labels a new session; a recorder joining one (--join) cannot set it")
    labels = parse_info(info_pairs)
    retention = make_retention(max_bytes, max_age, max_sessions)
    if group is not None:
        Log(os.fspath(log), group=group, durability=durability).close()
    buffer = StreamBuffer(recipe.source, log=os.fspath(log), maxlen=maxlen, retention=retention,
                          durability=durability, labels=labels, max_record_bytes=max_record_bytes, mirror=mirror_url,
                          session=join, stream=stream)
    status_line = StatusLine(sys.stderr, enabled=not quiet)
    with stop_requested_on_signals() as stop:
        buffer.start()
        try:
            try:
                with recipe.during(buffer, stop) if recipe.during else contextlib.nullcontext():
                    if not quiet:
                        limit = f"for {duration:g}s or " if duration is not None else ""
                        what = f"{recipe.notice} as " if recipe.notice else ""
                        click.echo(f"recording {what}session {buffer.session.id} into {log} ({limit}until Ctrl-C)",
                                   err=True)
                    ended_by_itself = _wait_for_end(buffer, stop, duration, status_line)
                if recipe.finish:
                    recipe.finish(buffer)
            finally:
                status_line.clear()
                buffer.stop()
            session = buffer.session  # refreshed by stop(); read it before the log is closed
            joined = buffer.stream if join is not None else None
            if not quiet:
                click.echo(summary_line(session, joined) + (recipe.summary(session) if recipe.summary else ""))
            failure = _failure(session, joined)
            code = None
            if recipe.exit_status and ended_by_itself and failure is None:
                code = recipe.exit_status(session)
        finally:
            buffer.close()
    if failure is not None:
        click.echo(f"Error: {failure}", err=True)
        click.get_current_context().exit(1)
    if code:
        click.get_current_context().exit(code)


def _failure(session, joined):
    """What failed, for the error line, or None: the session, or for a
    recorder that joined one (still live, maybe) its own stream."""
    if joined is None:
        return f"session {session.id} failed: {session.error}" if session.status == "failed" else None
    if session.stream_status(joined) == "failed":
        return f"stream {joined!r} of session {session.id} failed: {session.stream_info(joined)['error']}"
    return None


def _wait_for_end(buffer, stop, duration, status_line):
    """Return on a stop request or after ``duration`` seconds (False), or
    when the recording ended by itself (True)."""
    started = time.monotonic()
    deadline = None if duration is None else started + duration
    while not stop.is_set():
        status_line.update(buffer, time.monotonic() - started)
        wait_s = STOP_POLL_S if deadline is None else min(STOP_POLL_S, deadline - time.monotonic())
        if wait_s <= 0:
            return False
        if buffer.wait(wait_s):
            return True
    return False


class StatusLine:
    """One line on a terminal, redrawn in place: ``1,234 records  250.0/s
    1.2 MiB  0:00:05``.  Does nothing when ``out`` is not a terminal (or
    ``enabled`` is false), so pipes and logs never see it."""

    def __init__(self, out, *, enabled=True):
        self.out = out
        self.enabled = enabled and is_terminal(out)
        self._next = 0.0
        self._width = 0

    def update(self, buffer, elapsed_s):
        """Redraw with ``buffer``'s committed records and bytes (at most every
        :data:`STATUS_EVERY_S`)."""
        now = time.monotonic()
        if not self.enabled or now < self._next:
            return
        self._next = now + STATUS_EVERY_S
        count = buffer.committed
        size = buffer.log.session(buffer.session.id).stream_info(buffer.stream)["bytes"]
        rate = count / elapsed_s if elapsed_s > 0 else 0.0
        text = (f"{count:,} records  {rate:,.1f}/s  {format_bytes(size)}  "
                f"{format_duration(elapsed_s) if elapsed_s >= 60 else f'{elapsed_s:.0f}s'}")
        self.out.write("\r" + text.ljust(self._width))
        self.out.flush()
        self._width = len(text)

    def clear(self):
        """Erase the line (before the summary is printed)."""
        if self.enabled and self._width:
            self.out.write("\r" + " " * self._width + "\r")
            self.out.flush()
            self._width = 0


def summary_line(session, stream=None):
    """``session 3 closed: 1200 records, 45.6 KiB, keys 0 .. 1199, 12.0s`` (plus
    the exit status of a recorded command); for a joined ``stream``
    ``session 3 live, stream 'eeg' closed: ...``, about that stream."""
    info = session.info or {}
    time_key = is_time_keyed(info)
    counts = session.stream_info(stream)
    parts = [f"{counts['count']} records", format_bytes(counts["bytes"])]
    if counts["count"]:
        parts.append(f"keys {format_key(counts['first_key'], time_key=time_key)} .. "
                     f"{format_key(counts['last_key'], time_key=time_key)}")
    if session.start_time is not None and session.stop_time is not None:
        parts.append(format_duration(session.stop_time - session.start_time))
    if info.get("exit_status") is not None:
        signal_name = info.get("exit_signal")
        parts.append(f"command exit status {info['exit_status']}" + (f" ({signal_name})" if signal_name else ""))
    what = f"session {session.id} {session.status}"
    if stream is not None:
        what += f", stream {stream!r} {session.stream_status(stream)}"
    return what + ": " + ", ".join(parts)


def recording_command(name, short_help, help_text, example):
    """Register a ``record`` subcommand that shares :func:`recording_options`;
    its function returns the source to record (or a :class:`Recording`)."""
    def register(make_source):
        @record.command(name, help=f"{help_text}\n\n\b\nExample:\n  {example}", short_help=short_help)
        @log_argument
        @recording_options
        @functools.wraps(make_source)  # carries over the source's own click parameters
        def command(log, duration, maxlen, max_bytes, max_age, max_sessions, durability, max_record_bytes,
                    info_pairs, quiet, join, stream, mirror_url, group, **source_options):
            source = make_source(**source_options)
            run_recording(source, log, duration=duration, maxlen=maxlen, max_bytes=max_bytes, max_age=max_age,
                          max_sessions=max_sessions, durability=durability, max_record_bytes=max_record_bytes,
                          info_pairs=info_pairs, quiet=quiet, mirror_url=mirror_url, join=join, stream=stream,
                          group=group)
        return command
    return register
