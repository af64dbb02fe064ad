"""What both on-disk formats share: the format record, database names,
record keys, the sparse time index, continuation entries and the chunk plan.

* Format record: ``meta[b"format"]`` is msgpack ``{"format": "streamlog",
  "version": V, "created": epoch_s}``; this code writes version
  :data:`FORMAT_VERSION` and reads :data:`READABLE_VERSIONS`.
* Records of stream ``S`` live in database ``r:S``, its time index in
  ``t:S``.
* The *record key* of record ``seq`` (0, 1, 2, ... within the session and
  stream) of session ``N`` with key ``k`` is ``u32be(N) + encode_key(k) +
  u64be(seq)``: record keys sort in session order, then key order, then
  arrival order.  Readers use record keys as opaque, ordered cursor
  positions.
* An entry too big to pack well into pages is split: its head entry keeps
  the first part (and says how many continuations follow), continuation
  entries keyed ``head key + u16be(i)`` (i = 1, 2, ...) hold the rest
  (:func:`chunk_plan`).
* Time index: ``u32be(N) + u64be(arrival_us)`` of the first record of each
  group commit -> that record's record key.
"""

import struct
import time
from itertools import count

import msgpack

from streamlog import errors
from streamlog.errors import CorruptRecord
from streamlog.keys import decode_key_prefix

FORMAT_NAME = "streamlog"
FORMAT_VERSION = 2
"""The version new logs are written in."""
READABLE_VERSIONS = (1, 2)

SESSION_ID = struct.Struct(">I")
SEQ = struct.Struct(">Q")
TIME_US = struct.Struct(">Q")
CHUNK_INDEX = struct.Struct(">H")

SPLIT_ABOVE = 600
"""Values up to this many bytes are never split (they pack well inline)."""
MAX_CONTINUATIONS = 255  # a u8 in the head entry
_RECORDS_DB = b"r:"
_TIME_DB = b"t:"
_ABOVE_ANY_SEQ = b"\xff" * (SEQ.size + 3)  # above every seq and continuation suffix
_seq_pack = SEQ.pack
_seq_unpack = SEQ.unpack_from
NODE_OVERHEAD = 10  # an LMDB leaf node's header and its pointer in the page


# -- format record and database names --------------------------------------------


def format_record():
    """The value of ``meta[b"format"]`` for a new log."""
    return msgpack.packb({"format": FORMAT_NAME, "version": FORMAT_VERSION, "created": time.time()})


def check_format_record(raw, path):
    """``(version, created)`` of the format record ``raw`` of the log at ``path``.

    Raises NotALog (damaged, or another format) or FormatVersionError (a
    version this code does not read).
    """
    try:
        meta = msgpack.unpackb(raw)
        name, version = meta["format"], meta["version"]
    except Exception as exc:
        raise errors.NotALog(f"{path} has a damaged format record") from exc
    if name != FORMAT_NAME:
        raise errors.NotALog(f"{path} is not a streamlog log (format {name!r})")
    if version not in READABLE_VERSIONS:
        raise errors.FormatVersionError(
            f"{path} uses on-disk format version {version}; this streamlog reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}")
    return version, meta.get("created")


def records_db_name(stream):
    return _RECORDS_DB + stream.encode()


def time_db_name(stream):
    return _TIME_DB + stream.encode()


def is_stream_db_name(name):
    """Whether ``name`` is the name of a records or time-index database."""
    return name.startswith((_RECORDS_DB, _TIME_DB))


def stream_of_db_name(name):
    """The stream whose records database is named ``name``, or None."""
    return name[len(_RECORDS_DB):].decode() if name.startswith(_RECORDS_DB) else None


# -- record keys -------------------------------------------------------------------


def session_prefix(session_id):
    """The first bytes of every record key of ``session_id``; below all of them."""
    return SESSION_ID.pack(session_id)


def after_session(session_id):
    """The smallest key greater than every key of ``session_id``."""
    return SESSION_ID.pack(session_id + 1)


def session_of(key):
    """The session id a record key or session-catalog key starts with."""
    return SESSION_ID.unpack_from(key)[0]


def record_key(prefix, encoded_key, seq):
    """The record key of record ``seq`` with encoded key ``encoded_key`` in the
    session whose :func:`session_prefix` is ``prefix``."""
    return prefix + encoded_key + _seq_pack(seq)


def record_keys(prefix, encoded_keys, first_seq):
    """The record keys of records ``first_seq, first_seq + 1, ...`` with these
    encoded keys, in the session whose :func:`session_prefix` is ``prefix``."""
    return [prefix + key + seq for key, seq in zip(encoded_keys, map(_seq_pack, count(first_seq)))]


def seq_of(record_key):
    """The sequence number of a record key."""
    return _seq_unpack(record_key, len(record_key) - 8)[0]


def key_of(record_key, key_types=None):
    """The key of the record whose record key is ``record_key``, decoded as
    ``key_types`` (a stream's, see ``Session.stream_info``) says."""
    return decode_key_prefix(record_key, key_types, start=SESSION_ID.size)[0]


def key_bounds(prefix, start_encoded, stop_encoded):
    """Record-key bounds ``(lo, hi)`` for encoded keys ``start <= key <= stop``
    (both inclusive; None = open) in the session of ``prefix``: every record
    key in range is ``>= lo`` and ``<= hi``, every other one is not."""
    lo = prefix if start_encoded is None else prefix + start_encoded
    if stop_encoded is None:
        hi = SESSION_ID.pack(SESSION_ID.unpack(prefix)[0] + 1)
    else:
        hi = prefix + stop_encoded + _ABOVE_ANY_SEQ
    return lo, hi


def same_key_bounds(record_key):
    """Record-key bounds ``(lo, hi)`` of every record whose key equals that of
    the record ``record_key``, in its session."""
    head = record_key[:-SEQ.size]
    return head, head + _ABOVE_ANY_SEQ


def key_before(record_key, prefix):
    """A position just before the record ``record_key`` (of the session of
    ``prefix``): reading strictly after it starts with that record."""
    seq = seq_of(record_key)
    return record_key[:-SEQ.size] + _seq_pack(seq - 1) if seq else prefix


def is_head_key(key):
    """Whether ``key`` (a records-database key) is a head entry's, not a
    continuation's; CorruptRecord if its key part does not decode."""
    _, end = decode_key_prefix(key, start=SESSION_ID.size)
    return len(key) - end <= SEQ.size


def damaged_record(record_key, problem):
    """A CorruptRecord for the record (or block) stored under ``record_key``
    (raw bytes), naming its session, key and sequence number as far as they
    decode."""
    if isinstance(problem, IndexError):
        problem = "an entry shorter than the record header"
    where = "a record"
    session = key = None
    if record_key is not None and len(record_key) >= SESSION_ID.size + SEQ.size:
        session = SESSION_ID.unpack_from(record_key)[0]
        try:
            key, end = decode_key_prefix(record_key, start=SESSION_ID.size)
            where = f"the record of session {session} with key {key!r}"
            if len(record_key) >= end + SEQ.size:
                where += f" (seq {_seq_unpack(record_key, end)[0]})"
        except (CorruptRecord, IndexError, ValueError):
            key = bytes(record_key)
            where = f"a record of session {session} under the damaged key {key!r}"
    return CorruptRecord(f"{where}: {problem}", session=session, key=key)


# -- continuation entries -----------------------------------------------------------


def joined(iterator, key, value, count, start):
    """The data of a split entry: ``value[start:]`` of its head entry and the
    ``count`` continuation entries that follow it in ``iterator``."""
    return b"".join(entry_parts(iterator, key, value, count, start))


def entry_parts(iterator, key, value, count, start):
    """The data of a split entry as the list of its pieces (as read: views
    of the memory map in a ``buffers=True`` transaction), unjoined: see
    :func:`joined`."""
    parts = [value[start:]]
    for index in range(1, count + 1):
        entry = next(iterator, None)
        if entry is None or entry[0] != key + CHUNK_INDEX.pack(index):
            raise CorruptRecord(f"continuation {index} of {count} is missing")
        parts.append(entry[1])
    return parts


# -- the time index -------------------------------------------------------------------


def time_key(session_id, arrival_us):
    return SESSION_ID.pack(session_id) + TIME_US.pack(max(arrival_us, 0))


def time_index_start(txn, time_db, session_id, lo_us):
    """The record key to scan from for records of ``session_id`` that arrived
    at or after ``lo_us``: the first record of the latest group commit that
    began at or before ``lo_us`` (or the session's start)."""
    prefix = session_prefix(session_id)
    if time_db is None:
        return prefix
    probe = time_key(session_id, lo_us)
    cursor = txn.cursor(time_db)
    if cursor.set_range(probe):
        if cursor.key() > probe and not cursor.prev():
            return prefix
    elif not cursor.last():
        return prefix
    if cursor.key()[:len(prefix)] != prefix:
        return prefix
    return cursor.value()


def prune_time_index(txn, time_db, session_id, last_deleted_key):
    """Delete the time-index entries of ``session_id`` that point at or
    before record key ``last_deleted_key`` (None: all of them)."""
    prefix = session_prefix(session_id)
    cursor = txn.cursor(time_db)
    if not cursor.set_range(prefix):
        return
    while cursor.key()[:4] == prefix:
        if last_deleted_key is not None and cursor.value() > last_deleted_key:
            break
        if not cursor.delete():
            break


# -- value chunking -----------------------------------------------------------

_PAGE_HEADER = 16
_NODE_HEADER = 8
_POINTER = 2
_OVERFLOW_REF = 8
_plans = {}


def chunk_plan(value_len, key_len, page_size=4096):
    """How to split a value so that it wastes no page space: ``(head, piece)``.

    The head entry holds the first ``head`` bytes; the rest goes into
    continuation entries of at most ``piece`` bytes.  ``head == value_len``
    means no split.  The plan minimises the estimated bytes on disk assuming
    a run of similar records, among: one inline entry, ``k`` equal inline
    pieces, or a head filling whole overflow pages plus inline pieces.
    """
    plan = _plans.get((value_len, key_len, page_size))
    if plan is None:
        plan = _best_plan(value_len, key_len, page_size)
        if len(_plans) < 4096:
            _plans[(value_len, key_len, page_size)] = plan
    return plan


def _best_plan(value_len, key_len, page_size):
    usable = page_size - _PAGE_HEADER
    node_max = (usable // 2) & ~1

    def node(data_len, klen):
        return _POINTER + ((_NODE_HEADER + klen + data_len + 1) & ~1)

    def inline_cost(total, pieces, first_klen):
        """Bytes on disk for ``total`` bytes in ``pieces`` equal inline entries."""
        piece = -(-total // pieces)
        cost = 0.0
        for i in range(pieces):
            size = node(piece, first_klen if i == 0 else key_len + CHUNK_INDEX.size)
            if size - _POINTER > node_max:
                return None, piece
            cost += page_size / (usable // size)
        return cost, piece

    best_cost, best = inline_cost(value_len, 1, key_len)[0], (value_len, value_len)
    if best_cost is None:
        best_cost = float("inf")
    for pieces in range(2, 17):
        cost, piece = inline_cost(value_len, pieces, key_len)
        if cost is not None and cost < best_cost:
            best_cost, best = cost, (piece, piece)
    pages = 1
    while pages * page_size - _PAGE_HEADER < value_len + page_size:
        head = min(value_len, pages * page_size - _PAGE_HEADER)
        rest = value_len - head
        stub = page_size * node(_OVERFLOW_REF, key_len) / usable
        cost = pages * page_size + stub
        piece = rest
        if rest:
            rest_best = None
            for pieces in range(1, 17):
                c, p = inline_cost(rest, pieces, key_len + CHUNK_INDEX.size)
                if c is not None and (rest_best is None or c < rest_best[0]):
                    rest_best = (c, p)
            if rest_best is None:
                pages += 1
                continue
            cost += rest_best[0]
            piece = rest_best[1]
        if cost < best_cost:
            best_cost, best = cost, (head, piece)
        pages += 1
    return best
