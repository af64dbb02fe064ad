"""Appending one stream of one session to the log, in group commits.

A :class:`StreamWriter` encodes records as they arrive
(:meth:`StreamWriter.add`, which checks the key and the record) and writes the
pending ones in one transaction per :meth:`StreamWriter.commit`, as format-2
blocks (:mod:`streamlog.records.v2`), together with the session's counters
and a sparse time-index entry.  It is used by one
thread at a time (the buffer serialises ``add`` and ``commit``).

The keys of one stream in one session must not decrease and must all be of
one *kind*: numbers (int, float, bool and numpy numbers alike), str, bytes,
or tuples of one length with one kind at each position.  Keys of different
kinds have an order in the encoding (numbers < str < bytes < tuple) but not a
meaningful one, so mixing them is refused rather than silently sorted.
"""

from time import time_ns

from streamlog import errors, records
from streamlog.codec import encode_record
from streamlog.keys import encode_key, key_types_of
from streamlog.source import call_failed

DEFAULT_MAX_RECORD_BYTES = 256 << 20

# The encodings of each key kind lie below the first tag of the next kind (see
# keys.py): numbers < b"\x40" (str) < b"\x50" (bytes) < b"\x60" (tuple).  A key
# whose encoding is at or above its kind's bound takes the slow path of the
# checks; a tuple's bound is its own tag, so every tuple key takes it.
_KIND_BOUND = {"number": b"\x40", "str": b"\x50", "bytes": b"\x60"}
_TUPLE_BOUND = b"\x60"
_SCALAR_KINDS = {str: "str", bytes: "bytes"}


def key_kind(key):
    """The kind of a valid key: ``"number"``, ``"str"``, ``"bytes"``, or for a
    tuple a tuple of its items' kinds."""
    if type(key) is tuple:
        return tuple(map(key_kind, key))
    return _SCALAR_KINDS.get(type(key), "number")


def _describe_type(key):
    if type(key) is tuple:
        return f"tuple ({', '.join(map(_describe_type, key))})"
    return type(key).__name__


class StreamWriter:
    """Writes the records of ``stream`` in session ``session_id`` of the log
    of ``catalog`` (a :class:`~streamlog.catalog.Catalog`); a record whose
    encoding is larger than ``max_record_bytes`` is refused."""

    def __init__(self, catalog, session_id, stream, max_record_bytes=DEFAULT_MAX_RECORD_BYTES):
        self.catalog = catalog
        self.store = catalog.store
        self.session_id = session_id
        self.stream = stream
        self.db = self.store.records_db(stream, create=True)
        self.time_db = self.store.time_db(stream, create=True)
        self._prefix = records.session_prefix(session_id)
        self._page_size = self.store.page_size
        self._layout = records.layout(records.FORMAT_VERSION)
        self._keys = []  # encoded keys of the pending records
        self._payloads = []  # their encodings
        self._arrivals = []  # their arrival times (µs)
        self._pending_bytes = 0
        self.next_seq = 0
        self.committed_seq = -1
        self.last_encoded_key = None
        self.last_key = None
        self.key_kind = None
        self._kind_bound = b""  # no key yet: the first one takes the slow path
        self.max_record_bytes = max_record_bytes
        self.key_types = None
        self.last_arrival_us = 0

    @property
    def pending(self):
        """How many records await :meth:`commit`."""
        return self.next_seq - 1 - self.committed_seq

    @property
    def pending_bytes(self):
        """Encoded bytes of the records awaiting :meth:`commit`."""
        return self._pending_bytes

    @property
    def oldest_pending_arrival_us(self):
        return self._arrivals[0] if self._arrivals else None

    def _check_key(self, key, encoded, last, previous_key):
        """The slow path of the key checks, for the first key, a key below
        ``last`` (the previous key's encoding) or beyond its kind's encodings,
        and every tuple key.  The first key sets the stream's ``key_kind``
        and ``key_types``.  Raises KeyKindError or KeyOrderError; returns the
        bound below which the encodings of the stream's kind lie."""
        kind = key_kind(key)
        if self.key_kind is None:
            self.key_kind = kind
            self.key_types = key_types_of(key)
        elif kind != self.key_kind:
            raise errors.KeyKindError(
                f"key {key!r} ({_describe_type(key)}) cannot follow key {previous_key!r} "
                f"({_describe_type(previous_key)}) in stream {self.stream!r}: keys of one stream must be of one kind "
                "(numbers, str, bytes, or tuples of one length with one kind at each position)")
        if encoded < last:
            raise self._order_error(key, previous_key)
        return _TUPLE_BOUND if type(kind) is tuple else _KIND_BOUND[kind]

    def _order_error(self, key, previous_key):
        return errors.KeyOrderError(f"key {key!r} is smaller than the previous key {previous_key!r} of stream "
                                    f"{self.stream!r}; keys must not decrease within a session")

    def _unencodable_error(self, key, exc):
        return errors.UnencodableRecord(f"the record with key {key!r} of stream {self.stream!r}: {exc}")

    def _too_large_error(self, key, size):
        return errors.RecordTooLarge(
            f"the record with key {key!r} of stream {self.stream!r} is {size:,} bytes encoded, over the limit of "
            f"{self.max_record_bytes:,} bytes (max_record_bytes)", size, self.max_record_bytes)

    def add(self, batch, key_of, entries):
        """Encode each record of ``batch`` (a ReadBatch, or a 1-tuple for a
        single record), keyed by ``key_of(record)``, all arrived now; append
        their ring entries ``(record_key, record, arrival_us)`` to ``entries``.

        Raises InvalidKey, KeyKindError (a key of another kind than the
        stream's), KeyOrderError (a key smaller than the previous one),
        UnencodableRecord, RecordTooLarge, StreamlogError for a None record,
        or SourceFailed when ``key_of`` raises (with that exception as
        ``__cause__``); the records before the bad one stay added (and in
        ``entries``), the bad one and those after it are not.
        """
        now = time_ns() // 1000
        if now < self.last_arrival_us:
            now = self.last_arrival_us
        prefix = self._prefix
        entry_append = entries.append
        key_append, payload_append = self._keys.append, self._payloads.append
        encode_k, encode_r, record_key = encode_key, encode_record, records.record_key
        last = self.last_encoded_key or b""  # every encoding sorts after b""
        bound = self._kind_bound
        max_bytes = self.max_record_bytes
        previous_key = self.last_key
        first = seq = self.next_seq
        size = 0
        try:
            for record in batch:
                if record is None:
                    raise errors.StreamlogError("read() returned None inside a ReadBatch; None means 'no data' "
                                                "and cannot be a record")
                try:
                    key = key_of(record)
                except Exception as exc:
                    raise call_failed("key()", exc) from exc
                encoded = encode_k(key)
                if not last <= encoded < bound:
                    bound = self._kind_bound = self._check_key(key, encoded, last, previous_key)
                try:
                    payload = encode_r(record)
                except errors.UnencodableRecord as exc:
                    raise self._unencodable_error(key, exc) from None
                if len(payload) > max_bytes:
                    raise self._too_large_error(key, len(payload))
                key_append(encoded)
                payload_append(payload)
                entry_append((record_key(prefix, encoded, seq), record, now))
                size += len(payload)
                seq += 1
                last = encoded
                previous_key = key
        finally:
            if seq > first:
                self._arrivals += [now] * (seq - first)
                self._pending_bytes += size
                self.next_seq = seq
                self.last_encoded_key = last
                self.last_key = previous_key
                self.last_arrival_us = now

    def commit(self):
        """Write the pending records in one transaction; return how many.

        Raises StorageError when the disk refuses; the pending records are
        then kept, so a later commit can retry them.
        """
        if not self._keys:
            return 0
        keys, payloads, arrivals = self._keys, self._payloads, self._arrivals
        count = len(keys)
        first_seq = self.committed_seq + 1
        size = self._pending_bytes
        layout = self._layout
        entries = layout.encode_commit(self._prefix, first_seq, keys, payloads, arrivals, self._page_size)
        first_key = records.record_key(self._prefix, keys[0], first_seq)

        def work(txn):
            layout.append_commit(txn, self.db, self.time_db, self.session_id, entries, first_key, arrivals[0])
            self.catalog.add_counts(txn, self.session_id, self.stream, count, size, self.key_types)

        self.store.write(work)
        self._keys = []
        self._payloads = []
        self._arrivals = []
        self._pending_bytes = 0
        self.committed_seq = first_seq + count - 1
        return count
