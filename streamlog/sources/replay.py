"""``ReplaySource``: a stored session handed out again as a live source.

An online pipeline (a :class:`~streamlog.StreamBuffer` with readers) runs
on a recording exactly as it ran live::

    old = streamlog.Log("take.streamlog", readonly=True).session(3)
    with StreamBuffer(ReplaySource(old, speed=2.0), log="replayed.streamlog") as buf:
        for record in buf.mk_reader():
            ...                                # records at twice their original pace

Each record keeps its key and comes out when it is due: record ``i`` is
released ``(arrival_i - arrival_0) / speed`` seconds after :meth:`open`,
where ``arrival`` is the time the original recorder read it.  Every due
time is reckoned from that one start, never from the previous record, so
delays (a busy machine, a slow consumer) do not add up over a long replay:
a late record is followed by the ones already due, at once.
"""

import math
import numbers
import time
from collections import deque

from streamlog import frames
from streamlog.source import ReadBatch, SourceReader

MAX_SLEEP_S = 0.02    # read() sleeps at most this long for a record that is almost due
MAX_BATCH = 1024      # records handed over by one read()


class ReplaySource(SourceReader):
    """Replays stream ``stream`` (default: the main stream) of the stored
    ``session`` between ``start`` and ``stop`` (keys, or arrival times in
    epoch seconds with ``by="time"``; inclusive, None open).

    ``speed``: 1.0 replays at the original pace, 2.0 twice as fast, None as
    fast as the recorder takes the records.  The source's info is the
    session's, plus ``replay_of`` naming the log, session, stream and speed.
    Raises ValueError for a speed that is not a positive number or None.
    """

    def __init__(self, session, stream=None, *, speed=1.0, start=None, stop=None, by="key"):
        if speed is not None and (isinstance(speed, bool) or not isinstance(speed, numbers.Real)
                                  or not math.isfinite(speed) or speed <= 0):
            raise ValueError(f"speed must be a positive number or None, not {speed!r}")
        self.session = session
        self.stream = frames.stream_name(session, stream)
        self.speed = None if speed is None else float(speed)
        self.start, self.stop, self.by = start, stop, by
        self.sleep_time_on_read_none_s = 0.002
        self._entries = None
        self._next = None
        self._keys = deque()
        self._started = None
        self._first_us = None

    def open(self):
        self._entries = frames.entries(self.session, self.stream, self.start, self.stop, self.by)
        self._next = next(self._entries, None)
        self._keys.clear()
        self._started = time.monotonic()
        self._first_us = None if self._next is None else self._next.arrival_us

    def _due(self, entry):
        """Seconds after open() at which ``entry`` is due."""
        return (entry.arrival_us - self._first_us) / 1e6 / self.speed

    def read(self):
        """A ReadBatch of the records due now (sleeping up to MAX_SLEEP_S for
        one almost due), None while the next one is further off,
        StopIteration after the last."""
        if self._next is None:
            raise StopIteration
        if self.speed is not None:
            wait = self._started + self._due(self._next) - time.monotonic()
            if wait > MAX_SLEEP_S:
                return None
            if wait > 0:
                time.sleep(wait)
        now = time.monotonic() - self._started
        batch = ReadBatch()
        entry = self._next
        while entry is not None and len(batch) < MAX_BATCH and (self.speed is None or self._due(entry) <= now):
            batch.append(entry.record)
            self._keys.append(entry.key)
            entry = next(self._entries, None)
        self._next = entry
        return batch

    def close(self):
        self._entries = None
        self._next = None

    def key(self, data):
        """The original key of ``data`` (the recorder asks once per record, in order)."""
        return self._keys.popleft()

    @property
    def info(self):
        info = dict(self.session.info or {})
        info["replay_of"] = {"log": self.session.log.path, "session": self.session.id, "stream": self.stream,
                             "speed": self.speed}
        return info
