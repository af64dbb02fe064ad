"""Format version 2: records stored in checksummed blocks.

A *block* holds consecutive records ``first_seq .. first_seq + n - 1`` of one
stream of one session (written in one group commit; at most
:data:`BLOCK_RECORDS` records and about :data:`BLOCK_BYTES` of payload, or
:data:`LARGE_BLOCK_BYTES` for records above 1 KiB).  Its
LMDB key is the record key of its *last* record, so ``set_range(k)`` on any
record key ``k`` lands on the block holding ``k`` or, if there is none, on the
block holding the next record.  The head entry's value is ``u8(continuations)``
and the first part of the block; a block too big to pack well is split over
continuation entries (see :mod:`streamlog.records.common`).  The block, once
joined (all integers little-endian unless noted)::

    u32  crc32 (zlib's, computed by streamlog._crc) of every byte after it
    u8   flags: bit 0 = every record has the plain codec layout
    u32  n, the number of records (1 .. BLOCK_RECORDS)
    u32  session id
    u64  first_seq
    u64  first_arrival_us
    u32  keys_len
    u32  key_end[n]       record i's encoded key is keys[key_end[i-1]:key_end[i]]
    u32  arrival_delta[n] record i arrived at first_arrival_us + arrival_delta[i]
    u32  record_end[n]    record i's encoding is records[record_end[i-1]:record_end[i]]
    keys_len bytes        keys: the encoded keys back to back
    [plain: 0xDD u32be(n)] a msgpack array header, so the records decode in one call
    records               the encoded records back to back

(``key_end[-1]`` and ``record_end[-1]`` are 0.)  One record is found by
bisecting the key column and decoded alone; a range of them is decoded in
one ``msgpack.unpackb`` when the block is plain.  A block whose checksum or
structure is wrong raises CorruptRecord naming the session and the key range
it held (a crafted block with a valid checksum can at worst decode to wrong
records or raise CorruptRecord: every slice stays inside the block).
"""

import os
import struct
import sys
import threading
from array import array
from concurrent.futures import ThreadPoolExecutor, wait
from bisect import bisect_left, bisect_right
from itertools import accumulate, chain
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from streamlog.codec import GENERAL_FIRST_BYTE, decode_plain_records, decode_record, plain_array_header
from streamlog.errors import CorruptRecord
from streamlog.keys import decode_key_prefix, small_ints
from streamlog.records import common
from streamlog.records.common import (CHUNK_INDEX, MAX_CONTINUATIONS, NODE_OVERHEAD, SEQ, SESSION_ID, SPLIT_ABOVE,
                                      after_session, chunk_plan, entry_parts, joined, prune_time_index,
                                      session_prefix, time_key)

try:
    from streamlog._crc import crc32, crc32_copy
except ImportError as exc:  # a source tree used through PYTHONPATH, never built
    raise ImportError("streamlog._crc, the blocks' checksum in C, is not built: `pip install .` (or -e .) builds it; "
                      "in a source tree used through PYTHONPATH run `python tools/build_ext.py`") from exc
try:
    from streamlog._scan import entries as _entries, layouts as _layouts, record_keys as _record_keys
except ImportError as exc:  # a source tree used through PYTHONPATH, never built
    raise ImportError("streamlog._scan, the C of reading record blocks, is not built: `pip install .` (or -e .) "
                      "builds it; in a source tree used through PYTHONPATH run `python tools/build_ext.py`") from exc
VERSION = 2
BLOCK_BYTES = 32 << 10
"""A block is closed once its records' encodings reach this many bytes, if
it holds at least :data:`FEW_RECORDS` by then."""
FEW_RECORDS = 32
LARGE_BLOCK_BYTES = 128 << 10
"""A block of records too large for FEW_RECORDS of them to fit in
BLOCK_BYTES (records above 1 KiB, such as audio buffers) is closed after
FEW_RECORDS records or once their encodings reach this many bytes: fewer
blocks, so less Python work and fewer puts per record in the committer."""
BLOCK_RECORDS = 1024
"""At most this many records per block (retention removes whole blocks, in
steps of at most 2,000 records)."""
_HEAD = struct.Struct("<IBIIQQI")
_HEAD_SIZE = _HEAD.size
_PLAIN = 1
_PLAIN_HEADER = len(plain_array_header(0))
_MAX_DELTA = 0xFFFFFFFF
_PAGE_HEADER = 16
_seq_pack = SEQ.pack
_u32 = struct.Struct("<I").unpack_from
_first_byte = itemgetter(0)
_GENERAL_FIRST_BYTE = GENERAL_FIRST_BYTE
_BIG_ENDIAN = sys.byteorder == "big"
_NUMPY_KEYS = 64  # from this many keys on, Block.keys tries decoding them with numpy
CHUNK_BLOCKS = 64
""":func:`scan_chunk` reads at most this many blocks at once."""
_CHECK_THREADS = max(1, min(4, os.cpu_count() or 1))  # threads checking a chunk's checksums
_CHECK_INLINE = 256 << 10  # chunks of fewer bytes are checked in the calling thread
assert array("I").itemsize == 4


# -- writing ---------------------------------------------------------------------


def encode_commit(prefix, first_seq, encoded_keys, payloads, arrivals, page_size):
    """The LMDB entries (key order) of records ``first_seq, first_seq + 1,
    ...`` of the session of ``prefix`` with these encoded keys, payloads and
    arrival times (µs, not decreasing): as many blocks as their size needs.

    An iterator (iterate it once, inside the write transaction) that builds
    each block when its first entry is taken: the values are memoryviews of
    one buffer per block (each payload is copied once, into its block),
    which LMDB copies in at the put, so under ``putmulti`` only one block's
    buffer is alive at a time and the next block reuses its memory while it
    is still in the cache (a whole commit's worth of fresh buffers cost the
    committer twice the time)."""
    n = len(payloads)
    ends = list(accumulate(map(len, payloads)))
    bounds = []
    start = 0
    while start < n:
        stop = _block_end(ends, start, arrivals)
        bounds.append((start, stop))
        start = stop
    # the three u32 columns of every block at once: each record's value relative to its block's first record
    starts = np.fromiter((b[0] for b in bounds), np.int64, len(bounds))
    lengths = np.fromiter((b[1] - b[0] for b in bounds), np.int64, len(bounds))
    record_ends = np.array(ends, dtype=np.int64)
    key_ends = np.cumsum(np.fromiter(map(len, encoded_keys), np.int64, n))
    times = np.array(arrivals, dtype=np.int64)
    key_column = _relative(key_ends, starts, lengths, True)
    delta_column = _relative(times, starts, lengths, False)
    record_column = _relative(record_ends, starts, lengths, True)
    keys_blob = b"".join(encoded_keys)
    first_bytes = bytes(map(_first_byte, payloads))
    session_id = common.session_of(prefix)
    key_base = 0
    for start, stop in bounds:
        count = stop - start
        key_stop = int(key_ends[stop - 1])
        plain = _GENERAL_FIRST_BYTE not in first_bytes[start:stop]
        parts = [
            _HEAD.pack(0, _PLAIN if plain else 0, count, session_id, first_seq + start, arrivals[start],
                       key_stop - key_base)[4:],
            key_column[4 * start:4 * stop],
            delta_column[4 * start:4 * stop],
            record_column[4 * start:4 * stop],
            keys_blob[key_base:key_stop],
            plain_array_header(count) if plain else b"",
        ]
        parts += payloads[start:stop]
        key = prefix + encoded_keys[stop - 1] + _seq_pack(first_seq + stop - 1)
        yield from _block_entries(key, parts, page_size)
        key_base = key_stop


def _relative(column, starts, lengths, cumulative):
    """The little-endian u32 bytes of ``column`` (one value per record) less,
    for each record, the value of its block's first record (``cumulative``:
    the value before it, 0 for the first record of all)."""
    if cumulative:
        base = np.concatenate((np.zeros(1, np.int64), column[:-1]))[starts]
    else:
        base = column[starts]
    return (column - np.repeat(base, lengths)).astype("<u4").tobytes()


def _block_end(ends, start, arrivals):
    """Where the block starting at record ``start`` ends (exclusive): after
    BLOCK_RECORDS records, after the record that reaches BLOCK_BYTES (for
    records that reach it in fewer than FEW_RECORDS: after FEW_RECORDS
    records or the record that reaches LARGE_BLOCK_BYTES), or before one
    whose arrival is too far from the first's for its delta."""
    base = ends[start - 1] if start else 0
    stop = bisect_left(ends, base + BLOCK_BYTES, start) + 1
    if stop - start < FEW_RECORDS:
        stop = min(start + FEW_RECORDS, bisect_left(ends, base + LARGE_BLOCK_BYTES, start) + 1)
    stop = min(stop, start + BLOCK_RECORDS, len(ends))
    if arrivals[stop - 1] - arrivals[start] > _MAX_DELTA:
        stop = bisect_right(arrivals, arrivals[start] + _MAX_DELTA, start, stop)
    return stop


def _block_entries(key, parts, page_size):
    """The entries of the block stored under ``key`` whose bytes after the
    checksum are ``parts``: one buffer (count byte, checksum, parts) and
    views of it for the head entry and each continuation."""
    size = 4 + sum(map(len, parts))
    head, piece = _split_plan(size + 1, len(key), page_size)
    continuations = 0 if head >= size + 1 else -(-(size + 1 - head) // piece)
    data = bytearray().join([bytes((continuations, 0, 0, 0, 0))] + parts)
    view = memoryview(data)
    view[1:5] = crc32(view[5:]).to_bytes(4, "little")
    if not continuations:
        return [(key, view)]
    out = [(key, view[:head])]
    for i in range(continuations):
        at = head + i * piece
        out.append((key + CHUNK_INDEX.pack(i + 1), view[at:at + piece]))
    return out


def _split_plan(value_len, key_len, page_size):
    """``(head, piece)`` for an entry of ``value_len`` bytes: small ones as
    :func:`~streamlog.records.common.chunk_plan` says, big ones as whole
    overflow pages and inline pieces for the rest."""
    if value_len <= SPLIT_ABOVE:
        return value_len, value_len
    if value_len < 2 * page_size:
        return chunk_plan(value_len, key_len, page_size)
    pages = (value_len + _PAGE_HEADER) // page_size
    head = pages * page_size - _PAGE_HEADER
    rest = value_len - head
    if rest == 0:
        return value_len, value_len
    inline = (page_size - _PAGE_HEADER) // 2 - 16 - key_len
    pieces = -(-rest // inline)
    return head, -(-rest // pieces)


def append_commit(txn, db, time_db, session_id, entries, first_key, first_arrival_us):
    """Write ``entries`` (from :func:`encode_commit`, in key order; a list
    or an iterator) and the time-index entry of their first record
    ``first_key``, inside write transaction ``txn``."""
    entries = iter(entries)
    first = next(entries)
    cursor = txn.cursor(db)
    append = not cursor.last() or cursor.key() < first[0]
    cursor.putmulti(chain((first,), entries), append=append)
    txn.put(time_key(session_id, first_arrival_us), first_key, db=time_db, overwrite=False)


# -- blocks ------------------------------------------------------------------------


class Block:
    """A block read back and checked: ``key`` (its LMDB key, the record key
    of its last record), ``n``, ``first_seq``; records are indexed 0 .. n-1."""

    __slots__ = ("key", "data", "n", "first_seq", "first_arrival", "plain", "key_end", "delta", "record_end",
                 "keys_at", "records_at", "prefix")

    def __init__(self, key, data):
        self.key = key
        self.data = data
        if len(data) < _HEAD_SIZE:
            raise CorruptRecord("a block shorter than its header")
        crc, flags, n, session, first_seq, first_arrival, keys_len = _HEAD.unpack_from(data)
        if crc32(memoryview(data)[4:]) != crc:
            raise CorruptRecord("its checksum does not match")
        columns = _HEAD_SIZE + 12 * n
        _check_header(n, flags, len(data), columns + keys_len)
        view = memoryview(data)
        self.key_end = _column(view, _HEAD_SIZE, n)
        self.delta = _column(view, _HEAD_SIZE + 4 * n, n)
        self.record_end = _column(view, _HEAD_SIZE + 8 * n, n)
        self.keys_at = columns
        self.plain = bool(flags & _PLAIN)
        self.records_at = columns + keys_len + (_PLAIN_HEADER if self.plain else 0)
        _check_columns(self.key_end[n - 1] == keys_len and self.records_at + self.record_end[n - 1] == len(data))
        self.n = n
        self.first_seq = first_seq
        self.first_arrival = first_arrival
        self.prefix = session_prefix(session)
        if self.record_key(n - 1) != key:
            raise CorruptRecord("its entry's key is not the key of its last record")

    def encoded_key(self, i):
        ends = self.key_end
        start = self.keys_at + (ends[i - 1] if i else 0)
        return self.data[start:self.keys_at + ends[i]]

    def record_key(self, i):
        return self.prefix + self.encoded_key(i) + _seq_pack(self.first_seq + i)

    def record_keys(self, lo, hi):
        """The record keys of records ``lo .. hi - 1`` (a list of bytes; built in C)."""
        return _record_keys(self.data, self.prefix, lo, hi)

    def arrival(self, i):
        return self.first_arrival + self.delta[i]

    def keys(self, lo, hi, key_types=None):
        """The decoded keys of records ``lo .. hi - 1`` (as ``key_types`` says, see ``records.key_of``)."""
        if key_types != "float" and hi - lo >= _NUMPY_KEYS:
            small = self._small_int_keys(lo, hi)
            if small is not None:
                return small
        data, at, ends = self.data, self.keys_at, self.key_end
        start = at + (ends[lo - 1] if lo else 0)
        out = []
        append = out.append
        try:
            for i in range(lo, hi):
                append(decode_key_prefix(data, key_types, start)[0])
                start = at + ends[i]
        except CorruptRecord as exc:
            raise CorruptRecord(f"the key of seq {self.first_seq + i} does not decode ({exc})") from None
        return out

    def _small_int_keys(self, lo, hi):
        """The keys ``lo .. hi - 1`` as a list of ints when every one is an
        integer ``0 <= key < 2**56`` (decoded with numpy), else None."""
        values = self.small_int_keys(lo, hi)
        return None if values is None else values.tolist()

    def small_int_keys(self, lo, hi):
        """The keys ``lo .. hi - 1`` as a numpy int64 array when every one is
        an integer ``0 <= key < 2**56`` (decoded with numpy), else None."""
        return small_ints(*self.encoded_keys(lo, hi))

    def arrivals(self, lo, hi):
        """The arrival times (µs) of records ``lo .. hi - 1``: a numpy int64 array."""
        return np.asarray(self.delta[lo:hi], dtype=np.int64) + self.first_arrival

    def payload_bytes(self):
        return self.record_end[self.n - 1]

    def encodings(self, lo, hi):
        """``(buffer, ends)``: the encodings of records ``lo .. hi - 1`` back
        to back (a memoryview of the block) and where each ends in it (a
        numpy int64 array), for decoders that take many records at once."""
        return self._run(self.record_end, self.records_at, lo, hi)

    def encoded_keys(self, lo, hi):
        """``(buffer, ends)`` as :meth:`encodings`, of the encoded keys."""
        return self._run(self.key_end, self.keys_at, lo, hi)

    def _run(self, column, at, lo, hi):
        ends = np.frombuffer(column, dtype=np.uint32)[max(lo - 1, 0):hi].astype(np.int64)
        first = 0
        if lo:
            first = int(ends[0])
            ends = ends[1:] - first
        return memoryview(self.data)[at + first:at + first + int(ends[-1])], ends

    def bisect(self, record_key, strict):
        """The index of the first record whose key is ``>= record_key``
        (``> record_key`` if ``strict``); ``n`` if there is none."""
        last = self.key
        if last < record_key or (strict and last == record_key):
            return self.n
        first = self.record_key(0)
        if first > record_key or (not strict and first == record_key):
            return 0
        lo, hi = 1, self.n - 1  # record 0 does not qualify; record n - 1 (the block's key) does
        while lo < hi:
            mid = (lo + hi) // 2
            key = self.record_key(mid)
            if key < record_key or (strict and key == record_key):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def records(self, lo, hi):
        """The decoded records ``lo .. hi - 1`` (``[]`` when ``hi <= lo``)."""
        if hi <= lo:
            return []
        at, ends, data = self.records_at, self.record_end, self.data
        start = at + (ends[lo - 1] if lo else 0)
        stop = at + ends[hi - 1]
        if self.plain:
            if lo == 0 and hi == self.n:
                return decode_plain_records(memoryview(data)[at - _PLAIN_HEADER:], hi - lo)
            return decode_plain_records(plain_array_header(hi - lo) + data[start:stop], hi - lo)
        out = []
        for i in range(lo, hi):
            end = at + ends[i]
            out.append(decode_record(data[start:end]))
            start = end
        return out

    def entries(self, lo, hi, make, key_types=None):
        """``make(key, arrival_us, record, seq)`` of records ``lo .. hi - 1``
        (a list; ``make`` a tuple subclass of four fields), keys decoded as
        ``key_types`` says (see ``records.key_of``): in C when every key is
        a non-negative int of at most 8 bytes, else in Python.  A record
        that does not decode raises CorruptRecord."""
        records = self.records(lo, hi)
        if key_types != "float":
            found = _entries(make, self.data, lo, hi, records)
            if found is not None:
                return found
        return list(map(make, self.keys(lo, hi, key_types), self.arrivals(lo, hi).tolist(), records,
                        range(self.first_seq + lo, self.first_seq + hi)))

    def payloads(self, lo, hi):
        """The encoded records ``lo .. hi - 1``, undecoded."""
        at, ends, data = self.records_at, self.record_end, self.data
        start = at + (ends[lo - 1] if lo else 0)
        out = []
        for i in range(lo, hi):
            end = at + ends[i]
            out.append(data[start:end])
            start = end
        return out

    def check_keys(self):
        """CorruptRecord unless the block's keys are non-decreasing and each decodes."""
        previous = b""
        for i in range(self.n):
            encoded = self.encoded_key(i)
            if encoded < previous:
                raise CorruptRecord(f"key order broken at seq {self.first_seq + i}")
            if decode_key_prefix(encoded)[1] != len(encoded):
                raise CorruptRecord(f"the key of seq {self.first_seq + i} has bytes after its end")
            previous = encoded


def _check_header(n, flags, size, needed):
    """CorruptRecord unless a header saying ``n`` records and ``flags`` fits a
    block of ``size`` bytes whose columns and keys take ``needed``."""
    if not 1 <= n <= BLOCK_RECORDS or size < needed or flags & ~_PLAIN:
        raise CorruptRecord(f"a block header that does not fit the block ({n} records)")


def _check_columns(fit):
    if not fit:
        raise CorruptRecord("a block whose columns do not match its contents")


def _column(view, at, n):
    column = view[at:at + 4 * n].cast("I")
    if _BIG_ENDIAN:
        column = array("I", column)
        column.byteswap()
    return column


def damaged_block(key, problem, previous_key=None):
    """A CorruptRecord for the block stored under ``key``: names its session
    and the key range it held (after ``previous_key``, the block before it,
    when known)."""
    if isinstance(problem, IndexError):
        problem = "an entry shorter than its header"
    exc = common.damaged_record(key, problem)
    session, last = exc.session, exc.key
    if session is None or isinstance(last, bytes):
        where = "a block" if session is None else f"a block of session {session}"
        return CorruptRecord(f"{where} under the key {bytes(key or b'')!r} is damaged: {problem}", session=session)
    first = ""
    if previous_key is not None and previous_key[:SESSION_ID.size] == key[:SESSION_ID.size]:
        try:
            first = f"after key {decode_key_prefix(previous_key, start=SESSION_ID.size)[0]!r} "
        except (CorruptRecord, IndexError, ValueError):
            first = ""
    return CorruptRecord(f"the block of session {session} holding the records {first}up to key {last!r} "
                         f"(seq {common.seq_of(key)}) is damaged: {problem}", session=session, key=last)


def _blocks(cursor, iterator):
    """The blocks from the cursor's entry on (a head entry), in key order."""
    key = previous = None
    try:
        for key, value in iterator:
            count = value[0]
            data = joined(iterator, key, value, count, 1) if count else value[1:]
            yield Block(key, data)
            previous = key
    except (CorruptRecord, IndexError) as exc:
        raise damaged_block(key, exc, previous) from None


def _block_at(txn, db, key):
    cursor = txn.cursor(db)
    if not cursor.set_key(key):
        raise damaged_block(key, "its entry vanished")
    return next(_blocks(cursor, cursor.iternext()))


# -- reading -------------------------------------------------------------------------


def _forward(txn, db, start, stop, limit, after, take):
    """Call ``take(block, lo, hi)`` for the records of each block with
    ``start <= record key <= stop`` (strictly after ``after`` instead of from
    ``start`` when given), at most ``limit`` records in all (None: no limit).
    Returns ``(last record key taken, exhausted)``."""
    cursor = txn.cursor(db)
    lower = start if after is None else after
    if not cursor.set_range(lower):
        return None, True
    remaining = limit
    last = None
    first = True
    for block in _blocks(cursor, cursor.iternext()):
        lo = block.bisect(lower, after is not None) if first else 0
        first = False
        beyond = stop is not None and block.key > stop
        hi = block.bisect(stop, True) if beyond else block.n
        if remaining is not None and hi - lo >= remaining:
            hi = lo + remaining
            if hi > lo:
                take(block, lo, hi)
                last = block.record_key(hi - 1)
            return last, False
        if hi > lo:
            take(block, lo, hi)
            last = block.key if hi == block.n else block.record_key(hi - 1)
            if remaining is not None:
                remaining -= hi - lo
        if beyond:
            return last, True
    return last, True


def scan(txn, db, start, stop, *, limit=None, after=None, decode=True, with_time=False):
    """Records with ``start <= record key <= stop`` (``stop`` None: to the end
    of the database), strictly after record key ``after`` if given, in key
    order, at most ``limit``: ``(record_key, record)`` each, or ``(record_key,
    arrival_us, record)`` with ``with_time``; ``decode=False`` gives the
    encoded records."""
    out = []

    def take(block, lo, hi):
        keys = block.record_keys(lo, hi)
        values = block.records(lo, hi) if decode else block.payloads(lo, hi)
        if with_time:
            out.extend(zip(keys, map(block.arrival, range(lo, hi)), values))
        else:
            out.extend(zip(keys, values))

    _forward(txn, db, start, stop, limit, after, take)
    return out


def scan_columns(txn, db, start, stop, limit, after=None, key_types=None):
    """The records of :func:`scan` (``start <= record key <= stop``, strictly
    after ``after`` if given, at most ``limit``) block by block: ``(columns,
    last record key, exhausted)`` where ``columns`` holds one ``(keys,
    arrivals, records)`` per block touched (decoded keys as a list, arrival
    µs as a numpy int64 array, decoded records as a list) and ``exhausted``
    whether the range ended."""
    out = []

    def take(block, lo, hi):
        out.append((block.keys(lo, hi, key_types), block.arrivals(lo, hi), block.records(lo, hi)))

    last, exhausted = _forward(txn, db, start, stop, limit, after, take)
    return out, last, exhausted


def scan_blocks(txn, db, start, stop, limit, after=None):
    """The records of :func:`scan` (``start <= record key <= stop``, strictly
    after ``after`` if given, at most ``limit``) as the blocks holding them,
    undecoded: ``(parts, last record key, exhausted)`` where ``parts`` holds
    one ``(block, lo, hi)`` per block touched (its records ``lo .. hi - 1``)
    and ``exhausted`` whether the range ended.  The blocks hold their own
    bytes (read transactions copy values: no ``buffers=True``), so they may
    be used after ``txn`` ends."""
    out = []
    last, exhausted = _forward(txn, db, start, stop, limit, after, lambda block, lo, hi: out.append((block, lo, hi)))
    return out, last, exhausted


class Chunk(NamedTuple):
    """Consecutive records of one stream taken from many blocks at once (see
    :func:`scan_chunk`), column by column: ``count`` records, their encoded
    keys and their encodings as ``(buffer, ends)`` pairs (as
    :meth:`Block.encoded_keys` and :meth:`Block.encodings` give them, for
    all of them at once) and their arrival times (µs, numpy int64)."""

    count: int
    keys: tuple
    arrivals: np.ndarray
    records: tuple

    def part(self, lo, hi):
        """The chunk of records ``lo .. hi - 1`` of this one."""
        return Chunk(hi - lo, _run_part(self.keys, lo, hi), self.arrivals[lo:hi], _run_part(self.records, lo, hi))


def _run_part(run, lo, hi):
    buffer, ends = run
    first = int(ends[lo - 1]) if lo else 0
    return memoryview(buffer)[first:int(ends[hi - 1])], ends[lo:hi] - first


class _Taken:
    """Views of the columns and bytes of the records taken from blocks, in
    order (of the memory map: valid inside the transaction), and the
    checksums still to check; :func:`_chunk` copies them into a Chunk that
    owns its bytes, checking those checksums on the way."""

    def __init__(self):
        self.blocks = []  # per block: (records, first arrival, first key's and record's offset, their sizes)
        self.key_ends, self.deltas, self.record_ends, self.key_views = [], [], [], []
        self.record_views = []  # per block: the views holding its records' bytes, in order
        self.checks = []  # per block: (its checksum, its bytes after the checksum before its records), or None

    def add(self, segments, columns, n, first_arrival, records_at, lo, hi):
        """Records ``lo .. hi - 1`` of the block whose bytes are ``segments``
        (its header, columns and keys all in the first one; checked already)."""
        head = segments[0]
        records_column = _HEAD_SIZE + 8 * n
        key_from = _u32(head, _HEAD_SIZE + 4 * (lo - 1))[0] if lo else 0
        key_to = _u32(head, _HEAD_SIZE + 4 * (hi - 1))[0]
        record_from = _u32(head, records_column + 4 * (lo - 1))[0] if lo else 0
        record_to = _u32(head, records_column + 4 * (hi - 1))[0]
        self._columns(head, n, lo, hi, (hi - lo, first_arrival, key_from, record_from, key_to - key_from,
                                        record_to - record_from))
        self.key_views.append(head[columns + key_from:columns + key_to])
        self.record_views.append(_pieces(segments, records_at + record_from, records_at + record_to))
        self.checks.append(None)

    def add_whole(self, segments, columns, n, first_arrival, keys_len, records_at, size, crc):
        """All records of the block whose bytes are ``segments`` (``size``
        in all; its header, columns and keys all in the first one), whose
        checksum ``crc`` is still to check."""
        head = segments[0]
        self._columns(head, n, 0, n, (n, first_arrival, 0, 0, keys_len, size - records_at))
        self.key_views.append(head[columns:columns + keys_len])
        self.record_views.append([head[records_at:], *segments[1:]])
        self.checks.append((crc, head[4:records_at]))

    def _columns(self, head, n, lo, hi, block):
        self.blocks.append(block)
        self.key_ends.append(head[_HEAD_SIZE + 4 * lo:_HEAD_SIZE + 4 * hi])
        self.deltas.append(head[_HEAD_SIZE + 4 * (n + lo):_HEAD_SIZE + 4 * (n + hi)])
        self.record_ends.append(head[_HEAD_SIZE + 4 * (2 * n + lo):_HEAD_SIZE + 4 * (2 * n + hi)])


def _starts(sizes):
    """Where each of pieces of these sizes (numpy int64) begins when they lie back to back (int64)."""
    starts = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    return starts


def _chunk(takens):
    """``(the Chunk of the records of takens, in order, None)``, or ``(None,
    the index of the first block, counted across takens, whose checksum does
    not match)``.  Each column's bytes are joined (copied once, out of the
    memory map); the records' bytes are copied into one buffer while the
    checksums are checked (:func:`_copy_checked`, in one pass)."""
    def joined(name):
        return [item for taken in takens for item in getattr(taken, name)]

    counts, firsts, key_from, record_from, key_sizes, record_sizes = (
        np.array(column, dtype=np.int64) for column in zip(*joined("blocks")))
    starts = _starts(record_sizes)
    records = np.empty(int(record_sizes.sum()), dtype=np.uint8)
    bad = _copy_all(records, list(zip(starts.tolist(), joined("record_views"), joined("checks"))))
    if bad is not None:
        return None, bad

    def column(name, bases):
        values = np.frombuffer(b"".join(joined(name)), "<u4").astype(np.int64)
        values += np.repeat(bases, counts)
        return values

    key_starts = _starts(key_sizes)
    keys = b"".join(joined("key_views")), column("key_ends", key_starts - key_from)
    return Chunk(int(counts.sum()), keys, column("deltas", firsts),
                 (memoryview(records), column("record_ends", starts - record_from))), None


def _pieces(segments, start, stop):
    """Views of bytes ``start .. stop - 1`` of the block made of ``segments``."""
    out = []
    for segment in segments:
        size = len(segment)
        if stop <= 0:
            break
        if start < size:
            out.append(segment[max(start, 0):min(stop, size)])
        start -= size
        stop -= size
    return out


def _crc(segments):
    """The crc32 of a block's bytes after its checksum, its pieces unjoined."""
    crc = crc32(segments[0][4:])
    for segment in segments[1:]:
        crc = crc32(segment, crc)
    return crc


def _copy_checked(records, jobs):
    """For each job ``(offset, views, check)``: copy the views' bytes into
    ``records`` from ``offset`` on and, unless ``check`` is None, check the
    block's checksum ``check = (crc, its bytes before the views)`` over them
    in the same pass.  The index of the first job whose checksum does not
    match, or None."""
    for i, (at, views, check) in enumerate(jobs):
        crc = crc32(check[1]) if check is not None else 0
        for view in views:
            crc = crc32_copy(records, at, view, crc)
            at += len(view)
        if check is not None and crc != check[0]:
            return i
    return None


_pool = None
_pool_lock = threading.Lock()


def _checkers():
    """The threads that copy and check chunks' blocks (crc32_copy releases the GIL), made on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_CHECK_THREADS, thread_name_prefix="streamlog-check")
        return _pool


def _forget_checkers():
    """In a forked child: the parent's threads did not come along, so new ones are made on first use."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_checkers)


def _copy_all(records, jobs):
    """:func:`_copy_checked` of ``jobs``, in parallel threads when they are
    big (waiting for every thread): the index of the first job whose
    checksum does not match, or None."""
    if len(records) < _CHECK_INLINE or _CHECK_THREADS == 1 or len(jobs) < 2:
        return _copy_checked(records, jobs)
    step = -(-len(jobs) // _CHECK_THREADS)
    futures = [_checkers().submit(_copy_checked, records, jobs[at:at + step]) for at in range(0, len(jobs), step)]
    try:
        results = [future.result() for future in futures]
    finally:  # the threads read the transaction's memory: it may end only after them
        wait(futures)
    for part, bad in enumerate(results):
        if bad is not None:
            return part * step + bad
    return None


def _take_whole(blocks):
    """The records of ``blocks`` (``(key, segments)`` each, whole blocks not
    yet checked) taken, their structure checked (by streamlog._scan.layouts):
    ``(a _Taken, None)``, or ``(a _Taken of the blocks before it, (index,
    problem))`` for the first block whose structure is wrong, the problem
    being its checksum if that does not match (checked then only)."""
    taken = _Taken()
    found, bad = _layouts(blocks)
    for (key, segments), layout in zip(blocks, found):
        if len(segments[0]) < layout[4]:  # the header, columns and keys are to be in the first piece
            segments = [b"".join(segments)]
        taken.add_whole(segments, *layout)
    if bad is None:
        return taken, None
    index, problem, crc = bad
    if crc is not None and _crc(blocks[index][1]) != crc:
        problem = "its checksum does not match"
    return taken, (index, problem)


def _checked_chunk(whole, first, last_part):
    """The records of ``first`` and ``last_part`` (:class:`_Taken` s of
    blocks checked already) around those of the whole blocks ``whole``
    (``(key, segments)`` each), checked: ``(their Chunk, None)``, or
    ``(None, (index in whole, problem))`` for the first damaged whole block
    in key order (its structure or its checksum)."""
    taken, bad = _take_whole(whole)
    chunk, failed = _chunk([first, taken, last_part]) if first.blocks or taken.blocks or last_part.blocks else (
        None, None)
    if failed is not None:
        return None, (failed - len(first.blocks), "its checksum does not match")
    return (chunk, None) if bad is None else (None, bad)


def scan_chunk(txn, db, start, stop, limit, after=None):
    """The records of :func:`scan` (``start <= record key <= stop``, strictly
    after ``after`` if given) of at most :data:`CHUNK_BLOCKS` blocks, ending
    with the first block that brings them to ``limit`` or more:
    ``(chunk, last record key, exhausted)``, ``chunk`` a :class:`Chunk`
    (None if there are no such records) and ``exhausted`` whether the range
    ended.  Every byte is copied once, out of the memory map (``txn`` may
    be a ``buffers=True`` transaction: nothing returned refers to its
    memory); the blocks' checksums are checked as their records are copied,
    in parallel threads; a damaged block raises CorruptRecord as :func:`scan`
    does."""
    cursor = txn.cursor(db)
    lower = start if after is None else after
    if not cursor.set_range(lower):
        return None, None, True
    iterator = cursor.iternext()
    first, whole, last_part = _Taken(), [], _Taken()  # the block the bounds may cut first, whole blocks, the last
    keys = []  # the key of every block met, in order
    count, last, exhausted = 0, None, True
    key = previous = None
    try:
        for key, value in iterator:
            key = bytes(key)
            previous = keys[-1] if keys else None
            segments = entry_parts(iterator, key, value, value[0], 1)
            keys.append(key)
            if len(keys) == 1 and key == after:  # the block ``after`` ended
                continue
            beyond = stop is not None and key > stop
            if beyond or not (first.blocks or whole):  # a block the bounds may cut: read and checked as a Block
                block = Block(key, b"".join(segments))
                lo = 0 if first.blocks or whole else block.bisect(lower, after is not None)
                hi = block.bisect(stop, True) if beyond else block.n
                if hi > lo:
                    (last_part if beyond else first).add([memoryview(block.data)], block.keys_at, block.n,
                                                         block.first_arrival, block.records_at, lo, hi)
                    last = block.key if hi == block.n else block.record_key(hi - 1)
                    count += hi - lo
                if beyond:
                    break
            else:
                whole.append((key, segments))
                count += _u32(segments[0], 5)[0] if len(segments[0]) >= 9 else 1
                last = key
            if count >= limit or len(keys) >= CHUNK_BLOCKS:
                exhausted = False
                break
    except (CorruptRecord, IndexError) as exc:
        _, bad = _checked_chunk(whole, _Taken(), _Taken())  # a damaged whole block before this one comes first
        if bad is None:
            raise damaged_block(key, exc, previous) from None
        raise _damaged_in(keys, whole, bad) from None
    chunk, bad = _checked_chunk(whole, first, last_part)
    if bad is not None:
        raise _damaged_in(keys, whole, bad)
    if not count:
        return None, last, exhausted
    return chunk, last, exhausted


def _damaged_in(keys, whole, bad):
    """The CorruptRecord of the damaged block ``bad = (index in whole, problem)``."""
    index, problem = bad
    key = whole[index][0]
    at = keys.index(key)
    return damaged_block(key, problem, keys[at - 1] if at else None)


def _reverse_blocks(txn, db, start, stop):
    """The blocks that may hold records with ``start <= key < stop``, newest first."""
    cursor = txn.cursor(db)
    if not cursor.set_range(stop) and not cursor.last():
        return
    boundary = len(stop) <= SESSION_ID.size  # then no block keyed at or above it holds a record below it
    for key in cursor.iterprev(keys=True, values=False):
        if key < start:
            return
        if boundary and key >= stop:
            continue
        try:
            head = common.is_head_key(key)
        except (CorruptRecord, IndexError, ValueError) as exc:
            raise damaged_block(key, exc) from None
        if head:
            yield _block_at(txn, db, key)


def scan_reverse(txn, db, start, stop, limit, *, decode=True):
    """The last ``limit`` records with ``start <= record key < stop``, in key order."""
    parts = []
    wanted = limit
    for block in _reverse_blocks(txn, db, start, stop):
        lo = block.bisect(start, False)
        hi = block.bisect(stop, False)
        lo = max(lo, hi - wanted)
        if hi > lo:
            values = block.records(lo, hi) if decode else block.payloads(lo, hi)
            parts.append(list(zip(block.record_keys(lo, hi), values)))
            wanted -= hi - lo
            if not wanted:
                break
    return [entry for part in reversed(parts) for entry in part]


def last_arrival_us(txn, db, session_id):
    """Arrival time (µs) of the newest record of ``session_id`` in ``db``, or None."""
    for block in _reverse_blocks(txn, db, session_prefix(session_id), after_session(session_id)):
        if block.key[:SESSION_ID.size] == session_prefix(session_id):
            return block.arrival(block.n - 1)
    return None


def key_span(txn, db, session_id, key_types):
    """``(first key, last key)`` of the records of ``session_id`` in ``db``
    (None for each when it holds none)."""
    prefix, end = session_prefix(session_id), after_session(session_id)
    cursor = txn.cursor(db)
    if not cursor.set_range(prefix) or cursor.key() >= end:
        return None, None
    first_block = next(_blocks(cursor, cursor.iternext()))
    first = decode_key_prefix(first_block.encoded_key(0), key_types)[0]
    tail = scan_reverse(txn, db, prefix, end, 1, decode=False)
    last = decode_key_prefix(tail[0][0], key_types, start=SESSION_ID.size)[0]
    return first, last


def key_order_problems(store, db, session_id, where):
    """Walk the blocks of ``session_id`` in ``db`` (short read transactions of
    ``store``); return ``(count, problems)``: how many records it holds and
    what breaks key order or dense sequence numbers (``where`` starts each).
    A damaged block raises CorruptRecord."""
    problems = []
    prefix, end = session_prefix(session_id), after_session(session_id)
    position = prefix
    last_key = None
    next_seq = None
    count = 0
    while True:
        with store.read() as txn:
            cursor = txn.cursor(db)
            found = cursor.set_range(position)
            if found and cursor.key() == position:
                found = _skip_entry(cursor)
            if not found or cursor.key() >= end:
                return count, problems
            for taken, block in enumerate(_blocks(cursor, cursor.iternext())):
                if block.key >= end or taken == 64:
                    break
                try:
                    block.check_keys()
                except (CorruptRecord, IndexError, ValueError) as exc:
                    raise damaged_block(block.key, exc, last_key) from None
                first = block.record_key(0)[:-SEQ.size]
                if last_key is not None and first < last_key[:-SEQ.size]:
                    problems.append(f"{where}: key order broken at seq {block.first_seq}")
                if next_seq is not None and block.first_seq != next_seq:
                    problems.append(f"{where}: sequence jumps from {next_seq - 1} to {block.first_seq} inside "
                                    f"the stored records")
                next_seq = block.first_seq + block.n
                last_key = block.key
                count += block.n
                position = block.key


def _skip_entry(cursor):
    """Move from a head entry past its continuations to the next entry; False at the end."""
    value = cursor.value()
    for _ in range(value[0] if value else 0):
        cursor.next()
    return cursor.next()


# -- deleting (retention) --------------------------------------------------------------


def delete_oldest(txn, db, time_db, session_id, doomed, limit, bytes_wanted, keep_from_seq=None):
    """Delete the oldest blocks of ``session_id`` in ``db`` inside write
    transaction ``txn``, and the time-index entries that point into them;
    return ``(records, payload bytes, entry bytes)`` deleted.

    Only whole blocks go: a block goes while ``doomed(arrival_us of its newest
    record)`` is true (None: always), while the records deleted stay within
    ``limit``, with ``bytes_wanted`` (None: no bound) until the deleted
    entries (keys, values, node headers) reach about that many bytes, and
    with ``keep_from_seq`` (None: no bound) while every record of the block
    has a sequence number below it.
    """
    end = after_session(session_id)
    removed = size_removed = freed = 0
    last_deleted = None
    cursor = txn.cursor(db)
    if not cursor.set_range(session_prefix(session_id)):
        return 0, 0, 0
    while bytes_wanted is None or freed < bytes_wanted:
        key = cursor.key()
        if not key or key >= end:
            break
        value = cursor.value()
        try:
            count = value[0]
            if count > MAX_CONTINUATIONS:
                raise CorruptRecord("too many continuations")
            parts = [value[1:]]
            sizes = len(key) + len(value) + NODE_OVERHEAD
            scout = txn.cursor(db)
            scout.set_key(key)
            for index in range(1, count + 1):
                if not scout.next() or scout.key() != key + CHUNK_INDEX.pack(index):
                    raise CorruptRecord(f"continuation {index} of {count} is missing")
                parts.append(scout.value())
                sizes += len(scout.key()) + len(parts[-1]) + NODE_OVERHEAD
            block = Block(key, b"".join(parts))
        except (CorruptRecord, IndexError) as exc:
            raise damaged_block(key, exc) from None
        if (removed + block.n > limit or (doomed is not None and not doomed(block.arrival(block.n - 1)))
                or (keep_from_seq is not None and block.first_seq + block.n > keep_from_seq)):
            break
        for _ in range(count + 1):
            cursor.delete()
        removed += block.n
        size_removed += block.payload_bytes()
        freed += sizes
        last_deleted = key
    if time_db is not None:
        key = cursor.key()
        if not key or key >= end:
            prune_time_index(txn, time_db, session_id, None)
        elif last_deleted is not None:
            prune_time_index(txn, time_db, session_id, last_deleted)
    return removed, size_removed, freed
