"""The recording side of the ``streamlog`` CLI.

* ``record`` -- a group of commands that record one source into a log
  (``record lines``, ``record cmd``, ``record synth``; ``record audio`` when
  :mod:`streamlog.cli.audio` is present) until Ctrl-C, SIGTERM,
  ``--duration`` or the end of the source, then print a one-line summary;
* ``follow`` -- print the records of a session as another process records
  them, like ``tail -f``;
* ``demo`` -- record a few seconds of the synthetic signal and query it,
  printed like a shell transcript.
"""

import contextlib
import functools
import os
import shlex
import shutil
import signal
import sys
import threading
import time

import click

from streamlog import Retention, StreamBuffer, errors
from streamlog.cli.common import (SIZE, RecordWriter, format_bytes, format_duration, format_key, format_option,
                                  log_argument, open_log, pick_session, session_option, stream_option)
from streamlog.sources.command import CommandSource
from streamlog.sources.lines import LineSource
from streamlog.sources.synth import SynthSource

STOP_POLL_S = 0.1   # how often the recording loop checks for a stop request or the deadline
FOLLOW_BATCH = 1000  # records written between two flushes of ``follow``


# --------------------------------------------------------------------------
# recording


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
                     help="Store KEY=VALUE with the session (repeatable)."),
        click.option("--quiet", "-q", is_flag=True, help="Print neither the start notice nor the summary."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


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


def run_recording(source, log, *, duration, maxlen, max_bytes, max_age, max_sessions, durability, max_record_bytes,
                  info_pairs, quiet):
    """Record ``source`` into ``log`` until a stop request (SIGINT/SIGTERM),
    ``duration`` seconds or the end of the source; print the summary.

    Exits with status 1 after the summary when the session failed.
    """
    info = parse_info(info_pairs)
    retention = make_retention(max_bytes, max_age, max_sessions)
    buffer = StreamBuffer(source, log=os.fspath(log), maxlen=maxlen, retention=retention,
                          durability=durability, info=info, max_record_bytes=max_record_bytes)
    with stop_requested_on_signals() as stop:
        buffer.start()
        try:
            try:
                if not quiet:
                    limit = f"for {duration:g}s or " if duration is not None else ""
                    click.echo(f"recording session {buffer.session.id} into {log} ({limit}until Ctrl-C)", err=True)
                deadline = None if duration is None else time.monotonic() + duration
                while not stop.is_set():
                    wait_s = STOP_POLL_S if deadline is None else min(STOP_POLL_S, deadline - time.monotonic())
                    if wait_s <= 0 or buffer.wait(wait_s):
                        break
            finally:
                buffer.stop()
            session = buffer.session  # refreshed by stop(); read it before the log is closed
            if not quiet:
                click.echo(summary_line(session))
            failure = session.error if session.status == "failed" else None
        finally:
            buffer.close()
    if failure is not None:
        click.echo(f"Error: session {session.id} failed: {failure}", err=True)
        click.get_current_context().exit(1)


def summary_line(session):
    """``session 3 closed: 1200 records, 45.6 KiB, keys 0 .. 1199, 12.0s`` (plus
    the exit status of a recorded command)."""
    info = session.info or {}
    parts = [f"{session.count} records", format_bytes(session.bytes)]
    if session.count:
        parts.append(f"keys {format_key(session.first_key, info)} .. {format_key(session.last_key, info)}")
    if session.start_time is not None and session.stop_time is not None:
        parts.append(format_duration(session.stop_time - session.start_time))
    if info.get("exit_status") is not None:
        signal_name = info.get("exit_signal")
        parts.append(f"command exit status {info['exit_status']}" + (f" ({signal_name})" if signal_name else ""))
    return f"session {session.id} {session.status}: " + ", ".join(parts)


def recording_command(name, short_help, help_text, example):
    """Register a ``record`` subcommand that shares :func:`recording_options`;
    its function returns the source to record."""
    def register(make_source):
        @record.command(name, help=f"{help_text}\n\n\b\nExample:\n  {example}", short_help=short_help)
        @log_argument
        @recording_options
        @functools.wraps(make_source)  # carries over the source's own click parameters
        def command(log, duration, maxlen, max_bytes, max_age, max_sessions, durability, max_record_bytes,
                    info_pairs, quiet, **source_options):
            source = make_source(**source_options)
            run_recording(source, log, duration=duration, maxlen=maxlen, max_bytes=max_bytes, max_age=max_age,
                          max_sessions=max_sessions, durability=durability, max_record_bytes=max_record_bytes,
                          info_pairs=info_pairs, quiet=quiet)
        return command
    return register


class RecordGroup(click.Group):
    """The ``record`` group.  ``record audio`` comes from :mod:`streamlog.cli.audio`
    when that module exists; it is added on first use, not at import, since
    that module imports this one."""

    def _add_audio_command(self):
        if "audio" in self.commands:
            return
        try:
            from streamlog.cli.audio import record_audio
        except ModuleNotFoundError as exc:
            if exc.name != "streamlog.cli.audio":
                raise
            return
        self.add_command(record_audio)

    def list_commands(self, ctx):
        self._add_audio_command()
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        self._add_audio_command()
        return super().get_command(ctx, name)


@click.group(cls=RecordGroup, short_help="Record a source into a log.")
def record():
    """Record a source into a log (created if missing), one new session per
    run, until Ctrl-C, SIGTERM, --duration or the end of the source; then
    print a one-line summary.

    \b
    Example:
      streamlog record synth data.streamlog --duration 10
    """


@recording_command(
    "lines", "Record the lines of a file or stdin.",
    "Record the lines of FILE (or stdin: -) as (line_number, line), keyed by line number.",
    "tail -n0 -F /var/log/syslog | streamlog record lines syslog.streamlog -")
@click.argument("file", default="-", metavar="[FILE|-]")
@click.option("--follow", is_flag=True, help="Keep following FILE as it grows, like tail -f.")
def record_lines(file, follow):
    """The LineSource of FILE; a missing FILE is an error before anything is recorded."""
    if file == "-":
        if follow:
            raise click.BadParameter("--follow needs a FILE; stdin is read until it ends", param_hint="'--follow'")
        return LineSource(sys.stdin)
    if not os.path.isfile(file):
        reason = "is a directory" if os.path.isdir(file) else "no such file"
        raise click.FileError(file, hint=reason)
    return LineSource(file, follow=follow)


@recording_command(
    "cmd", "Record the output lines of a command.",
    "Run COMMAND and record each line it prints as (t_us, stdout|stderr, line), keyed by time "
    "(microseconds since the epoch; query with ISO times).  The command's exit status is stored "
    "with the session; stopping the recording stops the command.",
    "streamlog record cmd ping.streamlog -- ping -c 5 localhost")
@click.argument("command", nargs=-1, required=True, metavar="-- COMMAND [ARGS]...")
def record_cmd(command):
    """The CommandSource of COMMAND; a program that cannot be found is an error
    before anything is recorded."""
    program = command[0]
    found = shutil.which(program) if os.sep not in program else (program if os.access(program, os.X_OK) else None)
    if found is None:
        raise click.ClickException(f"cannot start command {program!r}: not found or not executable "
                                   f"(command line: {shlex.join(command)})")
    return CommandSource(list(command))


@recording_command(
    "synth", "Record a generated test signal.",
    "Record a generated test signal, one sine per channel plus seeded noise: records are "
    "(index, float32 array of shape (block, channels)), keyed by index.",
    "streamlog record synth synth.streamlog --rate 8000 --channels 4 --count 100")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=1000.0, show_default=True,
              help="Samples per second per channel.")
@click.option("--channels", type=click.IntRange(min=1), default=2, show_default=True, help="Channels.")
@click.option("--block", type=click.IntRange(min=1), default=100, show_default=True, help="Samples per record.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Noise seed.")
@click.option("--count", type=click.IntRange(min=0), help="Stop after this many records.")
@click.option("--fast", is_flag=True, help="Generate as fast as possible instead of in real time.")
def record_synth(rate, channels, block, seed, count, fast):
    """The SynthSource with these parameters."""
    return SynthSource(rate_hz=rate, channels=channels, block=block, seed=seed, count=count, realtime=not fast)


# --------------------------------------------------------------------------
# following


@click.command(short_help="Print a session's records as they are recorded.")
@log_argument
@session_option
@stream_option
@click.option("--from-start", is_flag=True, help="Print the records already stored first.")
@format_option
def follow(log, session_id, stream, from_start, fmt):
    """Print the records of a session as they are committed, like tail -f,
    also while another process records it; exit when the session ends.
    Without --from-start, begin after the newest record stored now.

    \b
    Example:
      streamlog follow data.streamlog --format jsonl | head -n 20
    """
    with open_log(log) as opened:
        session = pick_session(opened, session_id)
        reader = session.reader(stream)
        if not from_start:
            with contextlib.suppress(errors.NoItemFound):
                reader.tail()  # moves the cursor to the newest record
        out = RecordWriter(fmt, sys.stdout)
        try:
            for item in reader:
                out.write(item)
                out.write_all(reader.read(FOLLOW_BATCH - 1, blocking=False, ignore_no_item_found=True) or [])
                out.flush()
        except errors.SourceFailed:
            pass  # reported below from the session's status and error
        except KeyboardInterrupt:
            out.flush()
            sys.exit(130)
        out.flush()
        session.refresh()
        if session.status != "closed":
            detail = f": {session.error}" if session.error else ""
            click.echo(f"session {session.id} {session.status}{detail}", err=True)


# --------------------------------------------------------------------------
# the demo


@click.command(short_help="Record a few seconds of a test signal and query it.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where to put demo.streamlog.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="How long to record.")
@click.pass_context
def demo(ctx, directory, seconds):
    """Show streamlog at work without any hardware: record SECONDS of the
    synthetic signal into DIR/demo.streamlog, then run `sessions`, `range`
    and `tail` on it, printing each command line before its output.

    \b
    Example:
      streamlog demo --dir /tmp --seconds 2
    """
    from streamlog.cli import main

    os.makedirs(directory, exist_ok=True)
    log = os.path.join(directory, "demo.streamlog")
    rate, block = 100, 10   # 10 records a second, small enough to read on screen
    middle = max(1, int(seconds * rate / block) // 2)
    steps = [
        ["record", "synth", log, "--rate", str(rate), "--block", str(block), "--channels", "2",
         "--duration", f"{seconds:g}", "--info", "purpose=demo"],
        ["sessions", log],
        ["range", log, str(middle - 1), str(middle + 1)],
        ["tail", log, "-n", "3"],
    ]
    for args in steps:
        click.echo(f"$ streamlog {shlex.join(args)}")
        status = main.main(args, prog_name="streamlog", standalone_mode=False)
        sys.stdout.flush()
        if isinstance(status, int) and status:
            ctx.exit(status)  # a step failed (its error is printed): stop the transcript there
        click.echo()
    click.echo("Next steps:")
    click.echo(f"  # in one terminal, record until Ctrl-C:\n  streamlog record synth {shlex.quote(log)}")
    click.echo(f"  # in another, print records as they arrive:\n  streamlog follow {shlex.quote(log)}")
    click.echo(f"  # export the last session as JSON lines (or .csv, .npy):\n"
               f"  streamlog export {shlex.quote(log)} -o demo.jsonl")
