"""Readers over a mirrored stream in Redis, with the BufferReader interface.

A :class:`RemoteReader`'s cursor is the next local sequence number it will
read (stream ids are ``seq-part``, so "after the cursor" is ``XRANGE
(SEQ-0``).  It follows a live session with ``XREAD BLOCK`` in slices shorter
than the client's ``socket_timeout`` (so a long wait is never cut by it) and
ends once the mirror has marked the session ended and nothing follows.

With ``group`` and ``consumer`` the cursor is a Redis consumer group instead:
records come from ``XREADGROUP`` in batches of ``batch``; the records of a
batch are acknowledged (``XACK``) when the reader fetches the next batch, at
the end of the session, or on :meth:`RemoteReader.ack`.  A reader resumes
after what its group acknowledged: a consumer restarted under the same name
first gets again what it took and had not acknowledged (at least once),
and records a consumer took and never acknowledged are claimed
(``XAUTOCLAIM``) by another once idle for ``claim_idle_s``.
"""

import contextlib
import time
from collections import deque
from itertools import islice

from streamlog import errors
from streamlog.codec import decode_record
from streamlog.keys import encode_key
from streamlog.remote import layout

_CHUNK = 1000
_END = object()
BLOCK_S = 1.0


def _block_ms(remaining):
    return max(1, int(min(BLOCK_S, BLOCK_S if remaining is None else remaining) * 1000))


@contextlib.contextmanager
def redis_errors(log):
    """Turn redis-py's exceptions into RemoteUnavailable / RemoteError naming ``log``."""
    redis = layout.redis_module()

    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise errors.RemoteUnavailable(f"{log.path}: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise errors.RemoteError(f"{log.path}: {exc}") from exc


class _Record:
    __slots__ = ("seq", "key", "time_us", "record", "ids")

    def __init__(self, seq, key, time_us, record, ids):
        self.seq, self.key, self.time_us, self.record, self.ids = seq, key, time_us, record, ids


class _Gap:
    __slots__ = ("seq", "missed", "ids")

    def __init__(self, seq, missed, ids):
        self.seq, self.missed, self.ids = seq, missed, ids


def _items(entries, complete_parts):
    """Stream entries -> records (parts joined) and gap markers, in order.

    A record whose last parts are not in ``entries`` is completed with
    ``complete_parts(first_id, missing)`` (entries, or [] if the mirror has
    not written them yet: the record and what follows are left out).
    """
    out = []
    i = 0
    while i < len(entries):
        entry_id, fields = entries[i]
        seq = layout.parse_id(entry_id)[0]
        if b"gap" in fields:
            out.append(_Gap(seq, int(fields[b"gap"]), [entry_id]))
            i += 1
            continue
        part = fields.get(b"p")
        if part is None:
            out.append(_Record(seq, fields[b"k"], int(fields[b"t"]), decode_record(fields[b"r"]), [entry_id]))
            i += 1
            continue
        index, _, total = part.partition(b"/")
        index, total = int(index), int(total)
        if index != 1:  # the rest of a record whose head someone else read (consumer groups)
            out.append(_Gap(seq, 0, [entry_id]))
            i += 1
            continue
        pieces = entries[i:i + total]
        if len(pieces) < total:
            pieces = pieces + complete_parts(pieces[-1][0], total - len(pieces))
        if len(pieces) < total or any(layout.parse_id(p[0])[0] != seq for p in pieces):
            break
        data = b"".join(p[1][b"r"] for p in pieces)
        out.append(_Record(seq, fields[b"k"], int(fields[b"t"]), decode_record(data), [p[0] for p in pieces]))
        i += total
    return out


class RemoteReader:
    """A cursor over one mirrored stream (make it with ``RemoteSession.reader()``).

    The same methods and defaults as :class:`streamlog.BufferReader`
    (``blocking``, ``skip_pruned``, ``timeout``); records missing remotely
    (a gap marker: the local log pruned them before they were mirrored, or
    remote retention removed them) raise RecordsPruned(missed) once the
    cursor has a position, or are skipped with ``skip_pruned=True``.  With
    ``group``/``consumer`` see the module docstring; ``seek`` is refused
    there (the group owns the cursor).
    """

    def __init__(self, session, stream, *, group=None, consumer=None, blocking=True, skip_pruned=False,
                 timeout=None, claim_idle_s=30.0, batch=100):
        if (group is None) != (consumer is None):
            raise ValueError("give both group= and consumer=, or neither")
        self._session = session
        self._log = session.log
        self.stream = stream
        self.blocking = blocking
        self.skip_pruned = skip_pruned
        self.timeout = timeout
        self.group = group
        self.consumer = consumer
        self.claim_idle_s = claim_idle_s
        self.batch = batch
        _, self._key, self._key_index, self._time_index = layout.session_keys(self._log.name, session.id, stream)
        self._types = session.stream_info(stream)["key_types"]
        self._next = 0          # the sequence number after the cursor
        self._seq = -1          # the last record read
        self._positioned = False
        self._ahead = deque()
        self._unacked = []
        self._own_pending = True
        if group is not None:
            with redis_errors(self._log):
                try:
                    self._client.xgroup_create(self._key, group, id="0", mkstream=True)
                except Exception as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    def __repr__(self):
        return f"<streamlog.RemoteReader session={self._session.id} stream={self.stream!r} cursor={self._seq}>"

    @property
    def _client(self):
        return self._log.client

    # -- fetching ------------------------------------------------------------

    def _key_types(self):
        if self._types is None:
            self._types = self._session.refresh().stream_info(self.stream)["key_types"]
        return self._types

    def _complete_parts(self, after_id, missing):
        with redis_errors(self._log):
            return self._client.xrange(self._key, f"({_text(after_id)}", "+", count=missing)

    def _scan(self, from_seq):
        """Items (records and gaps) with seq >= from_seq, in order, fetched in chunks."""
        start = f"{from_seq}-0"
        while True:
            with redis_errors(self._log):
                entries = self._client.xrange(self._key, start, "+", count=_CHUNK)
            items = _items(entries, self._complete_parts)
            yield from items
            if len(entries) < _CHUNK or not items:
                return
            start = f"({_text(items[-1].ids[-1])}"

    def _ended(self):
        try:
            return self._session.refresh().status != "live"
        except errors.SessionNotFound:
            return True

    def _fetch(self, blocking, timeout):
        """Fill the read-ahead with items after the cursor; False if none came
        (yet), _END when the session ended and nothing follows.  Waits (if
        ``blocking``, up to ``timeout``) in XREAD BLOCK / XREADGROUP BLOCK."""
        if self.group is not None:
            self.ack()
        poll, block = (self._poll, self._block) if self.group is None else (self._poll_group, self._block_group)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ended = self._ended()  # looked at before reading: nothing written before the end is missed
            with redis_errors(self._log):
                entries = poll()
            items = _items(entries, self._complete_parts)
            if not items and not ended:
                remaining = None if deadline is None else deadline - time.monotonic()
                if not blocking or (remaining is not None and remaining <= 0):
                    return False
                with redis_errors(self._log):
                    entries = block(entries, _block_ms(remaining))
                items = _items(entries, self._complete_parts)
            if items:
                self._ahead.extend(items)
                return True
            if ended:
                return _END

    def _poll(self):
        return self._client.xrange(self._key, f"{self._next}-0", "+", count=_CHUNK)

    def _block(self, entries, block_ms):
        """Wait for an entry after those just read; [] (the caller reads again)."""
        after = _text(entries[-1][0]) if entries else f"{self._next}-0"
        self._log.blocking_client().xread({self._key: after}, count=1, block=block_ms)
        return []

    def _poll_group(self):
        client = self._client
        entries = []
        if self._own_pending:  # what this consumer took before it was restarted
            got = client.xreadgroup(self.group, self.consumer, {self._key: "0"}, count=self.batch)
            entries = got[0][1] if got else []
            self._own_pending = bool(entries)
        if not entries:  # what a consumer that went quiet took and never acknowledged
            claimed = client.xautoclaim(self._key, self.group, self.consumer, int(self.claim_idle_s * 1000), "0-0",
                                        count=self.batch)
            entries = [e for e in claimed[1] if e[1]]
        if not entries:
            got = client.xreadgroup(self.group, self.consumer, {self._key: ">"}, count=self.batch)
            entries = got[0][1] if got else []
        return entries

    def _block_group(self, entries, block_ms):
        """Wait for entries new to the group; what it delivers (now pending here)."""
        got = self._log.blocking_client().xreadgroup(self.group, self.consumer, {self._key: ">"}, count=self.batch,
                                                     block=block_ms)
        return got[0][1] if got else []

    def ack(self):
        """Acknowledge every record this group reader returned so far."""
        if self.group is not None and self._unacked:
            with redis_errors(self._log):
                self._client.xack(self._key, self.group, *self._unacked)
            self._unacked = []

    def _take(self, blocking, timeout):
        """The next record after the cursor (moved onto it); None if none (yet); _END at the end."""
        while True:
            if not self._ahead:
                got = self._fetch(blocking, timeout)
                if got is _END:
                    return _END
                if not got:
                    return None
            item = self._ahead[0]
            gap = type(item) is _Gap
            if self.group is None:
                missed = (item.seq + item.missed if gap else item.seq) - self._next
            else:
                missed = item.missed if gap else 0
            if missed > 0 and self._positioned and not self.skip_pruned:
                raise errors.RecordsPruned(missed)
            self._ahead.popleft()
            if gap:
                self._next = max(self._next, item.seq + item.missed)
                if self.group is not None:
                    self._unacked.extend(item.ids)
                    self.ack()
                continue
            self._positioned = True
            self._seq = item.seq
            self._next = item.seq + 1
            if self.group is not None:
                self._unacked.extend(item.ids)
            return item

    # -- the BufferReader interface ------------------------------------------

    def __iter__(self):
        return self

    def __next__(self):
        record = self.next()
        if record is None:
            raise StopIteration
        return record

    def next(self):
        """The record after the cursor (moves it); see BufferReader.next."""
        item = self._take(self.blocking, self.timeout)
        if item is _END:
            self._raise_end()
        if item is None:
            if self.blocking:
                raise StopIteration
            return None
        return item.record

    def _raise_end(self):
        error = self._session.error if self._session.status == "failed" else None
        if error:
            raise errors.SourceFailed(error)
        raise StopIteration

    def read(self, n=None, *, peek=False, blocking=None, timeout=None, ignore_no_item_found=False):
        """One record or a list of up to ``n`` after the cursor; see BufferReader.read."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"n must be a positive int or None, not {n!r}")
        if peek and self.group is not None:
            raise errors.RemoteError("a consumer-group reader cannot peek: the group owns the cursor")
        blocking = self.blocking if blocking is None else blocking
        timeout = self.timeout if timeout is None else timeout
        saved = (self._next, self._seq, self._positioned, list(self._ahead))
        out = []
        item = self._take(blocking, timeout)
        while item is not None and item is not _END:
            out.append(item.record)
            if n is None or len(out) >= n:
                break
            item = self._take(False, None)
        if peek:
            self._next, self._seq, self._positioned, ahead = saved
            self._ahead = deque(ahead)
        if not out:
            if ignore_no_item_found:
                return None
            if item is _END and self._session.status == "failed" and self._session.error:
                raise errors.SourceFailed(self._session.error)
            raise errors.NoItemFound(f"no record after the cursor in session {self._session.id}")
        return out[0] if n is None else out

    def _start_seq(self, start):
        """A sequence number at or before the first record with key >= ``start``."""
        if start is None:
            return 0
        with redis_errors(self._log):
            found = self._client.zrevrangebylex(self._key_index, b"(" + encode_key(start), b"-", start=0, num=1)
        return layout.member_seq(found[0]) if found else 0

    def _records(self, start, stop, after_seq=-1, from_seq=0):
        lo = None if start is None else encode_key(start)
        hi = None if stop is None else encode_key(stop)
        for item in self._scan(max(self._start_seq(start), after_seq + 1, from_seq)):
            if type(item) is _Gap or item.seq <= after_seq or (lo is not None and item.key < lo):
                continue
            if hi is not None and item.key > hi:
                return
            yield item

    def ientries(self, start=None, stop=None, *, since=None, until=None, after=None, key_types=None):
        """Lazy :class:`streamlog.reader.Entry` tuples ``(key, arrival_us,
        record, seq)`` of the records with ``start <= key <= stop`` that
        arrived at ``since <= time <= until`` (epoch seconds), strictly after
        the entry ``after``; all bounds inclusive, None open; see
        BufferReader.ientries.  The key and time indexes find where to start.
        Does not move the cursor."""
        from streamlog.keys import decode_key_prefix
        from streamlog.reader import Entry

        types = key_types if key_types is not None else self._key_types()
        since_us = None if since is None else round(since * 1e6)
        until_us = None if until is None else round(until * 1e6)
        from_seq = 0 if since_us is None else self._time_start_seq(since_us)
        for item in self._records(start, stop, -1 if after is None else after.seq, from_seq):
            if until_us is not None and item.time_us > until_us:
                return
            if since_us is None or item.time_us >= since_us:
                yield Entry(decode_key_prefix(item.key, types)[0], item.time_us, item.record, item.seq)

    def _time_start_seq(self, since_us):
        """A sequence number at or before the first record that arrived at ``since_us`` or later."""
        with redis_errors(self._log):
            found = self._client.zrevrangebyscore(self._time_index, since_us, "-inf", start=0, num=1)
        return int(found[0]) if found else 0

    def range(self, start=None, stop=None, *, step=None, peek=False, only_new_items=False,
              ignore_no_item_found=False):
        """Records with ``start <= key <= stop`` (inclusive); see BufferReader.range.
        Finds ``start`` through the sparse key index, then reads forward."""
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 1):
            raise ValueError(f"step must be a positive int or None, not {step!r}")
        items = self._records(start, stop, self._seq if only_new_items else -1)
        found = list(islice(items, 0, None, step or 1))
        if not found:
            if ignore_no_item_found:
                return None
            raise errors.NoItemFound(f"no record in the asked key range in session {self._session.id}")
        if not peek:
            self._move_to(found[-1].seq)
        return [item.record for item in found]

    def irange(self, start=None, stop=None):
        """Lazy :meth:`range` (chunks of 1,000 entries); does not move the cursor."""
        for item in self._records(start, stop):
            yield item.record

    def _move_to(self, seq):
        if self.group is not None:
            raise errors.RemoteError("a consumer-group reader cannot move its cursor: the group owns it")
        self._ahead.clear()
        self._seq = seq
        self._next = seq + 1
        self._positioned = True

    def head(self, n=None, *, peek=False):
        """The oldest record (or a list of the ``n`` oldest); NoItemFound if empty."""
        want = 1 if n is None else n
        found = list(islice((i for i in self._scan(0) if type(i) is _Record), want))
        return self._pick(found, n, peek)

    def tail(self, n=None, *, peek=False):
        """The newest record (or a list of the ``n`` newest, oldest first); NoItemFound if empty."""
        want = 1 if n is None else n
        count = want * 2 + 8
        newest_first = []
        end = "+"
        while True:
            with redis_errors(self._log):
                chunk = self._client.xrevrange(self._key, end, "-", count=count)
            newest_first.extend(chunk)
            found = [i for i in _items(newest_first[::-1], self._complete_parts) if type(i) is _Record]
            if len(found) >= want or len(chunk) < count:
                break
            end = f"({_text(chunk[-1][0])}"
        return self._pick(found[-want:], n, peek)

    def _pick(self, found, n, peek):
        if not found:
            raise errors.NoItemFound(f"session {self._session.id} stream {self.stream!r} is empty")
        if not peek:
            self._move_to(found[-1].seq)
        return found[0].record if n is None else [item.record for item in found]

    def seek(self, key):
        """Place the cursor so the next record read is the first with a key
        ``>= key`` (or the next new one if there is none yet)."""
        lo = encode_key(key)
        for item in self._scan(self._start_seq(key)):
            if type(item) is _Record and item.key >= lo:
                self._move_to(item.seq - 1)
                return
        with redis_errors(self._log):
            last = self._client.xrevrange(self._key, "+", "-", count=1)
        self._move_to(layout.parse_id(last[0][0])[0] if last else -1)
        if not last:
            self._positioned = False

    @property
    def lag(self):
        """Records between the cursor and the newest record Redis holds."""
        with redis_errors(self._log):
            last = self._client.xrevrange(self._key, "+", "-", count=1)
        return max(0, layout.parse_id(last[0][0])[0] - self._seq) if last else 0

    def range_by_time(self, t0, t1):
        """Records that arrived at ``t0 <= time <= t1`` (epoch seconds), in
        order; the sparse time index finds the start.  Does not move the cursor."""
        return [entry.record for entry in self.ientries(since=t0, until=t1)]


def _text(value):
    return value.decode() if isinstance(value, bytes) else value
