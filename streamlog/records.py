"""The on-disk record layout: LMDB entries for one record, and reading them back.

A record of stream ``S`` in session ``N`` with key ``k`` and sequence number
``seq`` (0, 1, 2, ... within the session and stream) is stored in database
``r:S`` under the *record key* ``u32be(N) + encode_key(k) + u64be(seq)``.
Record keys sort in session order, then key order, then arrival order.

The head entry's value is ``u64be(arrival_us) + u8(continuations) + data``
where ``data`` starts the msgpack-encoded record; ``continuations`` more
entries, keyed ``record key + u16be(i)`` (i = 1, 2, ...), hold the rest (see
:func:`streamlog.store.chunk_plan`).

Reading checks the layout as it goes: an entry too short for its header, a
continuation that is missing or out of place, or a record that does not
decode raises :class:`~streamlog.errors.CorruptRecord` naming the session,
key and sequence number (at most 255 continuations are ever joined).
"""

from streamlog.codec import decode_record
from streamlog.errors import CorruptRecord
from streamlog.keys import decode_key_prefix
from streamlog.store import CHUNK_INDEX, HEADER, SEQ, SESSION_ID, chunk_plan

HEADER_SIZE = HEADER.size
SPLIT_ABOVE = 600
_MAX_CONTINUATIONS = 255  # the u8 in the head entry
_seq_unpack = SEQ.unpack_from
_header_pack = HEADER.pack
_header_unpack = HEADER.unpack_from


def session_prefix(session_id):
    return SESSION_ID.pack(session_id)


def after_session(session_id):
    """The smallest key greater than every key of ``session_id``."""
    return SESSION_ID.pack(session_id + 1)


def seq_of(record_key):
    """The sequence number of a head entry's key."""
    return _seq_unpack(record_key, len(record_key) - 8)[0]


def entries(record_key, arrival_us, payload, page_size):
    """The ``(key, value)`` entries that store one record, in key order."""
    size = HEADER_SIZE + len(payload)
    if size <= SPLIT_ABOVE:
        return [(record_key, _header_pack(arrival_us, 0) + payload)]
    head, piece = chunk_plan(size, len(record_key), page_size)
    if head >= size:
        return [(record_key, _header_pack(arrival_us, 0) + payload)]
    first = head - HEADER_SIZE
    rest = len(payload) - first
    count = -(-rest // piece)
    result = [(record_key, _header_pack(arrival_us, count) + payload[:first])]
    for i in range(count):
        start = first + i * piece
        result.append((record_key + CHUNK_INDEX.pack(i + 1), payload[start:start + piece]))
    return result


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
