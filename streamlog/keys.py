"""Order-preserving, self-delimiting encoding of record keys.

``encode_key(a) < encode_key(b)`` (as bytes) exactly when ``a < b`` in
Python, for keys built from ``int`` (``bool`` counts as ``int``), ``float``,
``str``, ``bytes`` and tuples (nested allowed) of those.  Numbers compare by
value, so ``1``, ``1.0`` and ``True`` encode to the same bytes.  Values of
different kinds, which Python refuses to compare, are ordered

    numbers  <  str  <  bytes  <  tuple

(with ``-inf`` the smallest and ``+inf`` the largest number).

Encodings are prefix-free: no encoding is a prefix of another, so a suffix
appended by the store (a sequence number, a chunk number) never changes the
order of two different keys, and equal keys order by their suffixes.

Layout (the first byte of every value is a tag):

* number: a tag giving the sign and byte length of ``floor(x)``, the
  magnitude of ``floor(x)`` big-endian (negatives offset by ``256**length``
  so that they count upwards), then the binary digits of the fraction
  ``x - floor(x)`` in 7-bit groups, one byte each, ``digits << 1 | more``
  where ``more`` is 1 when another group follows; an integral number has the
  single fraction byte ``0x00``.  Integer parts longer than 8 bytes carry an
  explicit length header (bit-inverted for negatives); the infinities are a
  bare tag.
* str: tag, UTF-8 (lone surrogates allowed), bytes: tag, raw bytes; in both
  ``0x00`` is escaped as ``0x00 0xFF`` and ``0x00 0x00`` ends the value.
* tuple: tag, the encoded items, ``0x00`` (every item starts with a tag above
  ``0x00``, so a tuple sorts before any longer tuple it is a prefix of).
"""

import math
import struct

import numpy as np

from streamlog.errors import CorruptRecord, InvalidKey

__all__ = ["encode_key", "decode_key", "decode_key_prefix", "key_types_of", "small_ints"]

_TAG_NEG_INF = 0x16
_TAG_NEG_BIG = 0x17  # integer part below -(256**8)
_TAG_ZERO = 0x20  # integer part 0; 0x20 - n: negative, n bytes; 0x20 + n: positive, n bytes
_TAG_POS_BIG = 0x29  # integer part at or above 256**8
_TAG_POS_INF = 0x2A
_TAG_STR = 0x40
_TAG_BYTES = 0x50
_TAG_TUPLE = 0x60
_END = 0x00  # ends a tuple

_FLOAT_LIKE = (float, np.float32, np.float16)  # exactly representable as a Python float
_SMALL = 8  # integer parts up to this many bytes have their length in the tag
_INT_TAIL = b"\x00"  # fraction part of an integral number
_STRING_END = b"\x00\x00"
_ESCAPED_ZERO = b"\x00\xff"

_POS_TAG = [bytes([_TAG_ZERO + n]) for n in range(_SMALL + 1)]
# an int 0 <= k < _SMALL_LIMIT of n bytes encodes as the n + 2 big-endian bytes of _POS_HIGH[n] | k << 8
# (its tag, its bytes, _INT_TAIL): one to_bytes call
_POS_HIGH = [(_TAG_ZERO + n) << (8 * n + 8) for n in range(_SMALL + 1)]
_NEG_TAG = [bytes([_TAG_ZERO - n]) for n in range(_SMALL + 1)]
_U8 = struct.Struct(">B")
_SMALL_LIMIT = 1 << (8 * _SMALL)


# --------------------------------------------------------------------------
# encoding


def encode_key(key):
    """Return the order-preserving, self-delimiting bytes of ``key``.

    Raises :class:`~streamlog.errors.InvalidKey` for NaN and for values that
    are not int/float/str/bytes or tuples of those (None, lists, dicts, ...).
    """
    kind = type(key)
    if kind is int:
        if 0 <= key < _SMALL_LIMIT:
            n = (key.bit_length() + 7) >> 3
            return (_POS_HIGH[n] | key << 8).to_bytes(n + 2, "big")
        return _int_bytes(key) + _INT_TAIL
    if kind is float:
        return _float_bytes(key)
    parts = []
    _encode_into(key, parts)
    return b"".join(parts)


def _encode_into(key, parts):
    kind = type(key)
    if kind is int or kind is bool:
        parts.append(_int_bytes(key))
        parts.append(_INT_TAIL)
    elif kind is float:
        parts.append(_float_bytes(key))
    elif kind is str:
        parts.append(b"\x40")
        parts.append(key.encode("utf-8", "surrogatepass").replace(b"\x00", _ESCAPED_ZERO))
        parts.append(_STRING_END)
    elif kind is bytes:
        parts.append(b"\x50")
        parts.append(key.replace(b"\x00", _ESCAPED_ZERO))
        parts.append(_STRING_END)
    elif kind is tuple:
        parts.append(b"\x60")
        for item in key:
            _encode_into(item, parts)
        parts.append(b"\x00")
    elif isinstance(key, int):  # int subclasses such as IntEnum
        parts.append(_int_bytes(int(key)))
        parts.append(_INT_TAIL)
    elif isinstance(key, _FLOAT_LIKE):  # float subclasses such as numpy.float64; float32, float16
        parts.append(_float_bytes(float(key)))
    elif hasattr(type(key), "__index__"):  # integer-like objects such as numpy.int64
        parts.append(_int_bytes(_as_index(key)))
        parts.append(_INT_TAIL)
    else:
        raise InvalidKey(
            f"invalid key {key!r}: type {type(key).__name__} is not a key type "
            "(keys are int, float, str, bytes or tuples of those)"
        )


def _as_index(key):
    try:
        return key.__index__()
    except TypeError as exc:
        raise InvalidKey(f"invalid key {key!r}: type {type(key).__name__} is not a key type ({exc})") from None


def _int_bytes(n):
    """The encoding of the integer ``n`` without its fraction byte."""
    if n >= 0:
        length = (n.bit_length() + 7) >> 3
        if length <= _SMALL:
            return _POS_TAG[length] + n.to_bytes(length, "big")
        return b"\x29" + _length_header(length) + n.to_bytes(length, "big")
    # the fewest bytes (at least one) with -(256**length) <= n
    length = max(1, ((-n - 1).bit_length() + 7) >> 3)
    magnitude = (n + (1 << (8 * length))).to_bytes(length, "big")
    if length <= _SMALL:
        return _NEG_TAG[length] + magnitude
    return b"\x17" + bytes(0xFF - b for b in _length_header(length)) + magnitude


def _length_header(length):
    """Order-preserving, self-delimiting bytes of a length: its byte count, then it."""
    size = (length.bit_length() + 7) >> 3
    return _U8.pack(size) + length.to_bytes(size, "big")


def _float_bytes(x):
    try:
        numerator, denominator = x.as_integer_ratio()  # denominator == 2**bits
    except OverflowError:
        return b"\x2a" if x > 0 else b"\x16"
    except ValueError:
        raise InvalidKey("invalid key nan: NaN has no order") from None
    whole = numerator // denominator
    if denominator == 1:
        return _int_bytes(whole) + _INT_TAIL
    return _int_bytes(whole) + _fraction_bytes(numerator - whole * denominator, denominator.bit_length() - 1)


_MORE_FOLLOWS = [int.from_bytes(b"\x01" * (groups - 1) + b"\x00", "big") for groups in range(1, 9)]


def _fraction_bytes(digits, bits):
    """7-bit groups of the ``bits``-digit binary fraction ``digits / 2**bits``
    (nonzero, so its last group is nonzero), one byte each: ``group << 1 | more``."""
    groups = -(-bits // 7)
    padded = digits << (7 * groups - bits)
    if groups <= 8:
        # spread the 56 bits into 8 bytes of 7: halves, quarters, eighths
        padded = (padded & 0xFFFFFFF) | ((padded & 0xFFFFFFF0000000) << 4)
        padded = (padded & 0x00003FFF00003FFF) | ((padded & 0x0FFFC0000FFFC000) << 2)
        padded = (padded & 0x007F007F007F007F) | ((padded & 0x3F803F803F803F80) << 1)
        return ((padded << 1) | _MORE_FOLLOWS[groups - 1]).to_bytes(groups, "big")
    out = bytearray(groups)
    for i in range(groups - 1, -1, -1):
        out[i] = ((padded & 0x7F) << 1) | 1
        padded >>= 7
    out[-1] &= 0xFE
    return bytes(out)


# --------------------------------------------------------------------------
# types


def key_types_of(key):
    """Describe the Python types of ``key`` in a msgpack-able form.

    ``"int"`` (also for bool), ``"float"``, ``"str"``, ``"bytes"``, or for a
    tuple a list of the item descriptions, e.g. ``["float", ["int", "str"]]``.
    Raises :class:`~streamlog.errors.InvalidKey` like :func:`encode_key`.
    """
    encode_key(key)  # raises InvalidKey for what is not a key
    return _types_of(key)


def _types_of(key):
    if isinstance(key, tuple):
        return [_types_of(item) for item in key]
    if isinstance(key, _FLOAT_LIKE):
        return "float"
    if isinstance(key, str):
        return "str"
    if isinstance(key, bytes):
        return "bytes"
    return "int"


# --------------------------------------------------------------------------
# decoding


def decode_key(data, key_types=None):
    """Return the key encoded in all of ``data`` (bytes or memoryview).

    Numbers come back as ``int`` when integral and ``float`` otherwise; where
    ``key_types`` (as made by :func:`key_types_of`) says ``"float"``, an
    integral number comes back as ``float`` (if that float is exact).
    ``key_types`` is only such a hint: where it does not match the key's
    shape it is ignored.  Raises :class:`~streamlog.errors.CorruptRecord`
    (a :class:`~streamlog.errors.NotALog`) if ``data`` is not exactly one
    key encoding.
    """
    key, end = decode_key_prefix(data, key_types)
    if end != len(data):
        raise CorruptRecord(f"damaged key: {len(data) - end} byte(s) after the key encoding in {bytes(data)!r}",
                            key=bytes(data))
    return key


def decode_key_prefix(data, key_types=None, start=0):
    """Decode the key that begins at ``data[start]``; return ``(key, end)``
    where ``end`` is the offset just past it (where a suffix would begin).

    ``key_types`` as for :func:`decode_key`.  Raises
    :class:`~streamlog.errors.CorruptRecord` for a damaged encoding; work
    and memory are linear in ``len(data)``.
    """
    try:
        tag = data[start]
        if _TAG_ZERO <= tag <= _TAG_ZERO + _SMALL and key_types != "float":
            end = start + 1 + tag - _TAG_ZERO
            if data[end] == 0:  # a non-negative integer: the common case
                return int.from_bytes(data[start + 1 : end], "big"), end + 1
        if type(data) is not bytes:
            data = bytes(data)
        return _decode(data, start, key_types)
    except (IndexError, ValueError, OverflowError, RecursionError) as exc:
        raise CorruptRecord(f"damaged key encoding at offset {start} of {bytes(data)!r}: "
                            f"{type(exc).__name__}: {exc}", key=bytes(data)) from None


def _decode(data, pos, types):
    tag = data[pos]
    if _TAG_ZERO <= tag <= _TAG_ZERO + _SMALL:
        end = pos + 1 + tag - _TAG_ZERO
        whole = int.from_bytes(data[pos + 1 : end], "big")
        return _decode_fraction(data, end, whole, types)
    if _TAG_ZERO - _SMALL <= tag < _TAG_ZERO:
        length = _TAG_ZERO - tag
        end = pos + 1 + length
        whole = int.from_bytes(data[pos + 1 : end], "big") - (1 << (8 * length))
        return _decode_fraction(data, end, whole, types)
    if tag == _TAG_STR or tag == _TAG_BYTES:
        end = _string_end(data, pos + 1)
        raw = bytes(data[pos + 1 : end]).replace(_ESCAPED_ZERO, b"\x00")
        return (raw.decode("utf-8", "surrogatepass") if tag == _TAG_STR else raw), end + 2
    if tag == _TAG_TUPLE:
        return _decode_tuple(data, pos + 1, types)
    if tag == _TAG_POS_BIG:
        size = data[pos + 1]
        start = pos + 2 + size
        length = int.from_bytes(data[pos + 2 : start], "big")
        end = start + length
        _check_available(data, end)
        return _decode_fraction(data, end, int.from_bytes(data[start:end], "big"), types)
    if tag == _TAG_NEG_BIG:
        size = 0xFF - data[pos + 1]
        start = pos + 2 + size
        length = int.from_bytes(bytes(0xFF - b for b in data[pos + 2 : start]), "big")
        end = start + length
        _check_available(data, end)
        whole = int.from_bytes(data[start:end], "big") - (1 << (8 * length))
        return _decode_fraction(data, end, whole, types)
    if tag == _TAG_POS_INF:
        return math.inf, pos + 1
    if tag == _TAG_NEG_INF:
        return -math.inf, pos + 1
    raise ValueError(f"unknown tag 0x{tag:02x}")


def _check_available(data, end):
    if end > len(data):
        raise ValueError("encoding cut short")


def _decode_fraction(data, pos, whole, types):
    byte = data[pos]
    if byte == 0:
        if types == "float":
            as_float = _exact_float(whole)
            if as_float is not None:
                return as_float, pos + 1
        return whole, pos + 1
    digits = 0
    bits = 0
    while True:
        digits = (digits << 7) | (byte >> 1)
        bits += 7
        pos += 1
        if not byte & 1:
            break
        byte = data[pos]
    return (whole * (1 << bits) + digits) / (1 << bits), pos


def _exact_float(n):
    try:
        as_float = float(n)
    except OverflowError:
        return None
    return as_float if as_float == n else None


def _string_end(data, pos):
    """Offset of the ``0x00 0x00`` ending the escaped string starting at ``pos``."""
    while True:
        zero = data.find(b"\x00", pos)
        if zero < 0 or zero + 1 >= len(data):
            raise ValueError("string without its end marker")
        following = data[zero + 1]
        if following == 0x00:
            return zero
        if following != 0xFF:
            raise ValueError(f"bad escape 0x00 0x{following:02x} in a string")
        pos = zero + 2


def _decode_tuple(data, pos, types):
    item_types = types if isinstance(types, (list, tuple)) else ()
    items = []
    while data[pos] != _END:
        index = len(items)
        item, pos = _decode(data, pos, item_types[index] if index < len(item_types) else None)
        items.append(item)
    return tuple(items), pos + 1


_KEY_RUNS = 16  # small_ints decodes runs of keys of one length at once when there are at most this many


def _fixed_small_ints(column, width):
    """:func:`small_ints` of keys all ``width`` bytes long, back to back in ``column`` (uint8)."""
    if not 2 <= width <= 9:
        return None
    rows = column.reshape(-1, width)
    size = width - 2
    if (rows[:, 0] != _TAG_ZERO + size).any() or rows[:, -1].any():
        return None
    if size in (1, 2, 4):
        return row_field(rows, 1, f">u{size}").astype(np.int64)
    if size == 3:  # the tag and the value as one big-endian u32
        return row_field(rows, 0, ">u4").astype(np.int64) & 0xFFFFFF
    padded = np.zeros((len(rows), 8), dtype=np.uint8)
    padded[:, 8 - size:] = rows[:, 1:1 + size]
    return padded.view(">u8").ravel().astype(np.int64)


def row_field(rows, at, dtype):
    """The item of ``dtype`` at byte ``at`` of each row of ``rows`` (a
    C-contiguous 2-D uint8 array): a strided view, one item per row."""
    return np.ndarray((len(rows),), dtype, buffer=rows, offset=at, strides=(rows.shape[1],))


def equal_runs(values):
    """``[(lo, hi), ...]``: the runs of equal items of a 1-D numpy array, in order."""
    cuts = [0, *(np.flatnonzero(values[1:] != values[:-1]) + 1).tolist(), len(values)]
    return list(zip(cuts[:-1], cuts[1:]))


def small_ints(buffer, ends):
    """The keys encoded back to back in ``buffer`` (key ``j`` ends at
    ``ends[j]``, a numpy int64 array) as a numpy int64 array when every one
    is an integer ``0 <= key < 2**56``, decoded with numpy; else None (also
    for bytes that are no such keys: decode those with :func:`decode_key_prefix`)."""
    column = np.frombuffer(buffer, dtype=np.uint8)
    if not len(ends) or ends[-1] != len(column):
        return None
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1]
    lengths = ends - starts
    runs = equal_runs(lengths)
    if len(runs) <= _KEY_RUNS:  # runs of keys of one length: a row each
        parts = [_fixed_small_ints(column[int(starts[lo]):int(ends[hi - 1])], int(lengths[lo])) for lo, hi in runs]
        if any(part is None for part in parts):
            return None
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
    if (ends - starts < 2).any():
        return None
    sizes = column[starts].astype(np.int64) - _TAG_ZERO  # the tag of a non-negative int: 0x20 + its byte count
    if (sizes < 0).any() or (sizes > 7).any() or (ends - starts != sizes + 2).any() or column[ends - 1].any():
        return None
    values = np.zeros(len(starts), dtype=np.int64)
    for j in range(int(sizes.max())):
        more = sizes > j
        values[more] = (values[more] << 8) | column[starts[more] + 1 + j]
    return values
