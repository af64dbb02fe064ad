"""Appending one stream of one session to the log, in group commits.

A :class:`StreamWriter` turns records into LMDB entries as they arrive
(:meth:`StreamWriter.add`, which checks the key order and encodability) and
writes the pending entries in one transaction per :meth:`StreamWriter.commit`
together with the session's counters and a sparse time-index entry.  It is
used by one thread at a time (the buffer serialises ``add`` and ``commit``).
"""

from time import time_ns

from streamlog import errors, records
from streamlog.codec import encode_record
from streamlog.keys import encode_key, key_types_of
from streamlog.store import SEQ, TIME_US

_seq_pack = SEQ.pack
_header_pack = records.HEADER.pack
_INLINE_PAYLOAD = records.SPLIT_ABOVE - records.HEADER_SIZE


class StreamWriter:
    """Writes the records of ``stream`` in session ``session_id`` of ``log``."""

    def __init__(self, log, session_id, stream):
        self.log = log
        self.store = log.store
        self.session_id = session_id
        self.stream = stream
        self.db = self.store.records_db(stream, create=True)
        self.time_db = self.store.time_db(stream, create=True)
        self._prefix = records.session_prefix(session_id)
        self._page_size = self.store.page_size
        self._pending = []
        self._pending_bytes = 0
        self._first_pending = None
        self.next_seq = 0
        self.committed_seq = -1
        self.last_encoded_key = None
        self.last_key = None
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
        return self._first_pending[1] if self._first_pending else None

    def add(self, key, record):
        """Encode ``record`` under ``key``; return its ring entry
        ``(record_key, record, arrival_us)``.

        Raises InvalidKey, KeyOrderError (key smaller than the previous one)
        or UnencodableRecord; nothing is added then.
        """
        encoded = encode_key(key)
        last = self.last_encoded_key
        if last is not None and encoded < last:
            raise self._order_error(key, self.last_key)
        payload = encode_record(record)
        now = time_ns() // 1000
        if now < self.last_arrival_us:
            now = self.last_arrival_us
        seq = self.next_seq
        record_key = self._prefix + encoded + _seq_pack(seq)
        if len(payload) <= _INLINE_PAYLOAD:
            self._pending.append((record_key, _header_pack(now, 0) + payload))
        else:
            self._pending.extend(records.entries(record_key, now, payload, self._page_size))
        if self._first_pending is None:
            self._first_pending = (record_key, now)
            if self.key_types is None:
                self.key_types = key_types_of(key)
        self._pending_bytes += len(payload)
        self.next_seq = seq + 1
        self.last_encoded_key = encoded
        self.last_key = key
        self.last_arrival_us = now
        return record_key, record, now

    def _order_error(self, key, previous_key):
        return errors.KeyOrderError(f"key {key!r} is smaller than the previous key {previous_key!r} of stream "
                                    f"{self.stream!r}; keys must not decrease within a session")

    def add_batch(self, batch, key_of, entries):
        """Encode each record of ``batch`` (keyed by ``key_of(record)``), all
        arrived now; append their ring entries to ``entries``.

        On an error (see :meth:`add`, or a None record) the records before the
        bad one stay added (and in ``entries``) and the error propagates.
        """
        now = time_ns() // 1000
        if now < self.last_arrival_us:
            now = self.last_arrival_us
        header = _header_pack(now, 0)
        prefix = self._prefix
        pending_append = self._pending.append
        entry_append = entries.append
        encode_k, encode_r, seq_pack = encode_key, encode_record, _seq_pack
        last = self.last_encoded_key or b""  # every encoding sorts after b""
        previous_key = self.last_key
        seq = self.next_seq
        size = 0
        first = seq
        try:
            for record in batch:
                if record is None:
                    raise errors.StreamlogError("read() returned None inside a ReadBatch; None means 'no data' "
                                                "and cannot be a record")
                key = key_of(record)
                encoded = encode_k(key)
                if encoded < last:
                    raise self._order_error(key, previous_key)
                payload = encode_r(record)
                record_key = prefix + encoded + seq_pack(seq)
                if len(payload) <= _INLINE_PAYLOAD:
                    pending_append((record_key, header + payload))
                else:
                    self._pending.extend(records.entries(record_key, now, payload, self._page_size))
                entry_append((record_key, record, now))
                size += len(payload)
                seq += 1
                last = encoded
                previous_key = key
        finally:
            added = seq - first
            if added:
                if self._first_pending is None:
                    first_key, first_record, _ = entries[-added]
                    self._first_pending = (first_key, now)
                    if self.key_types is None:
                        self.key_types = key_types_of(key_of(first_record))
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
        if not self._pending:
            return 0
        pending = self._pending
        first_key, first_arrival = self._first_pending
        count = self.pending
        size = self._pending_bytes
        last_seq = self.next_seq - 1
        db = self.db

        def work(txn):
            cursor = txn.cursor(db)
            append = not cursor.last() or cursor.key() < pending[0][0]
            cursor.putmulti(pending, append=append)
            txn.put(self._prefix + TIME_US.pack(first_arrival), first_key, db=self.time_db, overwrite=False)
            self.log._update_stream_counters(txn, self.session_id, self.stream, count, size, self.key_types)

        self.store.write(work)
        self._pending = []
        self._pending_bytes = 0
        self._first_pending = None
        self.committed_seq = last_seq
        return count
