"""The record codec: records to bytes and back, exactly, with msgpack (never pickle).

A record may hold None, bool, int (any size), float, str, bytes, bytearray,
tuple, list, dict (keys of any of these hashable types), numpy arrays of any
dtype that holds no Python objects (structured, sub-array and either byte
order included; not items of zero bytes, such as ``V0``), and numpy scalars.  ``decode_record(encode_record(r))``
equals ``r`` with the same type at every depth: tuples stay tuples, lists
stay lists, a bytearray stays a bytearray, ``np.float32(1.5)`` stays
``np.float32``.  Subclasses of these types (``IntEnum``, ``OrderedDict``,
numpy array subclasses, ...) and anything else raise
:class:`~streamlog.errors.UnencodableRecord` naming the type and where in the
record it sits.  Arrays come back C- or Fortran-ordered as they were (other
layouts come back C-ordered), writable, each over its own fresh buffer.

Two layouts, told apart by the first byte:

* plain (any first byte but 0xC1, which msgpack never uses): the msgpack of a
  record that is a scalar, or a tuple of scalars (None, bool, int, float, str,
  bytes) -- the common case, decoded by a single ``msgpack.unpackb``;
* general: ``0xC1``, a u32be body length, the msgpack body, then the raw bytes
  of every numpy array, back to back in the order the arrays appear in the
  body (each array's data is copied once, into the result).  In the body a list is an array whose first item is the
  "list" ext marker; an ndarray is ``(array marker, dtype, shape, fortran,
  offset of its bytes)``; a numpy scalar is ``(scalar marker, dtype, bytes)``.

In both, ints beyond 64 bits are an ext holding their two's complement bytes
and a bytearray is an ext holding its bytes.  Arrays decode as tuples, so
tuples need no marker.
"""

import base64
import datetime
import json
import re
import struct
import threading
from itertools import chain

import msgpack
import numpy as np

from streamlog.errors import CorruptRecord, UnencodableRecord

__all__ = ["encode_record", "record_encoder", "decode_record", "decode_plain_records", "decode_general_bodies",
           "plain_array_header", "GENERAL_FIRST_BYTE", "to_jsonable",
           "array_heads"]

_GENERAL = 0xC1
GENERAL_FIRST_BYTE = _GENERAL
"""The first byte of a general-layout encoding; any other first byte means the
plain layout, which :func:`decode_plain_records` decodes among others."""
_GENERAL_HEADER = struct.Struct(">BI")  # 0xC1, body length

_EXT_BIG_INT = 1
_EXT_BYTEARRAY = 2
_EXT_LIST_MARKER = 3
_EXT_ARRAY_MARKER = 4
_EXT_SCALAR_MARKER = 5

_LIST_MARKER = msgpack.ExtType(_EXT_LIST_MARKER, b"")
_ARRAY_MARKER = msgpack.ExtType(_EXT_ARRAY_MARKER, b"")
_SCALAR_MARKER = msgpack.ExtType(_EXT_SCALAR_MARKER, b"")

_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_SUPPORTED = (
    "None, bool, int, float, str, bytes, bytearray, tuple, list, dict, "
    "numpy arrays (no object dtype) and numpy scalars"
)


# --------------------------------------------------------------------------
# encoding


def _big_int_ext(value):
    """msgpack ``default`` hook, reached only by ints outside 64 bits (every
    other value is a msgpack type by then)."""
    alike = getattr(_thread_state, "alike_big_ints", None)
    if alike is not None and _one_too_many_alike(alike, value):
        raise _Unencodable(value, f"more than {_MAX_ALIKE_BIG_INTS} ints beyond 64 bits in the record share its "
                                  f"hash, which reading refuses as crafted to be slow")
    return msgpack.ExtType(_EXT_BIG_INT, value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True))


_thread_state = threading.local()


def _packer():
    """This thread's Packer (a Packer keeps a buffer between calls, so it is
    never shared between threads)."""
    try:
        return _thread_state.packer
    except AttributeError:
        packer = _thread_state.packer = _new_packer()
        return packer


def _new_packer():
    return msgpack.Packer(default=_big_int_ext, use_bin_type=True, unicode_errors="surrogatepass")


def encode_record(record):
    """Return the bytes of ``record``; :func:`decode_record` gives it back.

    Raises :class:`~streamlog.errors.UnencodableRecord` naming the type and
    position of the first value that cannot be stored.  Thread-safe.
    """
    try:
        encode = _thread_state.encode
    except AttributeError:
        encode = _thread_state.encode = record_encoder()
    return encode(record)


def record_encoder():
    """A function doing what :func:`encode_record` does, with a msgpack Packer
    of its own, for one thread at a time (a recorder keeps one).  Its
    ``many(records)`` is ``list(map(encode, records))``, faster when every
    record is a tuple of scalars."""
    pack = _new_packer().pack
    scalars = _SCALARS

    def encode(record):
        kind = type(record)
        if kind is tuple:
            for item in record:
                if type(item) not in scalars:
                    return _encode_general(record)
        elif kind not in scalars:
            return _encode_general(record)
        return pack(record)

    def many(records):
        if set(map(type, records)) == {tuple} and scalars.issuperset(map(type, chain.from_iterable(records))):
            return list(map(pack, records))
        return list(map(encode, records))

    encode.many = many
    return encode


def _encode_general(record):
    if type(record) is tuple:
        encoded = _encode_flat_arrays(record)
        if encoded is not None:
            return encoded
    buffers = _Buffers()
    _thread_state.alike_big_ints = {}
    try:
        body = _packer().pack(_to_msgpack(record, buffers))
    except _Unencodable as exc:
        where = _position_of(record, exc.value)
        raise UnencodableRecord(
            f"cannot encode {exc.describe()}{f' at {where}' if where else ''}; records hold {_SUPPORTED}"
        ) from None
    except (RecursionError, ValueError) as exc:  # msgpack's nesting limit raises ValueError
        raise UnencodableRecord(f"cannot encode the record: nested too deeply or contains itself ({exc})") from None
    finally:
        _thread_state.alike_big_ints = None
    return b"".join([_GENERAL_HEADER.pack(_GENERAL, len(body)), body, *buffers])


def _encode_flat_arrays(record):
    """The general-layout encoding of a tuple of scalars (ints within 64
    bits) and C-contiguous, non-empty numpy arrays of simple dtypes (a numpy
    buffer with its key or time stamp), byte for byte what the general path
    writes, in one pass; None, deciding nothing, for any other tuple.  Arrays
    of a dtype never seen in the general path first go there."""
    items = []
    arrays = []
    offset = 0
    heads = array_heads
    for item in record:
        kind = type(item)
        if kind in _SCALARS:
            if kind is int and not _MIN_INT64 <= item <= _MAX_UINT64:
                return None
            items.append(item)
        elif kind is np.ndarray:
            head = heads.get(item.dtype)
            if head is None or not item.flags.c_contiguous or not item.size:
                return None
            items.append((*head, item.shape, False, offset))
            arrays.append(item)
            offset += item.nbytes
        else:
            return None
    try:
        body = _packer().pack(tuple(items))
    except ValueError:  # a str or bytes beyond msgpack's limits: the general path says so
        return None
    return b"".join([_GENERAL_HEADER.pack(_GENERAL, len(body)), body, *arrays])


_MIN_INT64 = -(1 << 63)
_MAX_UINT64 = (1 << 64) - 1


_MAX_ALIKE_BIG_INTS = 16


def _one_too_many_alike(alike, value):
    """Note the int ``value`` in ``alike`` (hash -> distinct values); True if
    more than _MAX_ALIKE_BIG_INTS distinct values now share its hash.

    Ints ``k * (2**61 - 1)`` all hash alike, and a dict of n such keys (or of
    tuples of them) takes n**2 steps to build -- minutes for a crafted 1 MB
    record -- so records of the general layout (the one with dicts) may not
    hold more; no other ints come close by chance.
    """
    same = alike.setdefault(hash(value), set())
    same.add(value)
    return len(same) > _MAX_ALIKE_BIG_INTS


class _Unencodable(Exception):
    def __init__(self, value, reason=None):
        super().__init__(value)
        self.value = value
        self.reason = reason

    def describe(self):
        text = f"a value of type {_type_name(self.value)}"
        return f"{text} ({self.reason})" if self.reason else text


def _type_name(value):
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _to_msgpack(value, buffers):
    """``value`` in the msgpack-ready form of the general layout; appends the
    data of numpy arrays to ``buffers``."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is tuple:
        return tuple([_to_msgpack(item, buffers) for item in value])
    if kind is list:
        return (_LIST_MARKER, *[_to_msgpack(item, buffers) for item in value])
    if kind is dict:
        return {_to_msgpack(k, buffers): _to_msgpack(v, buffers) for k, v in value.items()}
    if kind is np.ndarray:
        return _array_to_msgpack(value, buffers)
    if kind is bytearray:
        return msgpack.ExtType(_EXT_BYTEARRAY, bytes(value))
    if isinstance(value, np.generic):
        return (_SCALAR_MARKER, _dtype_spec(value.dtype), value.tobytes())
    raise _Unencodable(value)


def _array_to_msgpack(array, buffers):
    if array.dtype.hasobject:
        raise _Unencodable(array, f"dtype {array.dtype} holds Python objects")
    if array.size and not array.dtype.itemsize:
        raise _Unencodable(array, f"its {array.size} items of dtype {array.dtype} have no bytes")
    flags = array.flags
    fortran = flags.f_contiguous and not flags.c_contiguous
    offset = buffers.size
    if array.size:
        buffers.add(array.T if fortran else array if flags.c_contiguous else np.ascontiguousarray(array))
    spec = _dtype_spec(array.dtype)
    if type(spec) is str and array.dtype.itemsize and len(array_heads) < _MAX_CACHED_DTYPES:
        array_heads[array.dtype] = (_ARRAY_MARKER, spec)
    return (_ARRAY_MARKER, spec, array.shape, fortran, offset)


array_heads = {}
"""dtype -> the first two fields of its arrays' body entries, for the simple
dtypes (those described by ``dtype.str``) of items with bytes (not ``V0``,
whose non-empty arrays are refused) whose arrays the general path has
encoded, so that :func:`_encode_flat_arrays` (and ``streamlog._ingest``, the
recorder's C encoder, which reads this dict) may encode such arrays."""


class _Buffers(list):
    """The arrays whose raw bytes follow the body, and their total size."""

    size = 0

    def add(self, contiguous_array):
        self.append(contiguous_array)
        self.size += contiguous_array.nbytes


_simple_specs = {}


def _dtype_spec(dtype):
    """msgpack-able description of ``dtype`` that :func:`_dtype_from_spec` rebuilds exactly."""
    try:
        return _simple_specs[dtype]
    except KeyError:
        pass
    if dtype.fields is not None:
        names = dtype.names
        fields = [dtype.fields[name] for name in names]
        spec = {
            "names": list(names),
            "formats": [_dtype_spec(field[0]) for field in fields],
            "offsets": [field[1] for field in fields],
            "itemsize": dtype.itemsize,
        }
        if any(len(field) > 2 for field in fields):
            spec["titles"] = [field[2] if len(field) > 2 else None for field in fields]
        if dtype.isalignedstruct:
            spec["aligned"] = True
        return spec
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return [_dtype_spec(base), list(shape)]
    spec = _simple_specs[dtype] = dtype.str
    return spec


def _position_of(record, target, path="record"):
    """Where ``target`` (by identity) sits inside ``record``, e.g. ``"record[1]['a']"``."""
    if record is target:
        return path
    if type(record) in (tuple, list):
        for index, item in enumerate(record):
            found = _position_of(item, target, f"{path}[{index}]")
            if found:
                return found
    elif type(record) is dict:
        for key, item in record.items():
            found = _position_of(key, target, f"a key of {path}") or _position_of(item, target, f"{path}[{key!r}]")
            if found:
                return found
    return None


# --------------------------------------------------------------------------
# decoding


class _Marker:
    """What a marker ext decodes to while the body is being unpacked."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<{self.name} marker>"


_LIST = _Marker("list")
_ARRAY = _Marker("array")
_SCALAR = _Marker("scalar")


def _plain_ext(code, data):
    """msgpack ``ext_hook`` of the plain layout, which holds no markers."""
    if code == _EXT_BIG_INT:
        return int.from_bytes(data, "big", signed=True)
    if code == _EXT_BYTEARRAY:
        return bytearray(data)
    raise ValueError(f"ext type {code} in a plain record")


def decode_record(buf):
    """Return the record encoded in ``buf`` (bytes, bytearray or memoryview).

    Nothing returned refers to ``buf``'s memory, so ``buf`` may be a view
    that dies right after.  Raises :class:`~streamlog.errors.CorruptRecord`
    (a :class:`~streamlog.errors.NotALog`) naming what is wrong if ``buf``
    is not a record encoding (a damaged log).

    Safe on hostile bytes: nothing is unpickled or imported, only the ext
    types above are accepted, dtypes are plain numeric, bool, datetime,
    bytes, str and structured ones (never object), and what is allocated is
    bounded by ``len(buf)``: msgpack's ``unpackb`` caps every string, bin,
    ext, array and map length at the input's length, each array's data must
    be the next ``size * itemsize`` bytes present, and an array cannot claim
    more items than ``buf`` has bytes.  Work is about linear in ``len(buf)``
    (big ints chosen to share one hash, which would make a dict of them
    quadratic to build, are refused).
    """
    try:
        if buf[0] != _GENERAL:
            return msgpack.unpackb(buf, use_list=False, ext_hook=_plain_ext, unicode_errors="surrogatepass")
        return _decode_general(memoryview(buf))
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError, struct.error,
            msgpack.UnpackException) as exc:
        raise CorruptRecord(f"damaged record ({len(buf)} bytes): {type(exc).__name__}: {exc}") from None


_ARRAY32 = struct.Struct(">BI")


def plain_array_header(count):
    """The bytes that, put before ``count`` plain encodings back to back, make
    them one msgpack array (see :func:`decode_plain_records`)."""
    return _ARRAY32.pack(0xDD, count)


def decode_plain_records(buf, count):
    """The ``count`` records of ``buf``: :func:`plain_array_header` then
    ``count`` plain-layout encodings back to back, as a tuple; decoded in one
    call, far faster than one :func:`decode_record` each.

    Raises CorruptRecord when ``buf`` is anything else; as safe on hostile
    bytes as :func:`decode_record` (one bounded ``msgpack.unpackb``).
    """
    try:
        out = msgpack.unpackb(buf, use_list=False, ext_hook=_plain_ext, unicode_errors="surrogatepass")
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError, struct.error,
            msgpack.UnpackException) as exc:
        raise CorruptRecord(f"damaged records ({len(buf)} bytes): {type(exc).__name__}: {exc}") from None
    if type(out) is not tuple or len(out) != count:
        raise CorruptRecord(f"damaged records: {len(out) if type(out) is tuple else 'no'} records where "
                            f"{count} were stored")
    return out


class _Declined(Exception):
    """Raised by the ext hook of :func:`decode_general_bodies` at a value it leaves to :func:`decode_record`."""


def _unmarked_ext(code, data):
    if code == _EXT_BYTEARRAY:
        return bytearray(data)
    raise _Declined


def decode_general_bodies(buf, ends):
    """The records whose general-layout *bodies* (the msgpack after the
    ``0xC1`` and body length) lie back to back in ``buf``, body ``j`` ending
    at offset ``ends[j]``, decoded in one pass, as a list; for records with
    no array data.

    Returns None, deciding nothing, when the bytes are not exactly such
    bodies (one that does not end at its offset, damaged msgpack) or a body
    holds a list, numpy array or scalar or an int beyond 64 bits: decode
    those with :func:`decode_record`, which says what is wrong.  What it
    returns equals :func:`decode_record` of each record; as safe on hostile
    bytes (no length beyond ``len(buf)``, only the bytearray ext).
    """
    unpacker = msgpack.Unpacker(use_list=False, ext_hook=_unmarked_ext, strict_map_key=False,
                                unicode_errors="surrogatepass", max_buffer_size=max(len(buf), 1))
    if len(ends) and ends[-1] != len(buf):
        return None
    out = []
    append, unpack, tell = out.append, unpacker.unpack, unpacker.tell
    try:
        unpacker.feed(buf)
        for end in ends:
            append(unpack())
            if tell() != end:
                return None
    except (_Declined, ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError,
            msgpack.UnpackException):
        return None
    return out


class _GeneralDecoder:
    """Decodes one record of the general layout (one use).

    The msgpack body is unpacked with hooks that turn marked arrays into
    lists, ndarrays and numpy scalars; ``markers_open`` counts markers seen
    but not yet consumed as the head of an array, so a marker anywhere else
    (a damaged record) is noticed at the end.
    """

    __slots__ = ("view", "data_start", "data_length", "data_used", "markers_open", "alike_big_ints")

    def __init__(self, view):
        _, body_length = _GENERAL_HEADER.unpack_from(view)
        self.view = view
        self.data_start = _GENERAL_HEADER.size + body_length
        self.data_length = len(view) - self.data_start
        if self.data_length < 0:
            raise ValueError(f"body length {body_length} runs past the end of the record")
        self.data_used = 0
        self.markers_open = 0
        self.alike_big_ints = {}

    def decode(self):
        record = msgpack.unpackb(
            self.view[_GENERAL_HEADER.size : self.data_start],
            use_list=False,
            list_hook=self.unmark,
            ext_hook=self.from_ext,
            strict_map_key=False,
            unicode_errors="surrogatepass",
        )
        if self.markers_open:
            raise ValueError(f"{self.markers_open} marker(s) outside the head of an array")
        if self.data_used != self.data_length:
            raise ValueError(f"{self.data_length} bytes of array data, but the arrays use {self.data_used}")
        return record

    def from_ext(self, code, data):
        if code == _EXT_LIST_MARKER:
            marker = _LIST
        elif code == _EXT_ARRAY_MARKER:
            marker = _ARRAY
        elif code == _EXT_SCALAR_MARKER:
            marker = _SCALAR
        elif code == _EXT_BIG_INT:
            return self.big_int(data)
        else:
            return _plain_ext(code, data)
        self.markers_open += 1
        return marker

    def big_int(self, data):
        value = int.from_bytes(data, "big", signed=True)
        if _one_too_many_alike(self.alike_big_ints, value):
            raise ValueError(f"more than {_MAX_ALIKE_BIG_INTS} ints beyond 64 bits share one hash (crafted to be slow)")
        return value

    def unmark(self, items):
        if items:
            head = items[0]
            if head is _LIST:
                self.markers_open -= 1
                return list(items[1:])
            if head is _ARRAY:
                self.markers_open -= 1
                return self.array(items)
            if head is _SCALAR:
                self.markers_open -= 1
                return _scalar_from(items)
        return items

    def array(self, items):
        """The ndarray of an array marker, in a fresh writable buffer (one copy)."""
        if len(items) != 5:
            raise ValueError(f"an array entry has {len(items)} fields, not 5")
        _, spec, shape, fortran, offset = items
        dtype = _dtype_from_spec(spec)
        if type(shape) is not tuple or len(shape) > _MAX_DIMS or type(fortran) is not bool:
            raise ValueError(f"bad array shape {_short_repr(shape)} or order flag {_short_repr(fortran)}")
        count = 1
        for length in shape:
            if type(length) is not int or length < 0:
                raise ValueError(f"bad array shape {_short_repr(shape)}")
            count *= length
        if count > len(self.view):
            raise ValueError(f"an array of {count} items in a record of {len(self.view)} bytes")
        if offset != self.data_used:
            raise ValueError(f"array data at offset {_short_repr(offset)}, expected {self.data_used}")
        size = count * dtype.itemsize
        if not size:
            return np.empty(shape, dtype)
        if size > self.data_length - self.data_used:
            raise ValueError(f"an array of {size} bytes, but only {self.data_length - self.data_used} are left")
        start = self.data_start + offset
        self.data_used += size
        array = np.frombuffer(bytearray(self.view[start : start + size]), dtype)
        if fortran:
            return array.reshape(shape[::-1]).T
        return array if len(shape) == 1 else array.reshape(shape)


def _decode_general(view):
    return _GeneralDecoder(view).decode()


def _scalar_from(items):
    if len(items) != 3:
        raise ValueError(f"a numpy scalar entry has {len(items)} fields, not 3")
    _, spec, raw = items
    dtype = _dtype_from_spec(spec)
    if type(raw) is not bytes:
        raise ValueError(f"a numpy scalar stored as {_short_repr(raw)}")
    if not dtype.itemsize:  # such as np.str_(""), stored as a NUL character
        return np.zeros((), dtype)[()]
    if len(raw) != dtype.itemsize:
        raise ValueError(f"a numpy scalar of dtype {dtype} needs {dtype.itemsize} bytes, not {len(raw)}")
    # np.bytes_ and np.str_ are bytes and str whose trailing NULs count, so
    # they are rebuilt from their whole content rather than read as an item
    if dtype.kind == "S":
        return np.bytes_(raw)
    if dtype.kind == "U":
        return np.str_(raw.decode("utf-32-be" if dtype.str[0] == ">" else "utf-32-le"))
    return np.frombuffer(raw, dtype, 1)[0]


_MAX_DIMS = 64  # numpy's limit
# what _dtype_spec writes for a simple dtype: dtype.str, e.g. "<f4", "|b1", "<M8[ns]", "|S5", "|V8"
_SIMPLE_SPEC = re.compile(r"[<>|=][biufcmMSUV][0-9]{1,10}(\[[0-9]*[a-zA-Z]{1,2}\])?")
_simple_dtypes = {}
_MAX_CACHED_DTYPES = 256


def _dtype_from_spec(spec):
    """The dtype a spec of :func:`_dtype_spec` describes; ValueError for a
    spec it cannot have written or a dtype that holds Python objects."""
    if type(spec) is str:
        dtype = _simple_dtypes.get(spec)
        if dtype is None:
            if not _SIMPLE_SPEC.fullmatch(spec):
                raise ValueError(f"bad dtype {_short_repr(spec)}")
            dtype = np.dtype(spec)
            if len(_simple_dtypes) < _MAX_CACHED_DTYPES:
                _simple_dtypes[spec] = dtype
        return dtype
    if type(spec) is dict:
        fields = {
            "names": list(spec["names"]),
            "formats": [_dtype_from_spec(f) for f in spec["formats"]],
            "offsets": list(spec["offsets"]),
            "itemsize": spec["itemsize"],
        }
        if "titles" in spec:
            fields["titles"] = list(spec["titles"])
        dtype = np.dtype(fields, align=bool(spec.get("aligned")))
    elif type(spec) is tuple and len(spec) == 2 and type(spec[1]) is tuple:
        dtype = np.dtype((_dtype_from_spec(spec[0]), spec[1]))
    else:
        raise ValueError(f"bad dtype {_short_repr(spec)}")
    if dtype.hasobject:
        raise ValueError(f"dtype {dtype} holds Python objects")
    return dtype


def _short_repr(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------
# JSON view


def to_jsonable(value):
    """A JSON-ready copy of a decoded record, for text output (jsonl, csv).

    tuples and arrays become lists (ndarrays as nested lists), numpy scalars
    Python numbers/str/bool, ``bytes``/``bytearray`` ``{"$bytes": base64}``,
    complex numbers ``[real, imag]``, dates and times ISO 8601 strings,
    durations seconds.  dict keys that are not str become the JSON text of
    the key (``(1, 2)`` -> ``"[1, 2]"``).  ints stay exact and float
    NaN/inf stay floats (``json.dumps`` writes them as NaN/Infinity unless
    told ``allow_nan=False``; :func:`streamlog.export.json_line` writes them
    as null).  Other values raise
    :class:`~streamlog.errors.UnencodableRecord`.
    """
    kind = type(value)
    if kind in _SCALARS and kind is not bytes:
        return value
    if kind is tuple or kind is list:
        return [to_jsonable(item) for item in value]
    if kind is dict:
        return {_json_key(k): to_jsonable(v) for k, v in value.items()}
    if kind is bytes or kind is bytearray:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if kind is np.ndarray:
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if kind is complex:
        return [value.real, value.imag]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if kind is datetime.timedelta:
        return value.total_seconds()
    raise UnencodableRecord(f"no JSON form for a {_type_name(value)}: {value!r}")


def _json_key(key):
    return key if type(key) is str else json.dumps(to_jsonable(key))
