"""Figure 9 of tools/bench.py: the analysts' tools (streamlog.frames, export, plot).

Rows, each timed in this process except the Parquet export (a child process
of its own, so that its peak RSS is the export's alone):

* ``to_numpy`` of float32 samples in 1,000-sample records, against
  ``numpy.load`` of the same arrays (values, keys, times_us, offsets: what
  ``to_numpy`` returns) from ``.npy`` files, against ``numpy.load`` of the
  values alone (information, no target) and against a Python loop over
  ``session.irange()`` concatenating the blocks;
* ``to_numpy`` of scalar records, against the same two ``numpy.load`` rows
  and a loop building the array from ``irange``;
* for both, the blocks read and checked without decoding anything, one
  by one (``BufferReader.iblocks``, what ``to_pandas`` reads) and many at
  once (``BufferReader.ichunks``, what ``to_numpy`` reads: its floor);
* ``to_pandas`` of dict records with 4 fields, against
  ``pandas.DataFrame(list(session.irange()))``;
* the Parquet export of scalar records: seconds, peak RSS and peak
  anonymous RSS (without file pages: libraries, the log's memory map) of
  the process;
* ``Session.plot`` of a 10-hour (full size) 1 kHz stream in 1,000-sample blocks;
* ``ReplaySource`` at speed 1 of 20 s (full size) of records made at 1 kHz:
  how late the replayed records arrive against the original pace, at most
  and at the last record (a schedule that drifted would grow with time).

Run as ``python tools/bench_analysis.py --child parquet LOG OUT`` it is that
child: it exports and prints ``{"seconds", "peak_rss_mb", "rows"}``.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))

import streamlog  # noqa: E402
from streamlog import ReadBatch, SourceReader, StreamBuffer  # noqa: E402

SIZES = {
    "full": dict(samples=10_000_000, scalars=1_000_000, dicts=1_000_000, parquet=10_000_000, plot_hours=10.0,
                 replay_s=20.0),
    "quick": dict(samples=1_000_000, scalars=100_000, dicts=100_000, parquet=1_000_000, plot_hours=1.0,
                  replay_s=3.0),
    "smoke": dict(samples=20_000, scalars=2_000, dicts=2_000, parquet=5_000, plot_hours=0.01, replay_s=0.2),
}
BLOCK = 1_000            # samples per record of the sample streams
PLOT_RATE = 1_000        # Hz of the plotted stream
REPEATS = 3              # timed runs per row; the best counts

NUMPY_BLOCKS = "to_numpy, float32 blocks"
NUMPY_SCALARS = "to_numpy, scalar records"
PANDAS_DICTS = "to_pandas, 4-field dict records"
PARQUET = "Parquet export, scalar records (child process)"
PLOT = "Session.plot, 1 kHz stream"
TARGETS = [  # (text, figure, row label, value key, is a ratio, op, limit, unit), as in tools/bench.py
    ("to_numpy of float32 blocks >= 0.5x numpy.load", "analysis", "numpy.load, float32 blocks", "per_s", True,
     ">=", 0.5, "x"),
    ("to_numpy of float32 blocks >= 5x an irange loop", "analysis", "irange loop, float32 blocks", "per_s", True,
     ">=", 5.0, "x"),
    ("to_numpy of scalar records >= 0.5x numpy.load", "analysis", "numpy.load, scalar records", "per_s", True,
     ">=", 0.5, "x"),
    ("to_numpy of scalar records >= 5x an irange loop", "analysis", "irange loop, scalar records", "per_s", True,
     ">=", 5.0, "x"),
    ("to_pandas of 4-field dicts >= 2x DataFrame(list(irange()))", "analysis",
     "pandas.DataFrame(list(session.irange()))", "per_s", True, ">=", 2.0, "x"),
    ("Parquet export peak RSS < 200 MB", "analysis", PARQUET, "peak_rss_mb", False, "<", 200.0, "MB"),
    ("Parquet export peak anonymous RSS < 200 MB", "analysis", PARQUET, "peak_anon_mb", False, "<", 200.0, "MB"),
    ("plot of the long 1 kHz stream < 10 s", "analysis", PLOT, "seconds", False, "<", 10.0, "s"),
]
REPLAY = "ReplaySource, speed 1, records at 1 kHz"


class Records(SourceReader):
    """``count`` records made by ``make(i)``, handed over in ReadBatches of 1,000."""

    def __init__(self, count, make, info=None):
        self.count, self.make, self._info = count, make, info or {}

    def open(self):
        self.i = 0

    def read(self):
        if self.i >= self.count:
            raise StopIteration
        end = min(self.count, self.i + 1000)
        batch = ReadBatch(self.make(i) for i in range(self.i, end))
        self.i = end
        return batch

    def close(self):
        pass

    def key(self, data):
        return data[0] if type(data) is tuple else data["n"]

    @property
    def info(self):
        return {"source": "bench", **self._info}


def record(path, count, make, info=None):
    """Record ``count`` records made by ``make(i)`` into a new log at ``path``;
    return the log (open) and its session."""
    return record_source(path, Records(count, make, info))


def record_source(path, source):
    """Record ``source`` to its end into a new log at ``path``; return the log (open) and its session."""
    with StreamBuffer(source, log=path, durability="off") as buf:
        buf.wait(600)
    log = streamlog.Log(path, readonly=True)
    return log, log.session(-1)


def read_blocks(session):
    """Read every stored block of the session's main stream and check it
    (LMDB, checksum, header), decoding nothing: the floor under to_pandas."""
    return sum(part.hi - part.lo for part in session.reader().iblocks())


def read_chunks(session):
    """Read the session's main stream as to_numpy does, many blocks' columns
    at once, checked in parallel threads (``BufferReader.ichunks``),
    decoding nothing: the floor under to_numpy."""
    return sum(chunk.count for chunk in session.reader().ichunks())


def best(fn):
    """(best seconds of REPEATS runs, the last result)."""
    times, result = [], None
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def fig_analysis(bench, Figure, mode):
    """The figure (a tools/bench.py ``Figure``) with every row above, at the sizes of ``mode``."""
    sizes = SIZES[mode]
    fig = Figure("analysis", "9. Analysis: stored sessions into numpy, pandas, Parquet and a picture "
                             "(best of 3 runs; peak RSS of a child process)", sizes,
                 [("seconds", "seconds", "float", None), ("per_s", "items/s", "rate", "higher"),
                  ("peak_rss_mb", "peak RSS MB", "mb", None), ("peak_anon_mb", "peak anon RSS MB", "mb", None),
                  ("late_max_ms", "latest ms", "ms", None), ("late_last_ms", "last record late ms", "ms", None)])

    def row(system, label, fn, items, vs=None):
        def measure():
            seconds, _ = best(fn)
            return {"seconds": seconds, "per_s": items / seconds}
        fig.run(system, label, measure, vs=vs)

    def numpy_rows(name, label, count, make, items, loop, info=None):
        """to_numpy of ``count`` records ``make(i)``; numpy.load of the same
        arrays (every field of the StreamArrays to_numpy returns, one .npy
        file each: the target's baseline) and of its values alone (information);
        and ``loop(session)`` building the values from irange."""
        slug = name.replace(" ", "-")
        log_, session = record(bench.path(slug), count, make, info=info)
        arrays = session.to_numpy()
        npys = [bench.path(f"{slug}-{field}.npy") for field in arrays._fields]
        for npy, array in zip(npys, arrays):
            np.save(npy, array)
        row("streamlog", label, lambda: session.to_numpy(), items)
        row("numpy", f"numpy.load, {name}", lambda: [np.load(npy) for npy in npys], items, vs=label)
        row("numpy", f"numpy.load, values only, {name}", lambda: np.load(npys[0]), items, vs=label)
        row("python", f"irange loop, {name}", lambda: loop(session), items, vs=label)
        row("streamlog", f"blocks read and checked, not decoded, {name}", lambda: read_blocks(session), items,
            vs=label)
        row("streamlog", f"chunks read and checked (ichunks), not decoded, {name}", lambda: read_chunks(session),
            items, vs=label)
        log_.close()

    block = np.random.default_rng(1).standard_normal(BLOCK).astype(np.float32)
    numpy_rows("float32 blocks", NUMPY_BLOCKS, sizes["samples"] // BLOCK, lambda i: (i, block + np.float32(i)),
               sizes["samples"], lambda session: np.concatenate([r[1] for r in session.irange()]),
               info={"rate_hz": 1000.0})
    numpy_rows("scalar records", NUMPY_SCALARS, sizes["scalars"], lambda i: (i, i * 0.5), sizes["scalars"],
               lambda session: np.array([r[1] for r in session.irange()]))

    try:
        import pandas
    except ImportError as exc:
        fig.skip("streamlog", PANDAS_DICTS, f"pandas is not installed ({exc})")
    else:
        n = sizes["dicts"]
        log_, session = record(bench.path("dicts"), n,
                               lambda i: {"n": i, "x": i * 0.25, "label": "trial", "ok": i % 2 == 0})
        row("streamlog", PANDAS_DICTS, lambda: session.to_pandas(), n)
        row("pandas", "pandas.DataFrame(list(session.irange()))", lambda: pandas.DataFrame(list(session.irange())), n,
            vs=PANDAS_DICTS)
        log_.close()

    n = sizes["parquet"]
    path = bench.path("parquet-scalars")
    record(path, n, lambda i: (i, i * 0.5))[0].close()
    out = bench.path("scalars.parquet")

    def export_in_child():
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "parquet", path, out],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"the export child failed: {proc.stderr.strip().splitlines()[-1:]}")
        result = json.loads(proc.stdout)
        return {"seconds": result["seconds"], "per_s": result["rows"] / result["seconds"],
                "peak_rss_mb": result["peak_rss_mb"], "peak_anon_mb": result["peak_anon_mb"]}
    fig.run("streamlog", PARQUET, export_in_child,
            note=f"{n:,} records of (i, float); peak RSS (VmHWM) counts the pages of pyarrow's libraries and of "
                 f"the log's memory map that were touched; peak anon RSS (RssAnon sampled every 20 ms) leaves "
                 f"those file pages out")

    seconds_of_signal = sizes["plot_hours"] * 3600
    blocks = int(seconds_of_signal * PLOT_RATE) // BLOCK
    t = np.arange(BLOCK) / PLOT_RATE
    log_, session = record(bench.path("plot"), blocks,
                           lambda i: (i, (np.sin(2 * np.pi * 0.01 * (i + t)) + 0.1 * np.sin(2 * np.pi * 50 * t))
                                      .astype(np.float32).reshape(-1, 1)),
                           info={"rate_hz": float(PLOT_RATE), "block": BLOCK, "key_kind": "index", "channels": 1})
    png = bench.path("plot.png")

    def draw():
        started = time.perf_counter()
        session.plot(png)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "per_s": blocks * BLOCK / seconds}
    fig.run("streamlog", PLOT, draw,
            note=f"{sizes['plot_hours']:g} h of 1 kHz float32 samples ({blocks * BLOCK:,} samples in "
                 f"{blocks:,} records), one run")
    log_.close()

    fig.run("streamlog", REPLAY, lambda: replay_lateness(bench, sizes["replay_s"]),
            note=f"{sizes['replay_s']:g} s recorded from a source due every 1 ms, replayed into another log; "
                 "lateness = replayed arrival - first replayed arrival - (original arrival - first original)")
    return fig


class Paced(SourceReader):
    """A record every 1 ms for ``seconds``, each due at an absolute time from open()."""

    sleep_time_on_read_none_s = 0.0005

    def __init__(self, seconds):
        self.count = int(seconds * 1000)

    def open(self):
        self.i = 0
        self.t0 = time.monotonic()

    def read(self):
        if self.i >= self.count:
            raise StopIteration
        due = int((time.monotonic() - self.t0) * 1000) + 1
        batch = ReadBatch((i, i) for i in range(self.i, min(due, self.count)))
        self.i += len(batch)
        return batch or None

    def close(self):
        pass

    def key(self, data):
        return data[0]


def replay_lateness(bench, seconds):
    from streamlog.sources.replay import ReplaySource

    log_, old = record_source(bench.path("paced"), Paced(seconds))
    new_log, new = record_source(bench.path("replayed"), ReplaySource(old, speed=1.0))
    before = np.array([e.arrival_us for e in old.ientries()], dtype=np.int64)
    after = np.array([e.arrival_us for e in new.ientries()], dtype=np.int64)
    late = (after - after[0]) - (before - before[0])
    log_.close()
    new_log.close()
    return {"seconds": (after[-1] - after[0]) / 1e6, "per_s": len(after) / max((after[-1] - after[0]) / 1e6, 1e-9),
            "late_max_ms": late.max() / 1e3, "late_last_ms": late[-1] / 1e3}


def _parquet_child(path, out):
    import threading

    from streamlog.frames import write_arrow

    session = streamlog.Log(path, readonly=True).session(-1)
    peak_anon = [0]
    done = threading.Event()

    def sample():  # RssAnon has no high-water mark of its own: sample it
        while not done.wait(0.02):
            peak_anon[0] = max(peak_anon[0], _status_bytes("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with open(out, "wb") as file:
        rows = write_arrow(session, file, "parquet")
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    print(json.dumps({"seconds": seconds, "rows": rows, "peak_rss_mb": _status_bytes("VmHWM") / 1e6,
                      "peak_anon_mb": max(peak_anon[0], _status_bytes("RssAnon")) / 1e6}))


def _status_bytes(field):
    """A size from /proc/self/status: ``VmHWM`` (peak RSS; ``ru_maxrss``
    would carry the parent's peak over across fork+exec), ``RssAnon``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


if __name__ == "__main__":
    if sys.argv[1:3] == ["--child", "parquet"] and len(sys.argv) == 5:
        _parquet_child(sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"usage: {sys.argv[0]} --child parquet LOG OUT (run by tools/bench.py)")
