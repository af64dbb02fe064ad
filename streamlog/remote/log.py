"""A mirrored log as users see it: :class:`RemoteLog` and :class:`RemoteSession`,
read from Redis with the same interface as :class:`streamlog.Log` and
:class:`streamlog.Session` (see :mod:`streamlog.remote.layout` for the keys).
"""

import time

from streamlog import errors
from streamlog.codec import decode_record
from streamlog.keys import decode_key_prefix
from streamlog.log import DEFAULT_STREAM, Session
from streamlog.remote import layout
from streamlog.remote.reader import BLOCK_S, RemoteReader, redis_errors

_TRIM_CHUNK = 1000


def open_log(target, *, readonly=True, create=False):
    """The log ``target`` names: a :class:`RemoteLog` for a ``redis://``
    (``rediss://``, ``unix://``) URL (always read-only: RemoteError if
    ``readonly`` is false), else ``streamlog.Log(target, readonly=...,
    create=...)``.  The one place a path-or-URL becomes a log."""
    from streamlog.log import Log

    if layout.is_remote_url(target):
        if not readonly:
            raise errors.RemoteError(f"{target} is a remote log: changing a log needs a local one")
        return RemoteLog(target)
    return Log(target, readonly=readonly, create=create)


class RemoteLog:
    """The sessions one rig mirrored into Redis (``streamlog mirror``).

    ``RemoteLog("redis://HOST:PORT/DB", name="rig1")`` (or ``?name=rig1`` in
    the URL; without a name, the only rig in the database).  A Redis Cluster
    node's URL opens the cluster.  Raises RemoteUnavailable when Redis does
    not answer, SessionNotFound for a rig with no mirrored session.
    ``client=`` passes a redis-py client to use instead of connecting.
    """

    readonly = True

    def __init__(self, url, name=None, *, client=None, socket_timeout=5.0):
        base, url_name = layout.split_url(url)
        self.url = base
        self.socket_timeout = socket_timeout
        self._owns_client = client is None
        self.client = client or layout.connect(base, socket_timeout=socket_timeout)
        self._blocking = None
        name = name or url_name
        if name is None:
            with redis_errors(self):
                rigs = sorted(r.decode() for r in self.client.smembers(layout.RIGS))
            if len(rigs) != 1:
                self.close()
                raise errors.SessionNotFound(
                    f"{layout.display(base)} holds {'no rig' if not rigs else 'rigs ' + ', '.join(rigs)}; "
                    f"name one with ?name=RIG")
            name = rigs[0]
        self.name = layout.check_rig(name)
        self.path = f"{layout.display(base)}{'&' if '?' in base else '?'}name={self.name}"

    def __repr__(self):
        return f"<streamlog.RemoteLog {self.path!r}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._owns_client and self.client is not None:
            self.client.close()
        if self._blocking is not None:
            self._blocking.close()
        self.client = self._blocking = None

    def blocking_client(self):
        """The client for XREAD BLOCK: its socket timeout is the log's plus
        the longest block readers ask for, so a block is never cut short."""
        if self._blocking is None:
            self._blocking = layout.connect(self.url, socket_timeout=(self.socket_timeout or 5.0) + BLOCK_S)
        return self._blocking

    def session_ids(self):
        with redis_errors(self):
            return [int(m) for m in self.client.zrange(layout.sessions_key(self.name), 0, -1)]

    def sessions(self, stream=None):
        """All mirrored sessions of the rig, oldest first (only those holding ``stream`` if given)."""
        found = []
        for session_id in self.session_ids():
            fields = self._fields(session_id)
            if fields is None:
                continue
            session = RemoteSession(self, session_id, fields)
            if stream is None or stream in session.streams:
                found.append(session)
        return found

    def session(self, session_id):
        """The session with this id; negative ids count from the end. Raises SessionNotFound."""
        if isinstance(session_id, bool) or not isinstance(session_id, int):
            raise TypeError(f"a session id is an int, not {type(session_id).__name__}")
        if session_id < 0:
            ids = self.session_ids()
            if len(ids) < -session_id:
                raise errors.SessionNotFound(f"{self.path} has {len(ids)} session(s); "
                                             f"there is no session {session_id}")
            session_id = ids[session_id]
        fields = self._fields(session_id)
        if fields is None:
            raise errors.SessionNotFound(f"{self.path} has no session {session_id}")
        return RemoteSession(self, session_id, fields)

    def _fields(self, session_id):
        with redis_errors(self):
            fields = self.client.hgetall(layout.meta_key(self.name, session_id))
        if b"meta" not in fields:
            return None
        return fields

    def groups(self, session_id, stream=DEFAULT_STREAM):
        """The consumer groups of a stream: dicts with ``name``, ``consumers``,
        ``pending`` and ``lag`` (entries not yet delivered to the group)."""
        key = layout.session_keys(self.name, session_id, stream)[1]
        with redis_errors(self):
            try:
                groups = self.client.xinfo_groups(key)
            except Exception as exc:
                if "no such key" in str(exc).lower():
                    return []
                raise
        return [{"name": _text(g["name"]), "consumers": g["consumers"], "pending": g["pending"],
                 "lag": g.get("lag")} for g in groups]

    # -- remote retention ------------------------------------------------------

    def prune(self, max_age_s=None, max_sessions=None):
        """Apply retention in Redis (independent of any local log's): keep the
        newest ``max_sessions`` sessions (a live one is never removed whole),
        remove records that arrived more than ``max_age_s`` ago (to within
        the time index's step of 256 records) and sessions left empty by it.
        Removed sessions are never mirrored again.  Returns records removed."""
        removed = 0
        sessions = self.sessions()
        if max_sessions is not None and len(sessions) > max_sessions:
            for session in sessions[:len(sessions) - max_sessions]:
                if session.status != "live":
                    removed += sum(session.stream_info(s)["count"] for s in session.streams)
                    self._delete_session(session.id)
        if max_age_s is not None:
            cutoff_us = int((time.time() - max_age_s) * 1e6)
            for session in self.sessions():
                for stream in session.streams:
                    removed += self._trim_before(session, stream, cutoff_us)
                session = self.session(session.id)
                if session.status != "live" and not any(session.stream_info(s)["count"] for s in session.streams):
                    self._delete_session(session.id)
        return removed

    def _delete_session(self, session_id):
        with redis_errors(self):
            meta = layout.meta_key(self.name, session_id)
            streams = decode_record(self.client.hget(meta, "meta")).get("streams", {})
            keys = {meta, *(k for s in streams for k in layout.session_keys(self.name, session_id, s))}
            for key in keys:
                self.client.delete(key)
            self.client.zadd(layout.retired_key(self.name), {str(session_id): session_id})
            self.client.zrem(layout.sessions_key(self.name), str(session_id))

    def _trim_before(self, session, stream, cutoff_us):
        meta, stream_key, key_index, time_index = layout.session_keys(self.name, session.id, stream)
        client = self.client
        removed = 0
        with redis_errors(self):
            while True:
                entries = client.xrange(stream_key, "-", "+", count=_TRIM_CHUNK)
                doomed = []
                for entry_id, fields in entries:
                    if b"t" in fields and int(fields[b"t"]) >= cutoff_us:
                        break
                    doomed.append((entry_id, fields))
                if not doomed:
                    return removed
                heads = [f for _, f in doomed if b"r" in f and f.get(b"p", b"1/")[:2] == b"1/"]
                size = sum(len(f[b"r"]) for _, f in doomed if b"r" in f)
                last_seq = layout.parse_id(doomed[-1][0])[0]
                complete = len(doomed) < len(entries) or len(entries) < _TRIM_CHUNK
                first_kept = last_seq + 1
                pipe = client.pipeline(transaction=False)
                pipe.xtrim(stream_key, minid=layout.entry_id(first_kept, 0), approximate=False)
                pipe.hincrby(meta, f"count:{stream}", -len(heads))
                pipe.hincrby(meta, f"bytes:{stream}", -size)
                pipe.zremrangebyscore(time_index, "-inf", f"({cutoff_us}")
                pipe.execute()
                self._trim_key_index(key_index, first_kept)
                removed += len(heads)
                if complete:
                    return removed

    def _trim_key_index(self, key_index, first_kept):
        while True:
            members = self.client.zrange(key_index, 0, 99)
            doomed = [m for m in members if layout.member_seq(m) < first_kept]
            if doomed:
                self.client.zrem(key_index, *doomed)
            if len(doomed) < len(members) or not members:
                return


class RemoteSession(Session):
    """A session as mirrored to Redis, as stored when this object was made
    (see :meth:`refresh`): a :class:`streamlog.Session` whose counters are
    what Redis holds (``count``, ``bytes``: remote retention lowers them;
    ``recorded``: how many records the mirror has sent, gaps included) and
    whose readers read Redis.  ``status`` is the one the mirror wrote: ``live``
    until the session is mirrored to its end."""

    def __init__(self, log, session_id, fields):
        super().__init__(log, _merged_meta(session_id, fields), None)  # None: the stored status stands

    def __repr__(self):
        return f"<streamlog.RemoteSession {self.id} {self.status} count={self.count} streams={self.streams}>"

    def refresh(self):
        """Reread the metadata from Redis; return self."""
        fields = self.log._fields(self.id)
        if fields is None:
            raise errors.SessionNotFound(f"session {self.id} of {self.log.path} no longer exists (pruned)")
        super().__init__(self.log, _merged_meta(self.id, fields), None)
        return self

    def stream_info(self, stream=None):
        """Counters and key span of one stream, as a dict (``recorded_locally``:
        what the recorder had recorded when the mirror last looked)."""
        stream = stream or self._main_stream()
        counters = dict(self._counters(stream))
        stream_key = layout.session_keys(self.log.name, self.id, stream)[1]
        with redis_errors(self.log):
            head = self.log.client.xrange(stream_key, "-", "+", count=8)
            tail = self.log.client.xrevrange(stream_key, "+", "-", count=8)
        spans = []
        for entries in (head, tail):
            keyed = [fields for _, fields in entries if b"r" in fields]
            spans.append(decode_key_prefix(keyed[0][b"k"], counters["key_types"])[0] if keyed else None)
        counters.update(stream=stream, first_key=spans[0], last_key=spans[1])
        return counters

    def groups(self, stream=None):
        """The consumer groups reading a stream (see :meth:`RemoteLog.groups`)."""
        return self.log.groups(self.id, stream or self._main_stream())

    def reader(self, stream=None, *, group=None, consumer=None, **reader_defaults):
        """A reader with the BufferReader interface over this session; it
        follows the session (XREAD BLOCK) while the mirror marks it live.
        With ``group`` and ``consumer``: a durable cursor shared by the group
        (XREADGROUP; see :class:`~streamlog.remote.reader.RemoteReader`)."""
        stream = stream or self._main_stream()
        self._counters(stream)
        return RemoteReader(self, stream, group=group, consumer=consumer, **reader_defaults)


def _merged_meta(session_id, fields):
    """The metadata the mirror stored, with each stream's counters as Redis
    holds them (``recorded`` = sent, ``recorded_locally`` as the mirror saw it)."""
    meta = decode_record(fields[b"meta"])
    meta["id"] = session_id
    for name, counters in meta["streams"].items():
        counters["recorded_locally"] = counters["recorded"]
        for field in ("count", "bytes"):
            counters[field] = int(fields.get(f"{field}:{name}".encode(), 0))
        counters["recorded"] = int(fields.get(f"next:{name}".encode(), 0))
    return meta


def _text(value):
    return value.decode() if isinstance(value, bytes) else value
