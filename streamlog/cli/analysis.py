"""Commands for analysts: ``record replay`` (a stored session recorded again
as a live source)."""

import click

from streamlog.cli.common import open_log, pick_session, session_option, stream_option
from streamlog.cli.recording import recording_command

__all__ = ["record_replay"]


@recording_command(
    "replay", "Record a stored session again, at its original pace.",
    "Record the records of session ID of OLD_LOG (one stream of it) into LOG as a new session, each "
    "record with its key, released at its original pace (--speed 2: twice as fast; --fast: as fast as "
    "possible), so live readers of LOG see the recording as it happened.  The pace is reckoned from the "
    "start of the replay, so it does not drift over a long one.",
    "streamlog record replay new.streamlog old.streamlog -s 3 --speed 2")
@click.argument("old_log", metavar="OLD_LOG", type=click.Path(path_type=str, readable=False))
@session_option
@stream_option
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Replay this many times as fast as recorded.")
@click.option("--fast", is_flag=True, help="Replay as fast as possible.")
def record_replay(old_log, session_id, stream, speed, fast):
    """The ReplaySource of the stored session (opened read-only; the log
    stays open for as long as the replay runs)."""
    from streamlog.sources.replay import ReplaySource

    opened = open_log(old_log)
    session = pick_session(opened, session_id)
    return ReplaySource(session, stream, speed=None if fast else speed)

