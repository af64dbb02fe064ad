"""``streamlog mirror LOG URL``: copy a log's sessions to Redis Streams."""

import signal
import sys

import click

from streamlog.cli.common import SIZE, log_argument, open_log

__all__ = ["mirror"]


@click.command(short_help="Copy every session of LOG to Redis Streams, live and old.")
@log_argument
@click.argument("url", metavar="URL")
@click.option("--name", "rig", metavar="RIG", help="Rig name under which the sessions are kept in Redis "
              "(or ?name=RIG in URL).")
@click.option("--session", "-s", "session_ids", type=int, multiple=True, metavar="ID",
              help="Mirror only this session (repeatable).  [default: all, and every new one]")
@click.option("--max-age", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Remote retention: remove records older than this from Redis.")
@click.option("--max-sessions", type=click.IntRange(min=1), metavar="N",
              help="Remote retention: keep only the newest N sessions in Redis.")
@click.option("--max-inflight", "max_inflight", type=SIZE, default="4MiB", show_default=True,
              help="At most this many encoded bytes on their way to Redis.")
@click.option("--part-size", "part_bytes", type=SIZE, default=None,
              help="Records encoded larger than this are split into parts (joined back by readers).  "
                   "[default: 512KiB or --max-inflight if smaller]")
@click.option("--exit-when-done", is_flag=True,
              help="Exit once no session is live and everything is mirrored.  [default: run until stopped]")
@click.option("--give-up", "give_up_s", type=click.FloatRange(min=0), metavar="SECONDS",
              help="With --exit-when-done: also exit once Redis has been unreachable this long and no "
                   "session is live (a later run sends the rest).")
def mirror(log, url, rig, session_ids, max_age, max_sessions, max_inflight, part_bytes, exit_when_done,
           give_up_s):
    """Mirror the sessions of LOG into the Redis at URL, record for record,
    and keep up with new ones until stopped (Ctrl-C, SIGTERM).  The log stays
    the source of truth: while Redis is down the recording goes on and the
    mirror retries with back-off, then resumes where Redis ends.

    \b
    Example:
      streamlog mirror lab.streamlog redis://db-host:6379/0 --name rig1
    """
    from streamlog.remote import Mirror

    if not (rig or "name=" in url):
        raise click.UsageError("name the rig: --name RIG (or ?name=RIG in URL)")
    with open_log(log) as opened:
        try:
            follower = Mirror(opened, url, rig, session_ids=session_ids or None, max_inflight_bytes=max_inflight,
                              part_bytes=part_bytes, max_age_s=max_age, max_sessions=max_sessions,
                              exit_when_done=exit_when_done, give_up_s=give_up_s)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        signal.signal(signal.SIGTERM, lambda *_: follower.stop())
        click.echo(f"mirroring {log} to {follower.url} as rig {follower.name}", err=True)
        try:
            follower.run()
        except KeyboardInterrupt:
            follower.stop()
        stats = follower.stats
        if stats["gave_up"]:
            click.echo(f"gave up: Redis unreachable for {give_up_s:g}s ({stats['last_error']})", err=True)
        click.echo(f"mirror stopped: {stats['sent']} entries sent, {stats['duplicates']} duplicates refused, "
                   f"{stats['gaps']} gap markers, {stats['reconnects']} reconnects", err=True)
    sys.stdout.flush()
