"""Following a log as it is recorded, one session after another (``tail -f``).

:class:`Follower` yields the records of a session as another process (or
this one) commits them, as batches of :class:`streamlog.query.Row`; it can
wait for a session to start (and for the log to be created), and go on
with each new session.  :attr:`Follower.ended` says how each followed
session ended, so a caller can report it (``streamlog follow`` turns the
last one into its exit status).
"""

import time
from itertools import islice

from streamlog import errors, notation
from streamlog.log import Log
from streamlog.notify import POLL_FALLBACK_S
from streamlog.query import Row
from streamlog.reader import Entry
from streamlog.remote import open_log

__all__ = ["Follower", "ENDED_BY_UNTIL"]

WAIT_POLL_S = 0.05      # how often the log is checked for a new session (or for being created)
BATCH = 1000            # rows per yielded batch at most
CREATION_GRACE_S = 5.0  # how long a log that appeared while waited for may look unfinished
ENDED_BY_UNTIL = "until"
"""The status recorded in :attr:`Follower.ended` when ``until`` passed first."""


class Follower:
    """Follow the log at ``path`` (a path: it is opened read-only, and with
    ``wait`` waited for until it exists; or a ``redis://`` URL of a
    mirrored rig, see :class:`streamlog.RemoteLog`).

    * ``session_id``: the session to follow (negative counts from the end);
      None: the newest.  With ``wait``, a session that does not exist yet
      (or, without ``session_id``, a newest one that is no longer live) is
      waited for: the next session to start is followed.
    * ``from_start``: begin with the records already stored (default: only
      what is committed from now on); ``since`` (epoch seconds): begin with
      the records that arrived at or after it.  Both apply to the first
      session when it was already there; a session waited for, and every
      later one, is followed from its start.
    * ``every``: when a session ends, wait for the next one and follow it
      too (implies ``wait``); iteration then ends only at ``until``.
    * ``until`` (epoch seconds): stop at that time (records that arrived
      after it are not yielded).
    * ``on_wait(text)``: called with a short description (``waiting for
      session 4 of LOG to start``) each time the follower starts waiting.

    Iterating (:meth:`batches`) blocks; it ends when the followed session
    ends (without ``every``) or at ``until``.  Raises LogNotFound /
    SessionNotFound when there is nothing to follow and ``wait`` is off.
    """

    def __init__(self, path, *, session_id=None, stream=None, from_start=False, since=None, wait=False, every=False,
                 until=None, on_wait=None):
        self.path = path
        self.on_wait = on_wait
        self.session_id = session_id
        self.stream = stream
        self.from_start = from_start
        self.since = since
        self.wait = wait or every
        self.every = every
        self.until = until
        self.ended = []
        """``(session_id, status, error)`` of each followed session, in order:
        status ``closed``, ``failed``, ``crashed``, ``pruned`` (removed by
        retention while followed) or :data:`ENDED_BY_UNTIL`."""

    def batches(self):
        """Lists of :class:`~streamlog.query.Row`, as records are committed."""
        log, created = self._open()
        if log is None:
            return
        with log:
            if created and self.session_id is None:  # every session of a log created while waited for is new
                session, waited = self._next_session(log, 0), True
            else:
                session, waited = self._first_session(log)
            first = not waited  # a session that started while waited for is followed from its start
            while session is not None:
                yield from self._follow(log, session, first)
                first = False
                if not self.every or self._past_until():
                    return
                session = self._next_session(log, session.id)

    def __iter__(self):
        for batch in self.batches():
            yield from batch

    # -- finding sessions ------------------------------------------------------

    def _past_until(self):
        return self.until is not None and time.time() > self.until

    def _open(self):
        """``(log, created)``: the log (None if ``until`` passed while waiting for
        it), and whether it was created while waited for."""
        told = False
        finish_by = None
        while True:
            try:
                return open_log(self.path), told
            except errors.LogNotFound:
                if not self.wait:
                    raise
            except errors.NotALog:
                # a log created this moment can look like LMDB without streamlog's format record yet:
                # give its creator a moment (never longer), when it appeared while waited for
                if not told:
                    raise
                finish_by = finish_by or time.monotonic() + CREATION_GRACE_S
                if time.monotonic() > finish_by:
                    raise
            if not told:
                self._tell(f"waiting for log {self.path} to be created")
                told = True
            if self._past_until():
                return None, told
            time.sleep(WAIT_POLL_S)

    def _first_session(self, log):
        """``(session, waited)``: the session to follow first, and whether it was waited for."""
        sessions = log.sessions()
        if self.session_id is not None:
            if self.session_id < 0 or any(s.id == self.session_id for s in sessions) or not self.wait:
                return log.session(self.session_id), False
            return self._wait_for(log, lambda s: s.id == self.session_id, f"session {self.session_id}"), True
        if sessions and (sessions[-1].status == "live" or not self.wait):
            return sessions[-1], False
        if not sessions and not self.wait:
            raise errors.SessionNotFound(f"log {log.path} has no sessions (follow --wait waits for one)")
        newest = sessions[-1].id if sessions else 0
        return self._next_session(log, newest), True

    def _next_session(self, log, previous_id):
        return self._wait_for(log, lambda s: s.id > previous_id, f"a session after {previous_id}"
                              if previous_id else "a first session")

    def _tell(self, text):
        if self.on_wait is not None:
            self.on_wait(text)

    def _wait_for(self, log, wanted, what):
        """The oldest session for which ``wanted(session)``, once there is one;
        None if ``until`` passes first.  LogAccessDenied for a log this
        process reads without its lock file: no recording could start meanwhile."""
        if getattr(log, "lock_free", False):
            raise errors.LogAccessDenied(
                f"cannot wait for {what} of {log.path} to start: this user may not write its lock.mdb, so it "
                f"reads the log only while nothing records it, and no recording can start while it waits; "
                f"have the log shared with a group you are in (`streamlog record --group GROUP`)")
        self._tell(f"waiting for {what} of {log.path} to start")
        while not self._past_until():
            found = [s for s in log.sessions() if wanted(s)]
            if found:
                return found[0]
            time.sleep(WAIT_POLL_S)
        return None

    # -- following one session ---------------------------------------------------

    def _follow(self, log, session, first):
        """Batches of ``session``'s records as they are committed; between
        looks it sleeps on the log's notification channel (a local log, see
        :meth:`streamlog.notify.Listener.pause`) or polls every
        POLL_FALLBACK_S (a remote one)."""
        listener = log.listener() if isinstance(log, Log) else None  # before the first look
        try:
            yield from self._batches_of(session, first, listener)
        finally:
            if listener is not None:
                listener.close()

    def _batches_of(self, session, first, listener):
        after = None
        since = self.since if first else None
        if first and not self.from_start and since is None:
            after = _newest_entry(session, self.stream)
        while True:
            try:
                ended = session.refresh().status != "live"
            except errors.SessionNotFound:
                self.ended.append((session.id, "pruned", None))
                return
            if self.stream is None or self.stream in session.streams:
                while True:
                    batch = list(islice(session.ientries(since=since, until=self.until, after=after,
                                                         stream=self.stream), BATCH))
                    if not batch:
                        break
                    after = batch[-1]
                    time_key = notation.is_time_keyed(session.info)
                    yield [Row(session.id, e.key, e.arrival_us, e.record, time_key) for e in batch]
            if ended:
                self.ended.append((session.id, session.status, session.error))
                return
            if self._past_until():
                self.ended.append((session.id, ENDED_BY_UNTIL, None))
                return
            self._sleep(listener)

    def _sleep(self, listener):
        """Until the next look at the session; never past ``until``."""
        left = None if self.until is None else self.until - time.time()
        if listener is not None:
            listener.pause(left)
        else:
            time.sleep(POLL_FALLBACK_S if left is None else max(0.0, min(left, POLL_FALLBACK_S)))


def _newest_entry(session, stream):
    """An ``after`` bound at the newest record stored now (None if none)."""
    if stream is not None and stream not in session.streams:
        return None
    info = session.stream_info(stream)
    if not info["count"]:
        return None
    return Entry(info["last_key"], None, None, info["recorded"] - 1)
