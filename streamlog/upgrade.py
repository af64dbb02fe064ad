"""``streamlog upgrade``: rewrite a format-1 log as format 2, atomically.

The new log is built beside the old one, in ``LOG/upgrade.partial/``, and
its ``data.mdb`` replaces the old one in a single ``rename``: a crash before
the rename leaves the format-1 log exactly as it was (the next upgrade
removes the partial directory), and after it the format-2 log is complete.
"""

import fcntl
import os
import shutil
from contextlib import contextmanager

from streamlog import errors, records
from streamlog.catalog import Catalog
from streamlog.log import Log
from streamlog.records import convert
from streamlog.store import DATA_FILE, open_elsewhere, open_store

PARTIAL_DIR = "upgrade.partial"


def upgrade(path, progress=None):
    """Rewrite the format-1 log at ``path`` as format 2; return how many records it rewrote.

    ``progress(n)`` is called with the records rewritten since its last call.
    Needs the log idle: LogError when another process has it open or
    upgrades it (nothing records into a format-1 log: that is refused).
    Sessions left live by a dead process become crashed.  Raises LogError
    when the log already is format 2.
    """
    path = os.fspath(path)
    with _upgrade_lock(path):
        if open_elsewhere(path):
            raise errors.LogError(f"log {path} is open in another process; close it before upgrading it")
        old = Log(path, readonly=True, create=False)
        try:
            if old.format_version == records.FORMAT_VERSION:
                raise errors.LogError(f"log {path} is already format version {records.FORMAT_VERSION}")
            partial = os.path.join(path, PARTIAL_DIR)
            if os.path.islink(partial):
                raise errors.NotALog(f"{partial} is a symbolic link; streamlog does not follow links inside a log")
            shutil.rmtree(partial, ignore_errors=True)
            count = _rewrite(old, partial, progress or (lambda n: None))
            _replace_data_file(path, partial)
        finally:
            old.close()
        shutil.rmtree(partial, ignore_errors=True)
    return count


@contextmanager
def _upgrade_lock(path):
    """Hold an exclusive ``flock`` on the log's directory: one upgrade at a time."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise errors.LogNotFound(f"no log at {path}") from None
    except OSError as exc:
        raise errors.NotALog(f"{path} is not a streamlog log (a log is a directory): {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise errors.LogError(f"log {path} is being upgraded by another process") from None
        yield
    finally:
        os.close(fd)


def _rewrite(old, partial, progress):
    """Build the format-2 copy of ``old`` in directory ``partial``; return records copied."""
    new_store = open_store(partial, durability="off")
    try:
        new = Catalog(new_store)
        metas = old.catalog.all()
        streams = sorted({stream for meta in metas for stream in meta["streams"]})
        for stream in streams:
            new_store.records_db(stream, create=True)
            new_store.time_db(stream, create=True)
        with old.store.read() as txn:
            last_id = old.catalog.last_issued_id(txn)
            metas = [old.catalog.ended(txn, meta) for meta in metas]

        def put_sessions(txn):
            new.put_last_issued_id(txn, last_id)
            for meta in metas:
                new.put(txn, meta)

        new_store.write(put_sessions)
        copied = 0
        for stream in streams:
            old_db, new_db = old.store.records_db(stream), new_store.records_db(stream)
            if old_db is None:
                continue
            for meta in metas:
                for batch in convert.v1_records(old.store, old_db, meta["id"]):
                    entries = convert.v2_entries(meta["id"], batch, new_store.page_size)
                    new_store.write(lambda txn: convert.put_v2_entries(txn, new_db, entries))
                    copied += len(batch)
                    progress(len(batch))
            old_time = old.store.time_db(stream)
            if old_time is not None:
                new_time = new_store.time_db(stream)
                new_store.write(lambda txn: convert.copy_time_index(old.store, old_time, txn, new_time))
        new_store.sync()
        return copied
    finally:
        new_store.release()


def _replace_data_file(path, partial):
    """Put the new ``data.mdb`` in place with one rename, durably."""
    new_file = os.path.join(partial, DATA_FILE)
    fd = os.open(new_file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(new_file, os.path.join(path, DATA_FILE))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
