"""Commands for analysts: ``plot`` (a picture of a session) and ``record
replay`` (a stored session recorded again as a live source)."""

import click

from streamlog import errors, timespec
from streamlog.cli.common import log_argument, open_log, pick_session, session_option
from streamlog.cli.recording import recording_command

__all__ = ["plot", "record_replay", "parse_offset"]


def parse_offset(text, session):
    """Epoch seconds of ``text``: a number of seconds or a duration (``90``,
    ``1m30s``, ``2h``) into ``session``, or an absolute time of
    :mod:`streamlog.timespec` (``@1796151120``, ISO-8601)."""
    word = text.strip()
    try:
        return session.start_time + float(word)
    except ValueError:
        pass
    try:
        return session.start_time + timespec.parse_age(word)
    except errors.TimeFormatError:
        return timespec.parse_time(word)


@click.command(short_help="Draw a picture of a session (PNG).")
@log_argument
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="The PNG file to write.")
@session_option
@click.option("--stream", "streams", multiple=True, metavar="NAME",
              help="A stream to draw (repeatable).  [default: every stream]")
@click.option("--start", metavar="TIME", help="Zoom: begin at TIME: seconds into the session (90, 1m30s) "
                                              "or an absolute time (ISO-8601, @epoch).")
@click.option("--stop", metavar="TIME", help="Zoom: end at TIME (as --start).")
@click.option("--width", type=click.IntRange(min=400, max=8000), default=1400, show_default=True,
              help="Width in pixels.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
def plot(log, output, session_id, streams, start, stop, width, force):
    """Draw one panel per stream of a session on a shared time axis and
    write it as PNG: numeric values (a min/max envelope when there are more
    points than pixels), audio as a waveform envelope, markers as labelled
    vertical lines, gaps and a crashed or failed end shaded, the record rate
    under each panel, and a title with the session's id, status, start,
    duration and info.  Needs the plot extra (pip install 'streamlog[plot]').

    Example: streamlog plot lab.streamlog -s 3 -o overview.png --start 60 --stop 2m
    """
    from streamlog.export import export

    with open_log(log) as opened:
        session = pick_session(opened, session_id)
        try:
            t0 = None if start is None else parse_offset(start, session)
            t1 = None if stop is None else parse_offset(stop, session)
        except errors.TimeFormatError as exc:
            raise click.BadParameter(str(exc), param_hint="'--start'/'--stop'") from None
        if t0 is not None and t1 is not None and t1 <= t0:
            raise click.BadParameter(f"--stop ({stop}) must be after --start ({start})")
        for name in streams:
            session.stream_info(name)  # SessionNotFound names a stream the session lacks
        result = export(session, output, "png", force=force, streams=list(streams) or None, since=t0, until=t1,
                        width_px=width)
    click.echo(f"Wrote a picture of session {session.id} to {result.path}", err=True)


@recording_command(
    "replay", "Record a stored session again, at its original pace.",
    "Record the records of session ID of OLD_LOG (one stream of it) into LOG as a new session, each "
    "record with its key, released at its original pace (--speed 2: twice as fast; --fast: as fast as "
    "possible), so live readers of LOG see the recording as it happened.  The pace is reckoned from the "
    "start of the replay, so it does not drift over a long one.",
    "streamlog record replay new.streamlog old.streamlog -s 3 --speed 2")
@click.argument("old_log", metavar="OLD_LOG", type=click.Path(path_type=str, readable=False))
@session_option
@click.option("--from-stream", "source_stream", default=None, metavar="NAME",
              help="Stream of OLD_LOG's session to replay (--stream names the stream recorded).  [default: main]")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Replay this many times as fast as recorded.")
@click.option("--fast", is_flag=True, help="Replay as fast as possible.")
def record_replay(old_log, session_id, source_stream, speed, fast):
    """The ReplaySource of the stored session (opened read-only; the log
    stays open for as long as the replay runs)."""
    from streamlog.sources.replay import ReplaySource

    opened = open_log(old_log)
    session = pick_session(opened, session_id)
    return ReplaySource(session, source_stream, speed=None if fast else speed)

