"""The on-disk layout of a log, every byte of it (format version 1).

Nothing outside this module builds or parses an LMDB key or value of the
record and time-index databases; the rest of the package handles *record
keys* (below) as opaque, ordered bytes.

* Format record: ``meta[b"format"]`` is msgpack ``{"format": "streamlog",
  "version": 1, "created": epoch_s}`` (:func:`format_record`,
  :func:`check_format_record`).
* Records of stream ``S`` live in database ``r:S``.  A record of session
  ``N`` with key ``k`` and sequence number ``seq`` (0, 1, 2, ... within the
  session and stream) has the *record key* ``u32be(N) + encode_key(k) +
  u64be(seq)``: record keys sort in session order, then key order, then
  arrival order.  Its head entry's value is ``u64be(arrival_us) +
  u8(continuations) + data`` where ``data`` starts the encoded record;
  ``continuations`` more entries, keyed ``record key + u16be(i)`` (i = 1, 2,
  ...), hold the rest (see :func:`chunk_plan`).
* The sparse time index of stream ``S`` is database ``t:S``:
  ``u32be(N) + u64be(arrival_us)`` of the first record of each group commit
  -> that record's record key.

Reading checks the layout as it goes: an entry too short for its header, a
continuation that is missing or out of place, or a record that does not
decode raises :class:`~streamlog.errors.CorruptRecord` naming the session,
key and sequence number (at most 255 continuations are ever joined).
"""

import struct
import time

import msgpack

from streamlog import errors
from streamlog.codec import decode_record
from streamlog.errors import CorruptRecord
from streamlog.keys import decode_key_prefix

FORMAT_NAME = "streamlog"
FORMAT_VERSION = 1

SESSION_ID = struct.Struct(">I")
SEQ = struct.Struct(">Q")
TIME_US = struct.Struct(">Q")
HEADER = struct.Struct(">QB")
CHUNK_INDEX = struct.Struct(">H")

HEADER_SIZE = HEADER.size
SPLIT_ABOVE = 600
"""Values up to this many bytes are never split (they pack well inline)."""
_INLINE_PAYLOAD = SPLIT_ABOVE - HEADER_SIZE
_MAX_CONTINUATIONS = 255  # the u8 in the head entry
_RECORDS_DB = b"r:"
_TIME_DB = b"t:"
_ABOVE_ANY_SEQ = b"\xff" * (SEQ.size + 3)  # above every seq and continuation suffix
_seq_pack = SEQ.pack
_seq_unpack = SEQ.unpack_from
_header_pack = HEADER.pack
_header_unpack = HEADER.unpack_from
_NODE_OVERHEAD = 10  # an LMDB leaf node's header and its pointer in the page


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
    if version != FORMAT_VERSION:
        raise errors.FormatVersionError(
            f"{path} uses on-disk format version {version}; this streamlog reads version {FORMAT_VERSION}")
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


def seq_of(record_key):
    """The sequence number of a head entry's key."""
    return _seq_unpack(record_key, len(record_key) - 8)[0]


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


def key_before(record_key, prefix):
    """A position just before the record ``record_key`` (of the session of
    ``prefix``): reading strictly after it starts with that record."""
    seq = seq_of(record_key)
    return record_key[:-SEQ.size] + _seq_pack(seq - 1) if seq else prefix


def time_key(session_id, arrival_us):
    return SESSION_ID.pack(session_id) + TIME_US.pack(max(arrival_us, 0))


# -- writing ---------------------------------------------------------------------


def entries(record_key, arrival_us, payload, page_size):
    """The ``(key, value)`` entries that store one record, in key order."""
    out = []
    _append_split(out, record_key, arrival_us, payload, page_size)
    return out


def append_record(out, prefix, encoded_key, seq, arrival_us, payload, page_size):
    """Append to ``out`` the ``(key, value)`` entries of record ``seq`` of the
    session of ``prefix`` with key ``encoded_key``; return its record key."""
    key = prefix + encoded_key + _seq_pack(seq)
    if len(payload) <= _INLINE_PAYLOAD:
        out.append((key, _header_pack(arrival_us, 0) + payload))
    else:
        _append_split(out, key, arrival_us, payload, page_size)
    return key


def _append_split(out, record_key, arrival_us, payload, page_size):
    """Append the entries of one record whose value may need splitting."""
    size = HEADER_SIZE + len(payload)
    head, piece = chunk_plan(size, len(record_key), page_size) if size > SPLIT_ABOVE else (size, size)
    if head >= size:
        out.append((record_key, _header_pack(arrival_us, 0) + payload))
        return
    first = head - HEADER_SIZE
    rest = len(payload) - first
    count = -(-rest // piece)
    out.append((record_key, _header_pack(arrival_us, count) + payload[:first]))
    for i in range(count):
        start = first + i * piece
        out.append((record_key + CHUNK_INDEX.pack(i + 1), payload[start:start + piece]))


def append_commit(txn, db, time_db, session_id, pending, first_arrival_us):
    """Write ``pending`` entries (from :func:`append_entries`, in key order) and
    the time-index entry of their first record, inside write transaction ``txn``."""
    cursor = txn.cursor(db)
    append = not cursor.last() or cursor.key() < pending[0][0]
    cursor.putmulti(pending, append=append)
    txn.put(time_key(session_id, first_arrival_us), pending[0][0], db=time_db, overwrite=False)


# -- reading ---------------------------------------------------------------------


def scan(txn, db, start, stop, *, limit=None, after=None, decode=True, with_time=False):
    """Records with ``start <= record key <= stop``, in key order.

    ``stop`` may be None (to the end of the database; callers pass an exclusive
    bound through ``after_session`` and rely on ``stop`` inclusive otherwise).
    ``after``, if given, is a record key to continue strictly after.  Returns a
    list of ``(record_key, record)`` (or ``(record_key, arrival_us, record)``
    with ``with_time``), at most ``limit`` long.
    """
    cursor = txn.cursor(db)
    if not _position(cursor, start, after):
        return []
    out = []
    append = out.append
    iterator = cursor.iternext()
    key = None
    try:
        for key, value in iterator:
            if stop is not None and key > stop:
                break
            data = _joined(iterator, key, value) if value[8] else value[HEADER_SIZE:]
            record = decode_record(data) if decode else data
            if with_time:
                append((key, _header_unpack(value)[0], record))
            else:
                append((key, record))
            if limit is not None and len(out) >= limit:
                break
    except (CorruptRecord, IndexError) as exc:
        raise damaged_record(key, exc) from None
    return out


def scan_records(txn, db, start, stop, limit, after=None):
    """The fast path of :func:`scan` for replay: decoded records only.

    Returns ``(records, last_key, exhausted)``: at most ``limit`` records
    with ``start <= key <= stop`` (continuing strictly after ``after`` if
    given), the record key of the last one, and whether the range ended.
    """
    cursor = txn.cursor(db)
    if not _position(cursor, start, after):
        return [], None, True
    out = []
    append = out.append
    decode = decode_record
    last = None
    remaining = limit
    iterator = cursor.iternext()
    key = None
    try:
        for key, value in iterator:
            if key > stop:
                return out, last, True
            if value[8]:
                append(decode(_joined(iterator, key, value)))
            else:
                append(decode(value[HEADER_SIZE:]))
            last = key
            remaining -= 1
            if not remaining:
                return out, last, False
    except (CorruptRecord, IndexError) as exc:
        raise damaged_record(key, exc) from None
    return out, last, True


def _joined(iterator, key, value):
    """The payload of a chunked record: its head entry's part and the
    continuation entries that follow it in ``iterator``."""
    count = value[8]
    parts = [value[HEADER_SIZE:]]
    for index in range(1, count + 1):
        entry = next(iterator, None)
        if entry is None or entry[0] != key + CHUNK_INDEX.pack(index):
            raise CorruptRecord(f"continuation {index} of {count} is missing")
        parts.append(entry[1])
    return b"".join(parts)


def damaged_record(record_key, problem):
    """A CorruptRecord for the record stored under ``record_key`` (raw bytes),
    naming its session, key and sequence number as far as they decode."""
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


def _position(cursor, start, after):
    """Put ``cursor`` on the first head entry at or after ``start``, or
    strictly after record ``after``; False if there is none."""
    if after is None:
        return cursor.set_range(start)
    if not cursor.set_range(after):
        return False
    if cursor.key() == after:
        value = cursor.value()
        if len(value) < HEADER_SIZE:
            raise damaged_record(after, "an entry shorter than the record header")
        for _ in range(value[8]):
            cursor.next()
        return cursor.next()
    return True


def scan_reverse(txn, db, start, stop, limit, *, decode=True):
    """The last ``limit`` records with ``start <= record key < stop``, in key order."""
    cursor = txn.cursor(db)
    if cursor.set_range(stop):
        if not cursor.prev():
            return []
    elif not cursor.last():
        return []
    out = []
    parts = []
    prefix_len = SESSION_ID.size
    key = None
    try:
        for key, value in cursor.iterprev():
            if key < start:
                break
            _, end = decode_key_prefix(key, start=prefix_len)
            if len(key) - end > SEQ.size:
                if len(parts) == _MAX_CONTINUATIONS:
                    raise CorruptRecord(f"more than {_MAX_CONTINUATIONS} continuation entries")
                parts.append(value)
                continue
            if value[8] != len(parts):
                raise CorruptRecord(f"{len(parts)} continuation entries follow a record that has {value[8]}")
            parts.append(value[HEADER_SIZE:])
            data = b"".join(reversed(parts)) if len(parts) > 1 else parts[0]
            parts = []
            out.append((key, decode_record(data) if decode else data))
            if len(out) >= limit:
                break
    except (CorruptRecord, IndexError) as exc:
        raise damaged_record(key, exc) from None
    out.reverse()
    return out


def arrival_of(txn, db, record_key):
    """Arrival time (µs) of the record stored under ``record_key``."""
    value = txn.get(record_key, db=db)
    if value is not None and len(value) < HEADER_SIZE:
        raise damaged_record(record_key, "an entry shorter than the record header")
    return None if value is None else _header_unpack(value)[0]


def last_arrival_us(txn, db, session_id):
    """Arrival time (µs) of the newest record of ``session_id`` in ``db``, or None."""
    found = scan_reverse(txn, db, session_prefix(session_id), after_session(session_id), 1, decode=False)
    return arrival_of(txn, db, found[0][0]) if found else None


def key_span(txn, db, session_id, key_types):
    """``(first key, last key)`` of the records of ``session_id`` in ``db``
    (None for each when it holds none)."""
    prefix, end = session_prefix(session_id), after_session(session_id)
    head = scan(txn, db, prefix, end, limit=1, decode=False)
    tail = scan_reverse(txn, db, prefix, end, 1, decode=False)
    first = last = None
    if head and head[0][0] < end:
        first = decode_key_prefix(head[0][0], key_types, start=SESSION_ID.size)[0]
    if tail:
        last = decode_key_prefix(tail[0][0], key_types, start=SESSION_ID.size)[0]
    return first, last


def key_order_problems(store, db, session_id, where):
    """Walk the records of ``session_id`` in ``db`` (short read transactions of
    ``store``); return ``(count, problems)``: how many records it holds and
    what breaks key order or dense sequence numbers (``where`` starts each)."""
    problems = []
    prefix, end = session_prefix(session_id), after_session(session_id)
    last_key = last_seq = after = None
    count = 0
    while True:
        with store.read() as txn:
            batch = scan(txn, db, prefix, None, limit=10_000, after=after, decode=False)
        batch = [item for item in batch if item[0] < end]
        if not batch:
            return count, problems
        for key, _ in batch:
            encoded_end = decode_key_prefix(key, start=SESSION_ID.size)[1]
            seq = _seq_unpack(key, encoded_end)[0]
            if last_key is not None and key[:encoded_end] < last_key:
                problems.append(f"{where}: key order broken at seq {seq}")
            if last_seq is not None and seq != last_seq + 1:
                problems.append(f"{where}: sequence jumps from {last_seq} to {seq} inside the stored records")
            last_key, last_seq = key[:encoded_end], seq
            count += 1
        after = batch[-1][0]


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


# -- deleting (retention) --------------------------------------------------------------


def delete_oldest(txn, db, time_db, session_id, doomed, limit, bytes_wanted):
    """Delete the oldest records of ``session_id`` in ``db`` inside write
    transaction ``txn``, and the time-index entries that point before the
    first record kept; return ``(records, payload bytes, entry bytes)`` deleted.

    Deletes while ``doomed(arrival_us)`` is true (None: always), at most
    ``limit`` records, and with ``bytes_wanted`` (None: no bound) until the
    deleted entries (keys, values, node headers) reach about that many bytes.
    """
    end = after_session(session_id)
    removed = size_removed = freed = 0
    cursor = txn.cursor(db)
    if not cursor.set_range(session_prefix(session_id)):
        return 0, 0, 0
    while removed < limit and (bytes_wanted is None or freed < bytes_wanted):
        key = cursor.key()
        if not key or key >= end:
            break
        value = cursor.value()
        if doomed is not None and not doomed(_header_unpack(value)[0]):
            break
        extra = value[8]
        size = len(value) - HEADER_SIZE
        freed += len(key) + len(value) + _NODE_OVERHEAD
        cursor.delete()
        for _ in range(extra):
            piece = cursor.value()
            size += len(piece)
            freed += len(cursor.key()) + len(piece) + _NODE_OVERHEAD
            cursor.delete()
        size_removed += size
        removed += 1
    first_kept = cursor.key()
    if time_db is not None:
        _prune_time_index(txn, time_db, session_id, first_kept if first_kept and first_kept < end else None)
    return removed, size_removed, freed


def _prune_time_index(txn, time_db, session_id, first_kept_key):
    prefix = session_prefix(session_id)
    cursor = txn.cursor(time_db)
    if not cursor.set_range(prefix):
        return
    while cursor.key()[:4] == prefix:
        if first_kept_key is not None and cursor.value() >= first_kept_key:
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
