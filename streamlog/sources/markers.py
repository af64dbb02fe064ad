"""Event markers (stimulus on, button pressed, ...) recorded beside another stream.

A :class:`MarkerSource` is fed from any thread with :meth:`MarkerSource.mark`
and recorded as a second named stream of a live session, usually next to
audio::

    with StreamBuffer(PyAudioSourceReader(), log="lab.log") as audio, \\
            markers_beside(audio) as markers:
        markers.mark("stimulus on")

Each record is ``(t_us, label)``: ``t_us`` (int microseconds since the
epoch, the key) and ``label`` (any encodable value, usually a str).
"""

import math
import numbers
import queue
import threading
import time
from contextlib import contextmanager

from streamlog import errors
from streamlog.source import ReadBatch, SourceReader

MARKERS_STREAM = "markers"


class MarkerSource(SourceReader):
    """Records ``(t_us, label)`` for each :meth:`mark` call, in call order.

    Marks go through an unbounded thread-safe queue, so :meth:`mark` never
    blocks on the recorder and none is dropped.  The stream ends (after the
    marks already queued) once :meth:`end` is called; otherwise it runs until
    its buffer is stopped.
    """

    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()   # makes "stamp, check order, enqueue" one step across threads
        self._last_t_us = None
        self._ended = False

    def mark(self, label, t=None):
        """Queue a marker ``label`` at ``t`` (epoch seconds; default: now) and
        return its key ``t_us``.

        Keys never decrease: a default time earlier than the previous marker
        (the host clock stepped back) is raised to it; an explicit ``t``
        earlier than the previous marker raises KeyOrderError.  Raises
        InvalidKey for a ``t`` that is not a finite number and StreamlogError
        after :meth:`end`.
        """
        if t is not None and (isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t)):
            raise errors.InvalidKey(f"marker time must be epoch seconds (a finite number), got {t!r}")
        with self._lock:
            if self._ended:
                raise errors.StreamlogError(f"marker {label!r} given after the marker stream ended")
            t_us = round((time.time() if t is None else t) * 1_000_000)
            if self._last_t_us is not None and t_us < self._last_t_us:
                if t is not None:
                    raise errors.KeyOrderError(
                        f"marker {label!r} at {t_us} µs is earlier than the previous marker at {self._last_t_us} µs")
                t_us = self._last_t_us
            self._last_t_us = t_us
            self._queue.put((t_us, label))
        return t_us

    def end(self):
        """End the marker stream once the queued markers are recorded; later
        :meth:`mark` calls raise StreamlogError."""
        with self._lock:
            self._ended = True

    def open(self):
        """Nothing to acquire: markers arrive through :meth:`mark`."""

    def read(self):
        """A ReadBatch of the queued markers, ``None`` when there are none,
        StopIteration once :meth:`end` was called and all are read."""
        ended = self._ended
        batch = ReadBatch()
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if batch:
            return batch
        if ended:
            raise StopIteration
        return None

    def close(self):
        """Nothing to release."""

    def key(self, data):
        return data[0]

    @property
    def info(self):
        return {"source": "markers", "key_kind": "timestamp_us", "record_layout": "(t_us, label)"}


@contextmanager
def markers_beside(buffer, *, stream=MARKERS_STREAM):
    """Record a :class:`MarkerSource` as stream ``stream`` of ``buffer``'s
    live session and yield the source; on exit the markers given so far are
    recorded and the marker stream is stopped (``buffer`` keeps running)."""
    from streamlog.buffer import StreamBuffer

    source = MarkerSource()
    with StreamBuffer(source, log=buffer.log, session=buffer.session, stream=stream) as marker_buffer:
        try:
            yield source
        finally:
            source.end()
            marker_buffer.wait()
