"""Exports: a stream of a stored session (or a key range of it) written to a
file or a binary stream in a named format.

::

    from streamlog.export import export
    export(log.session(-1), "take.npy")                      # the format from the suffix
    export(session, sys.stdout.buffer, "jsonl", start=100)   # any binary stream

Formats live in the registry :data:`FORMATS`, keyed by name, and are found
by name or by a path's suffix (:func:`format_for`); :func:`register_format`
adds one (an :class:`ExportFormat`: a name, suffixes and a ``write``
function).  Built in:

* ``jsonl`` (``.jsonl``, ``.ndjson``): one strict JSON value per record
  (:func:`json_line`; NaN and infinities are written as ``null``);
* ``csv``: a header row holding every field of the records exported (found
  in a first pass over them), then one row per record; a field a record
  lacks is an empty cell (see :class:`CsvWriter`);
* ``npy``: the numpy array of each record (the one array item of a tuple
  record) stacked into one array of shape ``(records, *shape)``;
* ``wav``: the samples of an audio session, written by
  :func:`streamlog.audio.write_wav` (``start``/``stop`` are the session's
  µs time keys, the span ``[start, stop)``); ``npy`` of an audio session
  joins its samples the same way into one ``(frames, channels)`` array;
* ``parquet``, ``arrow``, ``feather``: the stream as a table (key, arrival
  time, the records' fields), streamed in batches of 65,536 rows (one
  Parquet row group each), the session's metadata in the schema metadata
  (:func:`streamlog.frames.write_arrow`; needs ``streamlog[arrow]``);
* ``png``: an overview picture of the session (:func:`streamlog.plot.plot_session`;
  options ``streams``, ``since``/``until`` epoch seconds, ``width_px``;
  needs ``streamlog[plot]``).

Where an export to a path writes (:func:`export`):

* a path inside any log directory (any directory holding LMDB's
  ``data.mdb`` or ``lock.mdb``), or the log being exported itself, is
  refused, also when a symbolic link leads there;
* a new path: the file is created (its directory must exist; streamlog
  creates no directories for an export);
* an existing regular file is replaced only with ``force``, and never
  written in place: the export goes to a new ``.NAME.partial-PID`` file
  beside it (created with ``O_EXCL | O_NOFOLLOW``, so nothing planted there is
  written through), renamed over it when complete, removed on failure;
* a FIFO, character device or other file that is not a regular file is
  opened and written into, in place (no ``force`` needed: nothing is
  replaced; opening a FIFO waits for its reader, as a shell's ``>`` does);
* a symbolic link is followed, as a shell's ``>`` does, and what it leads
  to is treated by the rules above; the link itself is never replaced, and
  a link to nothing is refused.  So ``/dev/stdout`` writes into whatever
  standard output is.

Every refusal and every record that does not fit its format raises
:class:`~streamlog.errors.ExportError` (targets:
:class:`~streamlog.errors.ExportTargetError`) naming the problem.
"""

import contextlib
import csv
import io
import itertools
import json
import math
import os
import stat
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
from numpy.lib import format as npy_format

from streamlog import errors
from streamlog.codec import to_jsonable
from streamlog.frames import is_audio, stream_name
from streamlog.notation import is_time_keyed
from streamlog.query import Row
from streamlog.store import FILE_MODE, enclosing_log

__all__ = [
    "export", "export_wav", "planned_count", "write_records", "Selection", "Labelled", "Reread", "ExportFormat",
    "Written", "ExportResult", "WavExport", "FORMATS", "register_format", "format_for", "json_line", "strict_jsonable",
    "LineWriter", "JsonlWriter", "CsvWriter", "csv_fields", "is_terminal",
]


# --------------------------------------------------------------------------
# the format registry


@dataclass(frozen=True)
class ExportFormat:
    """An export format.

    ``write(records, out, *, seekable, progress, **options)`` writes the
    records to the binary file ``out`` from its current position and returns
    the count written (or a :class:`Written`).  ``records`` may be iterated
    more than once (each pass reads from the start); ``seekable`` says
    whether ``out`` may be seeked back; ``progress(n)`` is called with each
    count of ``unit``\\ s written.  ``options`` names the keyword options
    ``write`` takes besides these (e.g. ``allow_gaps``).
    """

    name: str
    suffixes: tuple
    write: Callable
    unit: str = "record"
    description: str = ""
    options: tuple = ()


class Written(NamedTuple):
    """What a format's ``write`` wrote: ``count`` units, with ``gaps`` (wav:
    the :class:`streamlog.audio.Gap` spans filled with silence)."""

    count: int
    gaps: list = []


FORMATS = {}
"""The export formats by name (see :func:`register_format`)."""


def register_format(fmt):
    """Add ``fmt`` (an :class:`ExportFormat`) to :data:`FORMATS`; returns it.

    Raises ValueError if its name or one of its suffixes is already taken.
    """
    if fmt.name in FORMATS:
        raise ValueError(f"an export format named {fmt.name!r} is already registered")
    for suffix in fmt.suffixes:
        taken = _by_suffix(suffix)
        if taken is not None:
            raise ValueError(f"suffix {suffix!r} already belongs to export format {taken.name!r}")
    FORMATS[fmt.name] = fmt
    return fmt


def _by_suffix(suffix):
    return next((f for f in FORMATS.values() if suffix.lower() in (s.lower() for s in f.suffixes)), None)


def format_for(name=None, path=None):
    """The :class:`ExportFormat` named ``name``, or else the one whose suffix
    ``path`` ends with (case-insensitive).  Raises ExportError naming the
    known formats when there is none."""
    if name is not None:
        fmt = FORMATS.get(name)
        if fmt is None:
            raise errors.ExportError(f"unknown export format {name!r}; known: {', '.join(FORMATS)}")
        return fmt
    suffix = os.path.splitext(os.fspath(path))[1] if path is not None else ""
    fmt = _by_suffix(suffix) if suffix else None
    if fmt is None:
        known = ", ".join(f"*{s}" for f in FORMATS.values() for s in f.suffixes)
        raise errors.ExportError(f"cannot tell the format from the suffix of {path}; name the file {known} "
                                 f"or give the format")
    return fmt


# --------------------------------------------------------------------------
# what is exported


class Labelled(NamedTuple):
    """A record with labels written beside it (``streamlog.query.Row.labels``:
    session, key, arrival time): in jsonl one object ``{**labels, "record":
    record}``; in csv the label columns first, then the record's own (a
    record field that has a label's name is written as ``record.NAME``); in
    text the labels, then the record, separated by tabs."""

    labels: dict
    record: object


class Selection:
    """The records of ``stream`` (None: the main stream) of a stored
    ``session`` with ``start <= key <= stop`` that arrived at ``since <=
    time <= until`` (epoch seconds; None: that end open).

    ``labels`` (names of :data:`streamlog.query.LABELS`) makes each record a
    :class:`Labelled` one, its times local or UTC (``utc``).  Iterating
    reads lazily, in bounded memory, from the start each time (so a format
    may make two passes).  A session still recording may hold more records
    on a second pass; formats that pass twice write only as many as the
    first pass counted.
    """

    def __init__(self, session, stream=None, start=None, stop=None, *, since=None, until=None, labels=(), utc=False):
        self.session = session
        self.stream = stream
        self.start = start
        self.stop = stop
        self.since = since
        self.until = until
        self.labels = tuple(labels)
        self.utc = utc

    def __iter__(self):
        if self.since is None and self.until is None and not self.labels:
            return iter(self.session.irange(self.start, self.stop, stream=self.stream))
        return self._entries()

    def _entries(self):
        time_key = is_time_keyed(self.session.info)
        for entry in self.session.ientries(self.start, self.stop, since=self.since, until=self.until,
                                           stream=self.stream):
            if not self.labels:
                yield entry.record
                continue
            row = Row(self.session.id, entry.key, entry.arrival_us, entry.record, time_key)
            yield Labelled(row.labels(self.labels, utc=self.utc), entry.record)


class Reread:
    """Records that can be read more than once: each iteration iterates
    ``make()`` afresh (e.g. a lazy query), for formats that pass twice."""

    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return iter(self.make())


class ExportResult(NamedTuple):
    """What :func:`export` wrote: ``count`` ``unit``\\ s (``"record"``, or
    ``"frame"`` for wav) in ``format`` to ``path`` (None for a stream);
    ``gaps`` lists the spans a wav export filled with silence."""

    path: object
    format: str
    count: int
    unit: str
    gaps: list


def export(session, target, fmt=None, *, stream=None, start=None, stop=None, since=None, until=None, labels=(),
           utc=False, force=False, progress=None, **options):
    """Write the records of ``stream`` of ``session`` with ``start <= key <=
    stop`` (wav: the time keys ``[start, stop)``) to ``target`` in the format
    ``fmt`` (a name of :data:`FORMATS`; None: from the suffix of ``target``).
    ``since``/``until`` (epoch seconds, inclusive) select by arrival time and
    ``labels`` (see :class:`Labelled`) add the session, key or arrival time
    beside each record: jsonl and csv only (a format with ``since``/``until``
    options of its own, png, gets them as those).

    ``target`` is a path (written as the module docstring says; ``force``
    allows replacing a regular file) or a binary file object (written from
    its position on, not closed).  ``progress(n)`` is called as units are
    written; ``options`` are the format's own (wav: ``allow_gaps``).
    Returns an :class:`ExportResult`.  Raises ExportError (ExportTargetError
    for the target) and the errors of reading the session; on failure a
    regular file is left as it was.
    """
    is_path = isinstance(target, (str, bytes, os.PathLike))
    fmt = format_for(fmt, target if is_path else None) if fmt is not None or is_path else None
    if fmt is None:
        raise errors.ExportError("exporting to a stream needs the format named")
    unknown = sorted(set(options) - set(fmt.options))
    if unknown:
        raise errors.ExportError(f"{', '.join(unknown)} does not apply to {fmt.name} exports")
    for name, value in (("since", since), ("until", until)):
        if name in fmt.options and value is not None:  # a format's own span (png: the picture's)
            options[name] = value
    if "since" in fmt.options or "until" in fmt.options:
        since = until = None
    if fmt.name not in ("jsonl", "csv") and (since is not None or until is not None or labels):
        raise errors.ExportError(f"arrival times (since/until) and keys/times beside the records apply to jsonl "
                                 f"and csv exports, not {fmt.name}")
    selection = Selection(session, stream, start, stop, since=since, until=until, labels=labels, utc=utc)
    progress = progress or _ignore
    if not is_path:
        written = fmt.write(selection, target, seekable=_seekable(target), progress=progress, **options)
        path = None
    else:
        path = os.fspath(target)
        with _opened_target(path, force=force, source_log=session.log.path) as (out, seekable):
            written = fmt.write(selection, out, seekable=seekable, progress=progress, **options)
    written = written if isinstance(written, Written) else Written(written)
    return ExportResult(path, fmt.name, written.count, fmt.unit, list(written.gaps))


def planned_count(session, fmt, *, stream=None, start=None, stop=None):
    """An upper bound of the units (records; frames for wav) that
    :func:`export` with these arguments writes, for a progress bar: the
    stream's stored record count (a key range may hold fewer), or the
    frames of an audio span."""
    fmt = format_for(fmt)
    if fmt.unit == "frame":
        from streamlog.audio import AudioSession

        return AudioSession(session, stream or "main").frame_count(_seconds(start), _seconds(stop))
    return session.stream_info(stream)["count"]


def write_records(records, fmt, out):
    """Write the iterable ``records`` to the binary file object ``out`` in
    the format named ``fmt`` (jsonl, csv or npy; csv, and npy to an
    unseekable ``out``, pass over ``records`` twice, so give a list or a
    :class:`Selection`).  Returns the count."""
    written = format_for(fmt).write(records, out, seekable=_seekable(out), progress=_ignore)
    return written.count if isinstance(written, Written) else written


def _ignore(_n):
    pass


def _seekable(out):
    try:
        return out.seekable()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------
# targets


def _refuse_log_paths(path, source_log):
    """ExportTargetError if ``path`` (once its links are resolved) is the log
    ``source_log`` or lies inside any log directory."""
    real = os.path.realpath(path)
    if source_log is not None and real == os.path.realpath(source_log):
        raise errors.ExportTargetError(f"{path} is the log being exported; choose a file outside it")
    inside = enclosing_log(real)
    if inside is not None:
        via = f" (through a symbolic link to {real})" if os.path.islink(path) else ""
        raise errors.ExportTargetError(
            f"{path} is inside the log {inside}{via}; streamlog never writes into a log directory: "
            f"choose a file outside it")


@contextlib.contextmanager
def _opened_target(path, *, force, source_log):
    """Yield ``(binary file, seekable)`` to write the export at ``path`` into,
    following the rules of the module docstring."""
    _refuse_log_paths(path, source_log)
    try:
        st = os.stat(path)  # follows links, as a shell's ">" does
    except FileNotFoundError:
        if os.path.islink(path):
            raise errors.ExportTargetError(
                f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; streamlog does not "
                f"create files through links") from None
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise errors.ExportTargetError(f"{path} is a directory; give a file to write")
    if st is not None and not stat.S_ISREG(st.st_mode):
        # a FIFO, a device, a terminal, a pipe behind /dev/stdout: write into it, never replace it
        with open(os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC), "wb") as out:
            yield out, False
        return
    if st is not None and not force:
        raise errors.ExportTargetError(f"{path} exists; use --force (force=True) to replace it")
    final = os.path.realpath(path) if st is not None else path  # a link's target is replaced, not the link
    directory, name = os.path.split(final)
    if not os.path.isdir(directory or os.curdir):
        raise errors.ExportTargetError(f"cannot write {path}: the directory {directory} does not exist "
                                       f"(streamlog creates the file, never directories, for an export)")
    partial = os.path.join(directory, f".{name}.partial-{os.getpid()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        raise errors.ExportTargetError(
            f"{partial} already exists (a symbolic link or a file left behind); streamlog does not write "
            f"through it: remove it and try again") from None
    try:
        with open(fd, "wb") as out:
            yield out, True
        os.replace(partial, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


class _Utf8:
    """A text ``write`` onto the binary file ``out`` (UTF-8), flushed at
    each write when ``out`` is a terminal.  Owns nothing: ``out`` stays
    open and unwrapped whatever happens."""

    def __init__(self, out):
        self.out = out
        self._interactive = is_terminal(out)

    def write(self, text):
        self.out.write(text.encode("utf-8"))
        if self._interactive:
            self.out.flush()


def is_terminal(out):
    """True when the file object ``out`` is a terminal (False for one that cannot tell)."""
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------
# jsonl


def json_line(record):
    """``record`` as one line of strict JSON (RFC 8259), via
    :func:`streamlog.codec.to_jsonable`: float NaN, Infinity and -Infinity,
    which JSON cannot hold, are written as ``null`` (as JavaScript's
    ``JSON.stringify`` does).  A :class:`Labelled` record is one object of
    its labels and ``"record"``."""
    if isinstance(record, Labelled):
        value = {**record.labels, "record": to_jsonable(record.record)}
    else:
        value = to_jsonable(record)
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a non-finite float somewhere
        return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False)


def strict_jsonable(value):
    """:func:`streamlog.codec.to_jsonable` of ``value`` with float NaN and
    infinities replaced by None, for ``json.dumps(..., allow_nan=False)``."""
    return _finite(to_jsonable(value))


def _finite(value):
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is list:
        return [_finite(item) for item in value]
    if type(value) is dict:
        return {k: _finite(v) for k, v in value.items()}
    return value


class LineWriter:
    """Writes records to the text stream ``out``, one line ``to_line(record)`` each."""

    def __init__(self, out, to_line):
        self.out = out
        self.to_line = to_line

    def write_batch(self, records):
        """Write every record of ``records``; returns how many."""
        n = 0
        for n, record in enumerate(records, 1):
            self.out.write(self.to_line(record) + "\n")
        return n


class JsonlWriter(LineWriter):
    """Writes records to the text stream ``out`` as JSON lines (:func:`json_line`)."""

    def __init__(self, out):
        super().__init__(out, json_line)


def _write_jsonl(records, out, *, seekable, progress):
    writer = JsonlWriter(_Utf8(out))
    count = 0
    for record in records:
        count += writer.write_batch((record,))
        progress(1)
    return count


# --------------------------------------------------------------------------
# csv


def _csv_items(record):
    """``(column name, value)`` pairs of a record: a dict's fields, a tuple's
    items as ``value0, value1, ...``, anything else as ``value``; a numpy
    array spread over one column per element, named by its indexes
    (``value1[0][1]``); a :class:`Labelled` record's labels first."""
    if isinstance(record, Labelled):
        own = _csv_items(record.record)
        return list(record.labels.items()) + [(f"record.{name}" if name in record.labels else name, value)
                                              for name, value in own]
    if isinstance(record, dict):
        items = [(name if type(name) is str else json.dumps(to_jsonable(name)), value)
                 for name, value in record.items()]
    elif isinstance(record, tuple):
        items = [(f"value{i}", value) for i, value in enumerate(record)]
    else:
        items = [("value", record)]
    if not any(isinstance(value, np.ndarray) for _, value in items):
        return items
    return [spread for name, value in items for spread in _spread(name, value)]


def _spread(name, value):
    """``[(name, value)]``, or for an array of one or more dimensions one pair
    per element, ``name[i][j]`` in C order."""
    if not isinstance(value, np.ndarray) or value.ndim == 0:
        return [(name, value.item() if isinstance(value, np.ndarray) else value)]
    return [(name + "".join(f"[{i}]" for i in index), value[index].item()) for index in np.ndindex(value.shape)]


def csv_fields(records):
    """Every column name of ``records``, in the order they first appear."""
    return _fields_and_count(records)[0]


def _fields_and_count(records):
    fields = {}
    count = 0
    for count, record in enumerate(records, 1):
        for name, _ in _csv_items(record):
            fields.setdefault(name, None)
    return list(fields), count


def _csv_cell(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json_line(value)


class CsvWriter:
    """Writes records to the text stream ``out`` as CSV rows under one header.

    The header is ``fields`` when given (e.g. :func:`csv_fields` of every
    record to be written), else the fields of the first batch written.
    Each value goes under its own field's column; a field a record lacks is
    an empty cell (as is ``None``); values that are not scalars are written
    as strict JSON (:func:`json_line`).  A record with a field outside the
    header raises ExportError naming it (values never shift to another
    column).
    """

    def __init__(self, out, fields=None):
        self._csv = csv.writer(out, lineterminator="\n")
        self.header = None
        self._columns = None
        self.written = 0
        if fields is not None:
            self._set_header(fields)

    def _set_header(self, fields):
        self.header = list(fields)
        self._columns = {name: i for i, name in enumerate(self.header)}
        self._csv.writerow(self.header)

    def write_batch(self, records):
        """Write every record of ``records`` (a list when the header is still
        to be taken from it); returns how many."""
        if self.header is None:
            records = list(records)
            if not records:
                return 0
            self._set_header(csv_fields(records))
        n = 0
        for n, record in enumerate(records, 1):
            row = [""] * len(self.header)
            for name, value in _csv_items(record):
                column = self._columns.get(name)
                if column is None:
                    raise errors.ExportError(
                        f"record {self.written} has a field {name!r} outside the CSV header "
                        f"({', '.join(self.header)}), which was fixed by the records before it; "
                        f"use jsonl for records whose fields change")
                row[column] = _csv_cell(value)
            self._csv.writerow(row)
            self.written += 1
        return n


def _write_csv(records, out, *, seekable, progress):
    fields, count = _fields_and_count(records)  # the first pass
    writer = CsvWriter(_Utf8(out), fields)
    for record in _first(records, count):
        writer.write_batch((record,))
        progress(1)
    return writer.written


def _first(records, n):
    """The first ``n`` of ``records``; ExportError if there are fewer (they
    changed between two passes)."""
    taken = 0
    for taken, record in enumerate(itertools.islice(records, n), 1):
        yield record
    if taken < n:
        raise errors.ExportError(f"only {taken} of the {n} records counted were there on the second pass "
                                 f"(pruned meanwhile?); the export is incomplete")


# --------------------------------------------------------------------------
# npy


def _write_npy(records, out, *, seekable, progress):
    """Stack the arrays of ``records`` into one ``.npy`` array, one record at
    a time (an audio session's samples are joined instead: see
    :func:`_write_audio_npy`).  To a seekable ``out`` the header is written first with a
    provisional count and patched at the end (numpy pads it so the count
    can grow in place); to a stream, a first pass counts and checks the
    records, so the header is right from the start and nothing is written
    for records that do not fit."""
    if isinstance(records, Selection) and is_audio(records.session, stream_name(records.session, records.stream)):
        return _write_audio_npy(records, out, progress)
    start = out.tell() if seekable else None
    if seekable:
        count, dtype, shape = 0, None, None
    else:
        count, dtype, shape = _npy_layout(records)
        _write_npy_header(out, dtype, (count,) + shape)
        records = _first(records, count)
    written = 0
    for record in records:
        array = _array_of(record, written)
        if dtype is None:
            dtype, shape = _npy_dtype(array), array.shape
            header_end = _write_npy_header(out, dtype, (0,) + shape)
        _check_alike(array, written, dtype, shape)
        out.write(np.ascontiguousarray(array).tobytes())
        written += 1
        progress(1)
    if dtype is None:
        raise _no_records()
    if seekable:
        end = out.tell()
        out.seek(start)
        if _write_npy_header(out, dtype, (written,) + shape) != header_end:
            raise errors.ExportError("this numpy cannot patch an .npy header in place; numpy >= 1.24 is needed")
        out.seek(end)
    return written


def _write_audio_npy(selection, out, progress):
    """The samples of an audio session's ``[start, stop)`` (µs time keys)
    joined into one ``(frames, channels)`` array, as ``AudioSession.to_numpy``
    gives them; the frame count is known first, so ``out`` need not be
    seekable.  Counts (and reports to ``progress``) the audio records
    written, the format's unit.  Raises AudioGapError where frames are missing."""
    from streamlog.audio import AudioSession

    audio = AudioSession(selection.session, stream_name(selection.session, selection.stream))
    start, stop = _seconds(selection.start), _seconds(selection.stop)
    frames = audio.frame_count(start, stop)
    if not frames:
        raise _no_records()
    _write_npy_header(out, audio.dtype, (frames, audio.channels))
    written = 0
    for samples in audio.iter_samples(start, stop):  # one array per record: gaps raise
        out.write(np.ascontiguousarray(samples).tobytes())
        written += 1
        progress(1)
    return written


def _npy_layout(records):
    """(count, dtype, shape) of the stacked array; ExportError if the records do not stack."""
    count, dtype, shape = 0, None, None
    for record in records:
        array = _array_of(record, count)
        if dtype is None:
            dtype, shape = _npy_dtype(array), array.shape
        _check_alike(array, count, dtype, shape)
        count += 1
    if dtype is None:
        raise _no_records()
    return count, dtype, shape


def _no_records():
    return errors.ExportError("no records to export: an .npy file needs at least one array")


def _npy_dtype(array):
    if array.dtype.hasobject:
        raise errors.ExportError(f"record 0 holds an array of dtype {array.dtype}, which .npy cannot store "
                                 f"without pickle; export to jsonl instead")
    return array.dtype


def _check_alike(array, index, dtype, shape):
    if array.shape != shape or array.dtype != dtype:
        raise errors.ExportError(
            f"record {index} holds a {array.dtype} array of shape {array.shape}, but record 0 held "
            f"{dtype} {shape}: .npy needs every array alike (export to jsonl for mixed records)")


def _write_npy_header(out, dtype, shape):
    start = out.tell() if _seekable(out) else 0
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(
        buffer, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    out.write(buffer.getvalue())
    return start + len(buffer.getvalue())


def _array_of(record, index):
    """The numpy array of a record: the record itself, or the one array item of a tuple."""
    if isinstance(record, np.ndarray):
        return record
    if isinstance(record, tuple):
        arrays = [item for item in record if isinstance(item, np.ndarray)]
        if len(arrays) == 1:
            return arrays[0]
        raise errors.ExportError(
            f"record {index} is a tuple with {len(arrays)} numpy arrays; .npy export needs exactly one "
            f"(export to jsonl instead)")
    raise errors.ExportError(
        f"record {index} is a {type(record).__name__}, not a numpy array: .npy export needs array records "
        f"(export to jsonl or csv instead)")


# --------------------------------------------------------------------------
# wav


class WavExport(NamedTuple):
    """What :func:`export_wav` wrote: ``frames`` frames to ``path``, with
    ``gaps`` filled with silence."""

    path: str
    frames: int
    gaps: list


def _write_wav(selection, out, *, seekable, progress, allow_gaps=False):
    from streamlog.audio import AudioSession, write_wav  # audio needs numpy only, but is loaded on use

    if not isinstance(selection, Selection):
        raise errors.ExportError("a wav export needs a Selection of an audio session, not records")
    audio = AudioSession(selection.session, selection.stream or "main")
    frames, gaps = write_wav(audio, out, _seconds(selection.start), _seconds(selection.stop), progress=progress,
                             allow_gaps=allow_gaps)
    return Written(frames, gaps)


def _seconds(key_us):
    """A µs time key as epoch seconds (None stays None)."""
    return None if key_us is None else key_us / 1e6


def export_wav(session, path, start=None, stop=None, progress=None, *, stream="main", allow_gaps=False,
               force=False):
    """Write the audio of ``[start, stop)`` (epoch seconds; None: the ends of
    the recording) of ``session`` (a Session or an AudioSession) to the WAV
    file ``path``, by the target rules of :func:`export` (``force`` to
    replace a file).  Raises AudioGapError if frames are missing unless
    ``allow_gaps`` (silence in their place, listed in the result),
    AudioFormatError for recordings WAV cannot hold.  Returns a
    :class:`WavExport`."""
    from streamlog.audio import AudioSession

    if isinstance(session, AudioSession):
        session, stream = session.session, session.stream
    to_key = (lambda t: None if t is None else round(t * 1_000_000))
    result = export(session, path, "wav", stream=stream, start=to_key(start), stop=to_key(stop), force=force,
                    progress=progress, allow_gaps=allow_gaps)
    return WavExport(result.path, result.count, result.gaps)


register_format(ExportFormat("jsonl", (".jsonl", ".ndjson"), _write_jsonl,
                             description="one strict JSON value per line"))
register_format(ExportFormat("csv", (".csv",), _write_csv,
                             description="a header with every field, one row per record"))
register_format(ExportFormat("npy", (".npy",), _write_npy,
                             description="the records' arrays stacked into one numpy array (audio: its samples "
                                         "joined, shape (frames, channels))"))
register_format(ExportFormat("wav", (".wav",), _write_wav, unit="frame", options=("allow_gaps",),
                             description="an audio session's samples"))


# --------------------------------------------------------------------------
# parquet, arrow, feather and png (streamlog.frames builds the tables, streamlog.plot the picture)


def _session_of(selection, fmt):
    if not isinstance(selection, Selection):
        raise errors.ExportError(f"a {fmt} export needs a Selection of a stored session, not records")
    return selection.session


def _arrow_format(name):
    def write(selection, out, *, seekable, progress):
        from streamlog import frames

        session = _session_of(selection, name)
        return frames.write_arrow(session, out, name, selection.stream, selection.start, selection.stop,
                                  progress=progress)
    return write


def _write_png(selection, out, *, seekable, progress, streams=None, since=None, until=None, width_px=1400):
    from streamlog import plot

    session = _session_of(selection, "png")
    plot.plot_session(session, out, streams=streams, start=since, stop=until, width_px=width_px)
    progress(1)
    return 1


for _name, _what in (("parquet", "Parquet: the stream as a table, one row group per 65,536 records"),
                     ("arrow", "an Arrow IPC file of the stream as a table"),
                     ("feather", "a Feather (version 2, Arrow IPC) file of the stream as a table")):
    register_format(ExportFormat(_name, (f".{_name}",), _arrow_format(_name), description=_what))
register_format(ExportFormat("png", (".png",), _write_png, unit="picture",
                             options=("streams", "since", "until", "width_px"),
                             description="an overview picture of the session (streamlog.plot)"))
