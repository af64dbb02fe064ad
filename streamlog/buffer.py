"""The recorder: a :class:`StreamBuffer` reads a source in a thread and keeps
its records in a RAM ring mirrored to the log.

One recorder thread calls the source, encodes each record and publishes it
in the ring (readers see it at once).  The log is committed in groups: when
``commit_records`` records are pending or the oldest pending record is
``commit_interval_s`` old, the recorder hands the pending records to a
committer thread, which writes them in one transaction (and its fsync) while
the recorder reads on.  One group is written at a time; the committer also
commits by itself when the source blocks in ``read()`` with records pending,
so a commit is never later than the interval.  At most ``commit_records``
records are uncommitted at any time (the recorder waits for the committer
beyond that); the ring holds that many beyond ``maxlen`` and only drops
committed ones, so a reader that falls behind it continues from disk.
"""

import shutil
import tempfile
import threading
import time
from contextlib import contextmanager

from streamlog import errors
from streamlog.catalog import DEFAULT_STREAM
from streamlog.cursors import check_ack
from streamlog.log import Log, Session
from streamlog.reader import BufferReader, LiveFeed
from streamlog.retention import Pruner, Retention
from streamlog.ring import Ring
from streamlog.source import ReadBatch, Source, SourceReader, call_failed
from streamlog.store import DURABILITY_MODES
from streamlog.writer import BATCH, DEFAULT_MAX_RECORD_BYTES, ENDED, FAILED, FULL, NO_DATA, PUBLISHED, STOP, StreamWriter

DRAIN_LIMIT_S = 2.0
MIRROR_WAIT_S = 10.0


class StreamBuffer:
    """Record ``source_reader`` into a log, readable live and later.

    * ``maxlen``: records kept decoded in RAM (None: all); older ones are
      read back from the log.
    * ``log``: a path (created if missing), a :class:`Log`, or None for a
      temporary log removed by :meth:`close`.
    * ``stream``/``session``: record into stream ``stream`` of a new session
      (``session=None``), or join a live session of the log to record a
      stream beside other streams, written by this or any other process:
      ``session="join"`` joins the newest live session, an int or a
      :class:`~streamlog.Session` that one.  Joining raises SessionNotFound
      when there is no such live session, StreamNameTaken when it already
      has a stream named ``stream``.  The session stays ``live`` until its
      last stream ends.
    * ``labels``: your own description of a new session (subject, site,
      run, ...), a dict stored as :attr:`Session.labels`, apart from the
      source's own :attr:`Session.info` (``source_reader.info``, read again
      when the session stops), so no label can change how the records are
      decoded.  A buffer joining ``session=`` cannot add labels.
    * ``retention``: a :class:`Retention` applied while recording.
    * ``durability``: ``"full"`` (fsync each group commit; a power cut loses
      only records not yet committed), ``"normal"`` (a power cut may undo the
      last commit), ``"off"`` (no fsync: a power cut may lose or damage
      recent data).  A killed process loses only records not yet committed
      in any mode.  None: the log's mode (``"full"`` for a log opened here).
    * ``max_record_bytes``: the largest encoded record accepted (default
      256 MiB, far below the 4 GiB that msgpack and one LMDB value can hold,
      and about what a reader can still decode in memory with room to
      spare); a larger one fails the session with RecordTooLarge.
    * ``sleep_time_on_read_none_s``: seconds to wait after the source's
      ``read()`` returned None (None: the source's own, else 0.01).
    * ``auto_drop`` (stream2py's switch): False pauses reading the source
      while ``len(source_buffer)`` holds ``maxlen`` records, until
      :meth:`drop` makes room.  No record is ever dropped from the log.

    * ``mirror``: ``"redis://HOST:PORT/DB?name=RIG"`` copies the session to
      Redis Streams while it records (:class:`streamlog.Mirror`), in a child
      process (``mirror_in="process"``, the default: it costs the recorder
      least) or a thread (``"thread"``; :meth:`close` gives it up to 10 s to
      finish).  Redis being down never slows or fails the recording.

    ``stop()`` ends recording and commits everything; a failure of the source
    is never raised by it but stored on the session and raised by readers
    (SourceFailed) after the records before it.  What fails a session is
    listed under :class:`~streamlog.SourceReader`; every record before the
    failure is kept.
    """

    def __init__(self, source_reader, *, maxlen=10_000, log=None, stream=DEFAULT_STREAM, session=None,
                 labels=None, retention=None, durability=None, commit_interval_s=0.005, commit_records=10_000,
                 max_record_bytes=DEFAULT_MAX_RECORD_BYTES, mirror=None, mirror_in="process",
                 sleep_time_on_read_none_s=None, auto_drop=True):
        if not isinstance(source_reader, SourceReader) and not isinstance(source_reader, Source):
            raise TypeError(f"source_reader must be a streamlog.SourceReader, not {type(source_reader).__name__}")
        if sleep_time_on_read_none_s is not None and not sleep_time_on_read_none_s >= 0:
            raise ValueError(f"sleep_time_on_read_none_s must be >= 0 or None, not {sleep_time_on_read_none_s!r}")
        if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1):
            raise ValueError(f"maxlen must be a positive int or None, not {maxlen!r}")
        if durability is not None and durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}, not {durability!r}")
        if not isinstance(stream, str) or not stream or len(stream.encode()) > 200:
            raise ValueError(f"stream must be a non-empty name, not {stream!r}")
        if labels is not None and not isinstance(labels, dict):
            raise TypeError(f"labels must be a dict, not {type(labels).__name__}")
        if labels and session is not None:
            raise ValueError("labels= describe a new session; a buffer joining session= cannot add them")
        if retention is not None and not isinstance(retention, Retention):
            raise TypeError(f"retention must be a streamlog.Retention, not {type(retention).__name__}")
        if not commit_interval_s > 0:
            raise ValueError(f"commit_interval_s must be positive, not {commit_interval_s!r}")
        if isinstance(commit_records, bool) or not isinstance(commit_records, int) or commit_records < 1:
            raise ValueError(f"commit_records must be a positive int, not {commit_records!r}")
        if isinstance(max_record_bytes, bool) or not isinstance(max_record_bytes, int) or max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be a positive int, not {max_record_bytes!r}")
        if mirror is not None:
            from streamlog.remote import layout

            if not layout.is_remote_url(mirror) or layout.split_url(mirror)[1] is None:
                raise ValueError(f"mirror must be a redis:// URL naming the rig (?name=RIG), not {mirror!r}")
            if mirror_in not in ("process", "thread"):
                raise ValueError(f"mirror_in must be 'process' or 'thread', not {mirror_in!r}")
        if not (session is None or session == "join" or isinstance(session, Session)
                or (isinstance(session, int) and not isinstance(session, bool) and session > 0)):
            raise ValueError(f"session must be None, 'join', a session id or a Session, not {session!r}")
        if isinstance(session, Session) and log is None:
            log = session.log
        self.source_reader = source_reader
        self.maxlen = maxlen
        self.stream = stream
        self.durability = durability
        self.retention = retention
        self.commit_interval_s = commit_interval_s
        self.commit_records = commit_records
        self.max_record_bytes = max_record_bytes
        self.sleep_time_on_read_none_s = sleep_time_on_read_none_s
        self.auto_drop = auto_drop
        self.source_buffer = None
        self._next_reader = None
        self._log_arg = log
        self._mirror_url = mirror
        self._mirror_in = mirror_in
        self._mirror = None
        self._join_session = session
        self._labels = dict(labels or {})
        self._info_failure = None
        self.log = None
        self._log_open = False
        self.session = None
        self._owns_log = False
        self._temp_dir = None
        self._thread = None
        self._committer = None
        self._started = False
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    enter, exit = __enter__, __exit__

    @property
    def is_running(self):
        """True while the recorder thread reads the source."""
        return self._thread is not None and self._thread.is_alive() and not self._ended.is_set()

    @property
    def committed(self):
        """How many records of this stream are committed to the log (0 before
        the first commit).  In ``durability="full"`` every one of them survives
        a crash of this process or of the machine."""
        return self._writer.committed_seq + 1 if self._thread is not None else 0

    def start(self):
        """Open the log, start a session (or stream) and the recorder thread; return self.

        Raises SessionNotFound / StreamNameTaken when joining fails.  The source is
        opened in the recorder thread: an ``open()`` that raises fails the
        session like a ``read()`` that raises (``session.error`` says which).
        The session's info is the source's ``info`` read when the session
        starts and again after ``open()`` returns (what ``open()`` set in it
        is stored) and when it ends.  A source ``info`` that raises fails the
        session when it ends.

        Starting a stopped buffer again (a second ``with``) records a new
        session, in a new temporary log if ``close()`` removed the first;
        starting a running buffer stops it first, as in stream2py.
        """
        if self._started and not self._stopped:
            self.stop()
        self._started = True
        self._stopped = False
        if not self._log_open:
            self.log = self._open_log()
            self._log_open = True
        self.durability = self.log.durability
        try:
            self.log.begin_writing()
        except BaseException:
            self._release_log()
            raise
        try:
            self._open_session()
        except BaseException:
            self.log.end_writing()
            self._release_log()
            raise
        catalog = self.log.catalog
        self._writer = writer = StreamWriter(catalog, self.session.id, self.stream, self.max_record_bytes)
        capacity = None if self.maxlen is None else self.maxlen + self.commit_records
        self._ring = Ring(capacity)
        self._feed = LiveFeed(self._ring, catalog.store, self.session.id, self.stream, writer.db, writer.time_db,
                              source=self.source_reader, session=self.session)
        self._pruner = Pruner(catalog)
        self.source_buffer = SourceBuffer(self)
        self._next_reader = None
        self._sleep_on_none = next(s for s in (self.sleep_time_on_read_none_s,
                                               getattr(self.source_reader, "sleep_time_on_read_none_s", None),
                                               SourceReader.sleep_time_on_read_none_s) if isinstance(s, (int, float)))
        self._write_lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._ended = threading.Event()
        self._commit_cond = threading.Condition(threading.Lock())
        self._in_flight = None  # the batch the committer writes now
        self._wait_us = self.commit_interval_s * 1e6 * 0.9  # how long records wait before their commit starts
        self._failed_batch = None  # a batch whose write failed, restored by _finish
        self._closing = False
        self._error = None
        self._retention_due = 0.0
        max_bytes = self.retention.max_bytes if self.retention is not None else None
        self._commit_bytes = max_bytes // 32 if max_bytes else 64 << 20
        self._thread = threading.Thread(target=self._record, name=f"streamlog-recorder-{self.session.id}",
                                        daemon=True)
        self._committer = threading.Thread(target=self._commit_in_background, name="streamlog-committer",
                                           daemon=True)
        self._committer.start()
        self._thread.start()
        if self._mirror_url is not None:
            from streamlog.remote.mirror import SessionMirror

            self._mirror = SessionMirror(self.log, self.session.id, self._mirror_url, self._mirror_in)
        return self

    def _open_log(self):
        target = self._log_arg
        if isinstance(target, Log):
            if self.durability not in (None, target.durability):
                raise ValueError(f"the log {target.path} is open with durability {target.durability!r}; open it "
                                 f"with durability={self.durability!r} to record that way")
            self._owns_log = False
            return target
        self._owns_log = True
        if target is None:
            self._temp_dir = tempfile.mkdtemp(prefix="streamlog-")
            target = f"{self._temp_dir}/buffer.streamlog"
        return Log(target, retention=self.retention, durability=self.durability)

    def _open_session(self):
        joined = self._join_session
        if joined is not None:
            if isinstance(joined, Session):
                if joined.log.store is not self.log.store:
                    raise ValueError("session= must be a session of the same log")
                joined = joined.id
            elif joined == "join":
                joined = self.log.catalog.newest_live()
                if joined is None:
                    raise errors.SessionNotFound(f"log {self.log.path} has no live session to join")
            self.log.catalog.add_stream(joined, self.stream)
            self.session = self.log.session(joined)
            return
        source_info, self._info_failure = _source_info(self.source_reader)
        session_id = self.log.catalog.create_session(self.stream, source_info, self._labels, self.durability)
        self.session = self.log.session(session_id)

    def wait(self, timeout=None):
        """Block until the recorder thread has ended by itself (end of stream or
        failure) or ``stop()`` was called; return True if it has ended."""
        if self._thread is None:
            raise errors.StreamlogError("the StreamBuffer was not started")
        return self._ended.wait(timeout)

    def stop(self):
        """Stop reading, commit everything, mark the session closed or failed.

        Joins the recorder thread (it returns once the source's current
        ``read()`` returns).  Never raises the source's error.
        """
        if self._thread is None or self._stopped:
            return
        self._stopped = True
        self._stop_requested.set()
        self._thread.join()
        self._committer.join()
        self.log.end_writing()
        try:
            self.session.refresh()
        except errors.SessionNotFound:
            pass  # removed by another writer's retention once it ended: self.session keeps its final state

    def close(self):
        """Stop, then release the log; a temporary log is deleted."""
        self.stop()
        if self._mirror is not None:
            self._mirror.close(MIRROR_WAIT_S, keep_running=self._temp_dir is None)
            self._mirror = None
        self._release_log()

    def _release_log(self):
        if self.log is not None and self._owns_log:
            self.log.close()
            self._log_open = False
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    # -- reading -------------------------------------------------------------

    def mk_reader(self, buffer_reader_class=None, *, name=None, ack="manual", **reader_defaults):
        """A new reader with its own cursor at the session's first record.

        ``buffer_reader_class``: a BufferReader subclass to make (default: the
        source's ``buffer_reader_class`` attribute if it has one, as in
        stream2py, else BufferReader); ``reader_defaults`` go to its constructor.
        ``name`` and ``ack`` make it a durable named cursor over the live
        session, as ``Session.reader(name=..., ack=...)`` does for a stored one
        (it resumes strictly after what a reader of that name acknowledged).
        Raises StreamNotStartedError before :meth:`start`,
        StreamAlreadyStoppedError after :meth:`close` released the log, and
        for ``name`` what ``Session.reader`` raises (BadCursorName, CursorError,
        ConfigurationError, and LogError without a log of format 2).
        """
        self._check_readable("making readers")
        cls = buffer_reader_class or getattr(self.source_reader, "buffer_reader_class", BufferReader)
        if not (isinstance(cls, type) and issubclass(cls, BufferReader)):
            raise TypeError(f"buffer_reader_class must be a subclass of streamlog.BufferReader, not {cls!r}")
        check_ack(ack, name is not None)
        if name is not None:
            reader_defaults.update(cursor=self.log.open_cursor(name, self.session.id, self.stream), ack=ack)
        return cls(self._feed, **reader_defaults)

    def attach_reader(self, reader):
        """Make ``reader`` read this buffer's current session, from the first
        record with a key greater than the reader's ``last_key`` (from the
        first record if it has read none), as in stream2py."""
        self._check_readable("attaching readers")
        reader.rebind(self._feed, reader.last_key)

    def _check_readable(self, doing):
        if self._thread is None:
            raise errors.StreamNotStartedError(f"StreamBuffer must be started before {doing}: call start() or use "
                                               f"'with StreamBuffer(...) as buffer:'")
        if not self._log_open:
            raise errors.StreamAlreadyStoppedError(
                f"this StreamBuffer was closed and its log released before {doing}; read the recording with "
                f"streamlog.Log(path).session(id).reader(), or give it log=PATH and call stop() instead of close()")

    @property
    def source_reader_info(self):
        """The session's info (the source's ``info`` after its ``open()``; the
        ``labels=`` are apart, in ``session.labels``); None before :meth:`start`.
        Waits for ``open()``."""
        if self._thread is None:
            return None
        self._feed.opened.wait()
        return self.session.info

    @property
    def join(self):
        """The recorder thread's ``join``: returns once the recording ended."""
        return self._thread.join

    def drop(self, n=1):
        """Make room for ``n`` more records in the window of a buffer made
        with ``auto_drop=False`` (nothing leaves the log).  Raises
        ConfigurationError when ``auto_drop`` is True."""
        if self.auto_drop:
            raise errors.ConfigurationError("auto_drop must be False to drop items by hand (streamlog never drops "
                                            "records; drop() only makes room in len(source_buffer))")
        self.source_buffer.drop(n)

    def __iter__(self):
        return iter(self.mk_reader())

    def __next__(self):
        """The next record of one reader the buffer keeps (until it stops)."""
        if self._next_reader is None:
            self._next_reader = self.mk_reader()
        return next(self._next_reader)

    __call__ = __next__

    # -- the recorder thread ---------------------------------------------------

    def _record(self):
        source = self.source_reader
        try:
            source.open()
        except BaseException as exc:
            self._fail(call_failed("open()", exc))
            self._feed.opened.set()
            self._finish(opened=False)
            return
        try:
            self._store_info_after_open()
        except errors.StreamlogError as exc:
            self._fail(exc, "could not store the source's info")
        self._feed.opened.set()
        try:
            self._read_until_done(source)
        except BaseException as exc:
            self._fail(exc)
        self._finish(opened=True)

    def _store_info_after_open(self):
        """Store the source's info as ``open()`` left it (when it changed)."""
        if self._join_session is not None:
            return
        source_info, failure = _source_info(self.source_reader)
        if failure is not None:
            self._info_failure = self._info_failure or failure
            return
        self._info_failure = None  # an info that needed the open source reads fine now
        if source_info != self.session.info:
            with self._write_lock:
                self.log.catalog.set_info(self.session.id, source_info)
            self.session.refresh()

    def _read_until_done(self, source):
        ended = self._read_while(source, self._stop_requested.is_set)
        if getattr(source, "drain_on_stop", False) and not ended:
            deadline = time.monotonic() + DRAIN_LIMIT_S
            self._read_while(source, lambda: time.monotonic() > deadline, until_none=True)

    def _read_while(self, source, done, until_none=False):
        """Read and record until ``done()``, the end of the stream, or (with
        ``until_none``) the first None; return True at the end of the stream.

        The loop is ``StreamWriter.read_records`` (C): for a single record of
        the common case (int key, plain record; see ``_ingest.add_plain``) it
        calls ``read()`` and ``key()``, adds and publishes the record and
        tests whether readers need waking or a hand-off is due, without
        returning here.  It returns for what Python does: a ReadBatch, any
        other record (its key made), ``None``, the end or failure of the
        source, ``done()``, a full window (``auto_drop=False``), a wake-up
        or a hand-off.
        """
        writer = self._writer
        read_records, add, add_keyed = writer.read_records, writer.add, writer.add_keyed
        ring = self._ring
        feed = self._feed
        acquire, release = self._write_lock.acquire, self._write_lock.release
        stop_requested = self._stop_requested
        sleep_on_none = self._sleep_on_none
        commit_records, commit_bytes = self.commit_records, self._commit_bytes
        window_full = self.source_buffer.is_full if not self.auto_drop and self.maxlen is not None else None
        loop = (source.read, source.key, done, window_full, ReadBatch, acquire, release, ring.append, feed,
                commit_records, commit_bytes)
        while True:
            status, data, key, exc = read_records(*loop, float(self._wait_us))
            if status == PUBLISHED:
                if data:
                    feed.notify()
                if key:
                    self._commit_if_due()
                continue
            if status == STOP:
                return False
            if status == ENDED:
                return True
            if status == FAILED:
                raise call_failed("read()", exc) from exc
            if status == FULL or status == NO_DATA:
                if until_none and status == NO_DATA:
                    return False
                self._commit_if_due()
                stop_requested.wait(sleep_on_none)
                continue
            acquire()
            try:
                entries = []
                try:
                    if status == BATCH:
                        add(data, source.key, entries)
                    else:  # SLOW: a single record the C loop left to Python, its key made
                        add_keyed((data,), (key,) if exc is None else (),
                                  None if exc is None else call_failed("key()", exc), entries)
                finally:
                    ring.extend(entries)
                if feed.waiters and not feed.notified:
                    feed.notify()
                if writer.handoff_due(commit_records, commit_bytes, float(self._wait_us)):
                    self._hand_off()
            finally:
                release()

    def _full(self):
        """Whether the records not yet committed (pending, or being written)
        reach a commit's size, in records or bytes."""
        writer = self._writer
        return (writer.unwritten >= self.commit_records
                or writer.pending_bytes + writer.in_flight_bytes >= self._commit_bytes)

    def _due(self):
        """Whether the pending records should be committed now: they reach a
        commit's size, or the oldest has waited long enough that its commit
        (as long as the last one took) ends within the commit interval."""
        oldest = self._writer.oldest_pending_arrival_us
        return oldest is not None and (self._full() or time.time_ns() // 1000 - oldest >= self._wait_us)

    def _hand_off(self):
        """Give the pending records to the committer if they are due (hold ``_write_lock``).

        While it still writes the previous group, the records stay pending;
        only when the uncommitted ones reach a commit's size does this wait
        for it, so no more records than that are ever uncommitted (the ring
        holds them beyond ``maxlen``).
        """
        with self._commit_cond:
            while self._in_flight is not None:
                if not self._full() or self._closing:
                    return
                self._commit_cond.wait()
            if not self._closing and self._due():
                self._in_flight = self._writer.prepare()
                self._commit_cond.notify_all()

    def _commit_if_due(self):
        with self._write_lock:
            self._hand_off()

    def _commit_in_background(self):
        """The committer thread: write each group handed off, and commit by
        itself records left pending a commit interval while the source blocks
        in read(); then apply retention.  Ends when the recorder finishes (it
        makes the last commit) or a write fails (the session fails)."""
        interval_us = self.commit_interval_s * 1e6
        cond = self._commit_cond
        writer = self._writer
        while True:
            with cond:
                while self._in_flight is None and not self._closing:
                    oldest = writer.oldest_pending_arrival_us
                    wait_us = interval_us if oldest is None else oldest + self._wait_us - time.time_ns() // 1000
                    if wait_us <= 0:
                        break
                    cond.wait(wait_us / 1e6)
                if self._closing and self._in_flight is None:
                    return
                batch = self._in_flight
            if batch is None:  # records waited a commit interval: take them
                if not self._write_lock.acquire(blocking=False):
                    # the recorder is adding (and may wait, holding the lock, for a group it hands off now)
                    with cond:
                        if self._in_flight is None and not self._closing:
                            cond.wait(self.commit_interval_s / 10)
                    continue
                try:
                    with cond:
                        batch = self._in_flight = self._in_flight or writer.prepare()
                finally:
                    self._write_lock.release()
                if batch is None:
                    continue
            started = time.monotonic()
            try:
                added = writer.write(batch)
            except errors.StreamlogError as exc:
                with cond:
                    self._failed_batch, self._in_flight = batch, None
                    cond.notify_all()
                self._fail(exc)
                self._stop_requested.set()
                return
            self._feed.committed = writer.committed_seq
            self._wait_us = max(0.0, interval_us - (time.monotonic() - started) * 1e6)
            try:
                self._apply_retention(added)
            except errors.StreamlogError as exc:
                self._fail(exc)
                self._stop_requested.set()
            with cond:
                self._in_flight = None
                cond.notify_all()
            if self._error is not None and self._stop_requested.is_set():
                return

    def _apply_retention(self, added):
        """After a commit of ``added`` records: prune in small batches, up to
        about twice what was added."""
        if self.retention is not None and self.retention.is_limited:
            now = time.monotonic()
            if now >= self._retention_due or added:
                budget = 2 * added + 1
                removed = 0
                while removed < budget:
                    step = self._pruner.step(self.retention)
                    if not step:
                        break
                    removed += step
                self._retention_due = now + 0.05

    def _fail(self, exc, context=None):
        """Keep the first failure: its message (after ``context``) and the
        exception that readers' SourceFailed carry as ``__cause__`` (for a
        failed SourceReader call, the exception that call raised)."""
        if self._error is None:
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, errors.StreamlogError) else str(exc)
            cause = exc.__cause__ if type(exc) is errors.SourceFailed and exc.__cause__ is not None else exc
            self._error = (f"{context}: {message}" if context else message), cause

    def _finish(self, *, opened):
        """Close the source, commit what is left, end the session, wake readers."""
        if opened:
            try:
                self.source_reader.close()
            except BaseException as exc:
                self._fail(call_failed("close()", exc))
        owner = self._join_session is None
        info = None
        if owner:  # the info read at the start stays when reading it now fails
            source_info, info_failure = _source_info(self.source_reader)
            for failure in (self._info_failure, info_failure):
                if failure is not None:
                    self._fail(failure)
            if info_failure is None:
                info = source_info
        with self._commit_cond:
            self._closing = True
            self._commit_cond.notify_all()
        self._committer.join()  # it writes the group in flight first
        with self._write_lock:
            if self._failed_batch is not None:
                self._writer.restore(self._failed_batch)
            try:
                added = self._writer.commit()
                self._feed.committed = self._writer.committed_seq
                self._apply_retention(added)
            except errors.StreamlogError as exc:
                self._fail(exc, "final commit failed; the records after the last commit are lost")
            error = self._error[0] if self._error else None
            try:
                self.log.catalog.end_stream(self.session.id, self.stream, error=error, info=info)
                self.session.refresh()  # the final state, before another writer's retention may remove it
            except errors.SessionNotFound:
                pass
            except errors.StreamlogError as exc:
                self._fail(exc, "could not mark the session ended")
        self._feed.end(self._error)
        self._ended.set()


class SourceBuffer:
    """The window of one recording of a StreamBuffer (stream2py's
    ``StreamBuffer.source_buffer``): ``len()`` counts the records recorded
    since start, less those :meth:`drop` released, at most ``maxlen``.
    Every record stays in the log whatever this window holds."""

    def __init__(self, buffer):
        self._buffer = buffer
        self._ring = buffer._ring
        self._dropped = 0
        self.key = buffer.source_reader.key
        self.buffer_reader_class = getattr(buffer.source_reader, "buffer_reader_class", BufferReader)

    def __len__(self):
        held = self._ring.high + 1 - self._dropped
        maxlen = self._buffer.maxlen
        return held if maxlen is None else min(held, maxlen)

    def is_full(self):
        return len(self) >= self._buffer.maxlen

    def drop(self, n=1):
        """Release the ``n`` oldest records of the window (they stay in the log)."""
        self._dropped += min(n, len(self))

    @property
    def source_reader_info(self):
        return self._buffer.source_reader_info

    def mk_reader(self, **reader_defaults):
        return self._buffer.mk_reader(**reader_defaults)

    def attach_reader(self, reader):
        self._buffer.attach_reader(reader)


def _source_info(source):
    """``(info, failure)``: a copy of ``source.info`` and None, or ``{}`` and
    the SourceFailed saying why it could not be read."""
    try:
        info = source.info
    except Exception as exc:
        return {}, call_failed("info", exc)
    if not isinstance(info, dict):
        return {}, errors.SourceFailed(f"info failed: it is a {type(info).__name__}, not a dict")
    return dict(info), None


class _CallableSource(SourceReader):
    """A SourceReader made of plain callables (see :func:`mk_stream_buffer`)."""

    def __init__(self, read_stream, open_stream, close_stream, key, info, enumerate_data, sleep_time_on_read_none_s):
        self._read_stream = read_stream
        self._open_stream = open_stream
        self._close_stream = close_stream
        self._key = key
        self._info = info if callable(info) else dict(info or {})
        self._enumerate = enumerate_data
        if sleep_time_on_read_none_s is not None:
            self.sleep_time_on_read_none_s = sleep_time_on_read_none_s
        self._handle = None
        self._index = 0

    def open(self):
        self._index = 0
        if self._open_stream is not None:
            self._handle = self._open_stream()

    def read(self):
        item = self._read_stream(self._handle) if self._open_stream is not None else self._read_stream()
        if item is None:
            return None
        if self._enumerate:
            item = (self._index, item)
            self._index += 1
        return item

    def close(self):
        if self._close_stream is not None:
            if self._open_stream is not None:
                self._close_stream(self._handle)
            else:
                self._close_stream()

    def key(self, data):
        return self._key(data)

    @property
    def info(self):
        return self._info(self._handle) if callable(self._info) else self._info


@contextmanager
def mk_stream_buffer(read_stream, open_stream=None, close_stream=None, *, key=None, maxlen=10_000, log=None,
                     info=None, enumerate_data=True, sleep_time_on_read_none_seconds=None, **buffer_options):
    """A started StreamBuffer over plain callables, as a context manager.

    ``read_stream(handle)`` (or ``read_stream()`` without ``open_stream``)
    returns the next item or None for "nothing yet"; with ``enumerate_data``
    each item is stored as ``(index, item)`` and keyed by the index unless
    ``key`` says otherwise.  Without ``enumerate_data`` a ``key`` is required.
    ``info`` is a dict, or (as in stream2py) a callable taking the handle and
    returning one, called after ``open_stream``.
    """
    if key is None:
        if not enumerate_data:
            raise ValueError("mk_stream_buffer needs key= when enumerate_data is False")
        key = _index_of
    source = _CallableSource(read_stream, open_stream, close_stream, key, info, enumerate_data,
                             sleep_time_on_read_none_seconds)
    with StreamBuffer(source, maxlen=maxlen, log=log, **buffer_options) as buffer:
        yield buffer


def _index_of(data):
    return data[0]
