"""Whole-log operations that are safe to run from scripts and cron.

* :func:`backup` -- a consistent copy of a log, also while it is being
  recorded (LMDB's own copy of one read snapshot), optionally compacted;
* :func:`compact` -- give the pages freed by pruning back to the file
  system, by copy-and-swap; refused while any other process has the log
  open (a recorder, a reader, a follower);
* :func:`prune_plan` -- what :meth:`Log.prune` would remove, found by
  pruning a temporary copy (the log itself is not touched).

Each raises :class:`~streamlog.errors.StreamlogError` subclasses with a
message naming the path and the reason.
"""

import os
import shutil
import tempfile

from streamlog import errors
from streamlog.log import Log
from streamlog.store import DATA_FILE, DIR_MODE, replace_data_file

__all__ = ["backup", "compact", "prune_plan"]


def _fresh_directory(dest, source):
    """Create ``dest`` for a copy of the log at ``source``: it must not exist
    (an empty directory is taken as is) and must not be inside a log."""
    dest = os.path.abspath(os.fspath(dest))
    source = os.path.realpath(os.fspath(source))
    real_dest = os.path.realpath(dest)
    if real_dest == source or real_dest.startswith(source + os.sep):
        raise errors.LogError(f"cannot copy log {source} into itself ({dest})")
    parent = os.path.dirname(real_dest)
    while parent and parent != os.path.dirname(parent):
        if os.path.exists(os.path.join(parent, DATA_FILE)):
            raise errors.LogError(f"cannot put a copy inside the log directory {parent} ({dest})")
        parent = os.path.dirname(parent)
    if os.path.isdir(dest):
        if os.listdir(dest):
            raise errors.LogError(f"{dest} already exists and is not empty; give a new path for the copy")
        return dest
    if os.path.lexists(dest):
        raise errors.LogError(f"{dest} already exists; give a new path for the copy")
    if not os.path.isdir(os.path.dirname(dest)):
        raise errors.LogError(f"cannot create {dest}: its directory {os.path.dirname(dest)} does not exist")
    os.mkdir(dest, DIR_MODE)
    return dest


def backup(path, dest, *, compact=False, verify=True):
    """Copy the log at ``path`` to the new directory ``dest``; return a dict
    ``{"path", "bytes", "sessions", "records", "problems"}`` of the copy.

    The copy is one consistent snapshot, taken without stopping a recorder
    (a session live at that moment shows as crashed in the copy, holding
    what was committed).  ``compact`` leaves out free pages, so the copy is
    as small as the data.  ``verify`` opens the copy and checks it
    (:meth:`Log.verify`, crashed sessions not counted); its problems are
    returned, not raised.  A failed copy leaves nothing at ``dest``.
    """
    with Log(path, readonly=True, create=False) as log:
        dest = _fresh_directory(dest, log.path)
        try:
            log.store.copy_to(dest, compact=compact)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    with Log(dest, readonly=True, create=False) as copy:
        stats = copy.stats()
        problems = copy.verify(crashed=False) if verify else []
    return {"path": dest, "bytes": stats["bytes_on_disk"], "sessions": stats["sessions"],
            "records": stats["records"], "problems": problems}


def compact(path):
    """Rewrite the log at ``path`` without its free pages; return ``(bytes
    before, bytes after)`` of its data file.

    Copy-and-swap: a compacted copy is written beside the log and renamed
    over ``data.mdb`` (a crash leaves either the old file or the new one,
    never a mix; see :func:`streamlog.store.replace_data_file`).  Refused
    with LogError while another process records into the log or has it
    open at all (it would go on with the old file): nothing can write
    between the copy and the swap.
    """
    log = Log(path, create=False)
    writing = False
    try:
        if log.store.users > 1:
            raise errors.LogError(f"log {log.path} is open elsewhere in this process; close it before compacting")
        log.begin_writing()
        writing = True
        others = sorted(pid for pid in log.store.live_writers().values() if pid != os.getpid())
        if others:
            raise errors.LogError(f"log {log.path} is being recorded by {', '.join(f'pid {p}' for p in others)}; "
                                  f"compact needs the log to itself (or make a compacted copy with backup)")
        data_file = os.path.join(log.path, DATA_FILE)
        before = os.path.getsize(data_file)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(log.path)}.compact-",
                                   dir=os.path.dirname(os.path.abspath(log.path)))
        try:
            log.store.copy_to(staging, compact=True)
            log.store.share_file(os.path.join(staging, DATA_FILE))
            log.close()  # this process's environment must not outlive the swap
            replace_data_file(log.path, os.path.join(staging, DATA_FILE))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return before, os.path.getsize(data_file)
    finally:
        if writing:
            log.end_writing()
        log.close()


def prune_plan(path, retention):
    """What ``Log(path).prune(retention)`` would remove now, without removing
    anything: ``{"removed": records, "sessions": {id: (records before,
    records after)}, "live": ids}`` (after 0: the whole session would go).

    Prunes a temporary copy of the log (in the system's temporary
    directory: it needs free space for a copy of the log).  Records are
    counted in the main stream of each session.  In the copy nothing is
    recording, so for a session being recorded (its id is in ``live``) the
    figure is an upper bound: the real prune keeps the newest block of
    records of each of its streams and never removes it whole.
    """
    with Log(path, readonly=True, create=False) as log:
        sessions = log.sessions()
        before = {s.id: s.count for s in sessions}
        live = {s.id for s in sessions if s.status == "live"}
    with tempfile.TemporaryDirectory(prefix="streamlog-dry-run-") as scratch:
        copy_dir = os.path.join(scratch, "copy.streamlog")
        backup(path, copy_dir, verify=False)
        with Log(copy_dir, create=False) as copy:
            copy.prune(retention)
            after = {s.id: s.count for s in copy.sessions()}
    changed = {sid: (count, after.get(sid, 0)) for sid, count in before.items() if after.get(sid, 0) != count}
    removed = sum(old - new for old, new in changed.values())
    return {"removed": removed, "sessions": changed, "live": live & changed.keys()}
