"""Stored streams as analysts take them: numpy arrays, pandas DataFrames,
Arrow record batches, and streams joined by wall-clock time.

Everything here reads a stored :class:`~streamlog.Session` through its
public API (``session.reader().iblocks()``, the stored blocks undecoded),
lazily and in order, and decodes many records at once where they are
uniform (:mod:`streamlog.columns`), one by one where they are not.
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

from streamlog import columns
from streamlog.codec import to_jsonable
from streamlog.errors import CorruptRecord, RecordShapeError
from streamlog.keys import small_ints
from streamlog.extras import require
from streamlog.log import DEFAULT_STREAM

BATCH_ROWS = 65_536  # rows per Arrow record batch (and Parquet row group)
GROUP_RECORDS = 8192  # records decoded at once, from as many blocks as hold them (see _groups) ...
GROUP_BLOCKS = 64  # ... but from at most this many blocks
GROWING_BYTES = 64 << 20  # to_numpy's arrays start with room for this many bytes (virtual memory until used)
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
    kinds = set(map(type, found)) if get is _auto else None
    if kinds == {dict}:  # no dict is a (key, value) pair
        return list(found)
    if kinds == {tuple} and set(map(len, found)) == {2}:
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


def blocks(session, stream, start=None, stop=None, by="key"):
    """The stored blocks of ``stream`` holding the records of :func:`entries`
    (committed ones), undecoded: ``BufferReader.iblocks``."""
    return session.reader(stream).iblocks(**_selection(start, stop, by))


class _Group(NamedTuple):
    """Consecutive block parts read together: their keys (an int64 array
    for int keys, else a list), arrival times and undecoded records, and
    the store they were read from."""

    parts: list
    keys: object
    times_us: np.ndarray
    store: object

    def encodings(self):
        """``(buffer, ends)`` of all the group's records (see ``Block.encodings``), or None (format 1)."""
        return _joined_runs([part.block.encodings(part.lo, part.hi) for part in self.parts])

    def records(self):
        """The group's decoded records, one by one (``Block.records``); a
        damaged record raises the CorruptRecord a read would."""
        try:
            return [record for part in self.parts for record in part.block.records(part.lo, part.hi)]
        except CorruptRecord as exc:
            raise self.store.damaged(exc) from None

    def key_list(self):
        return self.keys.tolist() if isinstance(self.keys, np.ndarray) else self.keys


def _groups(session, parts, key_types):
    """The block parts in :class:`_Group` s of at least GROUP_RECORDS
    records or GROUP_BLOCKS parts (the last one fewer), so that a decode of
    many records at once pays its fixed costs once for many small blocks,
    and joins at most GROUP_BLOCKS blocks' bytes."""
    group, count = [], 0
    for part in parts:
        group.append(part)
        count += part.hi - part.lo
        if count >= GROUP_RECORDS or len(group) >= GROUP_BLOCKS:
            yield _group(session, group, key_types)
            group, count = [], 0
    if group:
        yield _group(session, group, key_types)


def _group(session, parts, key_types):
    try:
        keys = _group_keys(parts, key_types)
    except CorruptRecord as exc:
        raise session.log.store.damaged(exc) from None
    times = [part.block.arrivals(part.lo, part.hi) for part in parts]
    return _Group(parts, keys, np.concatenate(times) if len(times) > 1 else times[0], session.log.store)


def _group_keys(parts, key_types):
    """The keys of block parts: an int64 array where they are all small
    non-negative ints (decoded at once, ``keys.small_ints``), else a list."""
    if key_types == "int":
        encoded = _joined_runs([part.block.encoded_keys(part.lo, part.hi) for part in parts])
        keys = None if encoded is None else small_ints(*encoded)
        if keys is not None:
            return keys
    return _joined_keys([part.block.keys(part.lo, part.hi, key_types) for part in parts], key_types)


def _joined_runs(runs):
    """``(buffer, ends)`` runs of encodings (``Block.encodings``) as one, or None if one is None."""
    if any(run is None for run in runs):
        return None
    if len(runs) == 1:
        return runs[0]
    sizes = np.cumsum([len(buffer) for buffer, _ in runs[:-1]], dtype=np.int64)
    ends = np.concatenate([runs[0][1]] + [e + at for (_, e), at in zip(runs[1:], sizes)])
    return b"".join(buffer for buffer, _ in runs), ends


def _joined_keys(parts, key_types):
    """Key parts (int64 arrays or lists) as one int64 array for int keys that fit, else as one list."""
    if key_types == "int" and parts:
        try:
            return np.concatenate([np.asarray(part, dtype=np.int64) for part in parts])
        except OverflowError:
            pass
    return [key for part in parts for key in (part.tolist() if isinstance(part, np.ndarray) else part)]


def _gathered(group):
    """The values of a group's records as the automatic getter gives them,
    gathered by :mod:`streamlog.columns`: a numpy array of numbers or an
    :class:`~streamlog.columns.Arrays`; None where that does not apply."""
    encodings = group.encodings()
    if encodings is None:
        return None
    found = columns.numbers(*encodings)
    if found is None:
        found = columns.arrays(*encodings)
        if found is None:
            return None
    if found.firsts is not None and not (isinstance(group.keys, np.ndarray) and
                                         np.array_equal(found.firsts, group.keys)):
        return None  # not (key, value) pairs: the records themselves are the values
    return found.values if isinstance(found, columns.Numbers) else found


def _as_list(values):
    """A group's values as the list of per-record values the decode of each record gives."""
    if isinstance(values, columns.Arrays):
        flat = np.concatenate(values.pieces).view(values.dtype)
        return list(flat.reshape((-1,) + values.shape))
    if isinstance(values, np.ndarray):
        return values.tolist()
    return values


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

    Blocks of uniform records (numbers, arrays of one dtype and shape, or
    ``(key, value)`` pairs of those) are gathered from the stored bytes by
    :mod:`streamlog.columns`; any other block is decoded record by record.
    """
    if layout not in ("auto", "stack", "concat"):
        raise ValueError(f'layout must be "auto", "stack" or "concat", not {layout!r}')
    stream = stream_name(session, stream)
    key_types = session.stream_info(stream)["key_types"]
    get = value_getter(session, stream, value)
    concat = layout == "concat" or (layout == "auto" and sample_rate(session, stream) is not None)
    if get is _auto and key_types == "int" and session.log.format_version >= 2:
        found = _chunked_numpy(session.reader(stream).ichunks(**_selection(start, stop, by)), concat)
        if found is not None:
            return found
    key_parts, times, value_parts = [], [], []
    for group in _groups(session, blocks(session, stream, start, stop, by), key_types):
        key_parts.append(group.keys)
        times.append(group.times_us)
        values = _gathered(group) if get is _auto else None
        value_parts.append(block_values(get, group.key_list(), group.records()) if values is None else values)
    times_us = np.concatenate(times) if times else np.empty(0, dtype=np.int64)
    joined = _joined_keys(key_parts, key_types)
    key_array = joined if isinstance(joined, np.ndarray) else _key_array(joined, key_types)
    if not value_parts:
        return StreamArrays(np.empty(0), key_array, times_us, np.empty(0, dtype=np.int64))
    where = f"session {session.id} stream {stream!r}"
    fast = _fast_numpy(value_parts, key_array, times_us, concat)
    if fast is not None:
        return fast
    values = [v for part in value_parts for v in _as_list(part)]
    keys = joined.tolist() if isinstance(joined, np.ndarray) else joined
    if isinstance(values[0], np.ndarray) and values[0].ndim >= 1:
        return _arrays(values, keys, key_array, times_us, concat, where)
    if layout == "concat":
        raise RecordShapeError(f"{where}: records are not arrays of samples, so they cannot be concatenated")
    return StreamArrays(_numbers(values, keys, where), key_array, times_us, np.arange(len(values), dtype=np.int64))


class _Growing:
    """A numpy array of ``dtype`` with rows of ``shape``, built by appending
    along the first axis: room for :data:`GROWING_BYTES` first, doubled
    in place when full (``ndarray.resize``: realloc, which moves a big
    allocation's pages instead of copying them), so that what is appended
    is written once."""

    def __init__(self, dtype, shape=()):
        self.dtype, self.shape, self.size = dtype, shape, 0
        self.row_bytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        self.data = np.empty((max(1, GROWING_BYTES // max(self.row_bytes, 1)),) + shape, dtype)

    def fits(self, dtype, shape):
        return dtype == self.dtype and shape == self.shape

    def add(self, pieces, rows):
        """Append ``rows`` rows whose bytes are those of the arrays
        ``pieces`` (uint8 ones, or contiguous ones of any dtype), in order."""
        if self.size + rows > len(self.data):
            self.data.resize((max(2 * len(self.data), self.size + rows),) + self.shape, refcheck=False)
        flat = self.data.reshape(-1).view(np.uint8)
        at = self.size * self.row_bytes
        for piece in pieces:
            if piece.dtype != np.uint8:
                piece = piece.view(np.uint8)
            np.copyto(flat[at:at + piece.size].reshape(piece.shape), piece)
            at += piece.size
        self.size += rows

    def array(self):
        self.data.resize((self.size,) + self.shape, refcheck=False)
        return self.data


def _chunked_numpy(chunks, concat):
    """:func:`to_numpy` of a stream with int keys and the automatic getter
    from its chunks (``BufferReader.ichunks``), each decoded at once by
    :mod:`streamlog.columns` and appended to the result (the arrays'
    bytes copied once, out of the chunk); None (declined: the caller
    decodes block by block) unless every chunk's keys are small ints and
    its records all numbers of one kind or arrays of one dtype and shape
    (after the first axis with ``concat``), or such ``(key, value)``
    pairs, alike in every chunk."""
    keys, times, values, kind, rows = _Growing(np.dtype(np.int64)), _Growing(np.dtype(np.int64)), None, None, []
    for chunk in chunks:
        chunk_keys = small_ints(*chunk.keys)
        if chunk_keys is None:
            return None
        found = columns.numbers(*chunk.records) or columns.arrays(*chunk.records)
        if found is None or (found.firsts is not None and not np.array_equal(found.firsts, chunk_keys)):
            return None
        if isinstance(found, columns.Numbers):
            if concat:  # not samples: the block-by-block path says so
                return None
            dtype, shape, pieces = found.values.dtype, (), [found.values]
        else:
            dtype, shape, pieces = found.dtype, found.shape[1:] if concat else found.shape, found.pieces
            rows.append((found.shape[0] if concat else 1, found.count))
        if values is None:
            values, kind = _Growing(dtype, shape), type(found)
        elif type(found) is not kind or not values.fits(dtype, shape):
            return None
        values.add(pieces, chunk.count * (rows[-1][0] if concat and rows else 1))
        keys.add([chunk_keys], chunk.count)
        times.add([chunk.arrivals], chunk.count)
        chunk = found = pieces = None  # the chunk's memory freed before the next is read, so it is the next one's
    if values is None:
        return None
    out = values.array()
    if not out.dtype.isnative:  # as np.stack and np.concatenate of such arrays give them
        out = out.astype(out.dtype.newbyteorder("="))
    key_array = keys.array()
    if concat and rows:
        lengths = np.repeat(*np.array(rows, dtype=np.int64).T)
        offsets = np.zeros(len(key_array), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
    else:
        offsets = np.arange(len(key_array), dtype=np.int64)
    return StreamArrays(out, key_array, times.array(), offsets)


def _fast_numpy(parts, key_array, times_us, concat):
    """The StreamArrays of value parts that were all gathered alike (all
    number arrays, or all arrays of one dtype and shape, after the first
    axis with ``concat``), or None."""
    if all(type(part) is np.ndarray for part in parts):
        values = np.concatenate(parts)
        return StreamArrays(values, key_array, times_us, np.arange(len(values), dtype=np.int64))
    if not all(isinstance(part, columns.Arrays) for part in parts):
        return None
    first = parts[0]
    if any(part.dtype != first.dtype or (part.shape[1:] if concat else part.shape) !=
           (first.shape[1:] if concat else first.shape) for part in parts):
        return None
    flat = np.concatenate([piece for part in parts for piece in part.pieces]).view(first.dtype)
    if not first.dtype.isnative:  # as np.stack and np.concatenate of such arrays give them
        flat = flat.astype(first.dtype.newbyteorder("="))
    if not concat:
        return StreamArrays(flat.reshape((-1,) + first.shape), key_array, times_us,
                            np.arange(len(key_array), dtype=np.int64))
    lengths = np.concatenate([np.full(part.count, part.shape[0], dtype=np.int64) for part in parts])
    offsets = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return StreamArrays(flat.reshape((-1,) + first.shape[1:]), key_array, times_us, offsets)


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
        when they are all flat dicts with the same keys."""
        kinds = set(map(type, values))
        if not kinds:
            return
        if dict not in kinds and tuple not in kinds:  # each value is one cell of column "value"
            self._add_column("value", values)
            return
        cells = _flat_columns(values, kinds)
        if cells is None:
            for value in values:
                self.add(flatten(value))
            return
        for name, column in cells.items():
            self._add_column(name, column, done=False)
        self._end_rows(len(values))

    def add_columns(self, table):
        """The rows of a :class:`~streamlog.columns.Table` (dicts of one layout), column by column."""
        for name, column in table.columns.items():
            self._add_column(name, column.tolist() if isinstance(column, np.ndarray) else list(column), done=False)
        self._end_rows(table.count)

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


def _flat_columns(values, kinds):
    """``{name: cells}`` of ``values`` if all are dicts with the same keys
    (in the first one's order), none reserved (see :func:`flatten`) and no
    cell a non-empty dict; else None."""
    if kinds != {dict}:
        return None
    names = tuple(values[0])
    if any(name in names for name in _RESERVED) or not all(type(name) is str for name in names):
        return None
    try:
        cells = {name: list(map(itemgetter(name), values)) for name in names}
    except KeyError:  # a dict without one of the first one's keys
        return None
    if set(map(len, values)) != {len(names)}:  # with all of them and no more: the same keys
        return None
    for column in cells.values():
        if dict in set(map(type, column)) and any(type(cell) is dict and cell for cell in column):
            return None
    return cells


def _table_rows(session, stream, start, stop, by, value, batch_rows):
    """Yield ``(keys, times_us, columns)`` for batches of up to ``batch_rows``
    records (None: one batch); ``keys`` an int64 array for int keys that fit
    (else a list), ``columns`` name -> cells (a list, or a numpy array for a
    column of numbers gathered at once)."""
    get = value_getter(session, stream, value)
    key_types = session.stream_info(stream)["key_types"]
    keys, times, values, rows = [], [], [], 0
    for group in _groups(session, blocks(session, stream, start, stop, by), key_types):
        found = _table_values(group, get)
        at, count = 0, len(group.times_us)
        while at < count:
            end = count if batch_rows is None else min(count, at + batch_rows - rows)
            keys.append(group.keys[at:end])
            times.append(group.times_us[at:end])
            values.append(_rows(found, at, end))
            rows += end - at
            at = end
            if batch_rows is not None and rows >= batch_rows:
                yield _joined_keys(keys, key_types), np.concatenate(times), _cells(values)
                keys, times, values, rows = [], [], [], 0
    if rows or batch_rows is None:
        yield (_joined_keys(keys, key_types), np.concatenate(times) if times else np.empty(0, dtype=np.int64),
               _cells(values))


def _table_values(group, get):
    """A group's values for a table: a numpy array of numbers gathered at
    once, else a list (dict records decoded in one pass where they can be)."""
    if get is _auto:
        encodings = group.encodings()
        if encodings is not None:
            found = columns.numbers(*encodings)
            if found is not None and (found.firsts is None or (isinstance(group.keys, np.ndarray) and
                                                               np.array_equal(found.firsts, group.keys))):
                return found.values
            table = columns.flat_dicts(*encodings)
            if table is not None and not any(name in _RESERVED for name in table.names):
                return table
            records = columns.general_records(*encodings)
            if records is not None:
                return block_values(get, group.key_list(), records)
    return block_values(get, group.key_list(), group.records())


def _rows(values, start, stop):
    """Rows ``start .. stop - 1`` of a group's values (see :func:`_table_values`)."""
    if isinstance(values, columns.Table):
        return columns.Table(values.names, {name: column[start:stop] for name, column in values.columns.items()},
                             stop - start)
    return values[start:stop]


def _cells(parts):
    """The columns of a batch's value parts (numpy arrays of numbers,
    :class:`~streamlog.columns.Table` s of dicts, or lists of values)."""
    if parts and all(isinstance(part, np.ndarray) for part in parts):
        return {"value": np.concatenate(parts)}
    if parts and all(isinstance(part, columns.Table) and part.names == parts[0].names for part in parts):
        return {name: _joined_column([part.columns[name] for part in parts]) for name in parts[0].names}
    table = _Columns()
    for part in parts:
        if isinstance(part, columns.Table):
            table.add_columns(part)
        else:
            table.add_values(part.tolist() if isinstance(part, np.ndarray) else part)
    return table.data


def _joined_column(chunks):
    """Chunks of one column (numpy arrays or lists) as one: an array if all are arrays of one dtype, else a list."""
    if all(isinstance(chunk, np.ndarray) and chunk.dtype == chunks[0].dtype for chunk in chunks):
        return np.concatenate(chunks)
    return [cell for chunk in chunks for cell in (chunk.tolist() if isinstance(chunk, np.ndarray) else chunk)]


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
                          "time": _utc(pd, times), **_typed(cells)})
    if is_time_keyed(session, stream):
        frame = frame.set_index(pd.DatetimeIndex(_utc(pd, keys), name="key")).drop(columns="key")
    return frame


def _typed(cells):
    """``cells`` with each column of only floats, or only ints that fit
    int64, as a numpy array (what pandas makes of such a list, made faster)."""
    out = {}
    for name, column in cells.items():
        if type(column) is list:
            kinds = set(map(type, column))
            if kinds == {float}:
                column = np.array(column, dtype=np.float64)
            elif kinds == {int}:
                try:
                    column = np.array(column, dtype=np.int64)
                except OverflowError:
                    pass
        out[name] = column
    return out


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
    if len(keys) and type(keys[0]) is tuple:
        keys = [{str(i): item for i, item in enumerate(key)} for key in keys]
    return pa.array(keys)


def _arrow_column(pa, name, cells, shapes, schema, keys):
    if isinstance(cells, np.ndarray):  # numbers gathered at once; _conform casts them to the schema's type
        return pa.array(cells)
    arrays = [c for c in cells if isinstance(c, np.ndarray)]
    if not arrays:
        if schema is not None and name in schema.names:
            try:
                return pa.array(cells, schema.field(name).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                row = _first_misfit(pa, cells, schema.field(name).type)
                raise RecordShapeError(f"the record with key {_key_at(keys, row)!r}: column {name!r} holds "
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
        raise RecordShapeError(f"the record with key {_key_at(keys, row)!r}: column {name!r} holds {_describe(cells[row])}, "
                               f"the first record {_describe(first)}")
    lengths = np.array([0 if f is None else len(f) for f in flat], dtype=np.int32)
    offsets = np.zeros(len(flat) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate([f for f in flat if f is not None])
    mask = pa.array([c is None for c in cells]) if missing else None
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=mask)


def _key_at(keys, i):
    """Key ``i`` of a batch's keys (an array or a list) as a Python value."""
    return keys[i].item() if isinstance(keys, np.ndarray) else keys[i]


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
        raise RecordShapeError(f"session {session.id} stream {stream!r}: records from key {_key_at(keys, 0)!r} on have "
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
                                       f"{_key_at(keys, 0)!r} on holds {array.type}, not {field.type} ({exc})") from None
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
    2), streaming batch by batch in bounded memory; ``progress(rows)`` after each batch.  Returns the rows written.

    After each batch the pages of the log's memory map read for it are taken
    out of the process's resident set (``Store.release_map_pages``; Linux),
    so the RSS a user sees stays bounded too, not only the memory allocated."""
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
            session.log.store.release_map_pages()
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
                              **{f"{name}.{column}": values for column, values in _typed(cells).items()}})
        frame = frame.sort_values("time", kind="stable", ignore_index=True)
        joined = frame if joined is None else pd.merge_asof(joined, frame, on="time", tolerance=tolerance,
                                                             direction=direction)
    return joined
