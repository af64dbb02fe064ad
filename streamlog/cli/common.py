"""What every ``streamlog`` subcommand shares.

* :class:`StreamlogGroup` -- the click group class: any
  :class:`~streamlog.errors.StreamlogError` becomes one ``Error: ...`` line on
  stderr with exit status 1 (click's usage errors keep exit status 2), and a
  reader that closes the pipe early (``| head``) ends the command quietly.
* :func:`open_log`, :func:`pick_session` -- a log and a session named on the
  command line, with one-line errors when they are not there.
* :func:`parse_key` -- a key typed in the one notation of
  :mod:`streamlog.notation`, read as the session's key type.
* :func:`parse_size` / :data:`SIZE` -- byte sizes like ``10MB`` or ``1GiB``.
* :class:`RecordWriter` -- records as text lines, JSON lines or CSV rows.
"""

import datetime as dt
import os
import re
import sys

import click
import numpy as np

from streamlog import errors, notation, timespec
from streamlog.export import CsvWriter, JsonlWriter, Labelled, LineWriter, is_terminal

__all__ = [
    "StreamlogGroup", "open_log", "pick_session", "parse_key", "parse_size", "SIZE", "TIME", "AGE",
    "sessions_option", "utc_option", "label_options", "label_names",
    "RecordWriter", "RECORD_FORMATS", "echo_table", "format_bytes", "format_duration", "format_time",
    "log_argument", "session_option", "stream_option", "format_option",
]

RECORD_FORMATS = ("text", "jsonl", "csv")


# --------------------------------------------------------------------------
# errors and broken pipes


class StreamlogGroup(click.Group):
    """A click group whose commands fail with one line, never a traceback.

    * :class:`~streamlog.errors.StreamlogError` and ``OSError`` (a file that
      cannot be written, ...) -> ``Error: <message>`` on stderr, exit 1;
    * click usage errors (bad option, key that does not parse) and the
      library's QueryError, KeyFormatError, TimeFormatError -> exit 2;
    * any other exception is a bug: one line naming it, exit 1 (the
      traceback is shown when the environment sets ``STREAMLOG_TRACEBACK``);
    * stdout closed by the reader (``EPIPE``: ``| head``) -> stdout is
      pointed at ``/dev/null`` (so the final flush cannot fail again) and
      the command ends quietly with status 0, as ``cat`` and ``jq`` do, so
      ``set -o pipefail`` scripts go on.

    Standard output is flushed before the command returns, so a broken pipe
    is noticed here and not at interpreter shutdown.
    """

    def invoke(self, ctx):
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()
            return result
        except BrokenPipeError:
            _silence_stdout()
            ctx.exit(0)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (errors.QueryError, errors.KeyFormatError, errors.TimeFormatError) as exc:
            raise click.UsageError(str(exc)) from exc  # bad usage: one line, exit status 2
        except errors.StreamlogError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            raise click.ClickException(_describe_os_error(exc)) from exc
        except Exception as exc:
            if os.environ.get("STREAMLOG_TRACEBACK"):
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {exc} (a bug in streamlog; "
                f"run with STREAMLOG_TRACEBACK=1 to see where)") from exc


def _silence_stdout():
    """Point the stdout file descriptor at /dev/null (Python's EPIPE recipe)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (e.g. click's test runner): nothing to flush later
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _describe_os_error(exc):
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------
# shared arguments and options

log_argument = click.argument("log", type=click.Path(path_type=str, readable=False))
"""The LOG argument: a path, checked by :func:`open_log` (for one-line errors)."""

session_option = click.option(
    "--session", "-s", "session_id", type=int, default=None, metavar="ID",
    help="Session id; negative counts from the end.  [default: the last session]")

sessions_option = click.option(
    "--session", "-s", "session_spec", default=None, metavar="IDS",
    help="Session ids: one id, a list and spans such as 3,5-7, or all; negative ids count from the end.  "
         "[default: the last session]")

utc_option = click.option("--utc", is_flag=True, is_eager=True,  # eager: TIME options read it
                          help="Read ISO times without an offset, and print times, in UTC instead of local time.")

stream_option = click.option(
    "--stream", default=None, metavar="NAME",
    help="Stream of the session to read.  [default: main]")

def label_options(command):
    """``--keys``/``-k`` and ``--times``/``-t``: show each record's key and
    arrival time beside it (see :func:`label_names`)."""
    command = click.option("--times", "-t", "show_times", is_flag=True,
                           help="Show each record's arrival time (ISO-8601, µs; local, or UTC with --utc).")(command)
    return click.option("--keys", "-k", "show_keys", is_flag=True,
                        help="Show each record's key (in the key notation; ISO-8601 for time keys).")(command)


def label_names(keys, times, several_sessions=False):
    """The labels to show beside each record (names of
    :data:`streamlog.query.LABELS`): the session when records of several
    sessions are printed, the key and the arrival time when asked for."""
    return tuple(name for name, wanted in (("session", several_sessions), ("key", keys), ("time", times)) if wanted)


format_option = click.option(
    "--format", "-f", "fmt", type=click.Choice(RECORD_FORMATS), default="text", show_default=True,
    help="Output format: readable text lines, JSON lines, or CSV with a header row holding every field "
         "(missing fields are empty cells).")


# --------------------------------------------------------------------------
# logs and sessions


def open_log(path, *, readonly=True):
    """Open the existing log at ``path`` (never creates one).

    Raises :class:`~streamlog.errors.LogNotFound` when nothing is there,
    :class:`~streamlog.errors.NotALog` for a file or a directory that is not
    a streamlog log, :class:`~streamlog.errors.FormatVersionError` for a log
    written by a newer streamlog; :class:`StreamlogGroup` prints them as one
    line.  A ``redis://`` (``rediss://``, ``unix://``) URL opens the sessions
    a mirror copied there (:class:`streamlog.RemoteLog`; ``?name=RIG`` picks
    the rig), read-only.
    """
    from streamlog.remote import open_log as open_path_or_url

    return open_path_or_url(os.fspath(path), readonly=readonly, create=False)


def pick_session(log, session_id=None):
    """The session ``session_id`` of ``log`` (negative counts from the end);
    the last session when ``session_id`` is None.

    Raises :class:`~streamlog.errors.SessionNotFound` naming the log when it
    has no sessions at all or none with that id.
    """
    if not log.sessions():
        raise errors.SessionNotFound(f"log {log.path} has no sessions")
    if session_id is None:
        return log.session(-1)
    return log.session(session_id)


# --------------------------------------------------------------------------
# keys


def parse_key(text, session, stream="main", *, param_hint=None, utc=False):
    """Parse ``text`` as a key of ``stream`` in ``session``, in the key notation
    of :mod:`streamlog.notation` (times for a time-keyed session).

    Raises :class:`click.BadParameter` (exit status 2) naming ``text`` and
    the expected type when it does not parse.
    """
    key_types = session.stream_info(stream).get("key_types")
    try:
        return notation.parse_key(text, key_types, time_key=notation.is_time_keyed(session.info), utc=utc)
    except errors.KeyFormatError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None


# --------------------------------------------------------------------------
# sizes


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
    "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE_PATTERN = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_size(text):
    """Bytes in ``text``: ``12345``, ``10MB`` / ``10M`` (10**6), ``1GiB`` (2**30),
    ``1.5GB``; units are case-insensitive.

    Raises :class:`click.BadParameter` for anything else.
    """
    match = _SIZE_PATTERN.fullmatch(text)
    unit = match and _SIZE_UNITS.get(match.group(2).lower())
    if unit is None:
        raise click.BadParameter(
            f"{text!r} is not a size: expected a number of bytes with an optional unit "
            f"(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 10MB or 1GiB")
    number = match.group(1)
    return int(float(number) * unit) if "." in number else int(number) * unit


class _ParsedType(click.ParamType):
    """A click parameter type converting text with ``parse(text, ctx)``; the
    ``failure`` errors it raises become usage errors (exit status 2) with
    their message; a value already converted (``done``) passes through."""

    def __init__(self, name, parse, failure, done):
        self.name = name
        self._parse = parse
        self._failure = failure
        self._done = done

    def convert(self, value, param, ctx):
        if isinstance(value, self._done):
            return value
        try:
            return self._parse(value, ctx)
        except self._failure as exc:
            self.fail(exc.message if isinstance(exc, click.ClickException) else str(exc), param, ctx)


SIZE = _ParsedType("size", lambda text, ctx: parse_size(text), click.BadParameter, int)
"""A click parameter type that converts with :func:`parse_size`."""

TIME = _ParsedType("time", lambda text, ctx: timespec.parse_time(text, utc=bool(ctx and ctx.params.get("utc"))),
                   errors.TimeFormatError, float)
"""A click parameter type: a time of :mod:`streamlog.timespec` -> epoch seconds.
ISO times without an offset are UTC when the command has ``--utc`` (an
eager option, so it is read first), local time otherwise."""

AGE = _ParsedType("age", lambda text, ctx: timespec.parse_age(text), errors.TimeFormatError, float)
"""A click parameter type: an age such as ``7d`` or ``12h`` -> seconds."""


# --------------------------------------------------------------------------
# human-readable figures


def format_bytes(n):
    """``1536`` -> ``1.5 KiB``; None -> ``-``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024


def format_duration(seconds):
    """``3725.5`` -> ``1:02:05``, ``12.25`` -> ``12.2s``; None -> ``-``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def echo_table(table, right_aligned):
    """Print ``table`` (rows of str cells, the header first) in aligned
    columns; the columns numbered in ``right_aligned`` flush right."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [cell.rjust(w) if i in right_aligned else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        click.echo("  ".join(cells).rstrip())


def format_time(epoch_s):
    """Epoch seconds as local ``YYYY-MM-DD HH:MM:SS``; None -> ``-``."""
    if epoch_s is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch_s).strftime("%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------
# writing records


class RecordWriter:
    """Writes batches of records, as they arrive, to the text stream ``out``
    in one of :data:`RECORD_FORMATS` (for ``follow``, where the records are
    not known in advance; a known selection goes through
    :func:`streamlog.export.write_records` instead).

    * ``text``: one readable line per record; strings as they are (line
      breaks shown as ``\\n``), arrays summarised with dtype and shape, long
      bytes shortened;
    * ``jsonl``: :class:`streamlog.export.JsonlWriter` (strict JSON);
    * ``csv``: :class:`streamlog.export.CsvWriter`, its header the fields of
      the first batch; a later record with a field outside it is an
      ExportError naming the field.

    Output is flushed after every batch when ``out`` is a terminal;
    otherwise it is buffered and the caller calls :meth:`flush` at points
    where a reader should see what was written.
    """

    def __init__(self, fmt, out):
        if fmt not in RECORD_FORMATS:
            raise click.BadParameter(f"unknown record format {fmt!r}; choose from {', '.join(RECORD_FORMATS)}")
        self.format = fmt
        self.out = out
        self._interactive = is_terminal(out)
        if fmt == "text":
            self._writer = LineWriter(out, format_record_text)
        else:
            self._writer = JsonlWriter(out) if fmt == "jsonl" else CsvWriter(out)

    def write_all(self, records):
        """Write every record of the iterable ``records``; returns how many."""
        n = self._writer.write_batch(records)
        if self._interactive:
            self.out.flush()
        return n

    def flush(self):
        self.out.flush()


_BYTES_SHOWN = 32


def format_record_text(record):
    """One readable line for ``record`` (see :class:`RecordWriter`); a
    :class:`~streamlog.export.Labelled` record's labels come first, each
    followed by a tab."""
    if isinstance(record, Labelled):
        return "".join(f"{value}\t" for value in record.labels.values()) + format_record_text(record.record)
    if isinstance(record, str):
        return record.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return _format_value(record)


def _format_value(value):
    if isinstance(value, np.ndarray):
        body = np.array2string(value.ravel() if value.ndim > 1 else value, threshold=8,
                               edgeitems=3, separator=", ", max_line_width=sys.maxsize)
        return f"{value.dtype}{list(value.shape)} {body}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_format_value(k)}: {_format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if len(data) <= _BYTES_SHOWN:
            return repr(data)
        return f"{data[:_BYTES_SHOWN]!r}... ({len(data)} bytes)"
    return repr(value)
