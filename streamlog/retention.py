"""Retention: the limits that bound a log on disk, and pruning to them.

:class:`Retention` is the policy; a :class:`Pruner` applies it in small
steps, each one write transaction, oldest records first.  The recorder calls
:meth:`Pruner.step` after its commits (a few steps, up to about twice what
it just added); :meth:`~streamlog.Log.prune` calls it until nothing is left
to remove.  A session recorded by this process right now is never removed
whole, and the newest record of each of its streams is kept.
"""

import time
from dataclasses import dataclass
from typing import Optional

from streamlog import records

_PRUNE_BATCH = 2000
_PRUNE_TARGET = 0.8


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


class Pruner:
    """Removes what a :class:`Retention` excludes from the log of ``catalog``
    (a :class:`~streamlog.catalog.Catalog`); the caller holds the writer lock."""

    def __init__(self, catalog):
        self.catalog = catalog
        self.store = catalog.store

    def step(self, retention):
        """Remove one small batch of what ``retention`` excludes; return
        records removed (0: nothing is left to remove)."""
        self.store.open_all_dbs()
        live_ids = self.catalog.recording_here()
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
        ids = self.catalog.ids()
        if len(ids) <= keep:
            return None
        for session_id in ids[:len(ids) - keep]:
            if session_id not in live_ids:
                return self.store.write(lambda txn: self._delete_records(txn, session_id, None, True))
        return None

    def _prune_oldest(self, doomed, live_ids, bytes_wanted=None):
        """Delete one batch of the oldest records for which ``doomed(arrival_us)``,
        stopping once about ``bytes_wanted`` bytes of entries are gone (None: no
        byte bound), so a byte limit trims the excess, not a whole batch."""
        for session_id in self.catalog.ids():
            live = session_id in live_ids
            removed = self.store.write(
                lambda txn: self._delete_records(txn, session_id, doomed, not live, bytes_wanted))
            if removed:
                return removed
        return 0

    def _delete_records(self, txn, session_id, doomed, drop_empty_session, bytes_wanted=None):
        """Delete the oldest records of a session (all streams) while ``doomed``
        (None = all), at most a batch of them and, with ``bytes_wanted``,
        until the deleted entries reach it; keep the newest record of a live
        stream; drop the emptied session with ``drop_empty_session``.
        Returns records deleted (at least 1 when a session was dropped)."""
        meta = self.catalog.get(session_id, txn)
        if meta is None:
            return 0
        budget = _PRUNE_BATCH
        removed = freed = 0
        for stream, counters in meta["streams"].items():
            db = self.store.records_db(stream)
            if db is None:
                continue
            deletable = counters["count"] - (0 if drop_empty_session else 1)
            limit = max(0, min(budget, deletable))
            wanted = None if bytes_wanted is None else bytes_wanted - freed
            count, size, entry_bytes = records.delete_oldest(txn, db, self.store.time_db(stream), session_id,
                                                             doomed, limit, wanted)
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
