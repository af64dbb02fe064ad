"""``SynthSource``: a deterministic multi-channel test signal, no hardware needed."""

import math
import numbers
import time

import numpy as np

from streamlog.source import ReadBatch, SourceReader

AMPLITUDE = 0.5
NOISE_STD = 0.01
MAX_BATCH_SAMPLES = 1 << 16   # samples per channel handed over by one read()
MAX_SLEEP_S = 0.05            # read() sleeps at most this long for a block that is almost due


def channel_frequencies(rate_hz, channels):
    """The sine frequency of each channel: ``rate_hz * (c + 1) / (2 * (channels + 1))``
    for channel ``c``, so all are distinct and below the Nyquist frequency."""
    return [rate_hz * (c + 1) / (2 * (channels + 1)) for c in range(channels)]


def synth_block(index, *, rate_hz, channels, block, seed):
    """Block ``index`` of the signal: a float32 array of shape ``(block, channels)``.

    Sample ``n = index * block + i`` of channel ``c`` is
    ``AMPLITUDE * sin(2 * pi * f_c * n / rate_hz)`` plus Gaussian noise of
    standard deviation ``NOISE_STD`` drawn from ``numpy.random.default_rng([seed, index])``,
    so any block can be regenerated on its own from the session info.
    """
    n = np.arange(index * block, (index + 1) * block, dtype=np.float64)[:, None]
    freqs = np.asarray(channel_frequencies(rate_hz, channels), dtype=np.float64)[None, :]
    signal = AMPLITUDE * np.sin(2 * np.pi * freqs * n / rate_hz)
    noise = np.random.default_rng([seed, index]).normal(0.0, NOISE_STD, size=(block, channels))
    return (signal + noise).astype(np.float32)


class SynthSource(SourceReader):
    """Records ``(index, block)``: ``block`` is :func:`synth_block` ``(index, ...)``,
    a float32 array of shape ``(block, channels)``; ``index`` (0, 1, 2, ...) is the key.

    The same parameters give bit-identical records on the same machine.
    ``count`` ends the session (``StopIteration``) after that many records;
    ``None`` runs until stopped.

    With ``realtime=True`` block ``i`` is released once its last sample is
    due, ``(i + 1) * block / rate_hz`` seconds after :meth:`open`: ``read()``
    returns ``None`` while the next block is far from due, sleeps exactly
    until it when it is due within ``MAX_SLEEP_S``, and hands over every
    block already due as one ReadBatch when the recorder fell behind (so the
    rate never drifts).  With ``realtime=False`` blocks come as fast as the
    recorder takes them.
    """

    def __init__(self, *, rate_hz=1000.0, channels=2, block=100, seed=0, count=None, realtime=True):
        if (isinstance(rate_hz, bool) or not isinstance(rate_hz, numbers.Real)
                or not math.isfinite(rate_hz) or rate_hz <= 0):
            raise ValueError(f"rate_hz must be a finite number > 0, got {rate_hz!r}")
        for name, value in (("channels", channels), ("block", block)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if count is not None and (isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0):
            raise ValueError(f"count must be None or an integer >= 0, got {count!r}")
        self.rate_hz = float(rate_hz)
        self.channels = int(channels)
        self.block = int(block)
        self.seed = int(seed)
        self.count = None if count is None else int(count)
        self.realtime = bool(realtime)
        self.block_period_s = self.block / self.rate_hz
        self.sleep_time_on_read_none_s = min(0.01, self.block_period_s / 4)
        self._next_index = 0
        self._start = None

    def open(self):
        self._next_index = 0
        self._start = time.monotonic()

    def read(self):
        """Return a ReadBatch of the next due blocks, ``None`` when none is
        due yet, or raise ``StopIteration`` after ``count`` records."""
        remaining = math.inf if self.count is None else self.count - self._next_index
        if remaining <= 0:
            raise StopIteration
        n = max(1, MAX_BATCH_SAMPLES // self.block)
        if self.realtime:
            wait_s = self._start + (self._next_index + 1) * self.block_period_s - time.monotonic()
            if wait_s > MAX_SLEEP_S:
                return None
            if wait_s > 0:
                time.sleep(wait_s)
            elapsed = time.monotonic() - self._start
            n = min(n, int(elapsed / self.block_period_s) - self._next_index)
            n = max(n, 1)
        n = int(min(n, remaining))
        first = self._next_index
        self._next_index += n
        return ReadBatch((i, self.block_at(i)) for i in range(first, first + n))

    def close(self):
        self._start = None

    def key(self, data):
        return data[0]

    def block_at(self, index):
        """Block ``index`` of this source's signal (see :func:`synth_block`)."""
        return synth_block(index, rate_hz=self.rate_hz, channels=self.channels, block=self.block, seed=self.seed)

    @property
    def info(self):
        return {
            "source": "synth",
            "rate_hz": self.rate_hz,
            "channels": self.channels,
            "block": self.block,
            "seed": self.seed,
            "count": self.count,
            "realtime": self.realtime,
            "dtype": "float32",
            "frequencies_hz": channel_frequencies(self.rate_hz, self.channels),
            "signal": (f"channel c: {AMPLITUDE} * sin(2*pi*f_c*n/rate_hz) + normal(0, {NOISE_STD}) noise "
                       "from numpy.random.default_rng([seed, index]); see streamlog.sources.synth.synth_block"),
            "key_kind": "index",
        }
