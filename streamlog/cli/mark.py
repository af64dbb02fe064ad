"""``streamlog mark``: one event marker into a live session, from any shell."""

import json

import click

from streamlog.cli.common import log_argument
from streamlog.marks import mark as append_mark
from streamlog.sources.markers import MARKERS_STREAM


def _json_data(ctx, param, value):
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None


@click.command(short_help="Append an event marker to a live session.")
@log_argument
@click.argument("label")
@click.option("--session", "session_id", type=click.IntRange(min=1), metavar="ID",
              help="The live session to mark (default: the newest live one).")
@click.option("--stream", default=MARKERS_STREAM, show_default=True, help="The stream the marker goes to.")
@click.option("--time", "t", type=float, metavar="T", help="The marker's time in epoch seconds (default: now).")
@click.option("--data", callback=_json_data, metavar="JSON", help="A JSON value stored with the marker.")
def mark(log, label, session_id, stream, t, data):
    """Append marker LABEL to a live session of LOG, timestamped on the same
    clock as the session's other streams; print its key (microseconds since
    the epoch).  The record is (t_us, LABEL), or (t_us, LABEL, DATA) with
    --data.  Any number of processes may mark one session at once.

    Example: streamlog mark lab.streamlog "stimulus on" --data '{"trial": 3}'
    """
    click.echo(append_mark(log, label, session=session_id, stream=stream, t=t, data=data))
