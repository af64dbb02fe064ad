"""One event marker from any process: :func:`mark` (and ``streamlog mark``).

A mark is appended by a short-lived writer to a *shared* stream of a live
session (see :mod:`streamlog.catalog`), in one write transaction that reads
the stream's position and appends after it, so any number of processes may
mark into one stream at once.  A marker record is ``(t_us, label)`` or,
with ``data``, ``(t_us, label, data)``: ``t_us`` (int microseconds since
the epoch, the key) is read from the same clock as every stream's arrival
times, as :class:`~streamlog.sources.markers.MarkerSource` does.
"""

import math
import numbers
import time

from streamlog import errors, records
from streamlog.codec import encode_record
from streamlog.keys import encode_key, key_types_of
from streamlog.log import Log
from streamlog.sources.markers import MARKERS_STREAM


def mark(path, label, *, session=None, stream=MARKERS_STREAM, t=None, data=None):
    """Append marker ``label`` to ``stream`` of a live session of the log at
    ``path``; return its key ``t_us``.

    ``session``: an id, or None for the newest live session.  ``t``: epoch
    seconds (default: now).  Keys never decrease: a default time below the
    stream's newest marker is raised to it, an explicit earlier ``t`` raises
    KeyOrderError.  Raises LogNotFound, SessionNotFound (no such live
    session), StreamNameTaken (a recorder owns a stream of that name),
    InvalidKey (``t`` not a finite number), UnencodableRecord (``data``).
    """
    if t is not None and (isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t)):
        raise errors.InvalidKey(f"marker time must be epoch seconds (a finite number), got {t!r}")
    if session is not None and (isinstance(session, bool) or not isinstance(session, int) or session < 1):
        raise ValueError(f"session must be a session id or None, not {session!r}")
    with Log(path, create=False) as log:
        log.begin_writing()
        try:
            session_id = session if session is not None else log.catalog.newest_live()
            if session_id is None:
                raise errors.SessionNotFound(f"log {path} has no live session to mark")
            return _append(log, session_id, stream, label, t, data)
        finally:
            log.end_writing()


def _append(log, session_id, stream, label, t, data):
    store, catalog = log.store, log.catalog
    layout = records.layout(store.format_version)
    db = store.records_db(stream, create=True)
    time_db = store.time_db(stream, create=True)
    prefix = records.session_prefix(session_id)

    def work(txn):
        meta = catalog.get(session_id, txn)
        if meta is None:
            raise errors.SessionNotFound(f"log {log.path} has no session {session_id}")
        counters = catalog.shared_stream(txn, meta, stream)
        catalog.put(txn, meta)
        now_us = time.time_ns() // 1000
        t_us = now_us if t is None else round(t * 1_000_000)
        newest = layout.key_span(txn, db, session_id, counters["key_types"])[1] if counters["count"] else None
        if newest is not None and t_us < newest:
            if t is not None:
                raise errors.KeyOrderError(f"marker {label!r} at {t_us} µs is earlier than the newest marker of "
                                           f"stream {stream!r} at {newest} µs")
            t_us = newest
        record = (t_us, label) if data is None else (t_us, label, data)
        try:
            payload = encode_record(record)
        except errors.UnencodableRecord as exc:
            raise errors.UnencodableRecord(f"marker {label!r}: {exc}") from None
        seq, key = counters["recorded"], encode_key(t_us)
        entries = layout.encode_commit(prefix, seq, [key], [payload], [now_us], store.page_size)
        layout.append_commit(txn, db, time_db, session_id, entries, records.record_key(prefix, key, seq), now_us)
        catalog.add_counts(txn, session_id, stream, 1, len(payload), key_types_of(t_us))
        return t_us

    return store.write(work)
