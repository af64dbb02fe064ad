"""Small real sources and subprocess helpers shared by the core tests."""

import importlib.util
import os
import subprocess
import sys
import textwrap
import time
import wave

import numpy as np

from streamlog import ReadBatch, SourceReader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")


def load_tool(name):
    """Import ``tools/<name>.py`` as a module (the tools import each other, so
    ``tools/`` is on ``sys.path`` while it loads)."""
    sys.path.insert(0, TOOLS)
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_tool", os.path.join(TOOLS, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(TOOLS)


class Counter(SourceReader):
    """Records ``(i, payload)`` for i = 1..n, then ends; ``fail_at`` raises, ``bad_at`` returns a bad record."""

    sleep_time_on_read_none_s = 0.001

    def __init__(self, n, payload=b"payload", fail_at=None, key_at=None, record_at=None, pause_at=None):
        self.n = n
        self.payload = payload
        self.fail_at = fail_at
        self.key_at = key_at or {}
        self.record_at = record_at or {}
        self.pause_at = pause_at
        self.closed = False

    def open(self):
        self.i = 0

    def read(self):
        if self.i >= self.n:
            raise StopIteration
        self.i += 1
        if self.i == self.fail_at:
            raise RuntimeError(f"sensor unplugged at {self.i}")
        if self.pause_at is not None and self.i == self.pause_at[0]:
            self.pause_at[1].wait()
        if self.i in self.record_at:
            return self.record_at[self.i]
        return (self.key_at.get(self.i, self.i), self.payload)

    def close(self):
        self.closed = True

    def key(self, data):
        return data[0]

    @property
    def info(self):
        return {"kind": "counter", "n": self.n}


class Gate(SourceReader):
    """Returns the records put in ``items`` (a queue.Queue); None while empty; ends on a ``StopIteration`` item."""

    sleep_time_on_read_none_s = 0.001

    def __init__(self, items):
        self.items = items

    def open(self):
        pass

    def read(self):
        import queue

        try:
            item = self.items.get_nowait()
        except queue.Empty:
            return None
        if item is StopIteration:
            raise StopIteration
        return item

    def close(self):
        pass

    def key(self, data):
        return data[0]


LIVE_RECORDER = """
import sys
from streamlog import ReadBatch, SourceReader, StreamBuffer

class FiftyThenIdle(SourceReader):
    sleep_time_on_read_none_s = 0.005
    def open(self):
        self.sent = False
    def read(self):
        if self.sent:
            return None
        self.sent = True
        return ReadBatch((i, "tick") for i in range(50))
    def close(self):
        pass
    def key(self, data):
        return data[0]

with StreamBuffer(FiftyThenIdle(), log=sys.argv[1], commit_interval_s=0.001) as buf:
    while buf.committed < 50:
        buf.wait(0.001)
    print("ready", flush=True)
    sys.stdin.read()
"""
"""A script recording ``(i, "tick")`` for i = 0..49 into the log named by
argv[1]; it prints "ready" once they are committed (readable from other
processes), then keeps the session live (an idle source) until its stdin
closes or it is killed."""


PACED_RECORDER = """
import json, sys, time
import streamlog
from streamlog import Retention, SourceReader, StreamBuffer

class Paced(SourceReader):
    sleep_time_on_read_none_s = 0.0005
    def __init__(self, every, payload): self.every, self.payload = every, payload
    def open(self): self.i = 0; self.due = time.monotonic()
    def read(self):
        if time.monotonic() < self.due: return None
        self.due += self.every
        self.i += 1
        return (self.i, self.payload)
    def close(self): pass
    def key(self, data): return data[0]

path, retention, rate, size = sys.argv[1], Retention(**json.loads(sys.argv[2])), float(sys.argv[3]), int(sys.argv[4])
with StreamBuffer(Paced(1 / rate, b"p" * size), log=path, retention=retention) as buf:
    print("started", buf.session.id, flush=True)
    sys.stdin.read()
    buf.stop()
    print(buf.committed, streamlog.Log(path).stats()["stale_readers_cleared"], flush=True)
"""
"""A script recording ``(i, payload)`` for i = 1, 2, ... into a new session
of the log argv[1] under the retention argv[2] (``Retention`` keyword
arguments as JSON), argv[3] records a second of argv[4] payload bytes; it
prints "started <id>", and when its stdin closes it stops and prints the
records it committed and the stale reader slots its process cleared."""


def wait_until(predicate, what, timeout=30):
    """Poll ``predicate`` every 5 ms until it is true; fail naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def same(a, b):
    """Equal, and of the same types all the way down: numpy arrays by dtype,
    shape and values, dicts in the same key order, and a float NaN equal to
    a NaN (damaged bytes may decode to one)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if type(a) in (tuple, list) and type(b) is type(a):
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is dict and type(b) is dict:
        return list(a) == list(b) and all(map(same, a.values(), b.values()))
    if type(a) is float and type(b) is float and a != a:
        return b != b
    return type(a) is type(b) and a == b


def assert_one_clear_line(result, *words):
    """Exit status 1 and one stderr line naming the problem (each of
    ``words``): no signal, no traceback; return the line."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def run_python(code, *args, timeout=60, check=True, **kwargs):
    """Run ``code`` in a fresh interpreter with the package importable; return CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                            text=True, timeout=timeout, env=env, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def start_python(code, *args, **kwargs):
    """Start ``code`` in a fresh interpreter; stdout is a text pipe."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def reference_order(key):
    """Sort key spelling out the documented key order: numbers (by exact
    value, as Python compares int with float) < str < bytes < tuple."""
    if isinstance(key, tuple):
        return (3, tuple(reference_order(item) for item in key))
    if isinstance(key, bytes):
        return (2, key)
    if isinstance(key, str):
        return (1, key)
    return (0, key)


def sign(a, b):
    """-1, 0 or 1 as ``a`` is below, equal to or above ``b``."""
    return (a > b) - (a < b)


class Replay(SourceReader):
    """Records ``records`` (keyed by ``key``) in one ReadBatch, then ends."""

    def __init__(self, records, key=lambda record: record[0]):
        self.records = list(records)
        self._key = key
        self._done = False

    def open(self):
        pass

    def read(self):
        if self._done:
            raise StopIteration
        self._done = True
        return ReadBatch(self.records)

    def close(self):
        pass

    def key(self, data):
        return self._key(data)


def write_wav(path, frames=4096, channels=2, rate=8000):
    """A 16-bit PCM WAV file of a sawtooth at ``path``; returns ``path``."""
    samples = (np.arange(frames * channels) % 30000).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return path
