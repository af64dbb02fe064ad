"""The LMDB environment behind a log: layout, format version, locking, growth.

One :class:`Store` exists per log directory per process (LMDB forbids opening
the same environment twice in one process); :func:`open_store` shares it by
reference count.  Everything that touches LMDB directly lives here, so the
rest of the package never sees ``lmdb`` exceptions:

* the map grows by itself (``MapFullError`` is retried after doubling the map;
  another process's growth is adopted on ``MapResizedError``);
* read transactions are short and always go through :meth:`Store.read`;
* resizing the map waits for every transaction of this process to end;
* every committed write transaction wakes the log's followers in other
  processes (:class:`streamlog.notify.Notifier`);
* stale reader slots of dead processes (killed inside a read transaction,
  they pin the pages of their snapshot) are cleared on open and by the
  writing process after its commits (see :meth:`Store.clear_stale_readers`);
* any number of writing processes per log; their write transactions take
  turns in an ``flock`` on ``writers/`` before LMDB's write mutex (see
  :meth:`Store._turn_to_write`); each registers itself with a lock file of its own,
  ``writers/<pid>-<token>.lock``, ``flock``ed while it lives (see
  :meth:`Store.acquire_writer` and :meth:`Store.live_writers`), so anyone can
  tell which writers are alive;
* creating a new log is serialised by an ``flock`` on its directory, so two
  processes creating the same log at once both end up on one log;
* a user who may not write ``lock.mdb`` reads a log that no process writes
  without LMDB's lock table (its lock-free read-only mode), made safe by an
  ``flock`` on ``data.mdb``: such a reader holds it shared and then checks
  that no writer is alive; a process that writes registers as a writer and
  then makes sure it can take it exclusively (see :meth:`Store.acquire_writer`);
* files are created with the user's umask but never world-writable
  (:data:`FILE_MODE`, :data:`DIR_MODE`); in a log whose directory has the
  setgid bit (a shared log, see :func:`share_log`) every file and directory
  streamlog makes is group-writable too; no file inside a log is opened
  through a symbolic link;
* a store inherited across ``fork()`` refuses to be used in the child (LMDB
  forbids it); the child opens the log again and gets a store of its own.

The bytes stored in it (format record, database names, records) are
:mod:`streamlog.records`'s; this module only keeps the environment.
"""

import errno
import fcntl
import grp
import os
import pwd
import secrets
import stat
import sys
import threading
import time
from contextlib import contextmanager

import lmdb

from streamlog import errors, records
from streamlog.notify import NOTIFY_DIR, Listener, Notifier

MAX_DBS = 128
INITIAL_MAP_SIZE = 64 << 20
DATA_FILE = "data.mdb"
LMDB_LOCK_FILE = "lock.mdb"
WRITERS_DIR = "writers"
"""Directory of a log holding one lock file per writing process."""
_WRITER_SUFFIX = ".lock"
_REGISTERING_SUFFIX = ".new"
_ABANDONED_REGISTRATION_S = 60.0
FILE_MODE = 0o664
"""Mode of the files of a new log, before the umask: never world-writable."""
DIR_MODE = 0o775
"""Mode of the directories made for a new log, before the umask: never world-writable."""
READER_CHECK_INTERVAL_S = 1.0
"""The writing process looks for stale reader slots at least this often while it commits."""
WAIT_FOR_LOCK_FREE_READERS_S = 2.0
"""How long a process about to write waits for readers without the lock file
(see :meth:`Store.acquire_writer`) to close the log before it refuses."""
_LOCK_FREE_POLL_S = 0.01

_META_DB = b"meta"
_SESSIONS_DB = b"sessions"
_CURSORS_DB = b"cursors"
_FORMAT_KEY = b"format"

_SYNC_FLAGS = {
    "full": dict(sync=True, metasync=True),
    "normal": dict(sync=True, metasync=False),
    "off": dict(sync=False, metasync=False),
}
DURABILITY_MODES = tuple(_SYNC_FLAGS)

_stores = {}
_retired = set()  # stores of logs deleted from their path, still held by the objects that opened them
_stores_lock = threading.Lock()


def open_store(path, *, create=True, durability=None):
    """Return the process-wide :class:`Store` for ``path`` (a directory).

    Raises LogNotFound, NotALog, FormatVersionError.  Each call must be paired
    with :meth:`Store.release`.  The environment is opened writable whenever
    the directory is writable (``Log(readonly=True)`` only forbids writing);
    ``durability`` None accepts whatever the store has (``"full"`` if new).
    In a child process after ``fork()`` this opens a store of the child's own.
    A log deleted (and perhaps made again) at ``path`` since its store opened
    gets a new store; the old one stays with the objects that hold it.
    """
    if durability is not None and durability not in _SYNC_FLAGS:
        raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}, not {durability!r}")
    real = os.path.realpath(os.fspath(path))
    with _stores_lock:
        store = _stores.get(real)
        if store is not None and not store.still_at_path():
            del _stores[real]
            _retired.add(store)
            store = None
        if store is not None and durability is not None and store.durability != durability:
            raise errors.LogError(f"log {path} is already open in this process with durability "
                                  f"{store.durability!r}; close it before writing with {durability!r}")
        if store is None:
            store = Store(real, create=create, durability=durability or "full")
            _stores[real] = store
        store.users += 1
        return store


def open_elsewhere(path):
    """Whether another process has the LMDB environment of the log at ``path``
    open (each one holds a shared lock on the first byte of ``lock.mdb``).

    Call it only while this process does not have the log open: the probe
    takes that byte's exclusive lock for an instant.
    """
    real = os.path.realpath(os.fspath(path))
    with _stores_lock:
        if real in _stores:
            raise errors.LogError(f"log {path} is open in this process")
    try:
        fd = os.open(os.path.join(real, LMDB_LOCK_FILE), os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise errors.LogAccessDenied(f"cannot open {LMDB_LOCK_FILE} of log {path}: {exc.strerror}") from exc
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock
    return False


class _TransactionGate:
    """Shared/exclusive gate: many transactions, or one map resize (or fork)."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._exclusive = False

    def enter(self):
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._active += 1

    def leave(self):
        with self._cond:
            self._active -= 1
            if self._active == 0 and self._exclusive:
                self._cond.notify_all()

    def block(self):
        """Wait until no transaction is in flight and keep new ones out until :meth:`unblock`."""
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._active:
                self._cond.wait()

    def unblock(self):
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        self.block()
        try:
            yield
        finally:
            self.unblock()


class Store:
    """An open LMDB environment for one log directory (use :func:`open_store`)."""

    def __init__(self, path, *, create, durability):
        self.path = path
        self.durability = durability
        self.users = 0
        self.closed = False
        self.pid = os.getpid()
        self.inherited = False
        self.stale_readers_cleared = 0
        self.stale_reader_pids = []
        self._reader_check_lock = threading.Lock()
        self._next_reader_check = 0.0
        self._high_water_checked = 0
        self._gate = _TransactionGate()
        self._dbs = {}
        self._dbs_lock = threading.Lock()
        self._write_txn_lock = threading.Lock()
        self._turn_fd = None
        self._writer_lock_fd = None
        self.writer_token = None
        self._writer_users = 0
        self._writer_lock = threading.Lock()
        self._writing_thread = None
        self._notifier = Notifier(path)
        self._may_create = create
        self._creation_locked = False
        self.lock_free = False
        self._reading_fd = None
        try:
            with _creation_lock(path, create) as self._creation_locked:
                self._open(create)
        except _Unfinished as exc:  # LMDB's file is there but not yet the format record: wait for its creator
            with _creation_lock(path, create and not exc.lock_free, always=True) as self._creation_locked:
                self._open(create)

    def _open(self, create):
        self._dbs = {}  # an attempt given up (see _Unfinished) leaves no handle behind
        path = self.path
        durability = self.durability
        self._check_path(create)
        data_file = os.path.join(path, DATA_FILE)
        self.lock_free = not _may_use_lock_file(path)
        if self.lock_free and not self._creation_locked:
            raise _Unfinished(path, lock_free=True)  # open under the creation lock: never mid-creation
        readonly = self.lock_free or not (_access(path, os.W_OK) and _may_write_if_there(data_file))
        self.readonly = readonly
        if self.lock_free:
            self._reading_fd = self._lock_out_writers(data_file)
        elif not readonly and is_shared(path):
            _make_shared_file(os.path.join(path, LMDB_LOCK_FILE))  # before LMDB makes it, so no member is shut out
        size = os.path.getsize(data_file) if os.path.exists(data_file) else 0
        map_size = max(INITIAL_MAP_SIZE, _round_up_pow2(size * 2))
        try:
            try:
                self.env = lmdb.open(path, map_size=map_size, subdir=True, readonly=readonly, create=not readonly,
                                     max_dbs=MAX_DBS, max_readers=252, readahead=False, writemap=False,
                                     lock=not self.lock_free, mode=FILE_MODE, max_spare_txns=0,
                                     **_SYNC_FLAGS[durability])
            except lmdb.Error as exc:
                if "Permission denied" in str(exc):
                    raise errors.LogAccessDenied(f"cannot open log {path}: permission denied: {exc}") from exc
                raise errors.NotALog(f"{path} is not a readable streamlog log: {exc}") from exc
        except BaseException:
            self._stop_lock_free_reading()
            raise
        try:
            if self.lock_free and _file_identity(path, data_file) != _file_identity(path, self._reading_fd):
                raise _Unfinished(path, lock_free=True)  # data.mdb was replaced (compact) meanwhile: again
            if not readonly and is_shared(path):
                _share_own_file(data_file)
            self.clear_stale_readers()
            self.page_size = self.env.stat()["psize"]
            self._check_not_truncated(data_file)
            self._init_format()
            self.open_all_dbs()
            if not readonly and _SESSIONS_DB not in self._dbs:  # a log whose creator died before making it
                self.db(_SESSIONS_DB, create=True)
            self._identity = _file_identity(path, data_file)
        except lmdb.Error as exc:
            self._close_env()
            raise _read_error(path, exc) from exc
        except BaseException:
            self._close_env()
            raise

    def _close_env(self):
        self.env.close()
        self._stop_lock_free_reading()
        if self._turn_fd is not None:
            os.close(self._turn_fd)
            self._turn_fd = None

    def _stop_lock_free_reading(self):
        if self._reading_fd is not None:
            os.close(self._reading_fd)  # drops its shared flock: writers may start
            self._reading_fd = None

    def _lock_out_writers(self, data_file):
        """For a reader without the lock file: take a shared ``flock`` on
        ``data.mdb`` (kept while the log is open), then make sure no writer is
        alive; return the locked descriptor.

        A writer registers in ``writers/`` before it makes sure nobody holds
        that lock (:meth:`acquire_writer`), so either this look sees it alive
        (LiveLogAccessDenied) or it sees this lock and waits or refuses.
        """
        try:
            fd = os.open(data_file, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise errors.LogAccessDenied(f"cannot open log {self.path}: permission denied (on {DATA_FILE}): "
                                         f"{exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # a starting writer holds it exclusively for an instant at most
            alive = sorted(self.live_writers().values())
            if alive:
                raise _live_log_error(self.path, alive)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- opening -------------------------------------------------------------

    def still_at_path(self):
        """Whether the log this store opened is still the one at its path (not
        deleted, nor deleted and made again)."""
        return _file_identity(self.path, os.path.join(self.path, DATA_FILE)) == self._identity

    def _check_path(self, may_create):
        """Refuse what is not a log (NotALog, LogNotFound, LogAccessDenied)
        before LMDB maps it; create the directory if allowed."""
        path = self.path
        try:
            os.stat(path)
        except PermissionError as exc:
            raise errors.LogAccessDenied(f"cannot open log {path}: permission denied "
                                         f"(on a directory above it)") from exc
        except OSError:
            pass
        if os.path.isdir(path):
            if not os.access(path, os.R_OK | os.X_OK):
                raise errors.LogAccessDenied(f"cannot open log {path}: permission denied (on the directory)")
            _refuse_links(path)
            data_file = os.path.join(path, DATA_FILE)
            if _creation_interrupted(path):
                if not may_create:
                    raise errors.LogNotFound(f"no log at {path} (its creation was interrupted before anything "
                                             f"was written)")
                return  # LMDB creates the log afresh: nothing was ever stored here
            if os.path.exists(data_file):
                _check_data_file(path, data_file)
            elif os.listdir(path):
                raise errors.NotALog(f"{path} is a directory that holds no streamlog log")
            elif not may_create:
                raise errors.LogNotFound(f"no log at {path}")
            return
        try:
            status = os.stat(path)
        except FileNotFoundError:
            status = None
        if status is not None:
            if stat.S_ISDIR(status.st_mode):  # another process made it since the look above
                return self._check_path(may_create)
            raise errors.NotALog(f"{path} is a file, not a streamlog log (a log is a directory)")
        if not may_create:
            raise errors.LogNotFound(f"no log at {path}")
        _make_log_dir(path)

    def _check_not_truncated(self, data_file):
        """NotALog if ``data.mdb`` ends before the last page LMDB says is in
        use (reading there would crash with SIGBUS).  One stat, no scan."""
        needed = (self.env.info()["last_pgno"] + 1) * self.page_size
        size = os.path.getsize(data_file)
        if size < needed:
            raise errors.NotALog(f"log {self.path} is damaged: {DATA_FILE} is {size} bytes, but its pages "
                                 f"reach {needed} bytes (it was truncated, or its header is damaged)")

    def _init_format(self):
        meta = self.db(_META_DB)
        if meta is not None:
            with self.read() as txn:
                raw = txn.get(_FORMAT_KEY, db=meta)
            if raw is not None:
                self._check_format(raw)
                return
        with self.read() as txn:
            foreign = [k for k, _ in txn.cursor() if not _is_our_db_name(k)]
        if not foreign and not self._creation_locked:
            raise _Unfinished(self.path)
        if foreign or self.readonly or not self._may_create:
            raise errors.NotALog(f"{self.path} is an LMDB environment but not a streamlog log")
        record = records.format_record()

        def create(txn):  # one transaction: whoever sees the format record sees the sessions database
            handles = {name: self.env.open_db(name, txn=txn, create=True) for name in (_META_DB, _SESSIONS_DB)}
            txn.put(_FORMAT_KEY, record, db=handles[_META_DB])
            return handles

        # under the exclusive creation lock, before anyone else opened this log: no writer registration
        self._dbs.update(self._write(create))
        self.format_version, self.created = records.check_format_record(record, self.path)

    def _check_format(self, raw):
        self.format_version, self.created = records.check_format_record(raw, self.path)

    # -- databases -----------------------------------------------------------

    def db(self, name, *, create=False):
        """The handle of named database ``name`` (bytes), or None if it does not exist.

        Opening one that is not open yet takes this process's write lock
        (:meth:`write`), so it waits for a commit in flight; it must not be
        called inside a transaction of the calling thread.
        """
        handle = self._dbs.get(name)
        if handle is not None:
            return handle
        self._refuse_if_inherited()
        if self._writing_thread == threading.get_ident():
            if not create and self.holds_writer:
                # only the writer creates databases, and taking the writer lock opened every one that
                # existed (open_all_dbs): this one does not exist (e.g. a stream killed before its first commit)
                return None
            raise RuntimeError(f"database {name!r} must be opened before the write transaction (open_all_dbs)")
        with self._dbs_lock:
            handle = self._dbs.get(name)
            if handle is None:
                handle = self._open_db(name, create=create and not self.readonly)
                if handle is not None:
                    self._dbs[name] = handle
            return handle

    def _open_db(self, name, *, create):
        """Open ``name`` in a transaction of this store's own, never in one py-lmdb begins by itself.

        ``env.open_db`` without ``txn=`` begins a write transaction of its own,
        and py-lmdb 3.0.0 waits for LMDB's write lock there while holding the
        GIL: if another thread of this process is inside a write transaction
        (which needs the GIL to finish), both wait for ever.  Here the handle is
        opened inside :meth:`write`, which takes the store's write lock first
        (waiting for a Python lock releases the GIL).  In an environment
        opened read-only there is no write lock to wait for: py-lmdb opens it
        in a read transaction of its own (a handle opened in a transaction
        of ours and committed is refused afterwards by py-lmdb 3.0.0 with
        EINVAL; tested).
        """
        def open_in(txn):
            try:
                return self.env.open_db(name, txn=txn, create=create)
            except lmdb.NotFoundError:
                return None
            except lmdb.MapFullError:
                raise  # write() grows the map and opens again
            except lmdb.IncompatibleError as exc:
                raise errors.NotALog(f"{self.path} is an LMDB environment but not a streamlog log") from exc
            except lmdb.Error as exc:
                raise (_storage_error if create else _read_error)(self.path, exc) from exc

        if not self.readonly:
            # opening a database that exists writes nothing to data.mdb: no writer registration needed
            return (self.write if create else self._write)(open_in)
        self._gate.enter()
        try:
            return open_in(None)
        finally:
            self._gate.leave()

    @property
    def meta_db(self):
        return self.db(_META_DB)

    @property
    def sessions_db(self):
        return self.db(_SESSIONS_DB, create=not self.readonly)

    def cursors_db(self, *, create=False):
        """The handle of the named cursors' database (:mod:`streamlog.cursors`),
        None while none was ever stored (unless ``create``).  Like :meth:`db`,
        not inside a transaction of the calling thread, except, without
        ``create``, inside this process's write transaction (retention):
        then None unless it was open before the transaction began."""
        if not create and _CURSORS_DB not in self._dbs and self._writing_thread != threading.get_ident():
            with self.read() as txn:
                if txn.get(_CURSORS_DB) is None:
                    return None
        return self.db(_CURSORS_DB, create=create)

    def records_db(self, stream, *, create=False):
        return self.db(records.records_db_name(stream), create=create)

    def time_db(self, stream, *, create=False):
        return self.db(records.time_db_name(stream), create=create)

    def open_all_dbs(self):
        """Open every existing named database, so write transactions can use them."""
        with self.read() as txn:
            names = [k for k, _ in txn.cursor()]
        for name in names:
            if _is_our_db_name(name):
                self.db(name)

    def pages_in_use(self, txn=None):
        """Pages holding data: branch, leaf and overflow pages of every
        database (as seen in ``txn`` if given, e.g. a write transaction; a
        database another process made since :meth:`open_all_dbs` is then
        not counted)."""
        if txn is None:
            with self.read() as txn:
                names = [k for k, _ in txn.cursor() if _is_our_db_name(k)]
            handles = [self.db(name) for name in names]
            with self.read() as txn:
                return _pages(txn, handles)
        names = [k for k, _ in txn.cursor() if _is_our_db_name(k)]
        return _pages(txn, [handle for handle in map(self._dbs.get, names) if handle is not None])

    def stream_names(self):
        """Names of all streams that have a records database."""
        with self.read() as txn:
            names = [k for k, _ in txn.cursor()]
        return sorted(filter(None, map(records.stream_of_db_name, names)))

    # -- transactions --------------------------------------------------------

    @contextmanager
    def read(self, buffers=False):
        """A short read transaction; never hold it across calls.  With
        ``buffers`` its values are views of the memory map, valid only
        inside it (see py-lmdb's ``buffers=True``).

        LMDB errors inside it (a damaged page, no free reader slot) raise
        NotALog / LogError naming the log; a CorruptRecord gets the log's
        path in its message.  LMDB does not checksum pages: some damage
        crashes the process inside LMDB instead (SIGSEGV, SIGBUS, abort).
        """
        self._check_usable()
        self._gate.enter()
        try:
            while True:
                try:
                    txn = self.env.begin(buffers=buffers)
                    break
                except lmdb.MapResizedError:
                    # adopting another process's map growth waits for this process's
                    # transactions to end, so this one must not count meanwhile
                    self._gate.leave()
                    try:
                        self._adopt_map_size()
                    finally:
                        self._gate.enter()
            try:
                yield txn
            finally:
                txn.abort()
        except lmdb.Error as exc:
            raise _read_error(self.path, exc) from exc
        except errors.CorruptRecord as exc:
            raise self.damaged(exc) from None
        finally:
            self._gate.leave()

    def damaged(self, exc):
        """The CorruptRecord that reports ``exc`` (a CorruptRecord met reading
        this log, inside a read transaction or in bytes read by one) with the
        log's path, as every read does."""
        return errors.CorruptRecord(f"log {self.path} is damaged: {exc}", session=exc.session, stream=exc.stream,
                                    key=exc.key)

    def write(self, work):
        """Run ``work(txn)`` in a write transaction and commit; return its result.

        Write transactions of this process run one at a time, in the order
        their threads take the store's write lock (a Python lock, so a thread
        waiting for another's commit never holds the GIL while it waits).
        A process writes only as a registered writer: one that does not hold
        the writer lock (:meth:`acquire_writer`; e.g. a reader storing a
        cursor) holds it for the transaction (ReadersWithoutLock when readers
        without the lock file keep the log).

        The map grows and ``work`` reruns when LMDB runs out of map space, so
        ``work`` must have no side effects outside the transaction.  Disk
        errors raise StorageError; the transaction is then rolled back.
        """
        if self.readonly:
            raise self._no_write_access()
        self._check_usable()
        self.acquire_writer()
        try:
            return self._write(work)
        finally:
            self.release_writer()

    def _write(self, work):
        """:meth:`write` without the writer registration: only for what writes
        nothing to ``data.mdb`` (opening a database that exists) or writes
        under the exclusive creation lock."""
        if self.readonly:
            raise self._no_write_access()
        self._check_usable()
        while True:
            with self._write_txn_lock:  # see _open_db: no thread of this process waits in LMDB
                self._gate.enter()
                try:
                    committed = False
                    with self._turn_to_write():
                        try:
                            txn = self.env.begin(write=True)
                        except lmdb.MapResizedError:
                            txn = None
                        if txn is not None:
                            self._writing_thread = threading.get_ident()
                            try:
                                result = work(txn)
                                txn.commit()
                                committed = True
                            except lmdb.MapFullError:
                                txn.abort()
                            except lmdb.Error as exc:
                                txn.abort()
                                raise _storage_error(self.path, exc) from exc
                            except BaseException:
                                txn.abort()
                                raise
                            finally:
                                self._writing_thread = None
                    if committed:
                        self._notifier.signal()
                        self._clear_stale_readers_when_due()
                        return result
                finally:
                    self._gate.leave()
            if txn is None:
                self._adopt_map_size()
            else:
                self._grow()

    @contextmanager
    def _turn_to_write(self):
        """Hold the exclusive ``flock`` on ``writers/`` for one write transaction.

        It serialises the write transactions of all processes before LMDB's
        own write mutex, so no process ever sleeps in that mutex (a robust
        pthread mutex in ``lock.mdb``).  There a process killed after the
        kernel woke it and before it took the mutex swallows the wake-up
        while another process takes the free mutex without waking anyone:
        the next waiter sleeps for ever (seen as a survivor of
        ``crash_trials --writers 3`` that never ended).  The kernel's file
        locks have no such window: a waiter that dies just leaves the queue.
        Without ``writers/`` (only while a log is created, under the
        creation lock) there is nobody to wait for.
        """
        if self._turn_fd is None:
            try:
                self._turn_fd = os.open(os.path.join(self.path, WRITERS_DIR),
                                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except FileNotFoundError:
                yield
                return
            except OSError as exc:
                raise _access_error(self.path, os.path.join(self.path, WRITERS_DIR), exc) from exc
        fcntl.flock(self._turn_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._turn_fd, fcntl.LOCK_UN)

    def sync(self):
        """Flush everything committed to the disk (for a store opened with durability ``"off"``)."""
        self._check_usable()
        self._gate.enter()
        try:
            self.env.sync(True)
        finally:
            self._gate.leave()

    def copy_to(self, directory, *, compact=False):
        """Write a consistent copy of the environment (one read snapshot, taken
        while the writer may go on) as ``directory/data.mdb``; ``directory``
        must exist and be empty.  ``compact`` leaves out free pages (and
        renumbers the rest), so the copy is as small as the data.  The copy
        is made never world-writable.  Disk errors raise StorageError."""
        self._check_usable()
        self._gate.enter()
        try:
            self.env.copy(os.fspath(directory), compact=compact)
        except lmdb.Error as exc:
            raise _storage_error(self.path, exc) from exc
        finally:
            self._gate.leave()
        copied = os.path.join(directory, DATA_FILE)
        os.chmod(copied, stat.S_IMODE(os.stat(copied).st_mode) & FILE_MODE)

    def file_pages(self):
        """Pages of the data file LMDB uses (up to the highest page written,
        as of the newest commit of any process); the file never shrinks."""
        return self.info()["last_pgno"] + 1

    def info(self):
        """LMDB's figures for the environment (``map_size``, ``last_pgno``, ...)."""
        self._check_usable()
        self._gate.enter()
        try:
            return self.env.info()
        finally:
            self._gate.leave()

    def _no_write_access(self):
        """The LogAccessDenied for writing a store opened read-only (it is
        only for lack of permission), naming the first file it may not write."""
        user = f"user {_user_name(os.geteuid())} (uid {os.geteuid()})"
        for name, target in (("the directory", self.path), (DATA_FILE, os.path.join(self.path, DATA_FILE)),
                             (LMDB_LOCK_FILE, os.path.join(self.path, LMDB_LOCK_FILE))):
            if os.path.exists(target) and not _access(target, os.W_OK):
                return errors.LogAccessDenied(f"cannot write log {self.path}: {user} may not write {name} "
                                              f"({target}); its owner can share it with a group you are in "
                                              f"(`streamlog record --group GROUP`, or Log(path, group=...))")
        return errors.LogAccessDenied(f"cannot write log {self.path}: {user} may not write it")

    def release_map_pages(self):
        """Take the pages of ``data.mdb`` this process has read out of its
        resident set; True if done.  On Linux: ``madvise(MADV_DONTNEED)``
        over the file's mappings in ``/proc/self/maps``; elsewhere nothing
        (False).  The pages stay in the page cache and the next read maps
        them again, so no data changes: the map is read-only (no
        ``writemap``), and the mappings are looked up and advised while no
        map resize can run (the transaction gate held).  For long scans,
        whose RSS would otherwise grow by every page they read."""
        self._check_usable()
        if _MADVISE is None:
            return False
        self._gate.enter()
        try:
            return _drop_mapped_pages(os.path.join(self.path, DATA_FILE))
        finally:
            self._gate.leave()

    def _check_usable(self):
        self._refuse_if_inherited()
        if self.closed:
            raise errors.LogError(f"log {self.path} is closed")

    def _refuse_if_inherited(self):
        if self.inherited:
            raise errors.LogError(f"this log ({self.path}) was opened in process {self.pid} before a fork; "
                                  f"open it again in the child")

    # -- reader slots --------------------------------------------------------

    def reader_slots(self):
        """LMDB's reader table as ``[(pid, txnid), ...]``: one entry per slot
        a process holds, ``txnid`` None while the slot is idle."""
        self._refuse_if_inherited()
        slots = []
        for line in self.env.readers().splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[0].isdigit():
                slots.append((int(fields[0]), None if fields[2] == "-" else int(fields[2])))
        return slots

    def clear_stale_readers(self):
        """Free the reader slots of dead processes; return how many were freed.

        A process killed inside a read transaction leaves its slot behind, and
        the slot pins that snapshot's pages: LMDB cannot reuse them, so the file
        grows until the slot is freed.  Adds to ``stale_readers_cleared`` (slots
        this process freed since it opened the log) and ``stale_reader_pids``
        (the dead holders, as far as the reader table names them).
        """
        self._refuse_if_inherited()
        with self._reader_check_lock:
            holders = {pid for pid, _ in self.reader_slots()}
            cleared = self.env.reader_check()
            if cleared:
                self.stale_readers_cleared += cleared
                gone = holders - {pid for pid, _ in self.reader_slots()} - set(self.stale_reader_pids)
                self.stale_reader_pids.extend(sorted(pid for pid in gone if not _process_exists(pid)))
            self._next_reader_check = time.monotonic() + READER_CHECK_INTERVAL_S
        return cleared

    def _clear_stale_readers_when_due(self):
        """After a commit (inside the transaction gate): free stale reader slots
        when the file grew since the last look or READER_CHECK_INTERVAL_S passed.

        Growth is the symptom of a pinned snapshot, so a stale slot costs at
        most one commit's growth; the check itself is cheap (one lock test per
        process in the reader table).
        """
        high_water = self.env.info()["last_pgno"]
        if high_water <= self._high_water_checked and time.monotonic() < self._next_reader_check:
            return
        with self._reader_check_lock:
            self.stale_readers_cleared += self.env.reader_check()
            self._high_water_checked = high_water
            self._next_reader_check = time.monotonic() + READER_CHECK_INTERVAL_S

    def _grow(self):
        with self._gate.exclusive():
            info = self.env.info()
            used = (info["last_pgno"] + 1) * self.page_size
            new_size = max(info["map_size"] * 2, _round_up_pow2(used * 2))
            self.env.set_mapsize(new_size)

    def _adopt_map_size(self):
        with self._gate.exclusive():
            self.env.set_mapsize(0)

    # -- the writing processes -----------------------------------------------

    def acquire_writer(self):
        """Register this process as a writer of the log (reentrant within it);
        return its writer token, which names it in ``writers/`` and in the
        streams it writes.

        The first hold creates ``writers/<pid>-<random>.lock`` and keeps an
        ``flock`` on it until the last :meth:`release_writer` (or the death of
        the process, when the kernel drops the lock).  Tokens are never reused.
        Registered, it then waits until it can take ``data.mdb``'s ``flock``
        exclusively for an instant (no reader without the lock file has the
        log open; any that comes later sees this writer alive and refuses),
        at most :data:`WAIT_FOR_LOCK_FREE_READERS_S`: ReadersWithoutLock, and
        no registration is left, when they keep it longer.
        """
        self._check_usable()
        if self.readonly:
            raise self._no_write_access()
        with self._writer_lock:
            if self._writer_users == 0:
                fd, token = _register_writer(self.path)
                try:
                    _wait_for_lock_free_readers(self.path)
                except BaseException:
                    _remove_quietly(os.path.join(self.path, WRITERS_DIR, token + _WRITER_SUFFIX))
                    os.close(fd)
                    raise
                self._writer_lock_fd, self.writer_token = fd, token
            self._writer_users += 1
            return self.writer_token

    def release_writer(self):
        """Drop one hold; the last one removes this process's lock file and
        releases it.  A forked child never touches its parent's lock (the
        ``flock`` is shared across fork)."""
        if self.inherited:
            return
        with self._writer_lock:
            self._writer_users -= 1
            if self._writer_users == 0:
                _remove_quietly(os.path.join(self.path, WRITERS_DIR, self.writer_token + _WRITER_SUFFIX))
                os.close(self._writer_lock_fd)
                self._writer_lock_fd = None
                self.writer_token = None

    @property
    def holds_writer(self):
        return self._writer_users > 0

    def live_writers(self):
        """``{writer token: pid}`` of the writing processes alive now (this
        one included while it holds the writer lock)."""
        self._refuse_if_inherited()
        alive = {}
        for token in self._registered_writers():
            pid = self._alive_pid(token)
            if pid is not None:
                alive[token] = pid
        return alive

    def writer_alive(self, token):
        """Whether the writing process with this token is alive."""
        self._refuse_if_inherited()
        return token is not None and self._alive_pid(token) is not None

    def dead_writers(self):
        """Tokens of registered writers that are gone (their lock files are
        left, unlocked).  Also removes registrations abandoned half-way."""
        dead = []
        for token in self._registered_writers(clean_abandoned=True):
            if self._alive_pid(token) is None:
                dead.append(token)
        return dead

    def forget_writer(self, token):
        """Remove the lock file of a dead writer (after its streams are marked crashed)."""
        if token != self.writer_token and not self.writer_alive(token):
            _remove_quietly(os.path.join(self.path, WRITERS_DIR, token + _WRITER_SUFFIX))

    def _registered_writers(self, clean_abandoned=False):
        directory = os.path.join(self.path, WRITERS_DIR)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        except PermissionError as exc:
            raise errors.LogAccessDenied(f"cannot open log {self.path}: permission denied (on {directory})") from exc
        if clean_abandoned:
            for name in names:
                if name.endswith(_REGISTERING_SUFFIX):
                    _remove_if_abandoned(os.path.join(directory, name))
        return [name[:-len(_WRITER_SUFFIX)] for name in names if name.endswith(_WRITER_SUFFIX)]

    def _alive_pid(self, token):
        """The pid of writer ``token`` if its lock is held now, else None."""
        if token == self.writer_token and self._writer_users:
            return os.getpid()
        try:
            fd = os.open(os.path.join(self.path, WRITERS_DIR, token + _WRITER_SUFFIX), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise errors.NotALog(f"a writer lock of {self.path} is a symbolic link; streamlog does not "
                                     f"follow links inside a log") from None
            raise
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return token_pid(token)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    # -- closing -------------------------------------------------------------

    def release(self):
        """Drop one reference; the environment closes with the last one."""
        with _stores_lock:
            self.users -= 1
            if self.users > 0:
                return
            if _stores.get(self.path) is self:
                del _stores[self.path]
            _retired.discard(self)
            self.closed = True
        self._close_env()
        self._notifier.close()

    def listener(self):
        """A :class:`~streamlog.notify.Listener` woken by this log's writers
        (``available`` False where it cannot be set up: poll instead)."""
        self._check_usable()
        return Listener(self.path, DIR_MODE, FILE_MODE, share=_share_own_file if is_shared(self.path) else None)

    def share_file(self, file_path):
        """Give a file made for this log (e.g. a compacted copy about to
        replace ``data.mdb``) the log's group and group write access when the
        log is shared (see :func:`share_log`); nothing otherwise."""
        if is_shared(self.path):
            os.chown(file_path, -1, os.stat(self.path).st_gid)
            _share_own_file(file_path)


# -- replacing the data file ---------------------------------------------------


def replace_data_file(path, new_data_file):
    """Rename ``new_data_file`` over the data file of the log at ``path``,
    which no process (this one included) may have open.

    LMDB processes hold a shared ``fcntl`` lock on ``lock.mdb`` while they
    have the environment open (writers too); taking it exclusively proves
    none has.  Holding it, the new file is renamed into place, then the lock
    file, which belongs to the old data file (it caches its transaction id),
    is emptied and removed: a process that opened it meanwhile waits for
    the lock and then gets a clean error (its next open starts afresh)
    instead of using the new file through the old table; a process that
    opens the log after the removal makes a fresh lock file and sees the
    new data file.  Raises LogError when another process has the log open.
    """
    lock_path = os.path.join(path, LMDB_LOCK_FILE)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        fd = None
    try:
        if fd is not None:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                raise errors.LogError(f"log {path} is open in another process (a recorder, reader or follower); "
                                      f"stop it first") from None
        os.replace(new_data_file, os.path.join(path, DATA_FILE))
        if fd is not None:
            os.ftruncate(fd, 0)
            os.unlink(lock_path)
    finally:
        if fd is not None:
            os.close(fd)


# -- fork ---------------------------------------------------------------------
# LMDB forbids using an environment across fork(), and py-lmdb refuses to open
# one twice in a process, so a child must drop what it inherited before it can
# open the log again.  Dropping (closing) an environment aborts its open
# transactions, which in a child would free the parent's reader slots; so no
# transaction may be in flight at the fork: the fork waits for those running
# (short by design) and holds new ones back until it is done.  Spare read
# transactions (max_spare_txns) are off for the same reason.


def _open_stores():
    return [*_stores.values(), *_retired]


def _quiesce_before_fork():
    _stores_lock.acquire()
    for store in _open_stores():
        store._gate.block()


def _resume_in_parent():
    for store in _open_stores():
        store._gate.unblock()
    _stores_lock.release()


def _drop_inherited_stores():
    """In the child: the parent's stores refuse use from now on (a clear
    LogError), their environments close without touching the parent's LMDB
    state, their copy of the writer lock is closed (the ``flock`` stays the
    parent's alone), and a fresh registry lets the child open logs anew."""
    global _stores, _retired, _stores_lock
    for store in _open_stores():
        store.inherited = True
        store._close_env()  # also the copy of a lock-free reader's flock: it stays the parent's alone
        if store._writer_lock_fd is not None:
            os.close(store._writer_lock_fd)
            store._writer_lock_fd = None
    _stores = {}
    _retired = set()
    _stores_lock = threading.Lock()


os.register_at_fork(before=_quiesce_before_fork, after_in_parent=_resume_in_parent,
                    after_in_child=_drop_inherited_stores)


def _pages(txn, handles):
    stats = [txn.stat()] + [txn.stat(handle) for handle in handles]
    return sum(st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"] for st in stats)


def _file_identity(path, data_file):
    """``(device, inode)`` of the directory ``path`` and of its ``data.mdb``
    (a path, or a descriptor open on it); None if either is gone."""
    try:
        return [(st.st_dev, st.st_ino) for st in (os.stat(path), os.stat(data_file))]
    except OSError:
        return None


def _is_our_db_name(name):
    return name in (_META_DB, _SESSIONS_DB, _CURSORS_DB) or records.is_stream_db_name(name)


def _process_exists(pid):
    """Whether process ``pid`` exists (a live reader's slot may also vanish
    from the table, when its transaction ends)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    return True


def enclosing_log(path):
    """The nearest of ``path`` and the directories above it that is a log
    directory (it holds LMDB's ``data.mdb`` or ``lock.mdb``: a streamlog log
    or another LMDB environment), or None.  ``path`` should be absolute with
    its links resolved (``os.path.realpath``)."""
    current = path
    while True:
        if os.path.isdir(current) and any(os.path.lexists(os.path.join(current, name))
                                          for name in (DATA_FILE, LMDB_LOCK_FILE)):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _make_log_dir(path):
    """Make the log directory ``path`` (DIR_MODE; one made meanwhile by
    another process is fine), never the directories above it: LogNotFound
    naming the missing one, StorageError if the disk refuses."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise errors.LogNotFound(f"cannot create log {path}: the directory {parent} does not exist "
                                 f"(streamlog creates the log's own directory, never the ones above it)")
    try:
        _make_dir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise errors.NotALog(f"{path} is a file, not a streamlog log (a log is a directory)") from None
    except OSError as exc:
        raise errors.StorageError(f"cannot create log directory {path}: {exc.strerror}") from exc


class _Unfinished(errors.NotALog):
    """An LMDB environment without the format record, opened without the
    creation lock: maybe a log its creator has not finished yet (or, with
    ``lock_free``, a reader without the lock file, which opens only under
    the creation lock)."""

    def __init__(self, path, lock_free=False):
        self.lock_free = lock_free
        super().__init__(f"{path} is an LMDB environment but not a streamlog log")


@contextmanager
def _creation_lock(path, create, always=False):
    """Hold an ``flock`` on the directory of a log that may still be being
    created (no ``data.mdb`` of two pages yet, or ``always``): exclusive
    when this process may create it, shared otherwise; yields whether it
    holds it.  Two processes creating one new log at once so take turns,
    and the second opens what the first made.  (LMDB writes its two meta
    pages when it opens the environment, before the creator writes the
    format record: an opener that finds no format record opens again with
    ``always``.)"""
    try:
        complete = os.path.getsize(os.path.join(path, DATA_FILE)) >= _MIN_DATA_SIZE
    except OSError:
        complete = False
    if complete and not always:
        yield False
        return
    if create and not os.path.exists(path):
        _make_log_dir(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # not a directory, or not one we may read: the checks say why
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX if create else fcntl.LOCK_SH)
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def _refuse_links(path):
    """NotALog if a file of the log at ``path`` is a symbolic link: LMDB would
    write through it (it even truncates ``lock.mdb`` when it sets it up)."""
    for name in (DATA_FILE, LMDB_LOCK_FILE, WRITERS_DIR, NOTIFY_DIR):
        if os.path.islink(os.path.join(path, name)):
            raise errors.NotALog(f"{os.path.join(path, name)} is a symbolic link; streamlog does not follow "
                                 f"links inside a log")


def _register_writer(path):
    """Create and lock this process's writer lock file; return ``(fd, token)``.

    The file is made under a temporary name, locked, then renamed into
    place, so a lock file anyone sees under its final name is locked for as
    long as its writer lives.
    """
    directory = os.path.join(path, WRITERS_DIR)
    if os.path.islink(directory):
        raise errors.NotALog(f"{directory} is a symbolic link; streamlog does not follow links inside a log")
    try:
        _make_dir(directory)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _access_error(path, directory, exc) from exc
    token = f"{os.getpid()}-{secrets.token_hex(6)}"
    temporary = os.path.join(directory, token + _REGISTERING_SUFFIX)
    try:
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        raise _access_error(path, directory, exc) from exc
    try:
        if is_shared(directory):
            os.fchmod(fd, _group_writable(os.fstat(fd).st_mode))
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        os.rename(temporary, os.path.join(directory, token + _WRITER_SUFFIX))
    except BaseException:
        os.close(fd)
        _remove_quietly(temporary)
        raise
    return fd, token


# -- readers without the lock file ----------------------------------------------


def _may_use_lock_file(path):
    """Whether this process may open ``lock.mdb`` read-write (or create it),
    as a reader through LMDB's lock table must."""
    lock = os.path.join(path, LMDB_LOCK_FILE)
    if os.path.lexists(lock):
        return _access(lock, os.R_OK | os.W_OK)
    return _access(path, os.W_OK | os.X_OK)


def _may_write_if_there(file_path):
    return not os.path.exists(file_path) or _access(file_path, os.W_OK)


def _access(file_path, mode):
    return os.access(file_path, mode, effective_ids=os.access in os.supports_effective_ids)


def _wait_for_lock_free_readers(path):
    """Return once ``data.mdb``'s ``flock`` could be taken exclusively (and
    was let go at once); ReadersWithoutLock after
    :data:`WAIT_FOR_LOCK_FREE_READERS_S`.  Another starting writer holds it
    for an instant too, so a miss is retried."""
    try:
        fd = os.open(os.path.join(path, DATA_FILE), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        deadline = time.monotonic() + WAIT_FOR_LOCK_FREE_READERS_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return  # closing the descriptor lets it go
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _lock_free_readers_error(path, _flock_holders(fd)) from None
                time.sleep(_LOCK_FREE_POLL_S)
    finally:
        os.close(fd)


def _flock_holders(fd):
    """Pids holding an ``flock`` on the file open at ``fd`` (from /proc/locks;
    empty where it is not available)."""
    st = os.fstat(fd)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    try:
        with open("/proc/locks") as table:
            for line in table:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted:  # "->" lines wait
                    holders.add(int(fields[4]))
    except (OSError, ValueError):
        pass
    holders.discard(os.getpid())
    return sorted(holders)


def _lock_free_readers_error(path, pids):
    if pids:
        who = ", ".join(f"pid {pid} (user {_user_name(_process_uid(pid))})" for pid in pids)
    else:
        who = "another process"
    lock = os.path.join(path, LMDB_LOCK_FILE)
    return errors.ReadersWithoutLock(
        f"cannot write log {path}: {who} reads it without its lock file (a user who may not write {lock} "
        f"reads a log only while no process writes it) and kept it open for {WAIT_FOR_LOCK_FREE_READERS_S:g}s; "
        f"writing now could change pages under that reader. Try again once it ends, or share the log with a "
        f"group the reader is in (`streamlog record --group GROUP`; see 'Sharing a log' in the README)",
        reader_pids=pids)


def _live_log_error(path, pids):
    lock = os.path.join(path, LMDB_LOCK_FILE)
    uid = os.geteuid()
    try:
        st = os.stat(lock)
        missing = (f"may not write {lock} (owner {_user_name(st.st_uid)}, group {_group_name(st.st_gid)}, "
                   f"mode {stat.S_IMODE(st.st_mode):04o})")
    except FileNotFoundError:
        missing = f"may not create {lock} (no write access to {path})"
    return errors.LiveLogAccessDenied(
        f"cannot read log {path} while it is being written: user {_user_name(uid)} (uid {uid}) {missing}, "
        f"which a reader needs while a writer is alive (writer pid(s) {', '.join(map(str, pids))}). Read it "
        f"once they end, or have it shared with a group you are in: `streamlog record --group GROUP` (or "
        f"record it in a setgid directory of that group; see 'Sharing a log' in the README)",
        writer_pids=pids)


def _user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, TypeError):
        return str(uid)


def _group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _process_uid(pid):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


# -- shared logs (a group of users records and reads them) ------------------------


def is_shared(path):
    """Whether the directory ``path`` has the setgid bit: a shared log (or a
    directory in one), whose files streamlog makes group-writable."""
    try:
        return bool(os.stat(path).st_mode & stat.S_ISGID)
    except OSError:
        return False


def share_log(path, group):
    """Share the log at ``path`` with ``group`` (a name or a gid).

    The log's directory gets the group and the setgid bit, so that every
    file and directory made in it later (by any member) has that group, and
    streamlog makes them group-writable (never world-writable, whatever the
    umask).  The directory, ``data.mdb``, ``lock.mdb``, ``writers/`` and
    ``notify/`` (and the entries there this user owns) get the group and
    group write access now.  Raises ConfigurationError for a group that
    does not exist, LogAccessDenied naming the file when this user may not
    change it (only its owner, if a member of the group, or root may).
    """
    gid = group_id(group)
    targets = [path]
    for name in (DATA_FILE, LMDB_LOCK_FILE, WRITERS_DIR, NOTIFY_DIR):
        target = os.path.join(path, name)
        if os.path.lexists(target):
            targets.append(target)
            if name in (WRITERS_DIR, NOTIFY_DIR):
                targets.extend(entry.path for entry in os.scandir(target)
                               if entry.stat(follow_symlinks=False).st_uid == os.geteuid())
    for target in targets:
        _give_to_group(path, target, gid)


def group_id(group):
    """The gid of ``group``: a gid (int, or digits), or the name of a group (ConfigurationError if none)."""
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise errors.ConfigurationError(f"no group named {group!r} on this system") from None


def _give_to_group(log_path, target, gid):
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise errors.NotALog(f"{target} is a symbolic link; streamlog does not follow links inside a log") from None
        raise errors.LogAccessDenied(f"cannot share log {log_path}: cannot open {target}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        mode = _group_writable(st.st_mode) | (stat.S_ISGID if stat.S_ISDIR(st.st_mode) else 0)
        if st.st_gid == gid and stat.S_IMODE(st.st_mode) == mode:
            return
        try:
            os.fchown(fd, -1, gid)
            os.fchmod(fd, mode)
        except PermissionError:
            raise errors.LogAccessDenied(
                f"cannot share log {log_path} with group {_group_name(gid)}: user {_user_name(os.geteuid())} may "
                f"not give {target} (owner {_user_name(st.st_uid)}) to it; only its owner, if a member of the "
                f"group, or root may") from None
    finally:
        os.close(fd)


def _group_writable(mode):
    """``mode`` (an ``st_mode``) with group read and write (and search, for a
    directory) added and world write removed."""
    extra = 0o070 if stat.S_ISDIR(mode) else 0o060
    return (stat.S_IMODE(mode) | extra) & ~0o002


def _make_dir(path):
    """``os.mkdir(path, DIR_MODE)``, made group-writable when it is in a shared log."""
    os.mkdir(path, DIR_MODE)
    if is_shared(path):  # made inside a setgid directory: it is setgid too
        _share_own_file(path)


def _make_shared_file(file_path):
    """Create the empty file ``file_path`` group-writable unless it exists."""
    try:
        fd = os.open(file_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, _group_writable(os.fstat(fd).st_mode))
    finally:
        os.close(fd)


def _share_own_file(file_path):
    """Make ``file_path`` (a file or directory this user owns) group-writable; others are left alone."""
    try:
        fd = os.open(file_path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != _group_writable(st.st_mode):
            os.fchmod(fd, _group_writable(st.st_mode))
    finally:
        os.close(fd)


def _access_error(path, directory, exc):
    if isinstance(exc, PermissionError):
        return errors.LogAccessDenied(f"cannot write log {path}: permission denied (writers need write access "
                                      f"to {directory} and the log's files)")
    return errors.StorageError(f"cannot write log {path}: {exc.strerror or exc}")


def token_pid(token):
    """The pid of the writer named by ``token`` (None for None)."""
    return None if token is None else int(token.split("-", 1)[0])


def _remove_quietly(file_path):
    try:
        os.unlink(file_path)
    except FileNotFoundError:
        pass


def _remove_if_abandoned(file_path):
    """Remove a writer registration left half-way by a process killed while
    registering: unlocked and older than _ABANDONED_REGISTRATION_S."""
    try:
        fd = os.open(file_path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        if time.time() - os.fstat(fd).st_mtime < _ABANDONED_REGISTRATION_S:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        _remove_quietly(file_path)
    finally:
        os.close(fd)


_MIN_DATA_SIZE = 2 * 4096  # LMDB's two meta pages, at the smallest page size


def _creation_interrupted(path):
    """True when ``path`` holds only what LMDB leaves when the process creating
    the log dies before writing its first page: ``lock.mdb``, maybe with an
    empty ``data.mdb`` (a log that ever recorded also holds ``writers/``)."""
    names = set(os.listdir(path))
    if LMDB_LOCK_FILE not in names or not names <= {LMDB_LOCK_FILE, DATA_FILE}:
        return False
    return DATA_FILE not in names or os.path.getsize(os.path.join(path, DATA_FILE)) == 0


def _check_data_file(path, data_file):
    """Refuse a ``data.mdb`` that LMDB must not map: not a regular file (a
    directory, a device such as /dev/zero), unreadable, or too short."""
    try:
        status = os.stat(data_file)
    except OSError as exc:
        raise errors.NotALog(f"log {path} is damaged: cannot stat {DATA_FILE}: {exc.strerror}") from exc
    if not stat.S_ISREG(status.st_mode):
        raise errors.NotALog(f"log {path} is damaged: {DATA_FILE} is not a regular file")
    if not os.access(data_file, os.R_OK):
        raise errors.LogAccessDenied(f"cannot open log {path}: permission denied (on {DATA_FILE})")
    if status.st_size < _MIN_DATA_SIZE:
        raise errors.NotALog(f"log {path} is damaged: {DATA_FILE} is {status.st_size} bytes, "
                             f"too short to hold a log (truncated?)")


def _read_error(path, exc):
    """The streamlog error for an LMDB error met while reading the log at ``path``."""
    if isinstance(exc, lmdb.ReadersFullError):
        return errors.LogError(f"log {path} has no free reader slot (too many readers at once): {exc}")
    if isinstance(exc, lmdb.Error) and "Permission denied" in str(exc):
        return errors.LogAccessDenied(f"cannot open log {path}: {exc}")
    return errors.NotALog(f"log {path} is damaged: {exc}")


def _storage_error(path, exc):
    try:
        stat = os.statvfs(path)
        free = stat.f_bavail * stat.f_frsize
    except OSError:
        free = None
    if free is not None and free < 4 << 20:
        return errors.StorageError(f"cannot write to log {path}: the disk is full ({free} bytes free): {exc}")
    return errors.StorageError(f"cannot write to log {path}: {exc}")


def _round_up_pow2(n):
    size = INITIAL_MAP_SIZE
    while size < n:
        size *= 2
    return size


def _libc_madvise():
    """libc's ``madvise`` (ctypes), or None where there is none to use (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    return madvise


_MADVISE = _libc_madvise()
_MADV_DONTNEED = 4  # Linux


def _drop_mapped_pages(path):
    """``madvise(MADV_DONTNEED)`` over this process's mappings of the file at
    ``path`` (matched by its real path, or by device and inode); True if
    there was one and every call succeeded."""
    try:
        status = os.stat(path)
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return False
    real = os.path.realpath(path)
    found, failed = False, False
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[4].isdigit():
            continue
        major, _, minor = fields[3].partition(":")
        same_file = int(fields[4]) == status.st_ino and os.makedev(int(major, 16), int(minor, 16)) == status.st_dev
        if not same_file and fields[5].rstrip("\n") != real:
            continue
        start, end = (int(address, 16) for address in fields[0].split("-"))
        found = True
        failed |= _MADVISE(start, end - start, _MADV_DONTNEED) != 0
    return found and not failed
