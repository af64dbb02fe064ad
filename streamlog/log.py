"""The cold tier as users see it: a :class:`Log` of sessions, and retention.

A log is a directory holding one LMDB environment (see :mod:`streamlog.store`
and :mod:`streamlog.records` for the layout).  It holds many sessions, one per
recording (``StreamBuffer.start()``); a session holds one or more named
streams (``"main"``, and e.g. ``"markers"`` beside audio).  Any number of
processes may read a log while one process writes it.
"""

import os
import socket
import time
from dataclasses import dataclass
from typing import Optional

from streamlog import errors, records
from streamlog.codec import decode_record, encode_record
from streamlog.keys import decode_key_prefix
from streamlog.store import DATA_FILE, SEQ, SESSION_ID, open_store

DEFAULT_STREAM = "main"
STATUSES = ("live", "closed", "failed", "crashed")
_PRUNE_BATCH = 2000
_LAST_SESSION_ID = b"last_session_id"
_PRUNE_TARGET = 0.8
_NODE_OVERHEAD = 10  # an LMDB leaf node's header and its pointer in the page


@dataclass(frozen=True)
class Retention:
    """Limits that bound a log on disk; ``None`` means no limit.

    * ``max_bytes``: the log's files stay within about 1.25x of this in
      steady state; the oldest records go first.
    * ``max_age_s``: records that arrived longer ago than this go (to within
      one group commit).
    * ``max_sessions``: only the newest this many sessions are kept (a live
      session is never removed whole).
    """

    max_bytes: Optional[int] = None
    max_age_s: Optional[float] = None
    max_sessions: Optional[int] = None

    def __post_init__(self):
        for name in ("max_bytes", "max_age_s", "max_sessions"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"Retention.{name} must be a positive number or None, not {value!r}")
        if self.max_bytes is not None and self.max_bytes < 1 << 20:
            raise ValueError(f"Retention.max_bytes must be at least 1 MiB, not {self.max_bytes}")

    @property
    def is_limited(self):
        return any(v is not None for v in (self.max_bytes, self.max_age_s, self.max_sessions))


class Log:
    """A streamlog log directory.

    ``Log(path)`` opens it, creating it when missing (unless ``readonly`` or
    ``create=False``).  Raises LogNotFound, NotALog, FormatVersionError.
    Reading never blocks the writer; writing (recording, :meth:`prune`)
    takes the log's writer lock, held by one process at a time (LogLocked).
    ``durability`` (see StreamBuffer) applies to the whole log in this
    process: None takes the mode it is already open with here, else ``"full"``.
    A log opened before ``os.fork()`` raises LogError when used in the child
    (LMDB forbids sharing an environment across fork): open it again there.
    """

    def __init__(self, path, *, readonly=False, retention=None, durability=None, create=True):
        if retention is not None and not isinstance(retention, Retention):
            raise TypeError(f"retention must be a streamlog.Retention, not {type(retention).__name__}")
        self.path = os.fspath(path)
        self.readonly = readonly
        self.retention = retention
        self.store = open_store(self.path, create=create and not readonly,
                                durability=None if readonly else durability)
        self.durability = self.store.durability
        self.format_version = self.store.format_version
        self._closed = False

    def __repr__(self):
        return f"<streamlog.Log {self.path!r}{' readonly' if self.readonly else ''}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Release the log (the environment closes with its last user in this process)."""
        if not self._closed:
            self._closed = True
            self.store.release()

    # -- sessions ------------------------------------------------------------

    def sessions(self, stream=None):
        """All sessions, oldest first (only those holding ``stream`` if given)."""
        writer_alive = self.store.writer_pid() is not None
        found = []
        with self.store.read() as txn:
            for key, value in txn.cursor(self.store.sessions_db):
                session = Session(self, _session_meta(value), writer_alive)
                if stream is None or stream in session.streams:
                    found.append(session)
        return found

    def session(self, session_id):
        """The session with this id; negative ids count from the end (-1 = newest).

        Raises SessionNotFound.
        """
        if isinstance(session_id, bool) or not isinstance(session_id, int):
            raise TypeError(f"a session id is an int, not {type(session_id).__name__}")
        if session_id < 0:
            all_sessions = self.sessions()
            if len(all_sessions) < -session_id:
                raise errors.SessionNotFound(
                    f"log {self.path} has {len(all_sessions)} session(s); there is no session {session_id}")
            return all_sessions[session_id]
        meta = self._read_meta(session_id)
        if meta is None:
            raise errors.SessionNotFound(f"log {self.path} has no session {session_id}")
        return Session(self, meta, self.store.writer_pid() is not None)

    def _read_meta(self, session_id, txn=None):
        if txn is None:
            with self.store.read() as txn:
                return self._read_meta(session_id, txn)
        raw = txn.get(SESSION_ID.pack(session_id), db=self.store.sessions_db)
        return None if raw is None else _session_meta(raw)

    def _write_meta(self, txn, meta):
        txn.put(SESSION_ID.pack(meta["id"]), encode_record(meta), db=self.store.sessions_db)

    # -- writing (used by StreamBuffer) --------------------------------------

    def _begin_writing(self):
        """Take the writer lock and mark sessions left live by a dead process crashed."""
        if self.readonly:
            raise errors.LogError(f"log {self.path} is open read-only")
        first = not self.store.holds_writer
        self.store.acquire_writer()
        if first:
            try:
                self._mark_crashed()
            except BaseException:
                self.store.release_writer()
                raise

    def _end_writing(self):
        self.store.release_writer()

    def _mark_crashed(self):
        self.store.open_all_dbs()

        def work(txn):
            for key, value in txn.cursor(self.store.sessions_db):
                meta = _session_meta(value)
                if meta["status"] == "live":
                    meta["status"] = "crashed"
                    meta["stop_time"] = self._last_arrival(txn, meta)
                    self._write_meta(txn, meta)

        self.store.write(work)

    def _last_arrival(self, txn, meta):
        newest = None
        for stream in meta["streams"]:
            db = self.store.records_db(stream)
            if db is None:
                continue
            found = records.scan_reverse(txn, db, records.session_prefix(meta["id"]),
                                         records.after_session(meta["id"]), 1, decode=False)
            if found:
                arrival = records.arrival_of(txn, db, found[0][0])
                newest = arrival if newest is None else max(newest, arrival)
        return None if newest is None else newest / 1e6

    def _create_session(self, stream, info, durability):
        sessions_db = self.store.sessions_db
        meta_db = self.store.meta_db

        def work(txn):
            # ids are never reused, even after retention removed every session
            cursor = txn.cursor(sessions_db)
            newest = SESSION_ID.unpack(cursor.key())[0] if cursor.last() else 0
            issued = txn.get(_LAST_SESSION_ID, db=meta_db)
            session_id = max(newest, SESSION_ID.unpack(issued)[0] if issued else 0) + 1
            txn.put(_LAST_SESSION_ID, SESSION_ID.pack(session_id), db=meta_db)
            meta = {
                "id": session_id, "status": "live", "start_time": time.time(), "stop_time": None,
                "info": info, "error": None, "pid": os.getpid(), "host": socket.gethostname(),
                "durability": durability, "streams": {},
            }
            meta["streams"][stream] = _new_stream_counters()
            self._write_meta(txn, meta)
            return session_id

        return self.store.write(work)

    def _add_stream(self, session_id, stream):
        def work(txn):
            meta = self._read_meta(session_id, txn)
            if meta is None or meta["status"] != "live":
                raise errors.SessionNotFound(f"session {session_id} of {self.path} is not live")
            if stream in meta["streams"]:
                raise errors.LogError(f"session {session_id} already has a stream {stream!r}")
            meta["streams"][stream] = _new_stream_counters()
            self._write_meta(txn, meta)

        self.store.write(work)

    def _update_stream_counters(self, txn, session_id, stream, added, size, key_types):
        meta = self._read_meta(session_id, txn)
        counters = meta["streams"][stream]
        counters["recorded"] += added
        counters["count"] += added
        counters["bytes"] += size
        if counters["key_types"] is None:
            counters["key_types"] = key_types
        self._write_meta(txn, meta)

    def _end_stream(self, session_id, stream, error=None, info=None, end_session=False):
        def work(txn):
            meta = self._read_meta(session_id, txn)
            if error is not None:
                meta["streams"][stream]["error"] = error
                if stream == DEFAULT_STREAM or end_session:
                    meta["error"] = error
            if info is not None:
                meta["info"] = info
            if end_session:
                meta["status"] = "failed" if meta["error"] else "closed"
                meta["stop_time"] = time.time()
            self._write_meta(txn, meta)

        self.store.write(work)

    # -- statistics and checks -------------------------------------------------

    def stats(self):
        """Figures about the log as a dict: records, sessions, sizes, map, readers.

        ``reader_slots`` is how many slots of LMDB's reader table processes
        hold now (``reading``: inside a read transaction right now);
        ``stale_readers_cleared`` counts the slots of dead processes this
        process freed since it opened the log, ``stale_reader_pids`` names
        those processes as far as the table did.
        """
        slots = self.store.reader_slots()  # first: a finished transaction still bound here holds a slot
        page = self.store.page_size
        total = 0
        with self.store.read() as txn:
            sessions = txn.stat(self.store.sessions_db)["entries"]
            for session_key, value in txn.cursor(self.store.sessions_db):
                meta = _session_meta(value)
                total += sum(s["count"] for s in meta["streams"].values())
        info = self.store.info()
        used_pages = self.store.pages_in_use()
        file_size = os.path.getsize(os.path.join(self.store.path, DATA_FILE))
        high_water = info["last_pgno"] + 1
        return {
            "path": self.path,
            "format_version": self.format_version,
            "records": total,
            "sessions": sessions,
            "streams": self.store.stream_names(),
            "bytes_on_disk": file_size,
            "bytes_used": used_pages * page,
            "page_size": page,
            "map_size": info["map_size"],
            "pages_high_water": high_water,
            "free_pages": max(0, high_water - 2 - used_pages),
            "reader_slots": len(slots),
            "reader_processes": len({pid for pid, _ in slots}),
            "reading": sum(1 for _, txnid in slots if txnid is not None),
            "max_readers": info["max_readers"],
            "stale_readers_cleared": self.store.stale_readers_cleared,
            "stale_reader_pids": list(self.store.stale_reader_pids),
            "writer_pid": self.store.writer_pid(),
        }

    def clear_stale_readers(self):
        """Free the reader slots left by processes that died inside a read
        transaction (each keeps LMDB from reusing pages freed since); return
        how many were freed.  A process recording into the log does this by
        itself after its commits; see :meth:`stats` for the totals."""
        return self.store.clear_stale_readers()

    def verify(self):
        """Check the whole log; return a list of problems (empty when healthy).

        Checks that records of every stream are in key order with dense
        sequence numbers, that counters match, and that no session was left
        ``live`` by a process that is gone.
        """
        problems = []
        for session in self.sessions():
            if session.status == "crashed":
                problems.append(f"session {session.id} was left live by process {session.pid}, which is gone "
                                f"(crashed; its records up to the crash are kept)")
            for stream in session.streams:
                problems.extend(self._verify_stream(session, stream))
        return problems

    def _verify_stream(self, session, stream):
        db = self.store.records_db(stream)
        counters = session._meta["streams"][stream]
        if db is None:
            return [] if counters["count"] == 0 else [f"session {session.id} stream {stream!r}: records missing"]
        problems = []
        prefix = records.session_prefix(session.id)
        last_key = None
        last_seq = None
        count = 0
        after = None
        while True:
            with self.store.read() as txn:
                batch = records.scan(txn, db, prefix, None, limit=10_000, after=after, decode=False)
            batch = [item for item in batch if item[0] < records.after_session(session.id)]
            if not batch:
                break
            for key, _ in batch:
                encoded_end = decode_key_prefix(key, start=SESSION_ID.size)[1]
                seq = SEQ.unpack_from(key, encoded_end)[0]
                if last_key is not None and key[:encoded_end] < last_key:
                    problems.append(f"session {session.id} stream {stream!r}: key order broken at seq {seq}")
                if last_seq is not None and seq != last_seq + 1:
                    problems.append(f"session {session.id} stream {stream!r}: sequence jumps from "
                                    f"{last_seq} to {seq} inside the stored records")
                last_key, last_seq = key[:encoded_end], seq
                count += 1
            after = batch[-1][0]
        if count != counters["count"]:
            problems.append(f"session {session.id} stream {stream!r}: holds {count} records, "
                            f"its counter says {counters['count']}")
        return problems

    # -- retention -------------------------------------------------------------

    def prune(self, retention=None):
        """Apply ``retention`` (default: the log's) now; return records removed.

        Takes the writer lock (LogLocked if another process records).
        """
        retention = retention or self.retention
        if retention is None or not retention.is_limited:
            raise ValueError("prune needs a Retention with at least one limit")
        self._begin_writing()
        try:
            removed = 0
            while True:
                step = self._prune_step(retention, live_ids=self._live_ids_here())
                if not step:
                    return removed
                removed += step
        finally:
            self._end_writing()

    def _live_ids_here(self):
        from streamlog.buffer import live_session_ids

        return live_session_ids(self.store)

    def _prune_step(self, retention, live_ids):
        """Remove one small batch of what ``retention`` excludes; return records removed."""
        self.store.open_all_dbs()
        if retention.max_sessions is not None:
            removed = self._prune_sessions(retention.max_sessions, live_ids)
            if removed is not None:
                return removed
        if retention.max_age_s is not None:
            cutoff = int((time.time() - retention.max_age_s) * 1e6)
            removed = self._prune_oldest(lambda arrival: arrival < cutoff, live_ids)
            if removed:
                return removed
        if retention.max_bytes is not None:
            excess = self.store.pages_in_use() * self.store.page_size - retention.max_bytes * _PRUNE_TARGET
            if excess > 0:  # at least 1/64 of the limit per step, so steps stay few
                wanted = max(excess, retention.max_bytes / 64)
                return self._prune_oldest(lambda arrival: True, live_ids, bytes_wanted=wanted)
        return 0

    def _prune_sessions(self, keep, live_ids):
        sessions = self.sessions()
        if len(sessions) <= keep:
            return None
        for session in sessions[:len(sessions) - keep]:
            if session.id not in live_ids:
                return self._delete_session_batch(session)
        return None

    def _delete_session_batch(self, session):
        return self.store.write(lambda txn: self._delete_records(txn, session.id, None, _PRUNE_BATCH, True))

    def _prune_oldest(self, doomed, live_ids, bytes_wanted=None):
        """Delete one batch of the oldest records for which ``doomed(arrival_us)``,
        stopping once about ``bytes_wanted`` bytes of entries are gone (None: no
        byte bound), so a byte limit trims the excess, not a whole batch."""
        for session in self.sessions():
            live = session.id in live_ids
            removed = self.store.write(
                lambda txn: self._delete_records(txn, session.id, doomed, _PRUNE_BATCH, not live, bytes_wanted))
            if removed:
                return removed
        return 0

    def _delete_records(self, txn, session_id, doomed, budget, drop_empty_session, bytes_wanted=None):
        """Delete the oldest records of a session (all streams) while ``doomed``
        (None = all), at most ``budget`` records and, with ``bytes_wanted``,
        until the deleted entries (keys, values, node headers) reach it; keep
        the newest record of a live stream.  Returns records deleted."""
        meta = self._read_meta(session_id, txn)
        if meta is None:
            return 0
        prefix = records.session_prefix(session_id)
        end = records.after_session(session_id)
        removed = 0
        freed = 0
        for stream, counters in meta["streams"].items():
            db = self.store.records_db(stream)
            if db is None:
                continue
            keep_last = not drop_empty_session
            cursor = txn.cursor(db)
            if not cursor.set_range(prefix):
                continue
            while budget > 0 and counters["count"] > (1 if keep_last else 0) and (
                    bytes_wanted is None or freed < bytes_wanted):
                key = cursor.key()
                if not key or key >= end:
                    break
                value = cursor.value()
                if doomed is not None and not doomed(records.HEADER.unpack_from(value)[0]):
                    break
                extra = value[8]
                size = len(value) - records.HEADER_SIZE
                freed += len(key) + len(value) + _NODE_OVERHEAD
                cursor.delete()
                for _ in range(extra):
                    piece = cursor.value()
                    size += len(piece)
                    freed += len(cursor.key()) + len(piece) + _NODE_OVERHEAD
                    cursor.delete()
                counters["count"] -= 1
                counters["bytes"] -= size
                removed += 1
                budget -= 1
            first_kept = cursor.key()
            self._prune_time_index(txn, stream, session_id, first_kept if first_kept and first_kept < end else None)
        if drop_empty_session and all(c["count"] == 0 for c in meta["streams"].values()):
            txn.delete(SESSION_ID.pack(session_id), db=self.store.sessions_db)
            return max(removed, 1)
        if removed:
            self._write_meta(txn, meta)
        return removed

    def _prune_time_index(self, txn, stream, session_id, first_kept_key):
        db = self.store.time_db(stream)
        if db is None:
            return
        prefix = records.session_prefix(session_id)
        cursor = txn.cursor(db)
        if not cursor.set_range(prefix):
            return
        while cursor.key()[:4] == prefix:
            if first_kept_key is not None and cursor.value() >= first_kept_key:
                break
            if not cursor.delete():
                break


_META_FIELDS = {"id", "status", "start_time", "stop_time", "info", "error", "pid", "streams"}
_COUNTERS = ("recorded", "count", "bytes")


def _session_meta(raw):
    """The metadata stored in a session entry, checked for the fields and
    types sessions rely on; CorruptRecord (the log is damaged) otherwise."""
    meta = decode_record(raw)
    if type(meta) is not dict or not _META_FIELDS <= meta.keys() or type(meta["id"]) is not int:
        raise errors.CorruptRecord(f"a session entry does not hold a session's metadata: {_short(meta)}")
    streams = meta["streams"]
    if (meta["status"] not in STATUSES or type(streams) is not dict
            or not isinstance(meta["start_time"], (int, float))
            or not isinstance(meta["stop_time"], (int, float, type(None)))
            or not all(type(name) is str and type(counters) is dict and "key_types" in counters
                       and all(type(counters.get(field)) is int for field in _COUNTERS)
                       for name, counters in streams.items())):
        raise errors.CorruptRecord(f"the metadata of session {meta['id']} is damaged: {_short(meta)}",
                                   session=meta["id"])
    return meta


def _short(value):
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _new_stream_counters():
    return {"recorded": 0, "count": 0, "bytes": 0, "key_types": None, "error": None}


class Session:
    """A session of a log, as stored when this object was made (see :meth:`refresh`).

    Counts and sizes refer to the ``"main"`` stream (``stream_info`` gives
    any stream's).  ``status`` is ``live``, ``closed``, ``failed`` or
    ``crashed`` (left ``live`` by a process that is gone).
    """

    def __init__(self, log, meta, writer_alive):
        self.log = log
        self._meta = meta
        self._writer_alive = writer_alive

    def __repr__(self):
        return (f"<streamlog.Session {self.id} {self.status} count={self.count} "
                f"streams={list(self.streams)}>")

    def refresh(self):
        """Reread the stored metadata; return self."""
        meta = self.log._read_meta(self.id)
        if meta is None:
            raise errors.SessionNotFound(f"session {self.id} of {self.log.path} no longer exists (pruned)")
        self._meta = meta
        self._writer_alive = self.log.store.writer_pid() is not None
        return self

    id = property(lambda self: self._meta["id"])
    info = property(lambda self: self._meta["info"])
    error = property(lambda self: self._meta["error"])
    start_time = property(lambda self: self._meta["start_time"])
    stop_time = property(lambda self: self._meta["stop_time"])
    pid = property(lambda self: self._meta["pid"])
    host = property(lambda self: self._meta.get("host"))
    durability = property(lambda self: self._meta.get("durability"))

    @property
    def status(self):
        status = self._meta["status"]
        if status == "live" and not self._writer_alive:
            return "crashed"
        return status

    @property
    def streams(self):
        """Names of the session's streams."""
        return list(self._meta["streams"])

    def _main_stream(self):
        streams = self._meta["streams"]
        return DEFAULT_STREAM if DEFAULT_STREAM in streams or not streams else next(iter(streams))

    count = property(lambda self: self._counters()["count"])
    recorded = property(lambda self: self._counters()["recorded"])
    bytes = property(lambda self: self._counters()["bytes"])
    key_types = property(lambda self: self._counters()["key_types"])

    def _counters(self, stream=None):
        stream = stream or self._main_stream()
        try:
            return self._meta["streams"][stream]
        except KeyError:
            raise errors.SessionNotFound(f"session {self.id} has no stream {stream!r}") from None

    @property
    def first_key(self):
        return self.stream_info()["first_key"]

    @property
    def last_key(self):
        return self.stream_info()["last_key"]

    def stream_info(self, stream=None):
        """Counters and key span of one stream, as a dict."""
        stream = stream or self._main_stream()
        counters = dict(self._counters(stream))
        first = last = None
        db = self.log.store.records_db(stream)
        if db is not None and counters["count"]:
            prefix = records.session_prefix(self.id)
            with self.log.store.read() as txn:
                head = records.scan(txn, db, prefix, records.after_session(self.id), limit=1, decode=False)
                tail = records.scan_reverse(txn, db, prefix, records.after_session(self.id), 1, decode=False)
            types = counters["key_types"]
            if head and head[0][0] < records.after_session(self.id):
                first = decode_key_prefix(head[0][0], types, start=SESSION_ID.size)[0]
            if tail:
                last = decode_key_prefix(tail[0][0], types, start=SESSION_ID.size)[0]
        counters.update(stream=stream, first_key=first, last_key=last)
        return counters

    def reader(self, stream=None, **reader_defaults):
        """A BufferReader over this stored session; it follows the session
        while another process records it (by polling the log)."""
        from streamlog.reader import BufferReader, StoredFeed

        stream = stream or self._main_stream()
        self._counters(stream)
        return BufferReader(StoredFeed(self.log, self.id, stream), **reader_defaults)

    def range(self, start=None, stop=None, stream=None):
        """Records with ``start <= key <= stop`` as a list (bounds inclusive)."""
        return self.reader(stream).range(start, stop, peek=True, ignore_no_item_found=True) or []

    def irange(self, start=None, stop=None, stream=None):
        """Like :meth:`range` but lazy: an iterator reading in bounded memory."""
        return self.reader(stream).irange(start, stop)

    def head(self, n=None, stream=None):
        """The oldest record (or list of the ``n`` oldest). Raises NoItemFound."""
        return self.reader(stream).head(n, peek=True)

    def tail(self, n=None, stream=None):
        """The newest record (or list of the ``n`` newest). Raises NoItemFound."""
        return self.reader(stream).tail(n, peek=True)

    def range_by_time(self, t0, t1, stream=None):
        """Records that arrived at ``t0 <= time <= t1`` (epoch seconds), in order."""
        return self.reader(stream).range_by_time(t0, t1)
