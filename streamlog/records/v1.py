"""Format version 1 (read only): one LMDB entry per record.

The head entry of a record is stored under its record key (see
:mod:`streamlog.records.common`); its value is ``u64be(arrival_us) +
u8(continuations) + data`` where ``data`` starts the encoded record and
``continuations`` more entries hold the rest.  Logs of this version are read
as they are; ``streamlog upgrade`` rewrites them in version 2.

Reading checks the layout as it goes: an entry too short for its header, a
continuation that is missing or out of place, or a record that does not
decode raises :class:`~streamlog.errors.CorruptRecord` naming the session,
key and sequence number (at most 255 continuations are ever joined).
"""

import struct

import numpy as np

from streamlog.codec import decode_record
from streamlog.errors import CorruptRecord
from streamlog.keys import decode_key_prefix
from streamlog.records.common import (CHUNK_INDEX, MAX_CONTINUATIONS, SEQ, SESSION_ID, SPLIT_ABOVE, after_session,
                                      chunk_plan, damaged_record, joined, key_of, seq_of, session_prefix)

VERSION = 1
HEADER = struct.Struct(">QB")
HEADER_SIZE = HEADER.size
_header_pack = HEADER.pack
_header_unpack = HEADER.unpack_from
_seq_unpack = SEQ.unpack_from


def entries(record_key, arrival_us, payload, page_size):
    """The ``(key, value)`` entries the format-1 writer stored for one record,
    in key order (the tests build damaged format-1 logs with it)."""
    size = HEADER_SIZE + len(payload)
    head, piece = chunk_plan(size, len(record_key), page_size) if size > SPLIT_ABOVE else (size, size)
    if head >= size:
        return [(record_key, _header_pack(arrival_us, 0) + payload)]
    first = head - HEADER_SIZE
    count = -(-(len(payload) - first) // piece)
    out = [(record_key, _header_pack(arrival_us, count) + payload[:first])]
    for i in range(count):
        start = first + i * piece
        out.append((record_key + CHUNK_INDEX.pack(i + 1), payload[start:start + piece]))
    return out


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
            data = joined(iterator, key, value, value[8], HEADER_SIZE) if value[8] else value[HEADER_SIZE:]
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


def scan_columns(txn, db, start, stop, limit, after=None, key_types=None):
    """The records of :func:`scan` as :func:`streamlog.records.v2.scan_columns`
    gives them: ``(columns, last record key, exhausted)``, ``columns`` one
    ``(keys, arrivals, records)`` for all of them (format 1 has no blocks)."""
    found = scan(txn, db, start, stop, limit=limit, after=after, with_time=True)
    if not found:
        return [], None, True
    keys = [key_of(record_key, key_types) for record_key, _, _ in found]
    arrivals = np.fromiter((arrival for _, arrival, _ in found), dtype=np.int64, count=len(found))
    return [(keys, arrivals, [record for _, _, record in found])], found[-1][0], len(found) < limit


class Run:
    """Records of format 1 read in one scan, offering the record accessors of
    a format-2 :class:`~streamlog.records.v2.Block` (``n``, ``keys``,
    ``arrivals``, ``records``, ``entries``, ``encodings``, ``encoded_keys``; format 1
    has no blocks and no byte columns, so the last two give None)."""

    __slots__ = ("n", "_found")

    def __init__(self, found):
        self._found = found
        self.n = len(found)

    def keys(self, lo, hi, key_types=None):
        """The decoded keys of records ``lo .. hi - 1``."""
        return [key_of(record_key, key_types) for record_key, _, _ in self._found[lo:hi]]

    def arrivals(self, lo, hi):
        """The arrival times (µs) of records ``lo .. hi - 1``: a numpy int64 array."""
        return np.fromiter((arrival for _, arrival, _ in self._found[lo:hi]), dtype=np.int64, count=hi - lo)

    def records(self, lo, hi):
        """The decoded records ``lo .. hi - 1``."""
        return [record for _, _, record in self._found[lo:hi]]

    def entries(self, lo, hi, make, key_types=None):
        """``make(key, arrival_us, record, seq)`` of records ``lo .. hi - 1``, as ``v2.Block.entries``."""
        return [make(key_of(record_key, key_types), arrival, record, seq_of(record_key))
                for record_key, arrival, record in self._found[lo:hi]]

    def encodings(self, lo, hi):
        """None: a run keeps no column of encodings (see ``v2.Block.encodings``)."""
        return None

    def encoded_keys(self, lo, hi):
        """None: a run keeps no column of encoded keys (see ``v2.Block.encoded_keys``)."""
        return None


def scan_blocks(txn, db, start, stop, limit, after=None):
    """The records of :func:`scan` as :func:`streamlog.records.v2.scan_blocks`
    gives them: ``(parts, last record key, exhausted)``, ``parts`` one
    ``(run, 0, n)`` for all of them, ``run`` a :class:`Run`."""
    found = scan(txn, db, start, stop, limit=limit, after=after, with_time=True)
    if not found:
        return [], None, True
    return [(Run(found), 0, len(found))], found[-1][0], len(found) < limit


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
                if len(parts) == MAX_CONTINUATIONS:
                    raise CorruptRecord(f"more than {MAX_CONTINUATIONS} continuation entries")
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
