"""The recording side of the ``streamlog`` CLI.

* ``record lines``, ``record cmd``, ``record synth`` -- the sources of the
  ``record`` group (:mod:`.recording` runs them; ``record audio`` is in
  :mod:`.audio`);
* ``follow`` -- print the records of a session as another process records
  them, like ``tail -f``;
* ``demo`` -- record a few seconds of the synthetic signal and query it,
  printed like a shell transcript.
"""

import contextlib
import os
import shlex
import shutil
import sys

import click

from streamlog.cli.common import (TIME, RecordWriter, format_option, label_names, label_options, log_argument,
                                  session_option, stream_option, utc_option)
from streamlog.cli.recording import Recording, recording_command
from streamlog.export import Labelled
from streamlog.follow import ENDED_BY_UNTIL, Follower
from streamlog.sources.command import CommandSource
from streamlog.sources.lines import LineSource
from streamlog.sources.synth import SynthSource
from streamlog.store import DIR_MODE

# --------------------------------------------------------------------------
# the sources


@recording_command(
    "lines", "Record the lines of a file or stdin.",
    "Record the lines of FILE (or stdin: -) as (line_number, line), keyed by line number.  FILE may be any "
    "readable file: a FIFO, a terminal or serial port (/dev/ttyUSB0), a pipe such as <(cmd); --follow "
    "follows a regular file across truncation and rotation.",
    "tail -n0 -F /var/log/syslog | streamlog record lines syslog.streamlog -")
@click.argument("file", default="-", metavar="[FILE|-]")
@click.option("--follow", is_flag=True, help="Keep following FILE as it grows, like tail -f.")
def record_lines(file, follow):
    """The LineSource of FILE; a missing, unreadable FILE or a directory is an error before anything is recorded."""
    if file == "-":
        if follow:
            raise click.BadParameter("--follow needs a FILE; stdin is read until it ends", param_hint="'--follow'")
        return LineSource(sys.stdin)
    if os.path.isdir(file) or not os.path.exists(file) or not os.access(file, os.R_OK):
        reason = ("is a directory" if os.path.isdir(file) else "no such file" if not os.path.exists(file)
                  else "permission denied")
        raise click.FileError(file, hint=reason)
    return LineSource(file, follow=follow)


@recording_command(
    "cmd", "Record the output lines of a command.",
    "Run COMMAND and record each line it prints as (t_us, stdout|stderr, line), keyed by time "
    "(microseconds since the epoch; query with ISO times).  The command's exit status is stored "
    "with the session; stopping the recording stops the command.  Exit status: the command's own "
    "when it ends by itself (128+N when signal N ended it), 0 when the recording was stopped "
    "(Ctrl-C, SIGTERM, --duration), 1 when the session failed.",
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
    return Recording(CommandSource(list(command)), exit_status=command_exit_status)


def command_exit_status(session):
    """The exit status of the command a session recorded, as a shell reports it
    (128+N for signal N); 0 when none is stored."""
    status = (session.info or {}).get("exit_status")
    if not isinstance(status, int):
        return 0
    return 128 - status if status < 0 else status


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


FOLLOW_EXIT = {"closed": 0, ENDED_BY_UNTIL: 0, "failed": 3, "crashed": 4, "pruned": 5}
"""``follow``'s exit status by how the followed session ended (1 and 2 are errors and bad usage)."""


@click.command(short_help="Print a session's records as they are recorded.")
@log_argument
@session_option
@stream_option
@click.option("--from-start", is_flag=True, help="Print the records already stored first.")
@click.option("--since", type=TIME, metavar="TIME",
              help="Begin with the records that arrived at or after TIME (-10m, epoch seconds, ISO-8601).")
@click.option("--until", type=TIME, metavar="TIME", help="Stop at TIME (e.g. +1h), exit status 0.")
@click.option("--wait", is_flag=True,
              help="Wait for a session to start (and for LOG to be created) when none is being recorded.")
@click.option("--all", "every", is_flag=True,
              help="When the session ends, go on with the next one, and so on (implies --wait).")
@label_options
@utc_option
@format_option
@click.pass_context
def follow(ctx, log, session_id, stream, from_start, since, until, wait, every, show_keys, show_times, utc, fmt):
    """Print the records of a session as they are committed, like tail -f,
    also while another process records it; exit when the session ends.
    Without --from-start or --since, begin after the newest record stored
    now.

    Exit status: 0 when the session closed (or --until passed), 3 when it
    failed, 4 when it crashed (its recorder died), 5 when retention removed
    it; 1 for an error, 130 on Ctrl-C.  A session that is not being
    recorded has nothing new: follow says so and exits with its status.
    While it waits (--wait, --all) it says so on stderr.  --keys and --times
    show each record's key and arrival time beside it (as for `range`);
    with --all a session column comes first.

    \b
    Examples:
      streamlog follow data.streamlog --format jsonl | head -n 20
      streamlog follow data.streamlog --wait --all --times   # every session to come
    """
    follower = Follower(log, session_id=session_id, stream=stream, from_start=from_start, since=since, wait=wait,
                        every=every, until=until, on_wait=lambda text: click.echo(text, err=True))
    labels = label_names(show_keys, show_times, several_sessions=every)
    out = RecordWriter(fmt, sys.stdout)
    printed = 0
    try:
        for batch in follower.batches():
            printed += out.write_all(Labelled(row.labels(labels, utc=utc), row.record) if labels else row.record
                                     for row in batch)
            out.flush()
    except KeyboardInterrupt:
        out.flush()
        ctx.exit(130)
    out.flush()
    if not follower.ended:
        return  # --until passed while waiting for a session
    session_id, status, error = follower.ended[-1]
    if status not in ("closed", ENDED_BY_UNTIL):
        detail = f": {error}" if error else ""
        click.echo(f"session {session_id} {status}{detail}", err=True)
    elif status == "closed" and not printed and len(follower.ended) == 1:
        click.echo(f"session {session_id} is closed: nothing new to follow (--wait waits for the next session)",
                   err=True)
    ctx.exit(FOLLOW_EXIT[status])


# --------------------------------------------------------------------------
# the demo


def _make_last_directory(directory):
    """Make ``directory`` if it is missing, but none of the directories above
    it (the rule for every path streamlog creates); ClickException if its
    parent does not exist."""
    if os.path.isdir(directory):
        return
    parent = os.path.dirname(os.path.abspath(directory))
    if not os.path.isdir(parent):
        raise click.ClickException(f"cannot create {directory}: the directory {parent} does not exist "
                                   f"(streamlog creates the last directory of a path, never the ones above it)")
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, DIR_MODE)


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

    _make_last_directory(directory)
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
