"""``streamlog cursors``: list or delete the named cursors of a log."""

import json

import click

from streamlog import errors
from streamlog.cli.common import echo_table, format_time, log_argument, open_log


@click.command(short_help="List (or delete) the named cursors of a log.")
@log_argument
@click.option("--json", "as_json", is_flag=True, help="One JSON document: a list of the cursors.")
@click.option("--delete", "delete_name", metavar="NAME", help="Delete the cursor NAME instead of listing.")
def cursors(log, as_json, delete_name):
    """List the named cursors of LOG: readers made with
    Session.reader(name=NAME) that resume after the last record they
    acknowledged.  Columns: name, session, stream, acked (sequence number in
    the stream of the last record acknowledged; - for none), lag (records of
    the stream after it; - when the session was deleted) and when it was
    last acknowledged.

    \b
    Examples:
      streamlog cursors ./mylog
      streamlog cursors ./mylog --json
      streamlog cursors ./mylog --delete spectro
    """
    if delete_name is not None:
        with open_log(log, readonly=False) as opened:
            _local(opened, log).delete_cursor(delete_name)
        click.echo(f"Deleted cursor {delete_name!r} of {log}.")
        return
    with open_log(log) as opened:
        listed = _local(opened, log).cursors()
    if as_json:
        click.echo(json.dumps([c._asdict() for c in listed], indent=2))
        return
    if not listed:
        click.echo(f"{log}: no named cursors")
        return
    table = [("NAME", "SESSION", "STREAM", "ACKED", "LAG", "ACKED AT")]
    for c in listed:
        table.append((c.name, str(c.session), c.stream, "-" if c.seq < 0 else str(c.seq),
                      "-" if c.lag is None else str(c.lag), format_time(c.acked)))
    echo_table(table, right_aligned={1, 3, 4})


def _local(opened, log):
    from streamlog.remote import RemoteLog

    if isinstance(opened, RemoteLog):
        raise errors.LogError(f"{log} is a mirror; named cursors are kept in a log directory only")
    return opened
