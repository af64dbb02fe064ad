"""Read-only commands: ``sessions``, ``info``, ``head``, ``tail``, ``range``, ``export``."""

import contextlib
import json
import sys
import time

import click

from streamlog import errors
from streamlog import export as export_formats
from streamlog.cli.common import (
    RecordWriter, format_bytes, format_duration, format_key, format_option, format_time, log_argument,
    TIME, open_log, parse_key, pick_session, session_option, sessions_option, stream_option,
    utc_option,
)
from streamlog.query import Where, pick_fields, rows, select_sessions
from streamlog.codec import to_jsonable

__all__ = ["sessions", "info", "head", "tail", "range_", "export", "session_summary", "describe_source"]


# --------------------------------------------------------------------------
# describing sessions


def session_summary(session):
    """The session as a JSON-ready dict with stable field names.

    ``records`` is the count stored now in the main stream, ``recorded`` the
    count ever recorded (pruning lowers the first), ``duration_s`` runs to
    now for a live session and is None when unknown (crashed), ``rate_hz`` is
    ``recorded / duration_s``.
    """
    duration = _duration_of(session)
    recorded = session.recorded
    return {
        "id": session.id,
        "status": session.status,
        "start_time": session.start_time,
        "stop_time": session.stop_time,
        "duration_s": duration,
        "records": session.count,
        "recorded": recorded,
        "bytes": session.bytes,
        "first_key": to_jsonable(session.first_key),
        "last_key": to_jsonable(session.last_key),
        "key_types": session.key_types,
        "rate_hz": recorded / duration if duration else None,
        "streams": session.streams,
        "source": describe_source(session.info),
        "pid": session.pid,
        "host": session.host,
        "error": session.error,
        "info": to_jsonable(session.info),
    }


def _duration_of(session):
    if session.start_time is None:
        return None
    if session.stop_time is not None:
        return max(0.0, session.stop_time - session.start_time)
    if session.status == "live":
        return max(0.0, time.time() - session.start_time)
    return None


def describe_source(info):
    """A short description of where a session's records came from, e.g.
    ``lines /var/log/syslog`` or ``command ping -c 3 host``; ``-`` if unknown."""
    info = info or {}
    name = info.get("source")
    if "argv" in info:
        detail = " ".join(str(arg) for arg in info["argv"])
    else:
        detail = info.get("path") or info.get("device") or ""
    text = " ".join(str(part) for part in (name, detail) if part)
    return text or "-"


def _key_span(first, last, info):
    if first is None:
        return "-"
    return f"{format_key(first, info)} .. {format_key(last, info)}"


def _shorten(text, width):
    return text if len(text) <= width else text[:width - 3] + "..."


# --------------------------------------------------------------------------
# sessions, info


@click.command()
@log_argument
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of session objects (for scripts).")
def sessions(log, as_json):
    """List the sessions of LOG, oldest first.

    Columns: id, status (live, closed, failed, crashed), start (local time),
    duration, records stored, bytes, key span, record rate and source.  A
    line under the table says why each failed or crashed session ended.
    For a redis:// URL, a line per consumer group gives its lag (records
    not yet delivered to it) and its pending (delivered, not acknowledged).

    Example: streamlog sessions ./mylog --json
    """
    from streamlog.remote import RemoteLog

    with open_log(log) as opened:
        remote = isinstance(opened, RemoteLog)
        summaries = [{**session_summary(s), **({"groups": s.groups()} if remote else {})}
                     for s in opened.sessions()]
    if as_json:
        click.echo(json.dumps(export_formats.strict_jsonable(summaries), indent=2, allow_nan=False))
        return
    if not summaries:
        click.echo(f"{log}: no sessions")
        return
    header = ("ID", "STATUS", "START", "DURATION", "RECORDS", "BYTES", "KEYS", "RATE", "SOURCE")
    table = [header]
    for s in summaries:
        table.append((
            str(s["id"]), s["status"], format_time(s["start_time"]), format_duration(s["duration_s"]),
            str(s["records"]), format_bytes(s["bytes"]),
            _shorten(_key_span(s["first_key"], s["last_key"], s["info"]), 48),
            "-" if s["rate_hz"] is None else f"{s['rate_hz']:.1f}/s",
            _shorten(s["source"], 40),
        ))
    _echo_table(table, right_aligned={0, 4, 5, 7})
    for s in summaries:
        if s["status"] == "failed":
            click.echo(f"session {s['id']} failed: {_shorten(s['error'] or 'no error recorded', 160)}")
        elif s["status"] == "crashed":
            click.echo(f"session {s['id']} crashed: its recorder (pid {s['pid']}) died; it holds what was "
                       f"committed before")
        for group in s.get("groups", ()):
            click.echo(f"session {s['id']} group {group['name']}: lag {group['lag']}, pending {group['pending']}, "
                       f"{group['consumers']} consumer(s)")


def _echo_table(table, right_aligned):
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [cell.rjust(w) if i in right_aligned else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        click.echo("  ".join(cells).rstrip())


@click.command()
@log_argument
@click.argument("session_id", metavar="[SESSION]", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
def info(log, session_id, as_json):
    """Show everything about one session of LOG (default: the last).

    Includes status, times, process, error, source info and every stream's
    counters and key span.  Negative SESSION ids count from the end; write
    them after `--`.

    Example: streamlog info ./mylog 3
    """
    with open_log(log) as opened:
        session = pick_session(opened, session_id)
        summary = session_summary(session)
        streams = {name: session.stream_info(name) for name in session.streams}
        summary["durability"] = session.durability
        summary["streams"] = {name: {
            "records": s["count"], "recorded": s["recorded"], "bytes": s["bytes"],
            "first_key": to_jsonable(s["first_key"]), "last_key": to_jsonable(s["last_key"]),
            "key_types": s["key_types"], "error": s["error"],
        } for name, s in streams.items()}
    if as_json:
        click.echo(json.dumps(export_formats.strict_jsonable(summary), indent=2, allow_nan=False))
        return
    lines = [
        ("session", f"{summary['id']} ({summary['status']})"),
        ("started", format_time(summary["start_time"])),
        ("stopped", format_time(summary["stop_time"])),
        ("duration", format_duration(summary["duration_s"])),
        ("records", f"{summary['records']} stored, {summary['recorded']} recorded"),
        ("bytes", format_bytes(summary["bytes"])),
        ("rate", "-" if summary["rate_hz"] is None else f"{summary['rate_hz']:.2f} records/s"),
        ("source", summary["source"]),
        ("process", f"pid {summary['pid']} on {summary['host'] or 'unknown host'}"),
        ("durability", str(summary["durability"])),
        ("error", summary["error"] or "-"),
    ]
    for label, value in lines:
        click.echo(f"{label:<11} {value}")
    click.echo("streams:")
    for name, s in streams.items():
        click.echo(f"  {name}: {s['count']} records ({s['recorded']} recorded), {format_bytes(s['bytes'])}, "
                   f"keys {_key_span(s['first_key'], s['last_key'], session.info)} "
                   f"[{_describe_key_types(s['key_types'])}]"
                   + (f", error: {s['error']}" if s["error"] else ""))
    click.echo("info:")
    for name, value in (session.info or {}).items():
        click.echo(f"  {name}: {json.dumps(to_jsonable(value), ensure_ascii=False)}")


def _describe_key_types(key_types):
    if key_types is None:
        return "no records"
    if isinstance(key_types, list):
        return "(" + ", ".join(_describe_key_types(t) for t in key_types) + ")"
    return key_types


# --------------------------------------------------------------------------
# head, tail, range


_count_option = click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True,
                             help="How many records.")


@click.command()
@log_argument
@_count_option
@session_option
@stream_option
@format_option
def head(log, n, session_id, stream, fmt):
    """Print the first N records of a session of LOG (oldest first).

    Prints nothing when the stream is empty.

    Example: streamlog head ./mylog -n 5 --format jsonl
    """
    with open_log(log) as opened:
        session = pick_session(opened, session_id)
        _write_records(_pick(session.head, n, stream), fmt)


@click.command()
@log_argument
@_count_option
@session_option
@stream_option
@format_option
def tail(log, n, session_id, stream, fmt):
    """Print the last N records of a session of LOG (oldest first).

    Prints nothing when the stream is empty.

    Example: streamlog tail ./mylog -n 20 --session 2
    """
    with open_log(log) as opened:
        session = pick_session(opened, session_id)
        _write_records(_pick(session.tail, n, stream), fmt)


def _pick(method, n, stream):
    try:
        return method(n, stream=stream)
    except errors.NoItemFound:
        return []


@click.command("range")
@log_argument
@click.argument("start", required=False)
@click.argument("stop", required=False)
@sessions_option
@stream_option
@click.option("--since", type=TIME, metavar="TIME",
              help="Only records that arrived at or after TIME: -10m, -2h, now, epoch seconds or ISO-8601.")
@click.option("--until", type=TIME, metavar="TIME", help="Only records that arrived at or before TIME.")
@click.option("--where", "conditions", multiple=True, metavar="FIELD=VALUE",
              help="Only records whose FIELD (a dict key, a tuple index, or a.b for nested ones) compares so "
                   "with VALUE; also !=, <, <=, >, >=.  Repeatable: all must hold.")
@click.option("--fields", metavar="A,B", help="Print only these fields (dict keys or tuple indexes), in this order.")
@click.option("--step", type=click.IntRange(min=1), metavar="N", help="Every N-th record only (after --where).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N records.")
@utc_option
@format_option
def range_(log, start, stop, session_spec, stream, since, until, conditions, fields, step, limit, utc, fmt):
    """Print the records with START <= key <= STOP (both inclusive) of one or
    more sessions.

    Without STOP the range runs to the last record, without START too it is
    the whole session.  Keys are written in the key notation: numbers, text,
    0x-hex bytes, comma-separated tuples such as 3,0.5 (or JSON arrays), and
    times (ISO-8601, -10m, ...) for time-keyed sessions.  --since/--until
    select by arrival time on every session, whatever its keys; a range that
    runs backwards is a usage error.  The steps run in the order: key and
    time range, --where, --step, --limit.  Reads lazily, so any range fits in
    memory (csv reads it twice: first for the fields of its header).

    \b
    Examples:
      streamlog range ./mylog 100 200 --format csv > part.csv
      streamlog range ./mylog --since -10m -s all --where channel=stderr
      streamlog range ./mylog -s 3,5-7 --since 2026-12-01T18:52 --until 2026-12-01T19:00 --limit 100
    """
    where = [Where(text) for text in conditions]
    picked = _field_list(fields)
    with open_log(log) as opened:
        chosen = select_sessions(opened, session_spec)

        def selected():
            found = rows(chosen, stream=stream, start=start, stop=stop, since=since, until=until, where=where,
                         step=step, limit=limit, utc=utc)
            return _records(found, picked)

        _write_records(export_formats.Reread(selected), fmt)


def _records(found, picked):
    """The records of the rows ``found``, cut to the fields ``picked`` (None: whole)."""
    records = (row.record for row in found)
    return records if picked is None else (pick_fields(r, picked) for r in records)


def _field_list(text):
    """``"a, b"`` -> ``["a", "b"]``; None -> None; a usage error for an empty list."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("give field names separated by commas, e.g. --fields t,value",
                                 param_hint="'--fields'")
    return names


def _write_records(records, fmt):
    """Print ``records`` (a list, or a Reread that can be read twice)
    to standard output: text lines, or jsonl/csv by the exporter's own code
    (a CSV header holds every field of the records)."""
    if fmt == "text":
        writer = RecordWriter(fmt, sys.stdout)
        writer.write_all(records)
        writer.flush()
        return
    sys.stdout.flush()
    export_formats.write_records(records, fmt, sys.stdout.buffer)
    sys.stdout.buffer.flush()


# --------------------------------------------------------------------------
# export


@click.command()
@log_argument
@click.option("-o", "--output", required=True, metavar="FILE|-",
              help="Where to write: a file (its suffix .jsonl, .csv, .npy or .wav picks the format), a FIFO or "
                   "device (written into), or - for standard output.")
@session_option
@stream_option
@click.option("--start", metavar="KEY", help="First key to export (inclusive).  [default: the first]")
@click.option("--stop", metavar="KEY", help="Last key to export (inclusive; exclusive for wav).  "
                                            "[default: the last]")
@click.option("--format", "-f", "fmt", type=click.Choice(list(export_formats.FORMATS)),
              help="Output format.  [default: from the suffix of --output]")
@click.option("--allow-gaps", is_flag=True,
              help="wav only: fill frames missing from the recording with silence instead of failing.")
@click.option("--force", is_flag=True, help="Replace FILE if it is an existing regular file.")
def export(log, output, session_id, stream, start, stop, fmt, allow_gaps, force):
    """Write a session's records (or a key range of them) to a file or to
    standard output.

    jsonl and csv hold any records; npy stacks the numpy array of each
    record (the array item of tuple records) into one array of shape
    (records, *record_shape), so every array must have the same shape and
    dtype; wav writes an audio session's samples from START up to (not
    including) STOP, given as times.  Reads and writes in bounded memory.
    A regular file appears only when complete and is replaced only with
    --force; a FIFO or device is written into; a symbolic link is followed
    (the link stays); a path inside any log directory is refused.

    Example: streamlog export ./mylog -o take3.npy --session 3 --start 1000
    """
    to_stdout = output == "-"
    if to_stdout and fmt is None:
        raise click.BadParameter("give --format when writing to standard output", param_hint="'--output'")
    try:
        chosen = export_formats.format_for(fmt, None if to_stdout else output)
    except errors.ExportError as exc:
        raise click.BadParameter(f"{exc} (--format)", param_hint="'--output'") from exc
    if allow_gaps and "allow_gaps" not in chosen.options:
        raise click.BadParameter(f"only applies to wav exports, not {chosen.name}", param_hint="'--allow-gaps'")
    options = {"allow_gaps": allow_gaps} if "allow_gaps" in chosen.options else {}
    with open_log(log) as opened:
        session = pick_session(opened, session_id)
        low = None if start is None else parse_key(start, session, stream, param_hint="'--start'")
        high = None if stop is None else parse_key(stop, session, stream, param_hint="'--stop'")
        length = export_formats.planned_count(session, chosen.name, stream=stream, start=low, stop=high)
        target = sys.stdout.buffer if to_stdout else output
        if to_stdout:
            sys.stdout.flush()
        with _progress_bar(length, f"Exporting session {session.id} to {output}") as progress:
            result = export_formats.export(session, target, chosen.name, stream=stream, start=low, stop=high,
                                           force=force, progress=progress, **options)
    click.echo(f"Wrote {result.count} {result.unit}(s) of session {session.id} to {output} ({result.format})",
               err=True)


@contextlib.contextmanager
def _progress_bar(length, label):
    """A progress bar on stderr when it is a terminal (else nothing); yields its ``update``."""
    if not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update
