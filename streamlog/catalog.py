"""The session catalog: which sessions a log holds, their metadata and counters.

Database ``sessions`` maps ``u32be(session id)`` to the session's metadata,
encoded with the record codec::

    {"id", "status", "start_time", "stop_time", "info", "error", "pid",
     "host", "durability",
     "streams": {name: {"recorded", "count", "bytes", "key_types", "error",
                        "writer", "status"}}}

``status`` is one of :data:`STATUSES`; ``recorded`` counts every record a
stream ever recorded, ``count`` and ``bytes`` what it holds now (retention
lowers them).  Each stream belongs to one writing process, named by its
writer token (see :meth:`~streamlog.store.Store.acquire_writer`), and has a
status of its own.  A session is ``live`` while any of its streams is; when
the last one ends the session takes the worst of its streams' outcomes:
``crashed`` (a writer died) wins over ``failed`` (a source failed), which
wins over ``closed``.  A *shared* stream (``"shared": True``, no writer;
``streamlog mark`` appends to one, each append one write transaction of a
short-lived writer) is live while the session is and never keeps it live.
``pid`` is the process that created the session.
``meta[b"last_session_id"]`` holds ``u32be`` of the last id issued, so ids
are never reused.  A :class:`Catalog` reads and changes these entries for
the writers, the readers, retention and :class:`~streamlog.Log`; its
``cursors`` (:class:`~streamlog.cursors.CursorStore`) are the named readers'
positions in the sessions.
"""

import os
import socket
import time

from streamlog import errors, records
from streamlog.codec import decode_record, encode_record
from streamlog.cursors import CursorStore
from streamlog.store import token_pid

DEFAULT_STREAM = "main"
STATUSES = ("live", "closed", "failed", "crashed")
_LAST_SESSION_ID = b"last_session_id"
_META_FIELDS = {"id", "status", "start_time", "stop_time", "info", "error", "pid", "streams"}
_COUNTERS = ("recorded", "count", "bytes")
_OUTCOMES = ("crashed", "failed", "closed")  # a session ends with the first of these any of its streams has


class Catalog:
    """The sessions of the log kept in ``store`` (a :class:`~streamlog.store.Store`).

    Methods taking ``txn`` work inside that transaction (a write
    transaction for those that change something); the others take their own
    short transaction.  Damaged entries raise CorruptRecord.
    """

    def __init__(self, store):
        self.store = store
        self.cursors = CursorStore(store)

    # -- reading -------------------------------------------------------------

    def get(self, session_id, txn=None):
        """The metadata of session ``session_id``, or None if there is none."""
        if txn is None:
            with self.store.read() as txn:
                return self.get(session_id, txn)
        raw = txn.get(records.session_prefix(session_id), db=self.store.sessions_db)
        return None if raw is None else session_meta(raw)

    def all(self, txn=None):
        """The metadata of every session, oldest first."""
        if txn is None:
            with self.store.read() as txn:
                return self.all(txn)
        return [session_meta(value) for _, value in txn.cursor(self.store.sessions_db)]

    def ids(self):
        """The ids of every session, oldest first."""
        with self.store.read() as txn:
            return [records.session_of(key) for key in txn.cursor(self.store.sessions_db).iternext(values=False)]

    def last_issued_id(self, txn):
        """The last session id ever issued (0 if none): ids are never reused."""
        cursor = txn.cursor(self.store.sessions_db)
        newest = records.session_of(cursor.key()) if cursor.last() else 0
        issued = txn.get(_LAST_SESSION_ID, db=self.store.meta_db)
        return max(newest, records.session_of(issued) if issued else 0)

    def put_last_issued_id(self, txn, session_id):
        txn.put(_LAST_SESSION_ID, records.session_prefix(session_id), db=self.store.meta_db)

    def session_count(self, txn):
        return txn.stat(self.store.sessions_db)["entries"]

    # -- changing ------------------------------------------------------------

    def put(self, txn, meta):
        """Store ``meta`` as the metadata of session ``meta["id"]``."""
        txn.put(records.session_prefix(meta["id"]), encode_record(meta), db=self.store.sessions_db)

    def delete(self, txn, session_id):
        """Remove session ``session_id`` from the catalog (its records must be gone)."""
        txn.delete(records.session_prefix(session_id), db=self.store.sessions_db)

    def create_session(self, stream, info, labels, durability):
        """Add a live session recording ``stream`` for this process (which
        holds the writer lock); return its id (never one used before)."""
        writer = self._writer_token()

        def work(txn):
            session_id = self.last_issued_id(txn) + 1
            self.put_last_issued_id(txn, session_id)
            self.put(txn, {
                "id": session_id, "status": "live", "start_time": time.time(), "stop_time": None,
                "info": info, "labels": labels, "error": None, "pid": os.getpid(), "host": socket.gethostname(),
                "durability": durability, "streams": {stream: _new_stream(writer)},
            })
            return session_id

        return self.store.write(work)

    def newest_live(self):
        """The id of the newest session with a stream whose writer is alive, or None."""
        alive = self.store.live_writers()
        for meta in reversed(self.all()):
            if session_status(meta, alive) == "live":
                return meta["id"]
        return None

    def add_stream(self, session_id, stream):
        """Add ``stream``, written by this process, to live session
        ``session_id``.  Raises SessionNotFound (no such live session) or
        StreamNameTaken (the session has a stream of that name)."""
        writer = self._writer_token()

        def work(txn):
            meta = self.get(session_id, txn)
            if meta is None or meta["status"] != "live":
                state = "does not exist" if meta is None else f"is {meta['status']}, not live"
                raise errors.SessionNotFound(f"cannot join session {session_id} of {self.store.path}: it {state}")
            if stream in meta["streams"]:
                owner = meta["streams"][stream]
                raise errors.StreamNameTaken(
                    f"session {session_id} of {self.store.path} already has a stream {stream!r} "
                    f"({stream_status(meta, stream, None)}, written by pid {token_pid(owner.get('writer'))}); "
                    f"record under another stream name")
            meta["streams"][stream] = _new_stream(writer)
            self.put(txn, meta)

        self.store.write(work)

    def set_info(self, session_id, info):
        """Store ``info`` as the session's info (a source's, once it is open)."""
        def work(txn):
            meta = self.get(session_id, txn)
            meta["info"] = info
            self.put(txn, meta)

        self.store.write(work)

    def add_counts(self, txn, session_id, stream, added, size, key_types):
        """Count ``added`` records of ``size`` payload bytes committed to
        ``stream`` in ``txn``; the stream's ``key_types`` are set by the first."""
        meta = self.get(session_id, txn)
        counters = meta["streams"][stream]
        counters["recorded"] += added
        counters["count"] += added
        counters["bytes"] += size
        if counters["key_types"] is None:
            counters["key_types"] = key_types
        self.put(txn, meta)

    def end_stream(self, session_id, stream, error=None, info=None):
        """Store how ``stream`` ended (``error``: None or its message) and the
        session's final ``info`` if given; the last live stream to end ends
        the session (see the module's docstring for its status)."""
        def work(txn):
            meta = self.get(session_id, txn)
            counters = meta["streams"][stream]
            counters["status"] = "failed" if error is not None else "closed"
            if error is not None:
                counters["error"] = error
                if meta["error"] is None:
                    meta["error"] = error if stream == _first_stream(meta) else f"stream {stream!r}: {error}"
            if info is not None:
                meta["info"] = info
            self._mark_dead_streams(meta, self.store.live_writers())
            self._end_if_done(txn, meta, time.time())
            self.put(txn, meta)

        self.store.write(work)

    def mark_dead_writers(self):
        """Mark the live streams of writers that are gone crashed (the
        sessions left with no live stream end, stopped at their newest
        record's arrival), then remove those writers' lock files; return how
        many streams were marked.  Call holding the writer lock."""
        self.store.open_all_dbs()
        dead = self.store.dead_writers()

        def work(txn):
            alive = self.store.live_writers()
            marked = 0
            for meta in self.all(txn):
                if meta["status"] != "live":
                    continue
                crashed = self._mark_dead_streams(meta, alive)
                if crashed:
                    self._end_if_done(txn, meta, None)
                    self.put(txn, meta)
                    marked += crashed
            return marked

        marked = self.store.write(work)
        for token in dead:
            self.store.forget_writer(token)
        return marked

    @staticmethod
    def _mark_dead_streams(meta, alive):
        """Mark the live streams of ``meta`` whose writer is not in ``alive``
        crashed (liveness must be read inside the write transaction, so a
        writer joining meanwhile is seen); return how many."""
        dead = [c for c in meta["streams"].values()
                if c.get("status", "live") == "live" and not c.get("shared") and c.get("writer") not in alive]
        for counters in dead:
            counters["status"] = "crashed"
        return len(dead)

    def _end_if_done(self, txn, meta, stop_time):
        """End ``meta``'s session when none of its streams is live: its status
        from its streams, ``stop_time`` (None: its newest record's arrival)."""
        if any(c.get("status", "live") == "live" and not c.get("shared") for c in meta["streams"].values()):
            return
        for counters in meta["streams"].values():
            if counters.get("shared"):
                counters["status"] = "closed"
        outcomes = {c["status"] for c in meta["streams"].values()}
        meta["status"] = next((o for o in _OUTCOMES if o in outcomes), "closed")
        meta["stop_time"] = self._last_arrival(txn, meta) if stop_time is None else stop_time

    def ended(self, txn, meta):
        """``meta`` (changed) with every stream still live marked crashed and
        the session ended as :meth:`mark_dead_writers` would: for a log no
        process writes (``streamlog upgrade``)."""
        if meta["status"] == "live" and self._mark_dead_streams(meta, set()):
            self._end_if_done(txn, meta, None)
        return meta

    def _last_arrival(self, txn, meta):
        layout = records.layout(self.store.format_version)
        newest = None
        for stream in meta["streams"]:
            db = self.store.records_db(stream)
            arrival = None if db is None else layout.last_arrival_us(txn, db, meta["id"])
            if arrival is not None:
                newest = arrival if newest is None else max(newest, arrival)
        return None if newest is None else newest / 1e6

    def stream_live(self, meta, stream):
        """Whether ``stream`` of session ``meta`` is being written now (its
        writer's lock is held; a shared stream: another stream is live)."""
        counters = meta["streams"].get(stream)
        if counters is None or meta["status"] != "live" or counters.get("status", "live") != "live":
            return False
        if counters.get("shared"):
            return any(self.stream_live(meta, name) for name, other in meta["streams"].items()
                       if not other.get("shared"))
        return self.store.writer_alive(counters.get("writer"))

    def shared_stream(self, txn, meta, stream):
        """The counters of shared stream ``stream`` of live session ``meta``
        (added to ``meta`` if missing; the caller puts ``meta``).  Raises
        SessionNotFound when the session is not live any more and
        StreamNameTaken when a writer owns a stream of that name."""
        if session_status(meta, self.store.live_writers()) != "live":
            raise errors.SessionNotFound(f"session {meta['id']} of {self.store.path} is not live")
        counters = meta["streams"].setdefault(stream, dict(_new_stream(None), shared=True))
        if not counters.get("shared"):
            raise errors.StreamNameTaken(
                f"stream {stream!r} of session {meta['id']} of {self.store.path} is written by pid "
                f"{token_pid(counters.get('writer'))}; mark into another stream")
        return counters

    def _writer_token(self):
        token = self.store.writer_token
        if token is None:
            raise errors.LogError(f"log {self.store.path}: take the writer lock (Log.begin_writing) before "
                                  f"recording")
        return token


def session_status(meta, alive):
    """The status of the session ``meta`` given ``alive``, the tokens of the
    writers alive now: a stored ``live`` with no live stream whose writer
    lives is ``crashed`` (its writers died; the next writer stores that)."""
    if meta["status"] != "live":
        return meta["status"]
    return "live" if any(stream_status(meta, name, alive) == "live" for name, counters in meta["streams"].items()
                         if not counters.get("shared")) else "crashed"


def stream_status(meta, stream, alive):
    """The status of ``stream`` of session ``meta``: ``live`` while its
    writer (one of ``alive``; None: do not check) lives, else how it ended."""
    counters = meta["streams"][stream]
    status = counters.get("status")
    if status is None:  # written before streams had a status of their own
        status = meta["status"]
    if status == "live" and alive is not None:
        if counters.get("shared"):
            return "live" if session_status(meta, alive) == "live" else "closed"
        if counters.get("writer") not in alive:
            return "crashed"
    return status


def session_meta(raw):
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


def _new_stream(writer):
    return {"recorded": 0, "count": 0, "bytes": 0, "key_types": None, "error": None, "writer": writer,
            "status": "live"}


def _first_stream(meta):
    return DEFAULT_STREAM if DEFAULT_STREAM in meta["streams"] else next(iter(meta["streams"]))

