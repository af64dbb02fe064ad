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

from itertools import islice, repeat
from operator import is_
from time import time_ns
from typing import NamedTuple

from streamlog import errors, records
from streamlog.codec import record_encoder
from streamlog.keys import encode_key, key_types_of
from streamlog.source import call_failed

try:
    # the statuses of Writer.read_records, for StreamBuffer._read_while
    from streamlog._ingest import BATCH, ENDED, FAILED, FULL, NO_DATA, PUBLISHED, STOP, Writer, add_plain
except ImportError as exc:  # a source tree used through PYTHONPATH, never built
    raise ImportError("streamlog._ingest, the recorder's C encoder, is not built: `pip install .` (or -e .) builds it; "
                      "in a source tree used through PYTHONPATH run `python tools/build_ext.py`") from exc

DEFAULT_MAX_RECORD_BYTES = 256 << 20

# The encodings of each key kind lie below the first tag of the next kind (see
# keys.py): numbers < b"\x40" (str) < b"\x50" (bytes) < b"\x60" (tuple).  A key
# whose encoding is at or above its kind's bound takes the slow path of the
# checks; a tuple's bound is its own tag, so every tuple key takes it.
_KIND_BOUND = {"number": b"\x40", "str": b"\x50", "bytes": b"\x60"}
_TUPLE_BOUND = b"\x60"
_SCALAR_KINDS = {str: "str", bytes: "bytes"}
_WHOLE_BATCH = 16  # from this many records on, a batch is first tried whole (StreamWriter._add_whole)


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


class StreamWriter(Writer):
    """Writes the records of ``stream`` in session ``session_id`` of the log
    of ``catalog`` (a :class:`~streamlog.catalog.Catalog`); a record whose
    encoding is larger than ``max_record_bytes`` is refused.

    Its running state (pending records, counters, the last key) lives in
    the C base class ``_ingest.Writer``, whose ``read_records`` is the
    recorder's loop for single records (see StreamBuffer._read_while).
    """

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
        self._encode = record_encoder()
        self._keys = []  # encoded keys of the pending records
        self._payloads = []  # their encodings
        self._arrivals = []  # their arrival times (µs)
        self.pending_bytes = 0  # encoded bytes of the pending records (not yet prepared)
        self.in_flight_bytes = 0  # of the batch prepared and not yet written
        self.oldest_pending_arrival_us = None  # arrival of the oldest pending record (None: none pending)
        self.next_seq = 0
        self.prepared_seq = -1
        self.committed_seq = -1
        self.last_encoded_key = b""  # every encoding sorts after b""
        self.last_key = None
        self.key_kind = None
        self._kind_bound = b""  # no key yet: the first one takes the slow path
        self.max_record_bytes = max_record_bytes
        self.key_types = None
        self.last_arrival_us = 0

    @property
    def unwritten(self):
        """How many records are not yet committed (pending or being written)."""
        return self.next_seq - 1 - self.committed_seq

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

        ``key_of`` is called once per record, in order, before any record of
        the batch is encoded (sources may count on it: ReplaySource does).
        Raises InvalidKey, KeyKindError (a key of another kind than the
        stream's), KeyOrderError (a key smaller than the previous one),
        UnencodableRecord, RecordTooLarge, StreamlogError for a None record,
        or SourceFailed when ``key_of`` raises (with that exception as
        ``__cause__``); the records before the bad one stay added (and in
        ``entries``), the bad one and those after it are not.
        """
        key_failure = None
        if len(batch) == 1:
            try:
                keys = (key_of(batch[0]),)
            except Exception as exc:
                keys, key_failure = (), call_failed("key()", exc)
        else:
            keys = []
            try:
                keys.extend(map(key_of, batch))  # on an exception, keys holds those of the records before
            except Exception as exc:
                key_failure = call_failed("key()", exc)
        self.add_keyed(batch, keys, key_failure, entries)

    def add_keyed(self, batch, keys, key_failure, entries):
        """:meth:`add` with the keys made: ``keys`` those of the leading
        records of ``batch`` (all of them unless ``key_of`` raised for the next
        one, ``key_failure`` the SourceFailed saying so)."""
        now = time_ns() // 1000
        if now < self.last_arrival_us:
            now = self.last_arrival_us
        # the leading records of the common case (int keys, plain records or chunk tuples) in C; the rest in Python
        taken, last, size = add_plain(batch, keys, entries, self._keys, self._payloads, self._arrivals,
                                      self._prefix, self.next_seq, self.last_encoded_key, self._kind_bound,
                                      self.max_record_bytes, now)
        if taken < len(batch):
            if (not taken and key_failure is None and len(keys) >= _WHOLE_BATCH
                    and self._add_whole(batch, keys, entries, now)):
                return
            self._add_rest(batch, keys, entries, now, taken, last, size, key_failure)
        elif taken:  # not for an empty ReadBatch
            self._added(taken, size, now, last, keys[-1])

    def _add_rest(self, batch, keys, entries, now, taken, last, size, key_failure):
        """:meth:`add` for the records from ``taken`` on, after those before it
        (``last``: the encoded key of the last of them; ``size``: bytes of
        their encodings) were added by ``add_plain``."""
        first = self.next_seq
        seq = first + taken
        previous_key = keys[taken - 1] if taken else self.last_key
        try:
            for record, key in zip(islice(batch, taken, None), islice(keys, taken, None)):
                if record is None:
                    raise errors.StreamlogError("read() returned None inside a ReadBatch; None means 'no data' "
                                                "and cannot be a record")
                encoded = encode_key(key)
                if not last <= encoded < self._kind_bound:
                    self._kind_bound = self._check_key(key, encoded, last, previous_key)
                try:
                    payload = self._encode(record)
                except errors.UnencodableRecord as exc:
                    raise self._unencodable_error(key, exc) from None
                length = len(payload)
                if length > self.max_record_bytes:
                    raise self._too_large_error(key, length)
                self._keys.append(encoded)
                self._payloads.append(payload)
                self._arrivals.append(now)
                entries.append((records.record_key(self._prefix, encoded, seq), record, now))
                size += length
                seq += 1
                last = encoded
                previous_key = key
            if key_failure is not None:
                if batch[len(keys)] is None:
                    raise errors.StreamlogError("read() returned None inside a ReadBatch; None means 'no data' "
                                                "and cannot be a record")
                raise key_failure from key_failure.__cause__
        finally:
            if seq > first:
                self._added(seq - first, size, now, last, previous_key)

    def _added(self, count, size, now, last, last_key):
        """Account for ``count`` records just added to the pending lists
        (``size`` bytes encoded, arrived at ``now``), the last with key
        ``last_key`` encoded as ``last``."""
        if self.oldest_pending_arrival_us is None:
            self.oldest_pending_arrival_us = now
        self.pending_bytes += size
        self.next_seq += count
        self.last_encoded_key = last
        self.last_key = last_key
        self.last_arrival_us = now

    def _add_whole(self, batch, keys, entries, now):
        """:meth:`add` for a batch whose records all pass the checks of its
        loop, in a few passes over the batch with no Python code per record
        beyond the encoders; False, with nothing added, when any record needs
        that loop (a bad record, the stream's first key, a tuple key: the loop
        raises for the bad one, after adding those before)."""
        try:
            encoded = list(map(encode_key, keys))
            payloads = self._encode.many(batch)
        except Exception:
            return False
        sizes = list(map(len, payloads))
        if (not self.last_encoded_key <= encoded[0] or not encoded[-1] < self._kind_bound
                or encoded != sorted(encoded) or max(sizes) > self.max_record_bytes
                or any(map(is_, batch, repeat(None)))):  # not `None in batch`: that compares records with ==
            return False
        n = len(batch)
        seq = self.next_seq
        entries.extend(zip(records.record_keys(self._prefix, encoded, seq), batch, repeat(now, n)))
        self._keys += encoded
        self._payloads += payloads
        self._arrivals += [now] * n
        self._added(n, sum(sizes), now, encoded[-1], keys[-1])
        return True

    def prepare(self):
        """Take the pending records out as one :class:`Batch` for :meth:`write`
        (None when none are pending); records added from now on are not in it."""
        if not self._keys:
            return None
        batch = Batch(self.prepared_seq + 1, self._keys, self._payloads, self._arrivals, self.pending_bytes)
        self.prepared_seq += len(self._keys)
        self._keys, self._payloads, self._arrivals = [], [], []
        self.in_flight_bytes = batch.size
        self.pending_bytes = 0
        self.oldest_pending_arrival_us = None
        return batch

    def write(self, batch):
        """Write ``batch`` (from :meth:`prepare`) in one transaction; return how
        many records it held.  Batches are written one at a time in the order
        prepared, from any thread (while another thread goes on adding).

        Raises StorageError when the disk refuses; :meth:`restore` then puts
        the batch back, so a later commit can retry it.
        """
        layout = self._layout
        first_key = records.record_key(self._prefix, batch.keys[0], batch.first_seq)
        count = len(batch.keys)

        def work(txn):
            entries = layout.encode_commit(self._prefix, batch.first_seq, batch.keys, batch.payloads, batch.arrivals,
                                           self._page_size)
            layout.append_commit(txn, self.db, self.time_db, self.session_id, entries, first_key, batch.arrivals[0])
            self.catalog.add_counts(txn, self.session_id, self.stream, count, batch.size, self.key_types)

        self.store.write(work)
        self.committed_seq = batch.first_seq + count - 1
        self.in_flight_bytes = 0
        return count

    def restore(self, batch):
        """Put back ``batch``, the last one prepared, whose :meth:`write` failed,
        in front of the records pending now (hold off :meth:`add` meanwhile)."""
        self._keys[:0] = batch.keys
        self._payloads[:0] = batch.payloads
        self._arrivals[:0] = batch.arrivals
        self.pending_bytes += batch.size
        self.in_flight_bytes = 0
        self.oldest_pending_arrival_us = batch.arrivals[0]
        self.prepared_seq = batch.first_seq - 1

    def commit(self):
        """Write the pending records in one transaction now; return how many.

        Raises StorageError when the disk refuses; the pending records are
        then kept, so a later commit can retry them.
        """
        batch = self.prepare()
        if batch is None:
            return 0
        try:
            return self.write(batch)
        except BaseException:
            self.restore(batch)
            raise


class Batch(NamedTuple):
    """Records taken out for one commit: ``first_seq`` and, one per record,
    encoded keys, encodings and arrival times (µs); ``size``: bytes of the encodings."""

    first_seq: int
    keys: list
    payloads: list
    arrivals: list
    size: int
