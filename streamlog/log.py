"""The cold tier as users see it: a :class:`Log` of sessions.

A log is a directory holding one LMDB environment (:mod:`streamlog.store`;
the bytes in it are :mod:`streamlog.records`'s, the sessions' metadata
:mod:`streamlog.catalog`'s, retention :mod:`streamlog.retention`'s).  It holds many sessions, one per
recording (``StreamBuffer.start()``); a session holds one or more named
streams (``"main"``, and e.g. ``"markers"`` beside audio), each written
by one process; any number of processes may write a log at once, and any
number read it meanwhile.
"""

import os

from streamlog import errors, records
from streamlog.catalog import DEFAULT_STREAM, STATUSES, Catalog, session_status, stream_status
from streamlog.cursors import Cursor, check_ack, check_name
from streamlog.reader import BufferReader, StoredFeed
from streamlog.retention import Pruner, Retention
from streamlog.store import DATA_FILE, group_id, open_store, share_log, token_pid

__all__ = ["DEFAULT_STREAM", "STATUSES", "Log", "Retention", "Session"]


class Log:
    """A streamlog log directory.

    ``Log(path)`` opens it, creating it when missing (unless ``readonly`` or
    ``create=False``; only ``path`` itself is created: LogNotFound if the
    directory above it does not exist).  Raises LogNotFound, NotALog,
    FormatVersionError.  Reading never blocks the writers; writing
    (recording, :meth:`prune`) registers this process as one of the log's
    writers.
    ``durability`` (see StreamBuffer) applies to the whole log in this
    process: None takes the mode it is already open with here, else ``"full"``.
    ``group`` (a name or gid) shares the log with that group
    (:func:`streamlog.store.share_log`: group-owned, group-writable, setgid),
    so its members may record into it and follow it live.
    A user who may not write the log's ``lock.mdb`` still reads a log no
    process writes (``lock_free`` is then True: no writer can start while
    such a reader has it open, see :meth:`Store.acquire_writer`); while a
    writer is alive that is LiveLogAccessDenied, naming what is missing.
    A log opened before ``os.fork()`` raises LogError when used in the child
    (LMDB forbids sharing an environment across fork): open it again there.
    """

    def __init__(self, path, *, readonly=False, retention=None, durability=None, create=True, group=None):
        if retention is not None and not isinstance(retention, Retention):
            raise TypeError(f"retention must be a streamlog.Retention, not {type(retention).__name__}")
        if group is not None and readonly:
            raise errors.ConfigurationError("group= changes the log's files and directory; it cannot be used with "
                                            "readonly=True")
        self.path = os.fspath(path)
        self.readonly = readonly
        self.retention = retention
        gid = None if group is None else group_id(group)  # an unknown group is refused before anything is made
        self.store = open_store(self.path, create=create and not readonly,
                                durability=None if readonly else durability)
        if gid is not None:
            try:
                share_log(self.store.path, gid)
            except BaseException:
                self.store.release()
                raise
        self.durability = self.store.durability
        self.format_version = self.store.format_version
        self.catalog = Catalog(self.store)
        self._closed = False

    @property
    def lock_free(self):
        """Whether this process reads the log without LMDB's lock table (it may
        not write ``lock.mdb``): only while no process writes it, and no
        writer starts meanwhile (it waits, then refuses with ReadersWithoutLock)."""
        return self.store.lock_free

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
        alive = self.store.live_writers()
        return [Session(self, meta, alive) for meta in self.catalog.all()
                if stream is None or stream in meta["streams"]]

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
        meta = self.catalog.get(session_id)
        if meta is None:
            raise errors.SessionNotFound(f"log {self.path} has no session {session_id}")
        return Session(self, meta, self.store.live_writers())

    # -- writing -----------------------------------------------------------------

    def begin_writing(self):
        """Register this process as a writer of the log (LogError for a
        read-only log); the first hold in this process marks the streams of
        writers that died crashed.  Pair with :meth:`end_writing`."""
        if self.readonly:
            raise errors.LogError(f"log {self.path} is open read-only")
        if self.format_version != records.FORMAT_VERSION:
            raise errors.FormatVersionError(
                f"log {self.path} uses on-disk format version {self.format_version}, which this streamlog reads "
                f"but does not write; run `streamlog upgrade {self.path}` to rewrite it as version "
                f"{records.FORMAT_VERSION}")
        first = not self.store.holds_writer
        self.store.acquire_writer()
        if first:
            try:
                self.catalog.mark_dead_writers()
            except BaseException:
                self.store.release_writer()
                raise

    def end_writing(self):
        """Drop the hold taken by :meth:`begin_writing`."""
        self.store.release_writer()

    def listener(self):
        """A :class:`~streamlog.notify.Listener` that this log's writers (in
        any process) wake after each commit.  Make it before looking at the
        log, so that no commit after the look goes unnoticed; its
        ``available`` is False where the channel cannot be used (a user who
        may not write ``notify/``): then poll.  A killed writer sends
        nothing, so a waiter should also look at the log now and then."""
        return self.store.listener()

    # -- named cursors -----------------------------------------------------------

    def cursors(self):
        """The named cursors (see ``Session.reader(name=...)``) as
        :class:`~streamlog.cursors.Cursor` tuples, by name; ``lag`` counts the
        records of the stream after the acknowledged one (None when the
        session was deleted)."""
        listed = []
        for name, entry in self.catalog.cursors.all():
            meta = self.catalog.get(entry["session"])
            counters = None if meta is None else meta["streams"].get(entry["stream"])
            lag = None if counters is None else max(0, counters["recorded"] - 1 - entry["seq"])
            listed.append(Cursor(name, entry["session"], entry["stream"], entry["seq"], entry.get("acked"), lag))
        return listed

    def open_cursor(self, name, session_id, stream):
        """The :class:`~streamlog.cursors.NamedCursor` ``name`` of ``stream``
        of session ``session_id``, stored new if missing (what
        ``Session.reader(name=...)`` uses)."""
        check_name(name)
        self._check_cursors_writable(name)
        return self.catalog.cursors.open(name, session_id, stream)

    def delete_cursor(self, name):
        """Delete named cursor ``name``; CursorNotFound if there is none."""
        check_name(name)
        self._check_cursors_writable(name)
        self.catalog.cursors.delete(name)

    def _check_cursors_writable(self, name):
        if self.readonly:
            raise errors.LogError(f"log {self.path} is open read-only; cursor {name!r} is stored in the log: "
                                  f"open it with streamlog.Log(path, create=False)")
        if self.format_version != records.FORMAT_VERSION:
            raise errors.FormatVersionError(
                f"log {self.path} uses on-disk format version {self.format_version}, which has no named cursors; "
                f"run `streamlog upgrade {self.path}` first")

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
            sessions = self.catalog.session_count(txn)
            for meta in self.catalog.all(txn):
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
            "writer_pids": sorted(self.store.live_writers().values()),
        }

    def clear_stale_readers(self):
        """Free the reader slots left by processes that died inside a read
        transaction (each keeps LMDB from reusing pages freed since); return
        how many were freed.  A process recording into the log does this by
        itself after its commits; see :meth:`stats` for the totals."""
        return self.store.clear_stale_readers()

    def verify(self, *, crashed=True):
        """Check the whole log; return a list of problems (empty when healthy).

        Checks that records of every stream are in key order with dense
        sequence numbers, that counters match, and (unless ``crashed`` is
        false: that is history, not damage) that no session was left ``live``
        by a process that is gone.
        """
        problems = []
        for session in self.sessions():
            if crashed and session.status == "crashed":
                problems.append(session.crash_note())
            for stream in session.streams:
                problems.extend(self._verify_stream(session, stream))
        return problems

    def _verify_stream(self, session, stream):
        db = self.store.records_db(stream)
        counters = session._counters(stream)
        where = f"session {session.id} stream {stream!r}"
        if db is None:
            return [] if counters["count"] == 0 else [f"{where}: records missing"]
        count, problems = records.layout(self.format_version).key_order_problems(self.store, db, session.id, where)
        if count != counters["count"]:
            problems.append(f"{where}: holds {count} records, its counter says {counters['count']}")
        return problems

    # -- retention -------------------------------------------------------------

    def prune(self, retention=None):
        """Apply ``retention`` (default: the log's) now; return records removed.

        Registers this process as a writer meanwhile; may run while others record.
        """
        retention = retention or self.retention
        if retention is None or not retention.is_limited:
            raise ValueError("prune needs a Retention with at least one limit")
        self.begin_writing()
        try:
            pruner = Pruner(self.catalog)
            removed = 0
            while True:
                step = pruner.step(retention)
                if not step:
                    return removed
                removed += step
        finally:
            self.end_writing()

    def delete_session(self, session_id):
        """Delete one session and all its records; return the records deleted.

        Registers as a writer (sessions whose writers died are marked crashed
        first); refuses (LogError) a session that is live, recorded by this
        or another process.  Raises SessionNotFound.  Session ids are never
        reused.
        """
        session = self.session(session_id)
        self.begin_writing()
        try:
            return Pruner(self.catalog).delete_session(session.id)
        finally:
            self.end_writing()


class Session:
    """A session of a log, as stored when this object was made (see :meth:`refresh`).

    Counts and sizes refer to the ``"main"`` stream (``stream_info`` gives
    any stream's).  ``status`` is ``live`` (while a writer of one of its
    streams lives), ``closed``, ``failed`` or ``crashed`` (see
    :mod:`streamlog.catalog` for which wins).
    """

    def __init__(self, log, meta, alive):
        self.log = log
        self._meta = meta
        self._alive = alive

    def __repr__(self):
        return (f"<streamlog.Session {self.id} {self.status} count={self.count} "
                f"streams={list(self.streams)}>")

    def refresh(self):
        """Reread the stored metadata; return self."""
        meta = self.log.catalog.get(self.id)
        if meta is None:
            raise errors.SessionNotFound(f"session {self.id} of {self.log.path} no longer exists (pruned)")
        self._meta = meta
        self._alive = self.log.store.live_writers()
        return self

    id = property(lambda self: self._meta["id"])
    info = property(lambda self: self._meta["info"], doc="The source's own description (``SourceReader.info``).")
    labels = property(lambda self: self._meta.get("labels", {}), doc=(
        "The labels the recording was given (``StreamBuffer(labels=)``, ``record --info``); ``{}`` in logs "
        "written before labels had a field of their own, whose ``info`` holds the labels too."))
    error = property(lambda self: self._meta["error"])
    start_time = property(lambda self: self._meta["start_time"])
    stop_time = property(lambda self: self._meta["stop_time"])
    pid = property(lambda self: self._meta["pid"])
    host = property(lambda self: self._meta.get("host"))
    durability = property(lambda self: self._meta.get("durability"))

    @property
    def status(self):
        return session_status(self._meta, self._alive)

    def stream_status(self, stream=None):
        """``live``, ``closed``, ``failed`` or ``crashed``: how one stream stands."""
        stream = stream or self._main_stream()
        self._counters(stream)
        return stream_status(self._meta, stream, self._alive)

    def stream_pid(self, stream=None):
        """The pid of the process that wrote ``stream`` (None if not stored)."""
        return token_pid(self._counters(stream).get("writer"))

    @property
    def crashed_pids(self):
        """The pids of the writers whose death crashed the session (the
        writers of its crashed streams, sorted; the creator's for a session
        stored before streams named their writer); ``[]`` unless crashed."""
        if self.status != "crashed":
            return []
        pids = {token_pid(counters.get("writer")) for name, counters in self._meta["streams"].items()
                if counters.get("writer") and stream_status(self._meta, name, self._alive) == "crashed"}
        return sorted(pids) or [self.pid]

    def crash_note(self):
        """The one-line note :meth:`Log.verify` and ``streamlog doctor`` give
        for a crashed session, naming the dead writers; None unless crashed."""
        pids = self.crashed_pids
        if not pids:
            return None
        who = f"process {pids[0]}, which is" if len(pids) == 1 else f"processes {', '.join(map(str, pids))}, which are"
        return f"session {self.id} was left live by {who} gone (crashed; its records up to the crash are kept)"

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
            with self.log.store.read() as txn:
                first, last = records.layout(self.log.format_version).key_span(txn, db, self.id,
                                                                               counters["key_types"])
        counters.update(stream=stream, first_key=first, last_key=last)
        return counters

    def reader(self, stream=None, *, name=None, ack="manual", **reader_defaults):
        """A BufferReader over this stored session; it follows the session
        while another process records it (woken by its writers' commits).

        ``name`` makes it a durable named cursor, kept in the log: it starts
        strictly after the last record a reader of that name acknowledged
        (``reader.ack()`` acknowledges everything returned so far; ``ack="auto"``
        acknowledges at the start of each ``next``/``read``: one commit per
        call, so read batches with ``read(n)``), in this or any later
        process, after a crash too.  BadCursorName for a bad name,
        CursorError when the name follows another session or stream, LogError
        for a log opened read-only or of format version 1.
        """
        stream = stream or self._main_stream()
        self._counters(stream)
        check_ack(ack, name is not None)
        cursor = None
        if name is not None:
            cursor = self.log.open_cursor(name, self.id, stream)
        return BufferReader(StoredFeed(self.log.catalog, self.id, stream), cursor=cursor, ack=ack,
                            **reader_defaults)

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

    def ientries(self, start=None, stop=None, *, since=None, until=None, after=None, stream=None):
        """Lazy ``(key, arrival_us, record, seq)`` entries: keys ``start..stop``
        that arrived ``since..until`` (epoch seconds; all bounds inclusive,
        None open), strictly after the entry ``after``; see
        :meth:`BufferReader.ientries`."""
        key_types = self._counters(stream)["key_types"]
        return self.reader(stream).ientries(start, stop, since=since, until=until, after=after, key_types=key_types)

    def icolumns(self, start=None, stop=None, *, since=None, until=None, stream=None):
        """Lazy :class:`~streamlog.reader.Columns` ``(keys, times_us,
        records)``, one per stored block, of the committed records with keys
        ``start..stop`` that arrived ``since..until`` (epoch seconds; all
        bounds inclusive, None open): the records of :meth:`ientries`, column
        by column; see :meth:`BufferReader.icolumns`."""
        key_types = self._counters(stream)["key_types"]
        return self.reader(stream).icolumns(start, stop, since=since, until=until, key_types=key_types)

    def tail_entries(self, n, stream=None):
        """The ``n`` newest records as ``(key, arrival_us, record, seq)``
        entries, oldest first; see :meth:`BufferReader.tail_entries`."""
        return self.reader(stream).tail_entries(n, key_types=self._counters(stream)["key_types"])

    def range_by_time(self, t0, t1, stream=None):
        """Records that arrived at ``t0 <= time <= t1`` (epoch seconds), in order."""
        return self.reader(stream).range_by_time(t0, t1)

    # -- analysis (streamlog.frames, streamlog.plot) ------------------------------

    def to_numpy(self, stream=None, start=None, stop=None, **options):
        """The stream as numpy arrays; see :func:`streamlog.frames.to_numpy`."""
        from streamlog import frames

        return frames.to_numpy(self, stream, start, stop, **options)

    def to_pandas(self, stream=None, start=None, stop=None, **options):
        """The stream as a pandas DataFrame; see :func:`streamlog.frames.to_pandas`."""
        from streamlog import frames

        return frames.to_pandas(self, stream, start, stop, **options)

    def to_arrow(self, stream=None, start=None, stop=None, **options):
        """The stream as a pyarrow Table; see :func:`streamlog.frames.to_arrow`."""
        from streamlog import frames

        return frames.to_arrow(self, stream, start, stop, **options)

    def join(self, streams, **options):
        """Streams joined by wall-clock time; see :func:`streamlog.frames.join`."""
        from streamlog import frames

        return frames.join(self, streams, **options)

    def plot(self, path=None, **options):
        """An overview picture of the session; see :func:`streamlog.plot.plot_session`."""
        from streamlog import plot

        return plot.plot_session(self, path, **options)
