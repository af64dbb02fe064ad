"""The session catalog: which sessions a log holds, their metadata and counters.

Database ``sessions`` maps ``u32be(session id)`` to the session's metadata,
encoded with the record codec::

    {"id", "status", "start_time", "stop_time", "info", "error", "pid",
     "host", "durability",
     "streams": {name: {"recorded", "count", "bytes", "key_types", "error"}}}

``status`` is one of :data:`STATUSES`; ``recorded`` counts every record a
stream ever recorded, ``count`` and ``bytes`` what it holds now (retention
lowers them).  ``meta[b"last_session_id"]`` holds ``u32be`` of the last id
issued, so ids are never reused.  A :class:`Catalog` reads and changes these
entries for the writer, the readers, retention and :class:`~streamlog.Log`;
it also knows which sessions this process is recording right now.
"""

import os
import socket
import threading
import time
import weakref

from streamlog import errors, records
from streamlog.codec import decode_record, encode_record

DEFAULT_STREAM = "main"
STATUSES = ("live", "closed", "failed", "crashed")
_LAST_SESSION_ID = b"last_session_id"
_META_FIELDS = {"id", "status", "start_time", "stop_time", "info", "error", "pid", "streams"}
_COUNTERS = ("recorded", "count", "bytes")

_recording = weakref.WeakKeyDictionary()  # Store -> {session id: how many buffers of this process record it}
_recording_lock = threading.Lock()


class Catalog:
    """The sessions of the log kept in ``store`` (a :class:`~streamlog.store.Store`).

    Methods taking ``txn`` work inside that transaction (a write
    transaction for those that change something); the others take their own
    short transaction.  Damaged entries raise CorruptRecord.
    """

    def __init__(self, store):
        self.store = store

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

    def session_count(self, txn):
        return txn.stat(self.store.sessions_db)["entries"]

    # -- changing ------------------------------------------------------------

    def put(self, txn, meta):
        """Store ``meta`` as the metadata of session ``meta["id"]``."""
        txn.put(records.session_prefix(meta["id"]), encode_record(meta), db=self.store.sessions_db)

    def delete(self, txn, session_id):
        """Remove session ``session_id`` from the catalog (its records must be gone)."""
        txn.delete(records.session_prefix(session_id), db=self.store.sessions_db)

    def create_session(self, stream, info, durability):
        """Add a live session recording ``stream``; return its id (never one used before)."""
        sessions_db = self.store.sessions_db
        meta_db = self.store.meta_db

        def work(txn):
            cursor = txn.cursor(sessions_db)
            newest = records.session_of(cursor.key()) if cursor.last() else 0
            issued = txn.get(_LAST_SESSION_ID, db=meta_db)
            session_id = max(newest, records.session_of(issued) if issued else 0) + 1
            txn.put(_LAST_SESSION_ID, records.session_prefix(session_id), db=meta_db)
            self.put(txn, {
                "id": session_id, "status": "live", "start_time": time.time(), "stop_time": None,
                "info": info, "error": None, "pid": os.getpid(), "host": socket.gethostname(),
                "durability": durability, "streams": {stream: _new_stream_counters()},
            })
            return session_id

        return self.store.write(work)

    def add_stream(self, session_id, stream):
        """Add ``stream`` to live session ``session_id``.  Raises SessionNotFound
        (no such live session) or LogError (the session has that stream)."""
        def work(txn):
            meta = self.get(session_id, txn)
            if meta is None or meta["status"] != "live":
                raise errors.SessionNotFound(f"session {session_id} of {self.store.path} is not live")
            if stream in meta["streams"]:
                raise errors.LogError(f"session {session_id} already has a stream {stream!r}")
            meta["streams"][stream] = _new_stream_counters()
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

    def end_stream(self, session_id, stream, error=None, info=None, end_session=False):
        """Store how ``stream`` ended (``error``: None or its message), the
        session's final ``info`` if given, and with ``end_session`` the
        session's status (``failed`` if it has an error, else ``closed``)."""
        def work(txn):
            meta = self.get(session_id, txn)
            if error is not None:
                meta["streams"][stream]["error"] = error
                if stream == DEFAULT_STREAM or end_session:
                    meta["error"] = error
            if info is not None:
                meta["info"] = info
            if end_session:
                meta["status"] = "failed" if meta["error"] else "closed"
                meta["stop_time"] = time.time()
            self.put(txn, meta)

        self.store.write(work)

    def mark_crashed(self):
        """Mark every session still ``live`` crashed, stopped at its newest
        record's arrival (call holding the writer lock, before recording)."""
        self.store.open_all_dbs()

        def work(txn):
            for meta in self.all(txn):
                if meta["status"] == "live":
                    meta["status"] = "crashed"
                    meta["stop_time"] = self._last_arrival(txn, meta)
                    self.put(txn, meta)

        self.store.write(work)

    def _last_arrival(self, txn, meta):
        newest = None
        for stream in meta["streams"]:
            db = self.store.records_db(stream)
            arrival = None if db is None else records.last_arrival_us(txn, db, meta["id"])
            if arrival is not None:
                newest = arrival if newest is None else max(newest, arrival)
        return None if newest is None else newest / 1e6

    # -- sessions recorded by this process -------------------------------------

    def begin_recording(self, session_id):
        """Note that a buffer of this process records session ``session_id``."""
        with _recording_lock:
            recording = _recording.setdefault(self.store, {})
            recording[session_id] = recording.get(session_id, 0) + 1

    def end_recording(self, session_id):
        """Undo one :meth:`begin_recording`."""
        with _recording_lock:
            recording = _recording[self.store]
            recording[session_id] -= 1
            if not recording[session_id]:
                del recording[session_id]

    def recording_here(self):
        """Ids of the sessions being recorded into this log by this process."""
        with _recording_lock:
            return set(_recording.get(self.store, {}).keys())


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


def _new_stream_counters():
    return {"recorded": 0, "count": 0, "bytes": 0, "key_types": None, "error": None}
