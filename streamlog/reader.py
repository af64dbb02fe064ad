"""Readers: one cursor each over a stream, whether its records sit in the RAM
ring or only on disk.

A :class:`BufferReader` reads through a *feed* (the :class:`Feed`
protocol): :class:`LiveFeed` for a stream this process records (ring + log,
readers woken by a condition), or :class:`StoredFeed` for a stored session
(log only; a session another process is recording is followed by
sleeping until one of its writers commits, see :mod:`streamlog.notify`).  The cursor is the last
record read; reading continues strictly after it, from the ring when the
record is still there and from the log otherwise.
"""

import threading
import time
from collections import deque
from functools import partial
from itertools import chain, islice
from operator import itemgetter
from typing import Any, List, NamedTuple, Optional, Protocol

import numpy as np

from streamlog import errors, records
from streamlog.cursors import check_ack
from streamlog.keys import encode_key
from streamlog.source import SourceReader

_READ_AHEAD = 1024
_RECORD = itemgetter(1)  # of an entry
_ITEMS = itemgetter(0)  # of a scan's (items, last record key)
_SCAN_CHUNK = 4096
_CHUNK_RECORDS = 65536  # ichunks: a chunk ends with the block that reaches this many records
_END = object()
# what the scans yield per record: (record key, record), (record key, arrival_us, record), the record alone,
# or an Entry
_ENTRIES, _TIMED, _RECORDS, _ENTRY = "entries", "timed", "records", "Entry"


class Feed(Protocol):
    """What a :class:`BufferReader` reads through: one stream of one session.

    Sequence numbers count the stream's records from 0.  A *ring entry* is
    ``(record key, record, arrival_us)``; record keys (see
    :mod:`streamlog.records`) order the records.  ``db`` and ``time_db`` are
    the stream's LMDB databases in ``store`` (None while they do not exist).
    """

    store: Any
    session_id: int
    stream: str
    db: Any
    time_db: Any
    ended: bool
    """True once the stream has ended (no record will follow ``high()``)."""
    error: Optional[str]
    """Why the stream failed, or None."""
    source: Any
    """The stream's source reader when it records in this process (else None)."""

    def info(self) -> Optional[dict]:
        """The session's info (of a live source: once its ``open()`` returned)."""

    def high(self) -> int:
        """The newest published sequence number (-1: none yet)."""

    def committed_high(self) -> int:
        """The newest sequence number committed to the log (-1: none yet)."""

    def refresh(self) -> bool:
        """Look again at a stream recorded elsewhere; True if anything changed."""

    def ring_get(self, seq: int) -> Optional[tuple]:
        """The ring entry of record ``seq``, or None when it is not in RAM."""

    def ring_slice(self, seq: int, limit: int) -> List[tuple]:
        """Up to ``limit`` consecutive ring entries from record ``seq`` on (maybe none)."""

    def uncommitted(self) -> List[tuple]:
        """Ring entries published but not yet committed, oldest first."""

    def wait(self, seq: int, timeout: Optional[float]) -> bool:
        """Block until record ``seq`` is published or the stream ended; False on timeout."""

    def failure(self) -> errors.SourceFailed:
        """The exception that tells a reader why the stream failed."""


class Entry(NamedTuple):
    """A record with where and when it was stored (see :meth:`BufferReader.ientries`):
    its key, arrival time (integer microseconds since the epoch), the record,
    and its sequence number in the stream (0 for the first ever recorded)."""

    key: Any
    arrival_us: int
    record: Any
    seq: int


class Columns(NamedTuple):
    """Consecutive records of one stream, column by column (see
    :meth:`BufferReader.icolumns`): their decoded ``keys`` (a list), arrival
    times ``times_us`` (a numpy int64 array of µs since the epoch) and
    decoded ``records`` (a list), all of one length."""

    keys: list
    times_us: Any
    records: list


class BlockPart(NamedTuple):
    """Records ``lo .. hi - 1`` of one stored block (see
    :meth:`BufferReader.iblocks`), undecoded: ``block`` is a
    :class:`streamlog.records.v2.Block` (format 1: a
    :class:`streamlog.records.v1.Run`), whose ``keys``, ``arrivals`` and
    ``records`` methods decode them."""

    block: Any
    lo: int
    hi: int


class LiveFeed:
    """The stream a StreamBuffer of this process is recording into ``ring``
    (a :class:`~streamlog.ring.Ring`) and the databases ``db``, ``time_db``
    of ``store``, from ``source`` in ``session``; the recorder sets
    ``committed`` after each commit and ``opened`` once the source is open."""

    def __init__(self, ring, store, session_id, stream, db, time_db, *, source=None, session=None):
        self._ring = ring
        self.store = store
        self.session_id = session_id
        self.stream = stream
        self.db = db
        self.time_db = time_db
        self.source = source
        self.session = session
        self.opened = threading.Event()  # set once the source's open() returned (or raised)
        self.committed = -1
        self.ended = False
        self.error = None
        self._cause = None
        self._cond = threading.Condition(threading.Lock())
        self.waiters = 0
        self.notified = False

    def high(self):
        return self._ring.high

    def committed_high(self):
        return self.committed

    def refresh(self):
        """False: the ring and counters of this process are always current."""
        return False

    def info(self):
        """The session's info, once the source's open() has returned."""
        self.opened.wait()
        return self.session.info

    def ring_get(self, seq):
        return self._ring.get(seq)

    def ring_slice(self, seq, limit):
        return self._ring.slice(seq, limit)

    def uncommitted(self):
        """Ring entries not yet committed, oldest first."""
        ring = self._ring
        return [e for e in (ring.get(s) for s in range(self.committed + 1, ring.high + 1)) if e is not None]

    def notify(self):
        """Wake the waiting readers (the recorder calls this only while
        ``waiters`` and not ``notified``: one wake-up per wait, not per record)."""
        with self._cond:
            self.notified = True
            self._cond.notify_all()

    def end(self, error):
        with self._cond:
            if error is not None:
                self.error, self._cause = error
            self.ended = True
            self._cond.notify_all()

    def wait(self, seq, timeout):
        """Block until record ``seq`` is published or the stream ended; False on timeout.

        ``notified`` is cleared before every check of the ring, not only on
        entry: a reader woken before its record came (the recorder was
        preempted between publishing and notifying while this reader read
        what was published) sleeps again, and the next record must wake it.
        """
        if self.store.inherited:  # the recorder thread did not survive the fork
            raise errors.LogError(f"this reader's buffer records in process {self.store.pid}, not in this "
                                  f"forked child; open the log again in the child to read it")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self.waiters += 1
            try:
                while True:
                    self.notified = False
                    if self._ring.high >= seq or self.ended:
                        return True
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            finally:
                self.waiters -= 1

    def failure(self):
        exc = errors.SourceFailed(self.error)
        exc.__cause__ = self._cause
        return exc


class StoredFeed:
    """A stream of a stored session of ``catalog``'s log (a
    :class:`~streamlog.catalog.Catalog`), live in another process or finished."""

    def __init__(self, catalog, session_id, stream):
        self.store = catalog.store
        self._catalog = catalog
        self.session_id = session_id
        self.stream = stream
        self.db = self.store.records_db(stream)
        self.time_db = self.store.time_db(stream)
        self.ended = False
        self.error = None
        self.source = None
        self._high = -1
        self._listener = None
        self.refresh()

    def info(self):
        meta = self._catalog.get(self.session_id)
        return None if meta is None else meta["info"]

    def refresh(self):
        """Read the session's counters and status again; True if they changed."""
        before = (self._high, self.ended)
        meta = self._catalog.get(self.session_id)
        if meta is None:
            self.ended = True
            return before != (self._high, self.ended)
        counters = meta["streams"].get(self.stream, {})
        self._high = counters.get("recorded", 0) - 1
        if self.db is None and self._high >= 0:
            self.db = self.store.records_db(self.stream)
            self.time_db = self.store.time_db(self.stream)
        if not self._catalog.stream_live(meta, self.stream):
            self.ended = True
            self.error = counters.get("error")
        return before != (self._high, self.ended)

    def high(self):
        return self._high

    committed_high = high

    def ring_get(self, seq):
        return None

    def ring_slice(self, seq, limit):
        return []

    def uncommitted(self):
        return []

    def wait(self, seq, timeout):
        """Sleep until record ``seq`` is committed or the stream ended (False
        on timeout): woken by the writers' notifications, looking between
        them as :meth:`streamlog.notify.Listener.pause` says."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._listener is None:
            self._listener = self.store.listener()  # before the first look: no commit after it goes unnoticed
        while True:
            self.refresh()
            if self._high >= seq or self.ended:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._listener.pause(remaining)

    def failure(self):
        return errors.SourceFailed(self.error)


class BufferReader:
    """A cursor over one stream; make it with ``StreamBuffer.mk_reader()`` or
    ``Session.reader()``.

    Defaults for :meth:`read` come from the constructor: ``blocking`` (True:
    ``next`` and ``read`` wait for records; False: stream2py's behaviour,
    ``next`` returns None while nothing is new), ``skip_pruned`` (False: raise
    RecordsPruned when the next record was removed by retention; True: skip
    ahead), and stream2py's ``read_size`` (records per ``read()`` and per
    ``next(reader)``; 1: one record, not a list), ``peek``, ``strict_n`` and
    ``ignore_no_item_found``.  ``next(reader)`` returns None while nothing
    is new for a non-blocking reader (as in stream2py), and iterating one
    stops there.  A reader may be used from one thread at a time; make one
    reader per thread.

    ``cursor`` (a :class:`~streamlog.cursors.NamedCursor`, see
    ``Session.reader(name=...)``) makes the cursor durable: the reader starts
    strictly after the position stored there, :meth:`ack` stores where it
    is, and ``ack="auto"`` does so at the start of every ``next``/``read``.
    """

    onclose = None  # called by close() (StreamSource counts its open readers so)

    def __init__(self, feed: Feed, *, blocking=True, skip_pruned=False, timeout=None, read_size=1, peek=False,
                 strict_n=False, ignore_no_item_found=False, cursor=None, ack="manual"):
        _check_count(read_size)
        check_ack(ack, cursor is not None)
        self._cursor = cursor
        self._auto_ack = ack == "auto"
        self.blocking = blocking
        self.skip_pruned = skip_pruned
        self.timeout = timeout
        self.read_size = read_size
        self.peek = peek
        self.strict_n = strict_n
        self.ignore_no_item_found = ignore_no_item_found
        self.rebind(feed)

    def rebind(self, feed, after_key=None):
        """Read ``feed`` (a stream's feed) from its first record, or from the
        first with a key greater than ``after_key`` (what
        ``StreamBuffer.attach_reader`` does with the reader's last key)."""
        self._feed = feed
        self._layout = records.layout(feed.store.format_version)
        self._prefix = records.session_prefix(feed.session_id)
        self._session_end = records.after_session(feed.session_id)
        self._seq = -1
        self._key = None
        self._ahead = deque()
        if after_key is not None:
            self._seek_record_key(records.key_bounds(self._prefix, None, encode_key(after_key))[1])
        elif self._cursor is not None and self._cursor.position is not None:
            self._key, self._seq = self._cursor.position, self._cursor.seq

    def ack(self):
        """Store the cursor (everything returned so far) in the log, so a
        reader made later with the same name, in any process, resumes strictly
        after it.  One short write transaction; none when nothing moved since
        the last ack.  CursorError for a reader without a name; CursorNotFound
        when the cursor was deleted meanwhile."""
        if self._cursor is None:
            raise errors.CursorError("this reader has no name: make it with Session.reader(name=...) to ack")
        if self._key is not None:
            self._cursor.save(self._key, self._seq)

    def __repr__(self):
        return (f"<streamlog.BufferReader session={self._feed.session_id} stream={self._feed.stream!r} "
                f"cursor={self._seq}>")

    # -- sequential reading --------------------------------------------------

    def __iter__(self):
        return self if self.blocking else iter(self.next, None)  # a non-blocking one: until nothing is new

    def __next__(self):
        if self.read_size != 1 or self.peek or self.strict_n:
            record = self.read(ignore_no_item_found=True)
            if record is None and self.is_stopped:
                raise StopIteration
            return record
        ahead = self._ahead
        if ahead and not self._auto_ack:  # next()'s first case, without its call (most records of a live stream)
            entry = ahead.popleft()
            self._key = entry[0]
            self._seq += 1
            return entry[1]
        record = self.next()
        if record is None and self.blocking:
            raise StopIteration
        return record

    def next(self, n=None, *, peek=None, ignore_no_item_found=None, strict_n=None):
        """The record after the cursor (moves the cursor).

        Blocking readers wait for it and raise StopIteration once the stream
        has ended and everything was read (SourceFailed if it failed), or
        when the reader's ``timeout`` passes first; non-blocking readers
        return None while the stream runs with nothing new.

        With any argument it is stream2py's ``next``: :meth:`read` (``n=1``:
        one record, not a list).
        """
        if n is not None or peek is not None or ignore_no_item_found is not None or strict_n is not None:
            out = self.read(n or 1, peek=peek, ignore_no_item_found=ignore_no_item_found, strict_n=strict_n)
            return out[0] if out is not None and (n or 1) == 1 else out
        if self._auto_ack:
            self.ack()
        ahead = self._ahead
        if ahead:
            entry = ahead.popleft()
            self._key = entry[0]
            self._seq += 1
            return entry[1]
        entry = self._entry_after_cursor(self.blocking, self.timeout)
        if entry is _END:
            self._raise_end(StopIteration)
        if entry is None:
            if self.blocking:
                raise StopIteration
            return None
        self._advance(entry)
        return entry[1]

    def read(self, n=None, *, peek=None, blocking=None, timeout=None, ignore_no_item_found=None, strict_n=None):
        """One record (``n`` None and the reader's ``read_size`` 1) or a list
        of up to ``n`` (default ``read_size``) records after the cursor.

        Waits (if ``blocking``, default the reader's) up to ``timeout`` seconds
        for the first record, then takes what is available without waiting.
        Moves the cursor past what it returns unless ``peek``.  Nothing to
        return raises NoItemFound (SourceFailed after a failed stream), or
        returns None with ``ignore_no_item_found``; fewer than ``n``
        available with ``strict_n`` raises NotEnoughItems (at once, without
        moving the cursor).  ``peek``, ``ignore_no_item_found`` and
        ``strict_n`` None take the reader's defaults.
        """
        if self._auto_ack:
            self.ack()
        blocking = self.blocking if blocking is None else blocking
        timeout = self.timeout if timeout is None else timeout
        peek = self.peek if peek is None else peek
        ignore_no_item_found = self.ignore_no_item_found if ignore_no_item_found is None else ignore_no_item_found
        if n is None and self.read_size != 1:
            n = self.read_size
        _check_count(n)
        saved = (self._seq, self._key, list(self._ahead)) if peek else None
        entry = self._entry_after_cursor(blocking, timeout)
        if entry is None or entry is _END:
            if ignore_no_item_found:
                return None
            if entry is _END and self._feed.error:
                raise self._feed.failure()
            raise errors.NoItemFound(f"no record after the cursor in session {self._feed.session_id} "
                                     f"(ignore_no_item_found=True returns None instead)")
        if n is not None and (self.strict_n if strict_n is None else strict_n):
            self._check_available(n)
        self._advance(entry)
        if n is None:
            out = entry[1]
        else:
            out = [entry[1]]
            ahead = self._ahead
            while len(out) < n:
                if not ahead:
                    more = self._entry_after_cursor(False, None)  # refills the read-ahead
                    if more is None or more is _END:
                        break
                    if not ahead:  # served by the ring alone, not through the read-ahead
                        self._advance(more)
                        out.append(more[1])
                        continue
                take = min(n - len(out), len(ahead))
                if take == len(ahead):
                    batch = list(ahead)
                    ahead.clear()
                else:
                    batch = [ahead.popleft() for _ in range(take)]
                out.extend(map(_RECORD, batch))
                self._key = batch[-1][0]
                self._seq += take
        if peek:
            self._seq, self._key, ahead = saved
            self._ahead = deque(ahead)
        return out

    def _check_available(self, n):
        """Raise NotEnoughItems unless ``n`` records follow the cursor."""
        available = self._feed.high() - self._seq
        if available < n:
            raise errors.NotEnoughItems(f"only {available} record(s) after the cursor, not n={n} (strict_n=True)")

    def _advance(self, entry):
        """Move the cursor onto ``entry``, the one _entry_after_cursor returned."""
        self._key = entry[0]
        self._seq += 1
        if self._ahead and self._ahead[0] is entry:
            self._ahead.popleft()

    def _entry_after_cursor(self, blocking, timeout):
        """The entry after the cursor, None if none (yet), or _END when the stream ended."""
        feed = self._feed
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._ahead:
                return self._ahead[0]
            target = self._seq + 1
            batch = feed.ring_slice(target, _READ_AHEAD)
            if batch:
                self._ahead.extend(batch)
                return batch[0]
            committed = feed.committed_high()
            if target <= committed or (self._seq < 0 and committed >= 0):
                entry = self._fetch_from_disk(target)
                if entry is not None:
                    return entry
                entry = feed.ring_get(target)
                if entry is not None:
                    return entry
                if target <= committed:
                    # everything from the cursor to the newest committed record is gone
                    if self._seq >= 0 and not self.skip_pruned:
                        raise errors.RecordsPruned(committed - target + 1)
                    self._seq = committed
                    continue
            ended = feed.ended
            if target <= feed.high():
                continue
            if ended:
                return _END
            remaining = None if deadline is None else deadline - time.monotonic()
            if not blocking or (remaining is not None and remaining <= 0):
                if feed.refresh():  # a stored session: records committed (or its end) since last looked
                    continue
                return None
            feed.wait(target, remaining)

    def _fetch_from_disk(self, target):
        """Fill the read-ahead from the log after the cursor; its first entry or None."""
        batch = next(self._disk_batches(self._prefix, self._session_end, self._key, _ENTRIES, _READ_AHEAD), None)
        if batch is None:
            return None
        entries = batch[0]
        first_seq = records.seq_of(entries[0][0])
        if first_seq > target and self._seq >= 0 and not self.skip_pruned:
            raise errors.RecordsPruned(first_seq - target)
        self._seq = first_seq - 1
        self._ahead.extend(entries)
        return self._ahead[0]

    def _raise_end(self, default):
        if self._feed.error:
            raise self._feed.failure()
        raise default

    # -- queries ---------------------------------------------------------------

    def range(self, start=None, stop=None, step=None, *, peek=None, only_new_items=False,
              ignore_no_item_found=None, start_le=False, stop_ge=False, join=False):
        """Records with ``start <= key <= stop`` (both inclusive; None = open), in order.

        ``step`` keeps every step-th; ``only_new_items`` only those after the
        cursor.  ``start_le`` widens ``start`` down to the nearest key at or
        below it; ``stop_ge`` widens ``stop`` up to the nearest key at or
        above it, and finds nothing while no such key exists yet.  ``join``
        (implies ``start_le``; no ``step``) returns one item: the records
        trimmed to ``[start, stop]`` with the source's ``slice_item`` and
        joined with its ``join_items`` (JoinNotSupported, before reading
        anything, when the source lacks them).  Moves the cursor to the last
        record found unless ``peek``.  An empty result raises NoItemFound
        (None with ``ignore_no_item_found``).  ``peek`` and
        ``ignore_no_item_found`` None take the reader's defaults.
        """
        peek = self.peek if peek is None else peek
        ignore_no_item_found = self.ignore_no_item_found if ignore_no_item_found is None else ignore_no_item_found
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 1):
            raise ValueError(f"step must be a positive int or None, not {step!r}")
        if join:
            if step is not None:
                raise errors.ConfigurationError("range(join=True) does not take a step")
            slice_item, join_items = self._joiners()
            start_le = True
        lo, hi, _ = self._key_bounds(start, stop, None)
        if start_le and start is not None:
            lo = self._key_at_or_before(records.key_bounds(self._prefix, None, encode_key(start))[1], lo)
        if stop_ge and stop is not None:
            hi = self._key_at_or_after(records.key_bounds(self._prefix, encode_key(stop), None)[0])
            if hi is None:
                if ignore_no_item_found:
                    return None
                raise errors.NoItemFound(f"no record with key >= {stop!r} yet in session {self._feed.session_id} "
                                         f"(stop_ge=True; ignore_no_item_found=True returns None instead)")
        after = self._key if only_new_items and self._key is not None and self._key >= lo else None
        bounds = lo, hi, after
        found = []
        last_key = None
        if step is not None and step > 1:
            entries = list(islice(self._entries_from(*bounds), 0, None, step))
            found = [entry[1] for entry in entries]
            last_key = entries[-1][0] if entries else None
        else:
            for batch, last_key in self._scan(*bounds, _RECORDS):
                found.extend(batch)
        if not found:
            if ignore_no_item_found:
                return None
            raise errors.NoItemFound(f"no record with {_bounds_text(start, stop)} in session "
                                     f"{self._feed.session_id} (ignore_no_item_found=True returns None instead)")
        if not peek:
            self._move_to_key(last_key)
        if join:
            found[0] = slice_item(found[0], start, None)
            found[-1] = slice_item(found[-1], None, stop)
            return join_items(found)
        return found

    def _joiners(self):
        """The source's ``(slice_item, join_items)``; JoinNotSupported unless it implements both."""
        source = self._feed.source
        methods = []
        for name in ("slice_item", "join_items"):
            method = getattr(source, name, None)
            base = getattr(SourceReader, name)
            if method is None or getattr(type(source), name, None) is base:
                raise errors.JoinNotSupported(
                    "range(join=True) needs the source reader to implement slice_item(item, start, stop) and "
                    "join_items(items)" + ("" if source is not None else
                                           "; a reader of a stored session has no source reader"))
            methods.append(method)
        return methods

    def _key_at_or_before(self, bound, default):
        """The lower record-key bound taking in every record with the greatest
        key below record key ``bound`` (``default`` if there is none)."""
        feed = self._feed
        found = [entry for entry in feed.uncommitted() if entry[0] < bound][-1:]
        if not found and feed.db is not None:
            with feed.store.read() as txn:
                found = self._layout.scan_reverse(txn, feed.db, self._prefix, bound, 1, decode=False)
        return records.same_key_bounds(found[0][0])[0] if found else default

    def _key_at_or_after(self, bound):
        """The upper record-key bound taking in every record with the smallest
        key at or above record key ``bound`` (None if there is none)."""
        for entry in self._entries_from(bound, self._session_end, None, first_chunk=1):
            return records.same_key_bounds(entry[0])[1]
        return None

    def irange(self, start=None, stop=None):
        """Lazy :meth:`range`: an iterator of the records with ``start <= key
        <= stop`` in bounded memory (short read transactions; each block is
        decoded when the iteration reaches it); does not move the cursor.
        Bad bounds raise here, damaged records during the iteration."""
        return chain.from_iterable(map(_ITEMS, self._scan(*self._key_bounds(start, stop, None), _RECORDS)))

    def head(self, n=None, *, peek=False, ignore_no_item_found=None):
        """The oldest record (or a list of the ``n`` oldest) of the stream.

        Moves the cursor to the last one returned unless ``peek``.  Raises
        NoItemFound when the stream is empty (None with ``ignore_no_item_found``).
        """
        _check_count(n)
        want = 1 if n is None else n
        found = list(islice(self._entries_from(*self._key_bounds(None, None, None), first_chunk=want), want))
        return self._finish_pick(found, n, peek, ignore_no_item_found)

    def tail(self, n=None, *, peek=False, only_new_items=False, ignore_no_item_found=None):
        """The newest record (or a list of the ``n`` newest, oldest first).

        ``only_new_items``: only those after the cursor.  Moves the cursor to
        the newest unless ``peek``.  Raises NoItemFound when there is none
        (None with ``ignore_no_item_found``).
        """
        _check_count(n)
        want = 1 if n is None else n
        feed = self._feed
        found = feed.uncommitted()[-want:]
        if len(found) < want and feed.db is not None:
            limit = want - len(found)
            stop = found[0][0] if found else self._session_end
            with feed.store.read() as txn:
                found = self._layout.scan_reverse(txn, feed.db, self._prefix, stop, limit) + found
        if only_new_items and self._key is not None:
            found = [entry for entry in found if entry[0] > self._key]
        return self._finish_pick(found, n, peek, ignore_no_item_found)

    def _finish_pick(self, found, n, peek, ignore_no_item_found):
        if not found:
            if self.ignore_no_item_found if ignore_no_item_found is None else ignore_no_item_found:
                return None
            raise errors.NoItemFound(f"no such record in session {self._feed.session_id} stream "
                                     f"{self._feed.stream!r} (ignore_no_item_found=True returns None instead)")
        if not peek:
            self._move_to_key(found[-1][0])
        return found[0][1] if n is None else [entry[1] for entry in found]

    def seek(self, key):
        """Place the cursor so that the next record read is the first with a
        key ``>= key`` (or the next new one if there is none yet).  Raises
        InvalidKey for what is not a key, None included."""
        self._seek_record_key(self._prefix + encode_key(key))

    def _seek_record_key(self, lo):
        for entry in self._entries_from(lo, self._session_end, None, first_chunk=1):
            self._ahead.clear()
            self._seq = records.seq_of(entry[0]) - 1
            self._key = records.key_before(entry[0], self._prefix)
            return
        self._feed.refresh()
        newest = self._feed.high()
        self._ahead.clear()
        if newest >= 0:
            try:
                self.tail()
            except errors.NoItemFound:
                self._seq = newest

    # -- stream2py's reader attributes --------------------------------------------

    @property
    def last_item(self):
        """The record at the cursor (the last one read), None before the first
        and after :meth:`seek`."""
        entry = self._cursor_entry()
        return None if entry is None else entry[1]

    @property
    def last_key(self):
        """The key of :attr:`last_item` (None when it is None)."""
        entry = self._cursor_entry()
        return None if entry is None else records.key_of(entry[0])

    def _cursor_entry(self):
        if self._key is None or len(self._key) <= len(self._prefix):
            return None
        feed = self._feed
        entry = feed.ring_get(self._seq)
        if entry is not None and entry[0] == self._key:
            return entry
        if feed.db is None:
            return None
        with feed.store.read() as txn:
            found = self._layout.scan(txn, feed.db, self._key, self._key, limit=1)
        return found[0] if found else None

    @property
    def is_stopped(self):
        """True once the stream has ended (stopped, finished or failed)."""
        self._feed.refresh()
        return self._feed.ended

    @property
    def source_reader_info(self):
        """The session's info (the source's, as its ``open()`` left it)."""
        return self._feed.info()

    def is_same_buffer(self, other):
        """True if ``other`` is a reader of the same class over the same stream of the same session."""
        return type(self) is type(other) and (self._feed.store, self._feed.session_id, self._feed.stream) == (
            other._feed.store, other._feed.session_id, other._feed.stream)

    def set_sleep_time_on_iter_none(self, sleep_time_s=0.1):
        """Kept for stream2py programs: iteration here wakes on each new
        record instead of sleeping, so there is nothing to set."""

    def open(self):
        return self

    def close(self):
        """Call :attr:`onclose` if set (a StreamSource closes when its last reader does)."""
        if self.onclose is not None:
            self.onclose()

    enter, exit = open, close

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    @property
    def lag(self):
        """Records between the cursor and the newest record of the stream
        (of a stored session: the newest committed when asked)."""
        self._feed.refresh()
        return max(0, self._feed.high() - self._seq)

    def range_by_time(self, t0, t1):
        """Records that arrived at ``t0 <= time <= t1`` (epoch seconds), in order.

        The stream's sparse time index finds the start in O(log n).  Does not
        move the cursor.
        """
        lo_us, hi_us = int(t0 * 1e6), int(t1 * 1e6)
        out = []
        for entry in self._entries_from(self._time_index_start(lo_us), self._session_end, None, with_time=True):
            arrival = entry[1]
            if arrival > hi_us:
                break
            if arrival >= lo_us:
                out.append(entry[2])
        return out

    def ientries(self, start=None, stop=None, *, since=None, until=None, after=None, key_types=None):
        """Lazy :class:`Entry` tuples ``(key, arrival_us, record, seq)`` of the
        records with ``start <= key <= stop`` that arrived at ``since <= time
        <= until`` (epoch seconds); every bound inclusive, None for open.

        ``after`` (an Entry of this stream) continues strictly after that
        record, so a caller can poll for what is new.  The time index finds
        where ``since`` begins in O(log n), whatever the key type.
        ``key_types`` (a stream's, see ``Session.stream_info``) decodes keys
        as stored (e.g. ``2.0`` for a float key, not ``2``).  Reads in
        bounded memory; does not move the cursor.
        """
        lo, hi, _ = self._key_bounds(start, stop, None)
        if after is not None:
            lo = max(lo, records.record_key(self._prefix, encode_key(after.key), after.seq + 1))
        lo_us = None if since is None else round(since * 1e6)
        hi_us = None if until is None else round(until * 1e6)
        if lo_us is not None:
            lo = max(lo, self._time_index_start(lo_us))
        return self._timed_entries(lo, hi, lo_us, hi_us, key_types)

    def icolumns(self, start=None, stop=None, *, since=None, until=None, key_types=None):
        """Lazy :class:`Columns`, one per stored block (format 1: per chunk
        of records), of the committed records with ``start <= key <= stop``
        that arrived at ``since <= time <= until`` (epoch seconds); every
        bound inclusive, None for open; never an empty one.

        The same records in the same order as :meth:`ientries`, except that
        records published but not yet committed (in the ring of a stream
        this process records) are left out.  Reads in short read
        transactions, each continuing strictly after the last record of the
        one before, so a stream being recorded meanwhile is read without
        gaps or repeats up to what was committed when the scan got there.
        ``key_types`` as for :meth:`ientries`.  Does not move the cursor.
        """
        feed = self._feed
        lo, hi, lo_us, hi_us = self._stored_bounds(start, stop, since, until)
        after = None
        while feed.db is not None:
            with feed.store.read() as txn:
                blocks, after, exhausted = self._layout.scan_columns(txn, feed.db, lo, hi, _SCAN_CHUNK, after,
                                                                     key_types)
            for keys, times_us, found in blocks:
                beyond = hi_us is not None and times_us[-1] > hi_us
                if beyond:
                    cut = int(np.argmax(times_us > hi_us))
                    keys, times_us, found = keys[:cut], times_us[:cut], found[:cut]
                part = _since(Columns(keys, times_us, found), lo_us)
                if part.keys:
                    yield part
                if beyond:
                    return
            if exhausted or after is None:
                return

    def iblocks(self, start=None, stop=None, *, since=None, until=None):
        """Lazy :class:`BlockPart` s, one per stored block, of the records of
        :meth:`icolumns` (the same bounds, all inclusive, None open; never an
        empty one), undecoded, for decoders that take a block's columns at
        once.  Arrival times never decrease within a stream, so the records
        of a block within ``since..until`` are one run ``lo .. hi - 1``.
        Reads as :meth:`icolumns` does; does not move the cursor."""
        feed = self._feed
        lo, hi, lo_us, hi_us = self._stored_bounds(start, stop, since, until)
        after = None
        while feed.db is not None:
            with feed.store.read() as txn:
                parts, after, exhausted = self._layout.scan_blocks(txn, feed.db, lo, hi, _SCAN_CHUNK, after)
            for block, first, end in parts:
                if lo_us is not None or hi_us is not None:
                    times_us = block.arrivals(first, end)
                    beyond = hi_us is not None and times_us[-1] > hi_us
                    start_at = first if lo_us is None else first + int(np.searchsorted(times_us, lo_us))
                    end = end if not beyond else first + int(np.searchsorted(times_us, hi_us, side="right"))
                    first = start_at
                    if end > first:
                        yield BlockPart(block, first, end)
                    if beyond:
                        return
                else:
                    yield BlockPart(block, first, end)
            if exhausted or after is None:
                return

    def ichunks(self, start=None, stop=None, *, since=None, until=None):
        """The records of :meth:`iblocks` (the same bounds), many blocks at
        once: lazy :class:`~streamlog.records.v2.Chunk` s (never an empty
        one), each the encoded keys, arrival times and encodings of the
        records of up to ``records.v2.CHUNK_BLOCKS`` blocks, each column
        joined into one buffer (copied once out of the log's memory map;
        the blocks' checksums checked as their records are copied, in
        parallel threads), for decoders
        that take many records at once.  Format 2 logs only (ValueError on
        format 1, which stores no blocks).  Reads as :meth:`icolumns` does;
        does not move the cursor."""
        feed = self._feed
        scan_chunk = getattr(self._layout, "scan_chunk", None)
        if scan_chunk is None:
            raise ValueError(f"log {feed.store.path} uses on-disk format version 1, which stores no blocks")
        lo, hi, lo_us, hi_us = self._stored_bounds(start, stop, since, until)
        after = None
        while feed.db is not None:
            with feed.store.read(buffers=True) as txn:
                chunk, after, exhausted = scan_chunk(txn, feed.db, lo, hi, _CHUNK_RECORDS, after)
            if chunk is not None:
                times_us = chunk.arrivals
                beyond = hi_us is not None and times_us[-1] > hi_us
                if lo_us is not None or beyond:
                    first = 0 if lo_us is None else int(np.searchsorted(times_us, lo_us))
                    end = chunk.count if not beyond else int(np.searchsorted(times_us, hi_us, side="right"))
                    if end > first:
                        yield chunk.part(first, end)
                else:
                    yield chunk
                if beyond:
                    return
                chunk = None  # freed before the next is read, so that its memory is the next one's
            if exhausted or after is None:
                return

    def _stored_bounds(self, start, stop, since, until):
        """``(lo, hi, lo_us, hi_us)`` of :meth:`icolumns`' bounds: record keys
        (the start moved up to where ``since`` begins in the time index) and
        arrival µs (None: open)."""
        lo, hi, _ = self._key_bounds(start, stop, None)
        lo_us = None if since is None else round(since * 1e6)
        hi_us = None if until is None else round(until * 1e6)
        if lo_us is not None:
            lo = max(lo, self._time_index_start(lo_us))
        return lo, hi, lo_us, hi_us

    def tail_entries(self, n, *, key_types=None):
        """The ``n`` newest committed records as :class:`Entry` tuples, oldest
        first (fewer when the stream holds fewer); see :meth:`ientries`."""
        _check_count(n)
        feed = self._feed
        if feed.db is None:
            return []
        with feed.store.read() as txn:
            newest = self._layout.scan_reverse(txn, feed.db, self._prefix, self._session_end, n, decode=False)
        if not newest:
            return []
        return list(islice(self._timed_entries(newest[0][0], self._session_end, None, None, key_types), n))

    def _timed_entries(self, lo, hi, lo_us, hi_us, key_types):
        """An iterator of the Entry tuples of the records with ``lo <= record
        key <= hi`` that arrived at ``lo_us <= t <= hi_us`` (µs, None: open),
        up to the first that arrived after ``hi_us``."""
        found = chain.from_iterable(map(_ITEMS, self._scan(lo, hi, None, _ENTRY, key_types=key_types)))
        if lo_us is None and hi_us is None:
            return found
        return _arrived(found, lo_us, hi_us)

    def _time_index_start(self, lo_us):
        feed = self._feed
        with feed.store.read() as txn:
            return records.time_index_start(txn, feed.time_db, feed.session_id, lo_us)

    # -- internals ---------------------------------------------------------------

    def _move_to_key(self, record_key):
        self._ahead.clear()
        self._key = record_key
        self._seq = records.seq_of(record_key)

    def _key_bounds(self, start, stop, after):
        """Record-key bounds ``(lo, hi, after)`` for keys in [start, stop] (inclusive)."""
        lo, hi = records.key_bounds(self._prefix, None if start is None else encode_key(start),
                                    None if stop is None else encode_key(stop))
        if after is not None and after < lo:
            after = None
        return lo, hi, after

    def _entries_from(self, lo, hi, after, with_time=False, first_chunk=_SCAN_CHUNK):
        """Entries with ``lo <= key <= hi`` (and ``> after``), in order (see :meth:`_scan`)."""
        for batch, _ in self._scan(lo, hi, after, _TIMED if with_time else _ENTRIES, first_chunk):
            yield from batch

    def _scan(self, lo, hi, after, shape=_ENTRIES, first_chunk=_SCAN_CHUNK, key_types=None):
        """``(items, last record key)`` for the records with ``lo <= key <= hi``
        (and ``> after``), in order: first from the log (see
        :meth:`_disk_batches`), then the records published since in the ring
        but not yet committed; ``shape`` says what an item is (an Entry's key
        decoded as ``key_types`` says).  ``items`` is an iterable to iterate
        once: records and Entry tuples are decoded block by block as it is
        iterated (the blocks own their bytes, see ``records.v2.scan_blocks``)."""
        feed = self._feed
        chunk = first_chunk
        while True:
            committed = feed.committed_high()
            for batch, last in self._disk_batches(lo, hi, after, shape, chunk, key_types):
                yield batch, last
                after = last
                chunk = _SCAN_CHUNK
            complete = True
            tail = []
            for seq in range(committed + 1, feed.high() + 1):
                entry = feed.ring_get(seq)
                if entry is None:
                    complete = False
                    break
                key = entry[0]
                if key > hi:
                    break
                if key >= lo and (after is None or key > after):
                    if shape is _RECORDS:
                        tail.append(entry[1])
                    elif shape is _ENTRY:
                        tail.append(Entry(records.key_of(key, key_types), entry[2], entry[1], records.seq_of(key)))
                    else:
                        tail.append((key, entry[2], entry[1]) if shape is _TIMED else entry[:2])
                    after = key
            if tail:
                yield tail, after
            if complete:
                return

    def _decoded(self, decode, part):
        """``decode(block, lo, hi)`` of one ``scan_blocks`` part, after its read
        transaction ended; a record that does not decode raises the
        CorruptRecord naming the log that every read raises."""
        try:
            return decode(*part)
        except errors.CorruptRecord as exc:
            raise self._feed.store.damaged(exc) from None

    def _disk_batches(self, lo, hi, after, shape, chunk, key_types=None):
        """``(items, last record key)`` for the committed records with ``lo <=
        key <= hi`` (and ``> after``) of this session, in chunks each read in
        its own short transaction (the first at most ``chunk`` long); records
        and Entry tuples are decoded block by block as the items are iterated,
        after the transaction (one block's records in memory at a time)."""
        feed = self._feed
        if feed.db is None:
            return
        end = self._session_end
        while True:
            with feed.store.read() as txn:
                if shape is _RECORDS or shape is _ENTRY:
                    parts, last, exhausted = self._layout.scan_blocks(txn, feed.db, lo, hi, chunk, after)
                    decode = _block_records if shape is _RECORDS else partial(_block_entries, key_types)
                    batch = chain.from_iterable(map(partial(self._decoded, decode), parts))
                else:
                    batch = self._layout.scan(txn, feed.db, lo, hi, limit=chunk, after=after,
                                              with_time=shape is _TIMED)
                    exhausted = len(batch) < chunk
                    if batch and batch[-1][0] >= end:
                        batch = [e for e in batch if e[0] < end]
                        exhausted = True
                    last = batch[-1][0] if batch else None
            if last is None:
                return
            yield batch, last
            if exhausted:
                return
            after = last
            chunk = _SCAN_CHUNK


def _block_records(block, lo, hi):
    return block.records(lo, hi)


def _block_entries(key_types, block, lo, hi):
    return block.entries(lo, hi, Entry, key_types)


def _arrived(entries, lo_us, hi_us):
    """The Entry tuples of ``entries`` that arrived at or after ``lo_us``, up
    to the first that arrived after ``hi_us`` (µs, None: open)."""
    for entry in entries:
        arrival = entry[1]
        if hi_us is not None and arrival > hi_us:
            return
        if lo_us is None or arrival >= lo_us:
            yield entry


def _since(columns, lo_us):
    """``columns`` without the records that arrived before ``lo_us`` (None: all kept)."""
    if lo_us is None or not columns.keys or columns.times_us[0] >= lo_us:
        return columns
    keep = np.flatnonzero(columns.times_us >= lo_us).tolist()
    keys, records = columns.keys, columns.records
    return Columns([keys[i] for i in keep], columns.times_us[keep], [records[i] for i in keep])


def _check_count(n):
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive int or None, not {n!r}")


def _bounds_text(start, stop):
    if start is None and stop is None:
        return "any key"
    if start is None:
        return f"key <= {stop!r}"
    if stop is None:
        return f"key >= {start!r}"
    return f"{start!r} <= key <= {stop!r}"
