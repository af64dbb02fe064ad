"""Many records' encodings decoded at once into columns, with numpy.

A format-2 block stores its records' encodings back to back with a column of
where each ends (``Block.encodings``).  When the records are uniform, their
values can be taken from those bytes at once instead of decoding one Python
object per record.  Each function here takes such a ``buffer`` (bytes-like)
and ``ends`` (a numpy int64 array: record ``j`` is
``buffer[ends[j - 1]:ends[j]]``, ``ends[-1] == len(buffer)``) and reads the
codec's layouts (see :mod:`streamlog.codec`: plain records are msgpack,
general ones ``0xC1``, a u32be body length, the msgpack body, then the raw
bytes of their numpy arrays):

* :func:`numbers`: records that are all numbers (msgpack ints that fit
  int64, or all floats), or all ``(int, number)`` pairs;
* :func:`arrays`: records that are all C-ordered numeric numpy arrays of one
  dtype and shape, or all ``(int, array)`` pairs;
* :func:`general_records`: general-layout records without array data
  (dicts of scalars and tuples), decoded in one msgpack pass;
* :func:`flat_dicts`: dicts of one layout (the same keys, each with values
  of one kind and encoded length), as columns without making the dicts.

Every byte they use is checked (vectorised); a function *declines* (returns
None) whenever the records are not of its kind, differ from one another in
kind, or are damaged in any way, and never raises for their bytes.  The
caller then decodes those records one by one (``Block.records``), which
raises :class:`~streamlog.errors.CorruptRecord` for damaged bytes as every
reader does.  What a function accepts it decodes to exactly what
:func:`~streamlog.codec.decode_record` gives record by record.
"""

from typing import NamedTuple

import numpy as np

from streamlog.codec import GENERAL_FIRST_BYTE, decode_general_bodies, decode_record, encode_record
from streamlog.errors import CorruptRecord
from streamlog.keys import equal_runs, row_field

_HEADER = 5  # a general record's first byte and u32be body length
_PAIR = 0x92  # msgpack: an array of two items (a tuple of two)
_FLOAT64 = 0xCB
_EIGHT = np.arange(8, dtype=np.int64)
_FIXED_GATHER = 64  # arrays of at most this many bytes are gathered by one fancy index per block
_RUNS = 16  # numbers() decodes runs of records of one encoded length at once when there are at most this many


def _int_tables():
    """Per first byte: the bytes after the tag of a msgpack int (-1: not an
    int), whether it is signed, the value of a fixint."""
    size = np.full(256, -1, dtype=np.int64)
    signed = np.zeros(256, dtype=bool)
    fixed = np.zeros(256, dtype=np.int64)
    size[:0x80] = 0
    fixed[:0x80] = np.arange(0x80)
    size[0xE0:] = 0
    fixed[0xE0:] = np.arange(0xE0, 0x100) - 0x100
    for tag, (n, sign) in {0xCC: (1, False), 0xCD: (2, False), 0xCE: (4, False), 0xCF: (8, False),
                           0xD0: (1, True), 0xD1: (2, True), 0xD2: (4, True), 0xD3: (8, True)}.items():
        size[tag], signed[tag] = n, sign
    return size, signed, fixed


_INT_SIZE, _INT_SIGNED, _FIXINT = _int_tables()


class Numbers(NamedTuple):
    """Records that are numbers or ``(int, number)`` pairs: ``firsts`` the
    pairs' first items (int64; None when the records are bare numbers),
    ``values`` the numbers (int64 or float64)."""

    firsts: object
    values: np.ndarray


class Arrays(NamedTuple):
    """Records that are numpy arrays or ``(int, array)`` pairs: ``firsts``
    as in :class:`Numbers`, ``count`` records, each array's ``dtype`` and
    ``shape``, and ``pieces``: 2-D uint8 arrays (views of the buffer), a
    row per array holding its bytes (C order), whose concatenation (along
    axis 0) is the ``count`` arrays in order."""

    firsts: object
    count: int
    dtype: np.dtype
    shape: tuple
    pieces: list


def _spans(buffer, ends):
    """``(u8, starts, ends)``: the buffer as uint8 (no copy) and each record's bounds."""
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1]
    return np.frombuffer(buffer, dtype=np.uint8), starts, ends


def _gather(u8, at, width):
    """``u8[at[j]:at[j] + width]`` for each j as an ``(len(at), width)``
    array; offsets past the end read the last byte (callers check that the
    bytes they use lie inside)."""
    return u8[np.minimum(at[:, None] + np.arange(width), len(u8) - 1)]


def _ints(u8, at, size):
    """The msgpack ints at offsets ``at`` (their tags in ``u8``), given
    ``size = _INT_SIZE[tags]`` (all >= 0; each int inside ``u8``): int64
    values, or None if one is an unsigned 64-bit int beyond int64."""
    tags = u8[at]
    raw = _gather(u8, at + 1, 8).view(">u8").ravel().astype(np.uint64)
    shift = (8 - np.maximum(size, 1)).astype(np.uint64) * np.uint64(8)
    unsigned = raw >> shift
    values = unsigned.astype(np.int64)
    short = (size > 0) & (size < 8) & _INT_SIGNED[tags]
    if short.any():
        bits = (size[short] * 8).astype(np.uint64)
        negative = (unsigned[short] >> (bits - np.uint64(1))) & np.uint64(1) == 1
        values[short] -= np.where(negative, np.left_shift(1, bits.astype(np.int64)), 0)
    if ((size == 8) & ~_INT_SIGNED[tags] & (values < 0)).any():
        return None
    return np.where(size == 0, _FIXINT[tags], values)


def _int_at(u8, at, end):
    """The msgpack ints at ``at``, each required to end exactly at ``end``: int64 or None."""
    size = _INT_SIZE[u8[at]]
    if (size < 0).any() or (at + 1 + size != end).any():
        return None
    return _ints(u8, at, size)


def _number_at(u8, at, end):
    """The numbers (all ints or all float64) at ``at``, each ending at ``end``: an array or None."""
    if u8[at[0]] == _FLOAT64:
        if (u8[at] != _FLOAT64).any() or (end - at != 9).any():
            return None
        return _gather(u8, at + 1, 8).view(">f8").ravel().astype(np.float64)
    return _int_at(u8, at, end)


def numbers(buffer, ends):
    """The records as :class:`Numbers`, or None (declined: not all numbers
    of one kind, not all pairs, or damaged)."""
    u8, starts, ends = _spans(buffer, ends)
    lengths = ends - starts
    runs = equal_runs(lengths)
    if len(runs) <= _RUNS:
        if (lengths <= 0).any() or ends[-1] != len(u8):  # ends out of order (a crafted block): one by one
            return None
        parts = [_fixed_numbers(u8[int(starts[lo]):int(ends[hi - 1])].reshape(-1, int(lengths[lo])))
                 for lo, hi in runs]
        return _joined_numbers(parts)
    if u8[starts[0]] != _PAIR:
        values = _number_at(u8, starts, ends)
        return None if values is None else Numbers(None, values)
    if (u8[starts] != _PAIR).any():
        return None
    firsts_at = starts + 1
    size = _INT_SIZE[u8[firsts_at]]
    if (size < 0).any():
        return None
    values_at = firsts_at + 1 + size
    if (values_at >= ends).any():
        return None
    values = _number_at(u8, values_at, ends)
    if values is None:
        return None
    firsts = _ints(u8, firsts_at, size)
    return None if firsts is None else Numbers(firsts, values)


def _joined_numbers(parts):
    """Runs' :class:`Numbers` (None: declined) as one, or None unless all
    are of one kind (pairs or not, ints or floats)."""
    if any(part is None for part in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if any((part.firsts is None) != (first.firsts is None) or part.values.dtype != first.values.dtype
           for part in parts):
        return None
    firsts = None if first.firsts is None else np.concatenate([part.firsts for part in parts])
    return Numbers(firsts, np.concatenate([part.values for part in parts]))


def _fixed_numbers(rows):
    """:func:`numbers` of records of one length, one per row of ``rows``."""
    firsts, at = None, 0
    if rows[0, 0] == _PAIR:
        if (rows[:, 0] != _PAIR).any():
            return None
        firsts, size = _fixed_int(rows, 1)
        if firsts is None:
            return None
        at = 1 + size
    if at < rows.shape[1] and rows[0, at] == _FLOAT64:
        if rows.shape[1] - at != 9 or (rows[:, at] != _FLOAT64).any():
            return None
        return Numbers(firsts, row_field(rows, at + 1, ">f8").astype(np.float64))
    values, size = _fixed_int(rows, at)
    if values is None or at + size != rows.shape[1]:
        return None
    return Numbers(firsts, values)


def _fixed_int(rows, at):
    """``(values, bytes)``: the msgpack ints starting in column ``at`` of
    ``rows``, all of one tag (or all fixints) and so one length, as int64;
    ``(None, 0)`` if they are not."""
    if at >= rows.shape[1]:
        return None, 0
    tags = rows[:, at]
    size = int(_INT_SIZE[tags[0]])
    if size < 0 or at + 1 + size > rows.shape[1]:
        return None, 0
    if size == 0:
        return (None, 0) if (_INT_SIZE[tags] != 0).any() else (_FIXINT[tags], 1)
    if (tags != tags[0]).any():
        return None, 0
    signed = bool(_INT_SIGNED[tags[0]])
    values = row_field(rows, at + 1, f">{'i' if signed else 'u'}{size}")
    if not signed and size == 8 and (values >= 1 << 63).any():
        return None, 0
    return values.astype(np.int64), 1 + size


def arrays(buffer, ends):
    """The records as :class:`Arrays`, or None (declined: not all C-ordered
    numeric arrays of one dtype and shape, nor all such pairs, or damaged)."""
    u8, starts, ends = _spans(buffer, ends)
    if (u8[starts] != GENERAL_FIRST_BYTE).any():
        return None
    try:
        first = decode_record(buffer[:int(ends[0])])
    except CorruptRecord:  # the caller's record-by-record decode says what is wrong
        return None
    pair = type(first) is tuple and len(first) == 2 and type(first[0]) is int
    array = first[1] if pair else first
    if (type(array) is not np.ndarray or array.dtype.kind not in "biufc" or not array.ndim or not array.size
            or not array.flags.c_contiguous):
        return None
    template = encode_record(np.zeros(array.shape, array.dtype))
    entry = np.frombuffer(template, dtype=np.uint8)[_HEADER:len(template) - array.nbytes]
    size, width = array.nbytes, len(entry)
    lengths = ends - starts
    if (lengths <= 0).any() or ends[-1] != len(u8):
        return None
    runs = equal_runs(lengths)
    if len(runs) <= _RUNS:
        parts = [_fixed_arrays(u8[int(starts[lo]):int(ends[hi - 1])].reshape(-1, int(lengths[lo])), entry, size,
                               pair) for lo, hi in runs]
        if any(part is None for part in parts):
            return None
        firsts = np.concatenate([part[0] for part in parts]) if pair else None
        return Arrays(firsts, len(ends), array.dtype, array.shape, [part[1] for part in parts])
    data_at = ends - size
    entry_at = data_at - width
    if (entry_at < starts + _HEADER).any() or (_body_lengths(u8, starts) != data_at - starts - _HEADER).any():
        return None
    if not (_gather(u8, entry_at, width) == entry).all():
        return None
    firsts = None
    if pair:
        if (u8[starts + _HEADER] != _PAIR).any():
            return None
        firsts = _int_at(u8, starts + _HEADER + 1, entry_at)
        if firsts is None:
            return None
    elif (entry_at != starts + _HEADER).any():
        return None
    if size <= _FIXED_GATHER:
        pieces = [_gather(u8, data_at, size)]
    else:
        pieces = [u8[at:at + size].reshape(1, size) for at in data_at.tolist()]
    return Arrays(firsts, len(ends), array.dtype, array.shape, pieces)


def _fixed_arrays(rows, entry, size, pair):
    """:func:`arrays` of records of one encoded length, one per row of
    ``rows``, whose arrays are ``size`` bytes after the msgpack ``entry``
    (a uint8 array) describing them: ``(firsts or None, a 2-D view of the
    arrays' bytes)``, or None."""
    length, width = rows.shape[1], len(entry)
    entry_at = length - size - width
    if entry_at < _HEADER or (rows[:, 0] != GENERAL_FIRST_BYTE).any():
        return None
    if (row_field(rows, 1, ">u4") != length - _HEADER - size).any():
        return None
    if not (rows[:, entry_at:entry_at + width] == entry).all():
        return None
    firsts = None
    if pair:
        if entry_at < _HEADER + 2 or (rows[:, _HEADER] != _PAIR).any():
            return None
        firsts, used = _fixed_int(rows, _HEADER + 1)
        if firsts is None or _HEADER + 1 + used != entry_at:
            return None
    elif entry_at != _HEADER:
        return None
    return firsts, rows[:, length - size:]


def general_records(buffer, ends):
    """The records, all of the general layout without array data, decoded
    in one pass as a list (see :func:`~streamlog.codec.decode_general_bodies`),
    or None (declined)."""
    u8, starts, ends = _spans(buffer, ends)
    if (ends - starts < _HEADER).any() or (u8[starts] != GENERAL_FIRST_BYTE).any():
        return None
    body_length = _body_lengths(u8, starts)
    if (body_length != ends - starts - _HEADER).any():
        return None
    keep = np.ones(len(u8), dtype=bool)
    keep[(starts[:, None] + _EIGHT[:_HEADER]).ravel()] = False
    bodies = u8[keep].tobytes()
    return decode_general_bodies(bodies, np.cumsum(body_length.astype(np.int64)).tolist())


def _body_lengths(u8, starts):
    """The u32be body lengths of the general-layout records at ``starts``."""
    return _gather(u8, starts + 1, 4).view(">u4").ravel().astype(np.int64)


class Table(NamedTuple):
    """Records that are all dicts of one layout, as columns: ``names`` (the
    keys, str, in the records' order) and ``columns`` (per name a numpy
    array of int64, float64 or bool, or a list of str or of None), ``count``
    rows."""

    names: tuple
    columns: dict
    count: int


def flat_dicts(buffer, ends):
    """The records as a :class:`Table`, or None (declined): every record a
    dict of the general layout without array data, all of one length, with
    the same str keys (at most 31 bytes each) in the same order and values
    that are each, by key, all float, all ints of one encoding, all bools,
    all None or all str of one encoded length, so that the records differ
    only in those values' bytes.  As :func:`general_records` would give the
    dicts, column by column, without making one."""
    u8, starts, ends = _spans(buffer, ends)
    width = int(ends[0])
    if width <= _HEADER or len(u8) != width * len(ends) or not (ends - starts == width).all():
        return None
    rows = u8.reshape(-1, width)
    layout = _dict_layout(bytes(rows[0]))
    if layout is None:
        return None
    names, values = layout
    fixed = np.ones(width, dtype=bool)
    for _, at, size, _ in values:
        fixed[at:at + size] = False
    if not (rows[:, fixed] == rows[0, fixed]).all():
        return None
    out = {}
    for name, (kind, at, size, tag) in zip(names, values):
        column = _dict_column(rows, kind, at, size, tag)
        if column is None:
            return None
        out[name] = column
    return Table(names, out, len(rows))


def _dict_layout(record):
    """``(names, values)`` of a general-layout record that is a dict of
    scalars, from its bytes: ``values`` one ``(kind, offset, size, tag)``
    per key (the bytes that may differ between records of this layout);
    None for any other record."""
    if record[0] != GENERAL_FIRST_BYTE or int.from_bytes(record[1:_HEADER], "big") != len(record) - _HEADER:
        return None
    head = record[_HEADER]
    if not 0x80 <= head <= 0x8F:
        return None
    at, names, values = _HEADER + 1, [], []
    for _ in range(head - 0x80):
        if at >= len(record) or not 0xA0 <= record[at] <= 0xBF:
            return None
        end = at + 1 + record[at] - 0xA0
        try:
            name = record[at + 1:end].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None
        if end >= len(record) or name in names:
            return None
        tag = record[end]
        size = int(_INT_SIZE[tag])
        if tag == _FLOAT64:
            value = ("float", end + 1, 8, tag)
        elif size == 0:
            value = ("fixint", end, 1, tag)
        elif size > 0:
            value = ("int", end + 1, size, tag)
        elif tag in (0xC2, 0xC3):
            value = ("bool", end, 1, tag)
        elif tag == 0xC0:
            value = ("none", end + 1, 0, tag)
        elif 0xA0 <= tag <= 0xBF:
            value = ("str", end + 1, tag - 0xA0, tag)
        else:
            return None
        names.append(name)
        values.append(value)
        at = value[1] + value[2]
    return (tuple(names), values) if at == len(record) else None


def _dict_column(rows, kind, at, size, tag):
    """One column of :func:`flat_dicts`: the values at ``at`` (``size``
    bytes after the fixed tag ``tag``) of every row, or None."""
    cells = rows[:, at:at + size]
    if kind == "float":
        return cells.copy().view(">f8").ravel().astype(np.float64)
    if kind == "fixint":
        tags = cells.ravel()
        if (_INT_SIZE[tags] != 0).any():
            return None
        return _FIXINT[tags]
    if kind == "int":
        signed = bool(_INT_SIGNED[tag])
        values = cells.copy().view(f">{'i' if signed else 'u'}{size}").ravel()
        if not signed and size == 8 and (values >= 1 << 63).any():
            return None
        return values.astype(np.int64)
    if kind == "bool":
        flags = cells.ravel()
        if not ((flags == 0xC2) | (flags == 0xC3)).all():
            return None
        return flags == 0xC3
    if kind == "none":
        return [None] * len(rows)
    try:
        if (cells == cells[0]).all():
            return [bytes(cells[0]).decode("utf-8", "surrogatepass")] * len(rows)
        return [bytes(cell).decode("utf-8", "surrogatepass") for cell in cells]
    except UnicodeDecodeError:
        return None
