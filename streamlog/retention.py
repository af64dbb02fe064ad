"""Retention: the limits that bound a log on disk, and pruning to them.

:class:`Retention` is the policy; a :class:`Pruner` applies it in small
steps, each one write transaction, oldest records first.  The recorder calls
:meth:`Pruner.step` after its commits (a few steps, up to about twice what
it just added); :meth:`~streamlog.Log.prune` calls it until nothing is left
to remove.  A live session is never removed whole, and the newest record
of each of its streams is kept.  With ``keep_unacked`` the age and
session limits keep every record a named cursor (:mod:`streamlog.cursors`)
has not acknowledged; the byte limit never waits for a cursor.  Several writing processes may prune at
once: each step decides what to remove inside its own write transaction
(LMDB runs one at a time), from the log as it is then, so two writers never
remove the same excess twice.
"""

import time
from dataclasses import dataclass
from typing import Optional

from streamlog import errors, records

_PRUNE_BATCH = 2000
_PRUNE_TARGET = 0.8
_LOWEST_TARGET = 0.5


@dataclass(frozen=True)
class Retention:
    """Limits that bound a log on disk; ``None`` means no limit.

    * ``max_bytes``: the log's files stay within about 1.25x of this in
      steady state; the oldest records go first.
    * ``max_age_s``: records that arrived longer ago than this go (to within
      one group commit).
    * ``max_sessions``: only the newest this many sessions are kept (a live
      session is never removed whole).
    * ``keep_unacked``: ``max_age_s`` and ``max_sessions`` keep the records
      of a stream that a named cursor of it (``Session.reader(name=...)``)
      has not acknowledged, whole blocks at a time (a block goes once every
      record in it is acknowledged).  ``max_bytes`` always wins: it removes
      the oldest records whatever the cursors, and a cursor that had not
      passed them gets ``RecordsPruned(missed)`` at its next read.
    """

    max_bytes: Optional[int] = None
    max_age_s: Optional[float] = None
    max_sessions: Optional[int] = None
    keep_unacked: bool = False

    def __post_init__(self):
        for name in ("max_bytes", "max_age_s", "max_sessions"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"Retention.{name} must be a positive number or None, not {value!r}")
        if self.max_bytes is not None and self.max_bytes < 1 << 20:
            raise ValueError(f"Retention.max_bytes must be at least 1 MiB, not {self.max_bytes}")
        if not isinstance(self.keep_unacked, bool):
            raise ValueError(f"Retention.keep_unacked must be True or False, not {self.keep_unacked!r}")

    @property
    def is_limited(self):
        return any(v is not None for v in (self.max_bytes, self.max_age_s, self.max_sessions))


class Pruner:
    """Removes what a :class:`Retention` excludes from the log of ``catalog``
    (a :class:`~streamlog.catalog.Catalog`); the caller is a writer of the log."""

    def __init__(self, catalog):
        self.catalog = catalog
        self.store = catalog.store
        self._layout = records.layout(records.FORMAT_VERSION)
        self._file_bytes_at_start = None

    def step(self, retention):
        """Remove one small batch of what ``retention`` excludes; return
        records removed (0: nothing is left to remove)."""
        self.store.open_all_dbs()
        held = retention.keep_unacked
        if retention.max_sessions is not None:
            removed = self._prune_sessions(retention.max_sessions, held)
            if removed is not None:
                return removed
        if retention.max_age_s is not None:
            cutoff = int((time.time() - retention.max_age_s) * 1e6)
            removed = self._prune_oldest(lambda arrival: arrival < cutoff, held=held)
            if removed:
                return removed
        if retention.max_bytes is not None:
            target = self._target(retention.max_bytes)
            if self._excess(None, target) > 0:
                return self._prune_oldest(lambda arrival: True, max_bytes=retention.max_bytes, target=target)
        return 0

    def _target(self, max_bytes):
        """The bytes in use that pruning for ``max_bytes`` aims at: 80 % of it,
        less what the file grew past the limit while this pruner pruned (at
        most down to 50 %).

        LMDB reuses freed pages only when it finds a run long enough for
        what it allocates, so the file can grow past the limit with free
        pages left (more often with several writers); keeping more pages
        free then lets it find them.  A file already past the limit when
        the pruner first looked (an earlier recording) counts from its size
        then: its free pages are there to reuse.
        """
        file_bytes = self.store.file_pages() * self.store.page_size
        if self._file_bytes_at_start is None:
            self._file_bytes_at_start = file_bytes
        overshoot = max(0.0, file_bytes - max(max_bytes, self._file_bytes_at_start))
        return max(_LOWEST_TARGET * max_bytes, _PRUNE_TARGET * max_bytes - overshoot)

    def _excess(self, txn, target):
        """Bytes in use over ``target`` (as seen in ``txn``)."""
        return self.store.pages_in_use(txn) * self.store.page_size - target

    def delete_session(self, session_id):
        """Delete session ``session_id`` with all its records, in write
        transactions of at most a batch each; return the records deleted.
        Raises LogError, deleting nothing more, while the session is live."""
        removed = 0
        while True:
            meta = self.catalog.get(session_id)
            if meta is None:
                return removed
            if meta["status"] == "live":
                raise errors.LogError(f"session {session_id} of {self.store.path} is being recorded; stop its "
                                      f"recorder first")
            step = self.store.write(lambda txn: self._delete_records(txn, session_id, None, whole=True))
            if not step:  # nothing left to delete, yet the session is there: never loop on it
                raise errors.LogError(f"session {session_id} of {self.store.path} could not be deleted")
            removed += step

    def _prune_sessions(self, keep, held):
        ids = self.catalog.ids()
        if len(ids) <= keep:
            return None
        for session_id in ids[:len(ids) - keep]:
            removed = self.store.write(lambda txn: self._delete_records(txn, session_id, None, True, held=held))
            if removed:
                return removed
        return None

    def _prune_oldest(self, doomed, max_bytes=None, held=False, target=None):
        """Delete one batch of the oldest records for which ``doomed(arrival_us)``
        (``held``: that named cursors acknowledged); with ``max_bytes``, stop
        once about the excess over its target is gone (at least 1/64 of the
        limit per step, so steps stay few), so a byte limit trims the
        excess, not a whole batch."""
        def work(txn, session_id):
            if max_bytes is None:
                wanted = None
            else:
                excess = self._excess(txn, target)
                if excess <= 0:  # another writer pruned it meanwhile
                    return 0
                wanted = max(excess, max_bytes / 64)
            return self._delete_records(txn, session_id, doomed, False, wanted, held)

        for session_id in self.catalog.ids():
            removed = self.store.write(lambda txn: work(txn, session_id))
            if removed:
                return removed
        return 0

    def _delete_records(self, txn, session_id, doomed, whole, bytes_wanted=None, held=False):
        """Delete the oldest records of a session (all streams) while ``doomed``
        (None = all), at most a batch of them and, with ``bytes_wanted``,
        until the deleted entries reach it; ``held``: only records every
        named cursor of their stream acknowledged (as stored in ``txn``).  A
        live session keeps the newest record of each stream and is never
        dropped; one that is not live is dropped once empty; ``whole``
        leaves a live session untouched.  Returns records deleted (at least
        1 when a session was dropped)."""
        meta = self.catalog.get(session_id, txn)
        if meta is None:
            return 0
        live = meta["status"] == "live"
        if live and whole:
            return 0
        acked = self.catalog.cursors.lowest_acked(txn, session_id) if held else {}
        drop_empty_session = not live
        budget = _PRUNE_BATCH
        removed = freed = 0
        for stream, counters in meta["streams"].items():
            db = self.store.records_db(stream)
            if db is None:
                continue
            deletable = counters["count"] - (0 if drop_empty_session else 1)
            limit = max(0, min(budget, deletable))
            wanted = None if bytes_wanted is None else bytes_wanted - freed
            keep_from = acked[stream] + 1 if stream in acked else None
            count, size, entry_bytes = self._layout.delete_oldest(txn, db, self.store.time_db(stream), session_id,
                                                                  doomed, limit, wanted, keep_from)
            counters["count"] -= count
            counters["bytes"] -= size
            removed += count
            budget -= count
            freed += entry_bytes
        if drop_empty_session and all(c["count"] == 0 for c in meta["streams"].values()):
            self.catalog.delete(txn, session_id)
            return max(removed, 1)
        if removed:
            self.catalog.put(txn, meta)
        return removed
