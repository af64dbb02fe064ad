"""Read-only commands: ``sessions``, ``info``, ``head``, ``tail``, ``range``, ``export``."""

import collections
import contextlib
import csv
import json
import sys

import click

from streamlog import errors
from streamlog import export as export_formats
from streamlog.cli.common import (
    RecordWriter, echo_table, format_bytes, format_duration, format_option, format_time, log_argument,
    TIME, label_names, label_options, open_log, parse_key, pick_session, session_option, sessions_option,
    stream_option, utc_option,
)
from streamlog.describe import FLAT_FIELDS, flat_summary, session_summary
from streamlog.notation import describe_key_types, is_time_keyed
from streamlog.query import Row, Where, pick_fields, rows, select_sessions

__all__ = ["sessions", "info", "head", "tail", "range_", "export"]


# --------------------------------------------------------------------------
# sessions, info


SUMMARY_FORMATS = ("text", "json", "nl", "csv")


def summary_format_options(command):
    """``--json``, ``--nl``, ``--csv`` (and ``-f/--format``) for the commands that describe sessions."""
    options = [
        click.option("--format", "-f", "fmt", type=click.Choice(SUMMARY_FORMATS), default="text", show_default=True,
                     help="text: a table; json: one JSON document; nl: one JSON object per line; csv: a header "
                          "row and one row per session."),
        click.option("--json", "fmt", flag_value="json", help="Same as --format json."),
        click.option("--nl", "fmt", flag_value="nl", help="Same as --format nl (JSON lines)."),
        click.option("--csv", "fmt", flag_value="csv", help="Same as --format csv."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _write_summaries(summaries, fmt, *, single=False):
    """The summaries (of :func:`streamlog.describe.session_summary`) as strict
    JSON (NaN and infinities as null), JSON lines or CSV; ``single``: one
    JSON object rather than a list."""
    if fmt == "json":
        document = export_formats.strict_jsonable(summaries[0] if single else summaries)
        click.echo(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False))
    elif fmt == "nl":
        for summary in summaries:
            click.echo(json.dumps(export_formats.strict_jsonable(summary), ensure_ascii=False, allow_nan=False))
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=FLAT_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat_summary(summary) for summary in summaries)


def _key_span(first, last):
    if first is None:
        return "-"
    return f"{first} .. {last}"


def _shorten(text, width):
    return text if len(text) <= width else text[:width - 3] + "..."


@click.command()
@log_argument
@sessions_option
@summary_format_options
@utc_option
def sessions(log, session_spec, fmt, utc):
    """List the sessions of LOG, oldest first.

    Columns: id, status (live, closed, failed, crashed), start (local time),
    duration, records stored, bytes, key span, record rate and source.  A
    line under the table says why each failed or crashed session ended.
    For a redis:// URL, a line per consumer group gives its lag (records
    not yet delivered to it) and its pending (delivered, not acknowledged).
    --json, --nl and --csv give every field (the same fields as `info`).

    \b
    Examples:
      streamlog sessions ./mylog
      streamlog sessions ./mylog --json | jq '.[] | select(.status == "crashed") | .id'
      streamlog sessions ./mylog -s 3,5-7 --csv > sessions.csv
    """
    from streamlog.remote import RemoteLog

    with open_log(log) as opened:
        remote = isinstance(opened, RemoteLog)
        chosen = opened.sessions() if session_spec is None else select_sessions(opened, session_spec)
        summaries = [{**session_summary(s, utc=utc), **({"groups": s.groups()} if remote else {})} for s in chosen]
    if fmt != "text":
        _write_summaries(summaries, fmt)
        return
    if not summaries:
        click.echo(f"{log}: no sessions")
        return
    header = ("ID", "STATUS", "START", "DURATION", "RECORDS", "BYTES", "KEYS", "RATE", "SOURCE")
    table = [header]
    for s in summaries:
        table.append((
            str(s["id"]), s["status"], format_time(s["start_time"]), format_duration(s["duration_s"]),
            str(s["records"]), format_bytes(s["bytes"]), _key_span(s["first_key"], s["last_key"]),
            "-" if s["rate_hz"] is None else f"{s['rate_hz']:.1f}/s",
            _shorten(s["source"], 40),
        ))
    echo_table(table, right_aligned={0, 4, 5, 7})
    for s in summaries:
        if s["status"] == "failed":
            click.echo(f"session {s['id']} failed: {_shorten(s['error'] or 'no error recorded', 160)}")
        elif s["status"] == "crashed":
            pids = ", ".join(map(str, s["crashed_pids"]))
            who = f"its recorder (pid {pids})" if len(s["crashed_pids"]) == 1 else f"its recorders (pids {pids})"
            click.echo(f"session {s['id']} crashed: {who} died; it holds what was committed before")
        for group in s.get("groups", ()):
            click.echo(f"session {s['id']} group {group['name']}: lag {group['lag']}, pending {group['pending']}, "
                       f"{group['consumers']} consumer(s)")


@click.command()
@log_argument
@click.argument("session_arg", metavar="[SESSION]", type=int, required=False)
@session_option
@summary_format_options
@utc_option
def info(log, session_arg, session_id, fmt, utc):
    """Show everything about one session of LOG (default: the last).

    Includes status, times, process, error, source info, labels and every stream's
    counters and key span.  The session is -s ID (as in every command) or,
    as before, a SESSION argument; negative ids count from the end (write
    an argument one after `--`).

    \b
    Examples:
      streamlog info ./mylog -s 3
      streamlog info ./mylog 3 --json
    """
    if session_arg is not None and session_id is not None and session_arg != session_id:
        raise click.UsageError(f"two sessions given: {session_arg} and -s {session_id}; give one")
    with open_log(log) as opened:
        session = pick_session(opened, session_id if session_id is not None else session_arg)
        summary = session_summary(session, utc=utc)
    if fmt != "text":
        _write_summaries([summary], fmt, single=True)
        return
    lines = [
        ("session", f"{summary['id']} ({summary['status']})"),
        ("started", summary["start"] or "-"),
        ("stopped", summary["stop"] or "-"),
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
    for name, s in summary["streams"].items():
        click.echo(f"  {name}: {s['records']} records ({s['recorded']} recorded), {format_bytes(s['bytes'])}, "
                   f"keys {_key_span(s['first_key'], s['last_key'])} [{describe_key_types(s['key_types'])}]"
                   + (f", error: {s['error']}" if s["error"] else ""))
    for title in ("info", "labels"):
        click.echo(f"{title}:")
        for name, value in summary[title].items():
            click.echo(f"  {name}: {json.dumps(value, ensure_ascii=False)}")


# --------------------------------------------------------------------------
# head, tail, range


_count_option = click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True,
                             help="How many records.")


@click.command()
@log_argument
@_count_option
@session_option
@stream_option
@label_options
@utc_option
@format_option
def head(log, n, session_id, stream, show_keys, show_times, utc, fmt):
    """Print the first N records of a session of LOG (oldest first).

    Prints nothing when the stream is empty.  --keys and --times show each
    record's key and arrival time beside it (as for `range`).

    \b
    Examples:
      streamlog head ./mylog -n 5 --format jsonl
      streamlog head ./mylog -n 3 --keys --times
    """
    labels = label_names(show_keys, show_times)
    with open_log(log) as opened:
        session = pick_session(opened, session_id)
        if not labels:
            _write_records(_pick(session.head, n, stream), fmt)
            return
        _write_records(list(_records(rows([session], stream=stream, limit=n), labels=labels, utc=utc)), fmt)


@click.command()
@log_argument
@_count_option
@session_option
@stream_option
@label_options
@utc_option
@format_option
def tail(log, n, session_id, stream, show_keys, show_times, utc, fmt):
    """Print the last N records of a session of LOG (oldest first).

    Prints nothing when the stream is empty.  --keys and --times show each
    record's key and arrival time beside it (as for `range`).

    \b
    Examples:
      streamlog tail ./mylog -n 20 --session 2
      streamlog tail ./mylog -n 1 --times --utc
    """
    labels = label_names(show_keys, show_times)
    with open_log(log) as opened:
        session = pick_session(opened, session_id)
        if not labels:
            _write_records(_pick(session.tail, n, stream), fmt)
            return
        time_key = is_time_keyed(session.info)
        from streamlog.remote import RemoteLog

        if isinstance(opened, RemoteLog):  # a redis:// URL: its reader has no tail_entries; read on, keep n
            newest = collections.deque(session.ientries(stream=stream), maxlen=n)
        else:
            newest = session.tail_entries(n, stream)
        found = [Row(session.id, e.key, e.arrival_us, e.record, time_key) for e in newest]
        _write_records(list(_records(found, labels=labels, utc=utc)), fmt)


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
@label_options
@utc_option
@format_option
def range_(log, start, stop, session_spec, stream, since, until, conditions, fields, step, limit, show_keys,
           show_times, utc, fmt):
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

    --keys and --times show each record's key and arrival time beside it
    (text: tab-separated before the record; csv: columns key, time; jsonl:
    an object {"key", "time", "record"} instead of the bare record, whose
    shape stays the default); with several sessions a session column comes
    first.

    \b
    Examples:
      streamlog range ./mylog 100 200 --format csv > part.csv
      streamlog range ./mylog --since -10m -s all --where channel=stderr
      streamlog range ./mylog -s 3,5-7 --since 2026-12-01T18:52 --until 2026-12-01T19:00 --limit 100
      streamlog range ./mylog --keys --times --utc -f csv > with-times.csv
    """
    where = [Where(text) for text in conditions]
    picked = _field_list(fields)
    with open_log(log) as opened:
        chosen = select_sessions(opened, session_spec)
        labels = label_names(show_keys, show_times, several_sessions=len(chosen) > 1)

        def selected():
            found = rows(chosen, stream=stream, start=start, stop=stop, since=since, until=until, where=where,
                         step=step, limit=limit, utc=utc)
            return _records(found, picked, labels, utc)

        _write_records(export_formats.Reread(selected), fmt)


def _records(found, picked=None, labels=(), utc=False):
    """The records of the rows ``found``, cut to the fields ``picked`` (None:
    whole), each with the ``labels`` beside it (see :func:`label_names`)."""
    for row in found:
        record = row.record if picked is None else pick_fields(row.record, picked)
        yield export_formats.Labelled(row.labels(labels, utc=utc), record) if labels else record


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
@click.option("--since", type=TIME, metavar="TIME",
              help="jsonl/csv: only records that arrived at or after TIME (-10m, epoch seconds, ISO-8601).")
@click.option("--until", type=TIME, metavar="TIME", help="jsonl/csv: only records that arrived at or before TIME.")
@label_options
@utc_option
@click.option("--force", is_flag=True, help="Replace FILE if it is an existing regular file.")
def export(log, output, session_id, stream, start, stop, fmt, allow_gaps, since, until, show_keys, show_times, utc,
           force):
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

    --since/--until (by arrival time) and --keys/--times (each record's key
    and arrival time beside it, as for `range`) apply to jsonl and csv.

    \b
    Examples:
      streamlog export ./mylog -o take3.npy --session 3 --start 1000
      streamlog export ./mylog -o last-hour.csv --since -1h --keys --times
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
    labels = label_names(show_keys, show_times)
    if chosen.name not in ("jsonl", "csv") and (since is not None or until is not None or labels):
        raise click.UsageError(f"--since, --until, --keys and --times apply to jsonl and csv exports, not "
                               f"{chosen.name}")
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
                                           since=since, until=until, labels=labels, utc=utc, force=force,
                                           progress=progress, **options)
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
