"""The record sources the benchmark feeds to streamlog (and, where the
interface matches, to stream2py).

A benchmark record is ``(key, payload)``: an int key counting from 0 and a
fixed 64-byte payload; the paced sources add a clock stamp:
``(key, stamp, payload)``.  Every source's ``key(record)`` is ``record[0]``.
"""

import threading
import time

import numpy as np

from streamlog import ReadBatch, SourceReader

PAYLOAD = bytes(range(64))
CHUNK_FRAMES = 1024
CHUNK_CHANNELS = 2


def chunk_pool(size=16, seed=1):
    """``size`` distinct int16 stereo buffers of CHUNK_FRAMES frames (4 KiB each)."""
    rng = np.random.default_rng(seed)
    return [
        rng.integers(-32768, 32767, size=(CHUNK_FRAMES, CHUNK_CHANNELS), dtype=np.int16)
        for _ in range(size)
    ]


def wait_until_exhausted(source, buffer, timeout_s):
    """Block until ``source`` has handed out its last record; raise
    RuntimeError if ``buffer`` (a streamlog StreamBuffer) stops recording
    before that (a failed recording) or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not source.exhausted.wait(0.05):
        if not buffer.is_running and not source.exhausted.is_set():
            buffer.stop()
            raise RuntimeError(f"recording ended after {source.i:,} records, before the source was exhausted "
                               f"(session status {buffer.session.status!r}, error {buffer.session.error!r})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"source not exhausted within {timeout_s} s ({source.i:,} records handed out)")


class _Keyed(SourceReader):
    """Common parts: nothing to open or close, key is ``record[0]``."""

    def open(self):
        pass

    def close(self):
        pass

    def key(self, data):
        return data[0]


class CountingSource(_Keyed):
    """Returns records ``(i, PAYLOAD)`` for i in 0..n-1 (exclusive end), one per
    ``read()`` as fast as it is called, then raises StopIteration.

    ``exhausted`` is set when the last record has been handed out and the
    source is asked for more.
    """

    def __init__(self, n):
        self.n = n
        self.i = 0
        self.exhausted = threading.Event()

    def read(self):
        i = self.i
        if i >= self.n:
            self.exhausted.set()
            raise StopIteration
        self.i = i + 1
        return (i, PAYLOAD)


class Stream2pyCountingSource(CountingSource):
    """CountingSource for stream2py, whose recorder thread does not end on
    StopIteration: after the last record ``read()`` returns None ("no data")."""

    def read(self):
        try:
            return super().read()
        except StopIteration:
            return None


class BatchCountingSource(_Keyed):
    """The records of CountingSource, handed out ``batch`` at a time as a
    ReadBatch.  ``on_progress(count)``, if given, is called with the number
    of records handed out so far after each batch."""

    def __init__(self, n, batch, on_progress=None):
        self.n = n
        self.batch = batch
        self.i = 0
        self.on_progress = on_progress
        self.exhausted = threading.Event()

    def read(self):
        i = self.i
        if i >= self.n:
            self.exhausted.set()
            raise StopIteration
        stop = min(self.n, i + self.batch)
        self.i = stop
        out = ReadBatch([(j, PAYLOAD) for j in range(i, stop)])
        if self.on_progress is not None:
            self.on_progress(stop)
        return out


class ChunkSource(_Keyed):
    """Returns ``(i, buffer)`` for i in 0..n-1, the buffer an int16 stereo
    numpy array of CHUNK_FRAMES frames taken round-robin from ``pool``; then
    raises StopIteration (setting ``exhausted``)."""

    def __init__(self, n, pool):
        self.n = n
        self.pool = pool
        self.i = 0
        self.exhausted = threading.Event()

    def read(self):
        i = self.i
        if i >= self.n:
            self.exhausted.set()
            raise StopIteration
        self.i = i + 1
        return (i, self.pool[i % len(self.pool)])


class PacedSource(_Keyed):
    """Returns ``(i, clock(), PAYLOAD)`` for i in 0..n-1 at ``rate`` records/s,
    starting once ``go`` is set (``read()`` returns None until then), then
    raises StopIteration (setting ``exhausted``).

    ``read()`` sleeps until the record is due and stamps it as it returns, so
    the stamp is the moment the recorder thread receives the record.
    ``end_with_none=True`` returns None instead of raising at the end (for
    stream2py, whose thread does not handle StopIteration).
    """

    def __init__(self, n, rate, clock, go, end_with_none=False):
        self.n = n
        self.period = 1.0 / rate
        self.clock = clock
        self.go = go
        self.end_with_none = end_with_none
        self.i = 0
        self.t0 = None
        self.exhausted = threading.Event()

    def read(self):
        if self.t0 is None:
            if not self.go.wait(0.1):
                return None
            self.t0 = time.perf_counter()
        i = self.i
        if i >= self.n:
            self.exhausted.set()
            if self.end_with_none:
                return None
            raise StopIteration
        delay = self.t0 + i * self.period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        self.i = i + 1
        return (i, self.clock(), PAYLOAD)
