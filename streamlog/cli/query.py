"""Read-only commands: ``sessions``, ``info``, ``head``, ``tail``, ``range``, ``export``."""

import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np
from numpy.lib import format as npy_format

from streamlog import errors
from streamlog.cli.common import (
    RecordWriter, format_bytes, format_duration, format_key, format_option, format_time, log_argument,
    TIME, open_log, parse_key, pick_session, refuse_existing, session_option, sessions_option, stream_option,
    utc_option,
)
from streamlog.query import Where, pick_fields, rows, select_sessions
from streamlog.codec import to_jsonable
from streamlog.store import FILE_MODE

__all__ = ["sessions", "info", "head", "tail", "range_", "export", "session_summary", "describe_source",
           "write_npy"]


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
        click.echo(json.dumps(summaries, indent=2))
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
        click.echo(json.dumps(summary, indent=2))
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
    memory.

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
        found = rows(chosen, stream=stream, start=start, stop=stop, since=since, until=until, where=where,
                     step=step, limit=limit, utc=utc)
        records = (row.record for row in found)
        _write_records(records if picked is None else (pick_fields(r, picked) for r in records), fmt)


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
    writer = RecordWriter(fmt, sys.stdout)
    writer.write_all(records)
    writer.flush()


# --------------------------------------------------------------------------
# export


EXPORT_FORMATS = ("jsonl", "csv", "npy", "wav")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".npy": "npy", ".wav": "wav"}


@click.command()
@log_argument
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File to write; its suffix (.jsonl, .csv, .npy, .wav) picks the format.")
@session_option
@stream_option
@click.option("--start", metavar="KEY", help="First key to export (inclusive).  [default: the first]")
@click.option("--stop", metavar="KEY", help="Last key to export (inclusive; exclusive for wav).  "
                                            "[default: the last]")
@click.option("--format", "-f", "fmt", type=click.Choice(EXPORT_FORMATS),
              help="Output format.  [default: from the suffix of --output]")
@click.option("--allow-gaps", is_flag=True,
              help="wav only: fill frames missing from the recording with silence instead of failing.")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def export(log, output, session_id, stream, start, stop, fmt, allow_gaps, force):
    """Write a session's records (or a key range of them) to a file.

    jsonl and csv hold any records; npy stacks the numpy array of each
    record (the array item of tuple records) into one array of shape
    (records, *record_shape), so every array must have the same shape and
    dtype; wav writes an audio session's samples from START up to (not
    including) STOP, given as times.  Reads and writes in bounded memory;
    the file appears only when complete.

    Example: streamlog export ./mylog -o take3.npy --session 3 --start 1000
    """
    fmt = fmt or _format_from_suffix(output)
    if output.exists() and not force:
        raise click.ClickException(f"{output} exists; use --force to overwrite it")
    if allow_gaps and fmt != "wav":
        raise click.BadParameter("only applies to wav exports", param_hint="'--allow-gaps'")
    with open_log(log) as opened:
        session = pick_session(opened, session_id)
        if fmt == "wav":
            written = _export_wav(session, stream, start, stop, output, allow_gaps)
            what = "frame(s)"
        else:
            written = _export_records(session, stream, start, stop, output, fmt)
            what = "record(s)"
    click.echo(f"Wrote {written} {what} of session {session.id} to {output} ({fmt})", err=True)


def _parse_bounds(session, stream, start, stop):
    low = None if start is None else parse_key(start, session, stream, param_hint="'--start'")
    high = None if stop is None else parse_key(stop, session, stream, param_hint="'--stop'")
    return low, high


def _export_records(session, stream, start, stop, output, fmt):
    low, high = _parse_bounds(session, stream, start, stop)
    stored = session.stream_info(stream)["count"]
    total = stored if low is None and high is None else None
    records = session.irange(low, high, stream=stream)
    label = f"Exporting session {session.id} to {output}"
    with click.progressbar(records, length=total, label=label, file=sys.stderr) as progress:
        return _write_atomically(output, fmt, progress, upper_bound=stored)


def _export_wav(session, stream, start, stop, output, allow_gaps):
    """Write the audio of ``[start, stop)`` with :func:`streamlog.audio.export_wav`;
    returns the frame count."""
    from streamlog.audio import AudioSession, export_wav

    audio = AudioSession(session, stream or "main")
    low, high = _parse_bounds(session, stream, start, stop)
    start_s = None if low is None else low / 1e6
    stop_s = None if high is None else high / 1e6
    label = f"Exporting session {session.id} to {output}"
    with click.progressbar(length=audio.frame_count(start_s, stop_s), label=label, file=sys.stderr) as bar, \
            refuse_existing(f"{output}.partial"):
        result = export_wav(audio, output, start_s, stop_s, progress=bar.update, allow_gaps=allow_gaps)
    return result.frames


def _format_from_suffix(output):
    fmt = _SUFFIX_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise click.BadParameter(
            f"cannot tell the format from the suffix of {output}; name the file *.jsonl, *.csv or *.npy "
            f"or give --format", param_hint="'--output'")
    return fmt


def _write_atomically(output, fmt, records, upper_bound):
    """Write ``records`` to a new temporary file beside ``output``, then rename
    it over ``output``; nothing is left behind on failure.  Returns the count.

    The temporary file is created anew (never through a planted symbolic
    link or into an existing file; see :func:`refuse_existing`)."""
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    with refuse_existing(partial):
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        if fmt == "npy":
            with open(fd, "wb") as f:
                written = write_npy(records, f, upper_bound=upper_bound)
        else:
            with open(fd, "w", encoding="utf-8", newline="") as f:
                written = RecordWriter(fmt, f).write_all(records)
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written


def write_npy(records, f, *, upper_bound=0):
    """Stack the arrays of ``records`` into one ``.npy`` array written to the
    binary file ``f`` (seekable), one record at a time; returns the count.

    The header is written first with a provisional record count and patched
    at the end (numpy pads the header so the count can grow in place).
    Raises :class:`click.ClickException` for a record without exactly one
    array, arrays of differing shape or dtype, object arrays, or no records.
    """
    records = iter(records)
    first = next(records, None)
    if first is None:
        raise click.ClickException("no records to export: an .npy file needs at least one array")
    first = _array_of(first, 0)
    if first.dtype.hasobject:
        raise click.ClickException(f"record 0 holds an array of dtype {first.dtype}, which .npy cannot store "
                                   f"without pickle; export to jsonl instead")
    shape, dtype = first.shape, first.dtype
    header_end = _write_npy_header(f, dtype, (max(upper_bound, 1),) + shape)
    f.write(np.ascontiguousarray(first).tobytes())
    count = 1
    for record in records:
        array = _array_of(record, count)
        if array.shape != shape or array.dtype != dtype:
            raise click.ClickException(
                f"record {count} holds a {array.dtype} array of shape {array.shape}, but record 0 held "
                f"{dtype} {shape}: .npy needs every array alike (export to jsonl for mixed records)")
        f.write(np.ascontiguousarray(array).tobytes())
        count += 1
    f.seek(0)
    if _write_npy_header(f, dtype, (count,) + shape) != header_end:
        raise click.ClickException("this numpy cannot patch an .npy header in place; numpy >= 1.24 is needed")
    return count


def _write_npy_header(f, dtype, shape):
    npy_format.write_array_header_1_0(
        f, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    return f.tell()


def _array_of(record, index):
    """The numpy array of a record: the record itself, or the one array item of a tuple."""
    if isinstance(record, np.ndarray):
        return record
    if isinstance(record, tuple):
        arrays = [item for item in record if isinstance(item, np.ndarray)]
        if len(arrays) == 1:
            return arrays[0]
        raise click.ClickException(
            f"record {index} is a tuple with {len(arrays)} numpy arrays; .npy export needs exactly one "
            f"(export to jsonl instead)")
    raise click.ClickException(
        f"record {index} is a {type(record).__name__}, not a numpy array: .npy export needs array records "
        f"(export to jsonl or csv instead)")
