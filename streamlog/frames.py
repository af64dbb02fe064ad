"""Stored streams as analysts take them: numpy arrays, pandas DataFrames,
Arrow record batches, and streams joined by wall-clock time.

Everything here reads a stored :class:`~streamlog.Session` through its
public API (:meth:`~streamlog.Session.icolumns`, a stored block at a time),
lazily and in order.
``start``/``stop`` select records as ``Session.irange`` does: keys
``start <= key <= stop`` with ``by="key"``, arrival times in epoch seconds
with ``by="time"`` (both bounds inclusive, None = open).

What a record contributes, its *value*:

* an audio record ``(t_us, samples, frames, status)`` (the main stream of a
  session whose info describes audio): ``samples``;
* a ``(key, value)`` pair (a 2-tuple whose first item equals the record's
  key, as :class:`~streamlog.sources.synth.SynthSource` and many counters
  record): ``value``;
* anything else: the record itself.

``value=`` overrides this: an int index or a dict key picked from each
record, or a callable ``value(key, record)``.
"""

import json
import numbers
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from streamlog.codec import to_jsonable
from streamlog.errors import RecordShapeError
from streamlog.extras import require
from streamlog.log import DEFAULT_STREAM

BATCH_ROWS = 65_536  # rows per Arrow record batch (and Parquet row group)
_RESERVED = ("key", "time")
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


class StreamArrays(NamedTuple):
    """A stream as numpy arrays: ``values`` (all records' values stacked,
    or concatenated along axis 0 for blocks of samples), and one entry per
    record in ``keys``, ``times_us`` (int64 arrival µs since the epoch) and
    ``offsets`` (int64: record ``i``'s first row in ``values``)."""

    values: np.ndarray
    keys: np.ndarray
    times_us: np.ndarray
    offsets: np.ndarray


def entries(session, stream, start=None, stop=None, by="key"):
    """``Session.ientries`` of ``stream`` between ``start`` and ``stop``:
    keys with ``by="key"``, arrival times (epoch seconds) with ``by="time"``."""
    return session.ientries(stream=stream, **_selection(start, stop, by))


def columns(session, stream, start=None, stop=None, by="key"):
    """``Session.icolumns`` of ``stream`` (the records of :func:`entries`, a
    stored block at a time)."""
    return session.icolumns(stream=stream, **_selection(start, stop, by))


def _selection(start, stop, by):
    if by == "key":
        return {"start": start, "stop": stop}
    if by == "time":
        return {"since": start, "until": stop}
    raise ValueError(f'by must be "key" or "time", not {by!r}')


def stream_name(session, stream):
    """The name of ``stream`` (None: the session's main stream); SessionNotFound if it has none such."""
    return session.stream_info(stream)["stream"]


def is_audio(session, stream):
    """True if ``stream`` of ``session`` holds audio records ``(t_us, samples, frames, status)``."""
    info = session.info or {}
    return (stream == DEFAULT_STREAM and info.get("key_kind") == "timestamp_us"
            and all(name in info for name in ("rate", "channels", "width")))


def is_time_keyed(session, stream):
    """True if the keys of ``stream`` are int µs since the epoch (audio,
    markers, command output lines)."""
    if stream == DEFAULT_STREAM:
        return (session.info or {}).get("key_kind") == "timestamp_us"
    from streamlog.sources.markers import MARKERS_STREAM

    return stream == MARKERS_STREAM


def sample_rate(session, stream):
    """The sample rate (Hz) the session info gives for ``stream``'s blocks
    (``rate`` of audio, ``rate_hz`` of a synth source), or None."""
    if stream != DEFAULT_STREAM:
        return None
    info = session.info or {}
    rate = info.get("rate", info.get("rate_hz"))
    return float(rate) if isinstance(rate, numbers.Real) and not isinstance(rate, bool) else None


def value_getter(session, stream, value):
    """``get(key, record) -> value`` as described in the module docstring."""
    if callable(value):
        return value
    if value is not None:
        def pick(key, record):
            try:
                return record[value]
            except (KeyError, IndexError, TypeError):
                raise RecordShapeError(f"session {session.id} stream {stream!r}: the record with key {key!r} "
                                       f"has no item {value!r}") from None
        return pick
    if is_audio(session, stream):
        def samples(key, record):
            if record[1] is None:
                raise RecordShapeError(
                    f"session {session.id} stream {stream!r}: the record with key {key!r} is a gap "
                    f"({record[2]} frames lost); AudioSession(session).to_numpy(allow_gaps=True) fills gaps "
                    "with silence")
            return record[1]
        return samples
    return _auto


def _auto(key, record):
    if type(record) is tuple and len(record) == 2 and _same_key(record[0], key):
        return record[1]
    return record


def block_values(get, keys, found):
    """``[get(key, record) ...]`` for one block's keys and records, at C
    speed where the automatic getter finds them all ``(key, value)`` pairs."""
    if get is _auto and found and set(map(type, found)) == {tuple} and set(map(len, found)) == {2}:
        try:
            pairs = list(map(_FIRST, found)) == keys
        except (TypeError, ValueError):  # an array compared with a key
            pairs = False
        if pairs:
            return list(map(_SECOND, found))
    return list(map(get, keys, found))


def _same_key(item, key):
    try:
        return bool(item == key)
    except (TypeError, ValueError):  # an array compared with a key
        return False


def _key_array(keys, key_types):
    """Keys as a numpy array: int64 or float64 for number keys, else a 1-D object array."""
    if key_types in ("int", "float"):
        try:
            return np.array(keys, dtype=np.float64 if key_types == "float" else np.int64)
        except OverflowError:
            pass
    out = np.empty(len(keys), dtype=object)
    out[:] = keys
    return out


def to_numpy(session, stream=None, start=None, stop=None, *, by="key", layout="auto", value=None):
    """The values of a stream of fixed-shape numeric records as one
    contiguous array, with per-record companions: a :class:`StreamArrays`.

    Records must all be numbers (``values`` has one entry per record),
    tuples or lists of numbers of one length, or numpy arrays of one dtype.
    ``layout="stack"`` stacks arrays (shape ``(records,) + shape``);
    ``"concat"`` joins blocks of samples along axis 0 (all shapes equal
    after the first axis); ``"auto"`` concatenates where the session info
    gives a sample rate (audio, synth) and stacks otherwise.  Raises
    RecordShapeError naming the first record that does not fit (another
    shape or dtype, not numeric, an audio gap).
    """
    if layout not in ("auto", "stack", "concat"):
        raise ValueError(f'layout must be "auto", "stack" or "concat", not {layout!r}')
    stream = stream_name(session, stream)
    get = value_getter(session, stream, value)
    keys, times, values = [], [], []
    for block in columns(session, stream, start, stop, by):
        keys += block.keys
        times.append(block.times_us)
        values += block_values(get, block.keys, block.records)
    key_array = _key_array(keys, session.stream_info(stream)["key_types"])
    times_us = np.concatenate(times) if times else np.empty(0, dtype=np.int64)
    if not values:
        return StreamArrays(np.empty(0), key_array, times_us, np.empty(0, dtype=np.int64))
    where = f"session {session.id} stream {stream!r}"
    if isinstance(values[0], np.ndarray) and values[0].ndim >= 1:
        concat = layout == "concat" or (layout == "auto" and sample_rate(session, stream) is not None)
        return _arrays(values, keys, key_array, times_us, concat, where)
    if layout == "concat":
        raise RecordShapeError(f"{where}: records are not arrays of samples, so they cannot be concatenated")
    return StreamArrays(_numbers(values, keys, where), key_array, times_us, np.arange(len(values), dtype=np.int64))


def _arrays(values, keys, key_array, times_us, concat, where):
    first = values[0]
    dtype, shape = first.dtype, (first.shape[1:] if concat else first.shape)
    for i, v in enumerate(values):
        if type(v) is not np.ndarray or v.dtype != dtype or (v.shape[1:] if concat else v.shape) != shape:
            raise RecordShapeError(f"{where}: the record with key {keys[i]!r} does not fit: "
                                   f"{_describe(v)}, the first record holds {_describe(first)}")
    if dtype.kind not in "biufc":
        raise RecordShapeError(f"{where}: records hold arrays of dtype {dtype}, not numbers")
    if not concat:
        return StreamArrays(np.stack(values), key_array, times_us, np.arange(len(values), dtype=np.int64))
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    offsets = np.zeros(len(values), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return StreamArrays(np.concatenate(values), key_array, times_us, offsets)


def _numbers(values, keys, where):
    """Numbers (or equal-length tuples of numbers) as one numeric array."""
    shape = np.shape(values[0]) if isinstance(values[0], (tuple, list)) else ()
    try:
        out = np.array(values)
    except (ValueError, TypeError):
        out = None
    if out is not None and out.dtype.kind in "biufc" and out.shape[1:] == shape:
        return out
    for i, v in enumerate(values):
        if not _is_numeric(v):
            raise RecordShapeError(f"{where}: the record with key {keys[i]!r} is not numeric: it holds "
                                   f"{_describe(v)} (to_numpy takes numbers, tuples of numbers or numpy arrays; "
                                   "to_pandas takes any record)")
        if np.shape(v) != shape:
            raise RecordShapeError(f"{where}: the record with key {keys[i]!r} does not fit: {_describe(v)}, "
                                   f"the first record holds {_describe(values[0])}")
    raise RecordShapeError(f"{where}: records mix values numpy cannot join into one numeric array")


def _is_numeric(value):
    if isinstance(value, (tuple, list)):
        return all(_is_numeric(v) for v in value)
    return isinstance(value, (numbers.Number, np.number, np.bool_)) and not isinstance(value, np.ndarray)


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    return f"a {type(value).__name__}"


# -- tables (pandas, Arrow) ------------------------------------------------------


def flatten(value):
    """A record's value as ``{column: cell}``: dicts spread into columns
    (nested keys joined with dots), tuples into positional columns
    (``"0"``, ``"1"``, ...); anything else (numbers, str, lists, arrays) is
    one cell of column ``"value"``.  Names clashing with ``key``/``time``
    get the prefix ``value.``."""
    if type(value) is dict:
        out = {}
        _spread(value, "", out)
    elif type(value) is tuple:
        out = {}
        _spread(dict(zip(map(str, range(len(value))), value)), "", out)
    else:
        return {"value": value}
    for name in _RESERVED:
        if name in out:
            out[f"value.{name}"] = out.pop(name)
    return out


def _spread(mapping, prefix, out):
    for name, cell in mapping.items():
        name = f"{prefix}{name}"
        if type(cell) is dict and cell:
            _spread(cell, name + ".", out)
        else:
            out[name] = cell


class _Columns:
    """Cells gathered into columns, row by row; a column missing from a row holds None there."""

    def __init__(self):
        self.data = {}
        self.rows = 0

    def add(self, cells):
        data = self.data
        rows = self.rows
        for name, cell in cells.items():
            column = data.get(name)
            if column is None:
                column = data[name] = [None] * rows
            column.append(cell)
        self.rows = rows = rows + 1
        if len(cells) != len(data):
            for column in data.values():
                if len(column) < rows:
                    column.append(None)

    def add_values(self, values):
        """``add(flatten(value))`` for each of ``values``, column by column
        when they are all flat dicts with the same keys in the same order."""
        kinds = set(map(type, values))
        if not kinds:
            return
        if dict not in kinds and tuple not in kinds:  # each value is one cell of column "value"
            self._add_column("value", values)
            return
        names = _flat_names(values, kinds)
        if names is None:
            for value in values:
                self.add(flatten(value))
            return
        for name in names:
            self._add_column(name, list(map(itemgetter(name), values)), done=False)
        self._end_rows(len(values))

    def _add_column(self, name, cells, done=True):
        column = self.data.get(name)
        if column is None:
            column = self.data[name] = [None] * self.rows
        column += cells
        if done:
            self._end_rows(len(cells))

    def _end_rows(self, added):
        """Count ``added`` rows more; pad the columns they left out with None."""
        self.rows = rows = self.rows + added
        for column in self.data.values():
            if len(column) < rows:
                column += [None] * (rows - len(column))


def _flat_names(values, kinds):
    """The keys of ``values`` if all are dicts with those keys in that order,
    none reserved (see :func:`flatten`) and no cell a non-empty dict; else None."""
    if kinds != {dict}:
        return None
    layouts = set(map(tuple, values))
    if len(layouts) != 1:
        return None
    names = layouts.pop()
    if any(name in names for name in _RESERVED) or not all(type(name) is str for name in names):
        return None
    for name in names:
        if dict in set(map(type, map(itemgetter(name), values))) and any(
                type(value[name]) is dict and value[name] for value in values):
            return None
    return names


def _table_rows(session, stream, start, stop, by, value, batch_rows):
    """Yield ``(keys, times_us, columns)`` for batches of up to ``batch_rows`` records."""
    get = value_getter(session, stream, value)
    keys, times, table = [], [], _Columns()
    for block in columns(session, stream, start, stop, by):
        values = block_values(get, block.keys, block.records)
        at = 0
        while at < len(values):
            end = len(values) if batch_rows is None else min(len(values), at + batch_rows - len(keys))
            keys += block.keys[at:end]
            times.append(block.times_us[at:end])
            table.add_values(values[at:end])
            at = end
            if batch_rows is not None and len(keys) >= batch_rows:
                yield keys, np.concatenate(times), table.data
                keys, times, table = [], [], _Columns()
    if keys or batch_rows is None:
        yield keys, np.concatenate(times) if times else np.empty(0, dtype=np.int64), table.data


def to_pandas(session, stream=None, start=None, stop=None, *, by="key", value=None):
    """The stream as a pandas DataFrame, one row per record.

    Columns: ``key``, ``time`` (the arrival time, ``datetime64[ns, UTC]``),
    then the record's value as :func:`flatten` spreads it (dict records into
    columns with dotted names for nested keys; numpy arrays stay whole, one
    array per cell of an object column: :func:`to_numpy` gives the samples
    as one array).  Streams keyed by time (audio, markers, command lines)
    are indexed by their key as a UTC ``DatetimeIndex`` named ``key``
    instead of a ``key`` column.  Needs pandas (``streamlog[pandas]``).
    """
    pd = require("pandas", "to_pandas")
    stream = stream_name(session, stream)
    keys, times, cells = next(_table_rows(session, stream, start, stop, by, value, None))
    frame = pd.DataFrame({"key": _key_array(keys, session.stream_info(stream)["key_types"]),
                          "time": _utc(pd, times), **cells})
    if is_time_keyed(session, stream):
        frame = frame.set_index(pd.DatetimeIndex(_utc(pd, keys), name="key")).drop(columns="key")
    return frame


def _utc(pd, times_us):
    return pd.to_datetime(np.asarray(times_us, dtype=np.int64), unit="us", utc=True).as_unit("ns")


def session_metadata(session, stream):
    """What a table's schema metadata says about the stream it holds (JSON-able)."""
    return to_jsonable({
        "session": session.id, "status": session.status, "start_time": session.start_time,
        "stop_time": session.stop_time, "info": session.info, "labels": session.labels, "error": session.error,
        "stream": stream, "streams": session.streams, "key_types": session.stream_info(stream)["key_types"],
    })


def iter_arrow_batches(session, stream=None, start=None, stop=None, *, by="key", value=None,
                       batch_rows=BATCH_ROWS):
    """Yield the stream as ``pyarrow.RecordBatch`` es of up to ``batch_rows``
    rows, all of one schema (the first batch's), in bounded memory.

    Columns as in :func:`to_pandas` (``key``; ``time`` as
    ``timestamp[us, UTC]``; the spread value), except that numpy arrays
    become list columns of their values in row-major order, their shape and
    dtype recorded in the metadata (``streamlog.arrays``).  The schema
    metadata ``streamlog`` holds the session's id, status, times, info,
    streams and key types as JSON.  A later record with a column the first
    batch lacked, or a cell of another type, raises RecordShapeError naming
    it.  Needs pyarrow (``streamlog[arrow]``).
    """
    pa = require("pyarrow", "Arrow export")
    stream = stream_name(session, stream)
    metadata = {"streamlog": json.dumps(session_metadata(session, stream))}
    schema = None
    shapes = {}
    for keys, times, cells in _table_rows(session, stream, start, stop, by, value, batch_rows):
        columns = {"key": _arrow_keys(pa, keys), "time": pa.array(times, pa.int64()).cast(pa.timestamp("us", "UTC"))}
        for name, cells_of in cells.items():
            columns[name] = _arrow_column(pa, name, cells_of, shapes, None if schema is None else schema, keys)
        if schema is None:
            fields = [pa.field(name, array.type) for name, array in columns.items()]
            if shapes:
                metadata["streamlog.arrays"] = json.dumps(shapes)
            schema = pa.schema(fields, metadata=metadata)
        yield _conform(pa, schema, columns, keys, session, stream)
    if schema is None:
        yield pa.RecordBatch.from_pydict({"key": pa.array([], pa.null()),
                                          "time": pa.array([], pa.timestamp("us", "UTC"))}, metadata=metadata)


def _arrow_keys(pa, keys):
    if keys and type(keys[0]) is tuple:
        keys = [{str(i): item for i, item in enumerate(key)} for key in keys]
    return pa.array(keys)


def _arrow_column(pa, name, cells, shapes, schema, keys):
    arrays = [c for c in cells if isinstance(c, np.ndarray)]
    if not arrays:
        if schema is not None and name in schema.names:
            try:
                return pa.array(cells, schema.field(name).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                row = _first_misfit(pa, cells, schema.field(name).type)
                raise RecordShapeError(f"the record with key {keys[row]!r}: column {name!r} holds "
                                       f"{_describe(cells[row])}, not {schema.field(name).type} ({exc})") from None
        try:
            return pa.array(cells)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise RecordShapeError(f"column {name!r} mixes values Arrow cannot put in one column ({exc})") from None
    first = arrays[0]
    shapes.setdefault(name, {"shape": list(first.shape), "dtype": str(first.dtype)})
    flat = [None if c is None else np.ascontiguousarray(c).reshape(-1) for c in cells]
    missing = sum(c is None for c in cells)
    if len(arrays) != len(cells) - missing or any(a.dtype != first.dtype for a in arrays):
        row = next(i for i, c in enumerate(cells) if c is not None and
                   (not isinstance(c, np.ndarray) or c.dtype != first.dtype))
        raise RecordShapeError(f"the record with key {keys[row]!r}: column {name!r} holds {_describe(cells[row])}, "
                               f"the first record {_describe(first)}")
    lengths = np.array([0 if f is None else len(f) for f in flat], dtype=np.int32)
    offsets = np.zeros(len(flat) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate([f for f in flat if f is not None])
    mask = pa.array([c is None for c in cells]) if missing else None
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=mask)


def _first_misfit(pa, cells, arrow_type):
    for i, cell in enumerate(cells):
        try:
            pa.array([cell], arrow_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return i
    return 0


def _conform(pa, schema, columns, keys, session, stream):
    extra = [name for name in columns if name not in schema.names]
    if extra:
        raise RecordShapeError(f"session {session.id} stream {stream!r}: records from key {keys[0]!r} on have "
                               f"column(s) {', '.join(map(repr, extra))} that the first {BATCH_ROWS} records lack")
    arrays = []
    for field in schema:
        array = columns.get(field.name)
        if array is None:
            array = pa.nulls(len(keys), field.type)
        elif array.type != field.type:
            try:
                array = array.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise RecordShapeError(f"session {session.id} stream {stream!r}: column {field.name!r} from key "
                                       f"{keys[0]!r} on holds {array.type}, not {field.type} ({exc})") from None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def to_arrow(session, stream=None, start=None, stop=None, *, by="key", value=None):
    """The stream as one ``pyarrow.Table`` (see :func:`iter_arrow_batches`)."""
    pa = require("pyarrow", "to_arrow")
    batches = list(iter_arrow_batches(session, stream, start, stop, by=by, value=value))
    return pa.Table.from_batches(batches, schema=batches[0].schema)


ARROW_FORMATS = ("parquet", "arrow", "feather")


def write_arrow(session, file, format, stream=None, start=None, stop=None, *, by="key", value=None, progress=None,
                batch_rows=BATCH_ROWS):
    """Write the stream to the binary ``file`` object as ``format``
    (``"parquet"``: one row group per batch of ``batch_rows`` records;
    ``"arrow"``/``"feather"``: an Arrow IPC file, which is Feather version
    2), streaming batch by batch in bounded memory; ``progress(rows)`` after each batch.  Returns the rows written."""
    pa = require("pyarrow", f"{format} export")
    if format not in ARROW_FORMATS:
        raise ValueError(f"format must be one of {', '.join(ARROW_FORMATS)}, not {format!r}")
    writer = None
    rows = 0
    try:
        for batch in iter_arrow_batches(session, stream, start, stop, by=by, value=value, batch_rows=batch_rows):
            if writer is None:
                if format == "parquet":
                    writer = require("pyarrow.parquet", "Parquet export").ParquetWriter(file, batch.schema)
                else:
                    writer = pa.ipc.new_file(file, batch.schema)
            if format == "parquet":
                writer.write_batch(batch, row_group_size=max(1, batch.num_rows))
            else:
                writer.write_batch(batch)
            rows += batch.num_rows
            if progress is not None:
                progress(batch.num_rows)
    finally:
        if writer is not None:
            writer.close()
    return rows


# -- streams joined by time --------------------------------------------------------


def wall_times_us(session, stream, keys, times_us):
    """Wall-clock µs of each record: for audio its sample clock corrected for
    the measured drift, for other time-keyed streams the key (the host
    clock at the event), otherwise the arrival time."""
    if is_audio(session, stream):
        from streamlog.audio import AudioSession

        return AudioSession(session, stream).wall_time_us(np.asarray(keys, dtype=np.int64))
    if is_time_keyed(session, stream):
        return np.asarray(keys, dtype=np.int64)
    return np.asarray(times_us, dtype=np.int64)


def join(session, streams, *, tolerance=None, direction="backward", start=None, stop=None):
    """Records of ``streams[0]`` each joined to the nearest record of every
    other stream in wall-clock time, with the semantics of
    ``pandas.merge_asof`` (``direction`` "backward", "forward" or
    "nearest"; ``tolerance`` seconds or a ``pandas.Timedelta``; None: any
    distance).  Times come from :func:`wall_times_us`; ``start``/``stop``
    (epoch seconds, inclusive) bound the first stream's arrival times.

    Returns a DataFrame sorted by ``time`` (UTC) with each stream's columns
    (``key``, ``arrival``, its values) prefixed ``"<stream>."``.  Needs pandas.
    """
    pd = require("pandas", "join")
    if isinstance(streams, str) or len(streams) < 2:
        raise ValueError(f"join needs a list of at least two stream names, not {streams!r}")
    if isinstance(tolerance, numbers.Real) and not isinstance(tolerance, bool):
        tolerance = pd.Timedelta(seconds=tolerance)
    joined = None
    for i, name in enumerate(streams):
        name = stream_name(session, name)
        bounds = (start, stop) if i == 0 else (None, None)
        keys, times, cells = next(_table_rows(session, name, *bounds, "time", None, None))
        wall = wall_times_us(session, name, keys, times)
        frame = pd.DataFrame({"time": _utc(pd, wall),
                              f"{name}.key": _key_array(keys, session.stream_info(name)["key_types"]),
                              f"{name}.arrival": _utc(pd, times),
                              **{f"{name}.{column}": values for column, values in cells.items()}})
        frame = frame.sort_values("time", kind="stable", ignore_index=True)
        joined = frame if joined is None else pd.merge_asof(joined, frame, on="time", tolerance=tolerance,
                                                             direction=direction)
    return joined
