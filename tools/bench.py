#!/usr/bin/env python
"""Benchmark streamlog against its peers, on this machine, in one run.

    python tools/bench.py                 # full sizes (several minutes)
    python tools/bench.py --quick         # smaller sizes, under a minute
    python tools/bench.py --json          # one JSON document on stdout
    python tools/bench.py --only ingest,range

Peers: raw py-lmdb, stream2py, sqlite3 (WAL) and Redis Streams (a private
redis-server this script starts on 127.0.0.1 and stops).  A peer that cannot
be imported or started is skipped with the reason printed.  Every figure is
a function returning a dict of rows; ratios are streamlog / peer.  See
docs/benchmarks.md for what each figure measures.

The streamlog measured is the one in this checkout (its root is put first on
sys.path), through its public API only.
"""

import argparse
import json
import os
import platform
import random
import resource
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata

import numpy as np

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, REPO)

import streamlog  # noqa: E402

from bench_remote import TARGETS as MIRROR_TARGETS, fig_mirror  # noqa: E402
from bench_peers import PeerUnavailable, RawLmdb, RedisServer, RedisStream, SqliteWal  # noqa: E402
from bench_analysis import TARGETS as ANALYSIS_TARGETS, fig_analysis  # noqa: E402
from bench_sources import (  # noqa: E402
    CHUNK_CHANNELS,
    CHUNK_FRAMES,
    PAYLOAD,
    BatchCountingSource,
    ChunkSource,
    CountingSource,
    PacedSource,
    Stream2pyCountingSource,
    chunk_pool,
    wait_until_exhausted,
)

# Sizes per mode.  "smoke" exists only for tests/test_bench.py: it runs every
# figure and row on tiny inputs and proves nothing about speed.
SIZES = {
    "full": dict(ingest_n=1_000_000, chunk_n=100_000, chunk_rounds=5, paced_n=5_000, range_n=10_000_000,
                 range_queries=1_000, point_queries=1_000, open_repeats=5, follow_n=5_000,
                 memory_n=10_000_000, idle_s=30.0, followed_n=300_000),
    "quick": dict(ingest_n=100_000, chunk_n=10_000, chunk_rounds=5, paced_n=1_500, range_n=1_000_000,
                  range_queries=300, point_queries=300, open_repeats=3, follow_n=1_500,
                  memory_n=1_000_000, idle_s=10.0, followed_n=100_000),
    "smoke": dict(ingest_n=3_000, chunk_n=300, chunk_rounds=2, paced_n=100, range_n=20_000,
                  range_queries=20, point_queries=20, open_repeats=1, follow_n=100,
                  memory_n=20_000, idle_s=0.5, followed_n=3_000),
}
BATCH = 1_000              # records per transaction / ReadBatch / pipeline
RANGE_LEN = 1_000          # records per range query
PACED_RATE = 1_000         # records/s of the paced sources
FOLLOW_EAGER = "streamlog, session.reader() in a subprocess, commits every 0.5 ms"
FOLLOW_NOSYNC = "streamlog, session.reader() in a subprocess, commits every 0.5 ms, no fsync"
MEMORY_MAXLEN = 10_000
CHUNK_BYTES = CHUNK_FRAMES * CHUNK_CHANNELS * 2
TIMEOUT_S = 60.0           # a blocked reader or child gives up after this


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ms(ns_values, q):
    """The q-th percentile of nanosecond values, in milliseconds."""
    return float(np.percentile(np.asarray(ns_values, dtype=np.float64), q)) / 1e6


def median(values):
    return float(np.median(np.asarray(values, dtype=np.float64)))


# ------------------------------------------------------------------ figures


class Figure:
    """Rows of one figure.  ``columns`` is a list of (key, header, kind,
    better) with kind in rate/ms/mb/int/float and better in higher/lower/None;
    columns with ``better`` set get a streamlog/peer ratio for every peer row
    that names the streamlog row it is compared with (``vs``)."""

    def __init__(self, name, title, params, columns):
        self.name = name
        self.title = title
        self.params = params
        self.columns = columns
        self.rows = []
        self.skipped = []
        self.failed = []

    def add(self, system, label, values, vs=None, note=None):
        self.rows.append({"system": system, "label": label, "values": values, "vs": vs, "note": note})

    def run(self, system, label, fn, vs=None, note=None):
        """Add the row ``fn()`` returns; a PeerUnavailable skips it with its
        reason, any other exception marks it failed (reported, exit code 1)."""
        log(f"{self.name}: {label}")
        try:
            values = fn()
        except PeerUnavailable as exc:
            log(f"{self.name}: skip {label}: {exc}")
            self.skipped.append({"system": system, "label": label, "reason": str(exc)})
            return
        except Exception as exc:  # a benchmark run reports every failure and goes on
            log(f"{self.name}: FAILED {label}: {type(exc).__name__}: {exc}")
            self.failed.append({"system": system, "label": label, "reason": f"{type(exc).__name__}: {exc}"})
            return
        self.add(system, label, values, vs=vs, note=note)

    def skip(self, system, label, reason):
        self.skipped.append({"system": system, "label": label, "reason": reason})

    def to_dict(self):
        by_label = {row["label"]: row for row in self.rows}
        for row in self.rows:
            ref = by_label.get(row["vs"])
            ratios = {}
            for key, _header, _kind, better in self.columns:
                if better is None or ref is None:
                    continue
                mine, theirs = ref["values"].get(key), row["values"].get(key)
                if mine is not None and theirs:
                    ratios[key] = mine / theirs
            row["ratios"] = ratios
        return {
            "figure": self.name,
            "title": self.title,
            "params": self.params,
            "columns": [{"key": k, "header": h, "kind": kind, "better": b} for k, h, kind, b in self.columns],
            "rows": self.rows,
            "skipped": self.skipped,
            "failed": self.failed,
        }


class Bench:
    """Shared state of one run: sizes, a scratch directory, the redis server
    (started on first use, stopped by :meth:`close`) and the large stores
    of figures 4 and 5 (built on first use)."""

    def __init__(self, sizes, workdir, mode="full"):
        self.sizes = sizes
        self.mode = mode
        self.workdir = workdir
        self._paths = 0
        self._redis = None
        self._redis_error = None
        self._big = None

    def path(self, name):
        self._paths += 1
        return os.path.join(self.workdir, f"{self._paths:02d}-{name}")

    def redis(self):
        if self._redis_error is not None:
            raise PeerUnavailable(self._redis_error)
        if self._redis is None:
            workdir = self.path("redis")
            os.mkdir(workdir)
            try:
                self._redis = RedisServer(workdir).start()
            except PeerUnavailable as exc:
                self._redis_error = str(exc)
                raise
            log(f"redis-server {self._redis.version()} on 127.0.0.1:{self._redis.port} (pid {self._redis.proc.pid})")
        return self._redis

    def big_stores(self):
        """The BigStores of figures 4 and 5, built on the first call."""
        if self._big is None:
            self._big = BigStores(self, self.sizes["range_n"])
        return self._big

    def redis_version(self):
        return self._redis.version() if self._redis is not None else None

    def close(self):
        if self._big is not None:
            self._big.close()
        if self._redis is not None:
            self._redis.stop()


# ------------------------------------------------------ subprocess helpers


def start_child(role, args):
    """Start ``bench_child.py ROLE`` with JSON ``args``; stdout/stderr piped."""
    return subprocess.Popen(
        [sys.executable, os.path.join(TOOLS, "bench_child.py"), role, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def child_failure(proc, err):
    """A RuntimeError naming the child's exit code and last stderr line (the
    whole stderr goes to this process's stderr)."""
    err = err.strip()
    if err:
        sys.stderr.write(err + "\n")
    last = err.splitlines()[-1] if err else "(no stderr)"
    return RuntimeError(f"child exited with {proc.returncode}: {last}")


def wait_ready(proc, timeout_s):
    """Block until the child prints its ``ready`` line; raise if it exits or
    stays silent for ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            raise RuntimeError(f"child did not get ready within {timeout_s} s")
        readable, _, _ = select.select([proc.stdout], [], [], left)
        if readable:
            line = proc.stdout.readline()
            if line.strip() == "ready":
                return
            if line == "":
                proc.wait()
                raise child_failure(proc, proc.stderr.read())


def finish_child(proc, timeout_s):
    """Wait for the child and return its JSON result line."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"child did not finish within {timeout_s} s") from None
    if proc.returncode != 0:
        raise child_failure(proc, err)
    return json.loads(out.strip().splitlines()[-1])


def run_child(role, args, timeout_s=TIMEOUT_S):
    return finish_child(start_child(role, args), timeout_s)


# ----------------------------------------------------- 1. lossless ingest


def streamlog_ingest(bench, n, batch):
    """Records/s from start() until stop() has committed the last record and
    one reader (its own thread) has received every record; and how many it
    did not receive (lost) or received out of order."""
    source = BatchCountingSource(n, batch) if batch else CountingSource(n)
    buf = streamlog.StreamBuffer(source, log=bench.path("ingest-streamlog"))
    got = {"received": 0, "misordered": 0, "done": None}

    def consume(reader):
        received = misordered = 0
        if batch:
            while received < n:
                recs = reader.read(n=batch, blocking=True, timeout=TIMEOUT_S, ignore_no_item_found=True)
                if not recs:
                    break
                for rec in recs:
                    misordered += rec[0] != received
                    received += 1
        else:
            for rec in reader:
                misordered += rec[0] != received
                received += 1
                if received == n:
                    break
        got.update(received=received, misordered=misordered, done=time.perf_counter())

    t0 = time.perf_counter()
    buf.start()
    consumer = threading.Thread(target=consume, args=(buf.mk_reader(),))
    consumer.start()
    wait_until_exhausted(source, buf, TIMEOUT_S * 10)
    buf.stop()
    t_stop = time.perf_counter()
    consumer.join(TIMEOUT_S)
    if consumer.is_alive():
        raise RuntimeError(f"reader still blocked {TIMEOUT_S} s after stop(), {got['received']} of {n} received")
    elapsed = max(t_stop, got["done"]) - t0
    buf.log.close()
    return {"records_per_s": n / elapsed, "lost": n - got["received"], "misordered": got["misordered"]}


def stream2py_ingest(n, maxlen):
    """stream2py: its StreamBuffer thread reads the source one record per
    call; one reader drains it with non-blocking ``read()`` calls as fast as
    it can.  Timed until the reader is caught up with the exhausted source
    (stream2py's stop() sleeps a fixed 1 s, which is left out)."""
    try:
        from stream2py import StreamBuffer as S2Buffer
    except ImportError as exc:
        raise PeerUnavailable(f"stream2py not importable ({exc}); pip install stream2py") from exc
    source = Stream2pyCountingSource(n)
    kwargs = {} if maxlen is None else {"maxlen": maxlen}
    buf = S2Buffer(source_reader=source, **kwargs)
    t0 = time.perf_counter()
    buf.start()
    try:
        reader = buf.mk_reader()
        received, misordered, last = 0, 0, -1
        while True:
            rec = reader.read(ignore_no_item_found=True)
            if rec is None:
                if source.exhausted.is_set() and reader.read(peek=True, ignore_no_item_found=True) is None:
                    break
                continue
            misordered += rec[0] <= last
            last = rec[0]
            received += 1
        elapsed = time.perf_counter() - t0
    finally:
        buf.stop()
    return {"records_per_s": received / elapsed, "lost": n - received, "misordered": misordered}


def store_ingest(open_store, n):
    """Writer only: ``n`` records appended in transactions of BATCH."""
    store = open_store()
    try:
        t0 = time.perf_counter()
        store.append_records(n, PAYLOAD, batch=BATCH)
        elapsed = time.perf_counter() - t0
    finally:
        close = getattr(store, "drop", None) or store.close
        close()
    return {"records_per_s": n / elapsed, "lost": None}


def fig_ingest(bench):
    n = bench.sizes["ingest_n"]
    fig = Figure("ingest", f"1. Lossless ingest: {n:,} records (int key + 64 B), one reader consumes every record",
                 {"n": n, "batch": BATCH},
                 [("records_per_s", "records/s", "rate", "higher"), ("lost", "lost", "int", None),
                  ("misordered", "misordered", "int", None)])
    per_rec, batched = _PER_RECORD, _BATCHED
    fig.run("streamlog", per_rec, lambda: streamlog_ingest(bench, n, None),
            note="durability='full'; reader iterates record by record")
    fig.run("streamlog", batched, lambda: streamlog_ingest(bench, n, BATCH),
            note=f"durability='full'; reader uses read(n={BATCH})")
    fig.run("lmdb", "raw py-lmdb, sync (fsync per commit)",
            lambda: store_ingest(lambda: RawLmdb(bench.path("ingest-lmdb"), sync=True), n), vs=batched,
            note=f"writer only, putmulti(append=True), {BATCH}/txn")
    fig.run("lmdb", "raw py-lmdb, no sync",
            lambda: store_ingest(lambda: RawLmdb(bench.path("ingest-lmdb-nosync"), sync=False), n), vs=batched,
            note=f"writer only, {BATCH}/txn")
    fig.run("sqlite", "sqlite3 WAL, synchronous=FULL",
            lambda: store_ingest(lambda: SqliteWal(bench.path("ingest.sqlite")), n), vs=batched,
            note=f"writer only, executemany, {BATCH}/txn")
    fig.run("redis", "Redis Streams, pipelined XADD",
            lambda: store_ingest(lambda: RedisStream(bench.redis(), "ingest"), n), vs=batched,
            note=f"writer only, {BATCH}/pipeline, in RAM (no persistence)")
    fig.run("stream2py", "stream2py, default maxlen", lambda: stream2py_ingest(n, None), vs=per_rec,
            note="records beyond maxlen are dropped before the reader gets them")
    fig.run("stream2py", "stream2py, maxlen=N (lossless)", lambda: stream2py_ingest(n, n), vs=per_rec)
    return fig


# -------------------------------------------------------- 2. chunk ingest


def streamlog_chunks(path, n, pool):
    source = ChunkSource(n, pool)
    buf = streamlog.StreamBuffer(source, log=path)
    t0 = time.perf_counter()
    buf.start()
    wait_until_exhausted(source, buf, TIMEOUT_S * 10)
    buf.stop()
    elapsed = time.perf_counter() - t0
    buf.log.close()
    with streamlog.Log(path, readonly=True, create=False) as lg:
        on_disk = lg.stats()["bytes_on_disk"]
    payload = n * CHUNK_BYTES
    return {"mb_per_s": payload / elapsed / 1e6, "bytes_per_payload_byte": on_disk / payload}


def store_chunks(open_store, size_of, n, pool):
    store = open_store()
    payload = n * CHUNK_BYTES
    try:
        before = size_of(store, None)
        t0 = time.perf_counter()
        store.append_values((pool[i % len(pool)].tobytes() for i in range(n)), batch=BATCH)
        elapsed = time.perf_counter() - t0
        used = size_of(store, before)
    finally:
        close = getattr(store, "drop", None) or store.close
        close()
    return {"mb_per_s": payload / elapsed / 1e6, "bytes_per_payload_byte": used / payload}


def alternate_rounds(fig, rounds, contenders):
    """Run ``contenders`` (label -> fn returning values) one after another,
    ``rounds`` times, in the same order every round, and return label ->
    values as medians over the rounds, with ``mb_per_s_min``/``_max`` as the
    spread.  A contender that fails in any round is reported once and dropped."""
    runs = {label: [] for label in contenders}
    failed = set()
    for r in range(rounds):
        for label, fn in contenders.items():
            if label in failed:
                continue
            log(f"{fig.name}: round {r + 1}/{rounds}: {label}")
            try:
                runs[label].append(fn())
            except Exception as exc:  # a benchmark run reports every failure and goes on
                log(f"{fig.name}: FAILED {label}: {type(exc).__name__}: {exc}")
                fig.failed.append({"system": label, "label": label, "reason": f"{type(exc).__name__}: {exc}"})
                failed.add(label)
    out = {}
    for label, values in runs.items():
        if label in failed or not values:
            continue
        merged = {key: median([v[key] for v in values]) for key in values[0]}
        speeds = [v["mb_per_s"] for v in values]
        merged.update(mb_per_s_min=min(speeds), mb_per_s_max=max(speeds), rounds=len(values))
        out[label] = merged
    return out


def fig_chunks(bench):
    n = bench.sizes["chunk_n"]
    rounds = bench.sizes["chunk_rounds"]
    pool = chunk_pool()
    fig = Figure("chunks", f"2. Chunk ingest: {n:,} numpy int16 stereo buffers of {CHUNK_FRAMES} frames "
                           f"({CHUNK_BYTES} B), MB = 10^6 payload bytes; streamlog and raw py-lmdb "
                           f"alternate, {rounds} rounds, medians (min..max of MB/s)",
                 {"n": n, "chunk_bytes": CHUNK_BYTES, "batch": BATCH, "rounds": rounds},
                 [("mb_per_s", "MB/s", "mb", "higher"), ("mb_per_s_min", "min MB/s", "mb", None),
                  ("mb_per_s_max", "max MB/s", "mb", None),
                  ("bytes_per_payload_byte", "bytes/payload B", "float", "lower")])
    me = "streamlog, one buffer per read()"

    def lmdb_size(store, _before):
        return store.used_bytes()

    def sqlite_size(store, _before):
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return os.path.getsize(store.path)

    def redis_size(store, before):
        used = store.used_memory()
        return used if before is None else used - before

    def fresh(name, fn):
        """``fn(path)`` on a new path in the scratch directory, removed after,
        so every round starts on an empty file and the disk does not fill."""
        def run():
            path = bench.path(name)
            try:
                return fn(path)
            finally:
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
        return run

    # Same file system, same payload buffers, a new empty store every round;
    # streamlog fsyncs every commit (durability='full') as the sync peer does.
    contenders = {
        me: fresh("chunks-streamlog", lambda path: streamlog_chunks(path, n, pool)),
        "raw py-lmdb, sync": fresh("chunks-lmdb", lambda path: store_chunks(
            lambda: RawLmdb(path, sync=True), lmdb_size, n, pool)),
        "raw py-lmdb, no sync": fresh("chunks-lmdb-nosync", lambda path: store_chunks(
            lambda: RawLmdb(path, sync=False), lmdb_size, n, pool)),
    }
    medians = alternate_rounds(fig, rounds, contenders)
    notes = {me: "durability='full'; bytes from Log.stats()['bytes_on_disk']",
             "raw py-lmdb, sync": f"arr.tobytes(), {BATCH}/txn; bytes = used pages",
             "raw py-lmdb, no sync": None}
    for label, values in medians.items():
        fig.add("streamlog" if label == me else "lmdb", label, values,
                vs=None if label == me else me, note=notes[label])
    fig.run("sqlite", "sqlite3 WAL, synchronous=FULL", vs=me, note="bytes = db file after checkpoint; one run",
            fn=lambda: store_chunks(lambda: SqliteWal(bench.path("chunks.sqlite")), sqlite_size, n, pool))
    fig.run("redis", "Redis Streams, pipelined XADD", vs=me, note="bytes = growth of used_memory (RAM, no disk)",
            fn=lambda: store_chunks(lambda: RedisStream(bench.redis(), "chunks"), redis_size, n, pool))
    return fig


# -------------------------------------------------------- 3. live latency


def latency_values(latencies, n):
    return {"p50_ms": ms(latencies, 50), "p99_ms": ms(latencies, 99), "max_ms": max(latencies) / 1e6,
            "received": len(latencies), "lost": n - len(latencies)}


def streamlog_latency(bench, n):
    go = threading.Event()
    source = PacedSource(n, PACED_RATE, time.perf_counter_ns, go)
    buf = streamlog.StreamBuffer(source, log=bench.path("latency-streamlog"))
    latencies = []
    buf.start()
    try:
        reader = buf.mk_reader()
        go.set()
        for _ in range(n):
            rec = reader.read(blocking=True, timeout=TIMEOUT_S)
            latencies.append(time.perf_counter_ns() - rec[1])
    finally:
        buf.stop()
        buf.log.close()
    return latency_values(latencies, n)


def stream2py_latency(n):
    try:
        from stream2py import StreamBuffer as S2Buffer
    except ImportError as exc:
        raise PeerUnavailable(f"stream2py not importable ({exc}); pip install stream2py") from exc
    go = threading.Event()
    source = PacedSource(n, PACED_RATE, time.perf_counter_ns, go, end_with_none=True)
    buf = S2Buffer(source_reader=source, maxlen=MEMORY_MAXLEN)
    latencies = []
    buf.start()
    try:
        reader = buf.mk_reader()
        go.set()
        while len(latencies) < n:
            rec = reader.read(blocking=True, timeout=5.0)
            if rec is None:
                break
            latencies.append(time.perf_counter_ns() - rec[1])
    finally:
        buf.stop()
    return latency_values(latencies, n)


def redis_latency(bench, n):
    server = bench.redis()
    writer, reader = server.client(), server.client()
    name = "latency"
    writer.delete(name)
    go = threading.Event()
    source = PacedSource(n, PACED_RATE, time.perf_counter_ns, go)

    def produce():
        for _ in range(n):
            rec = source.read()
            writer.xadd(name, {"t": rec[1], "v": rec[2]})

    producer = threading.Thread(target=produce)
    producer.start()
    go.set()
    latencies, last_id = [], "0-0"
    try:
        while len(latencies) < n:
            reply = reader.xread({name: last_id}, block=int(TIMEOUT_S * 1000), count=BATCH)
            now = time.perf_counter_ns()
            if not reply:
                break
            for eid, fields in reply[0][1]:
                latencies.append(now - int(fields[b"t"]))
                last_id = eid
    finally:
        producer.join()
        writer.delete(name)
        writer.close()
        reader.close()
    return latency_values(latencies, n)


LATENCY_COLUMNS = [("p50_ms", "p50 ms", "ms", "lower"), ("p99_ms", "p99 ms", "ms", "lower"),
                   ("max_ms", "max ms", "ms", None), ("lost", "lost", "int", None)]


def fig_latency(bench):
    n = bench.sizes["paced_n"]
    fig = Figure("latency", f"3. Live latency: source paced at {PACED_RATE:,} records/s, {n:,} records; "
                            "read() returning -> blocking reader has the record",
                 {"n": n, "rate": PACED_RATE},
                 LATENCY_COLUMNS)
    me = "streamlog, reader.read(blocking=True)"
    fig.run("streamlog", me, lambda: streamlog_latency(bench, n), note="durability='full'")
    fig.run("stream2py", f"stream2py, read(blocking=True), maxlen={MEMORY_MAXLEN:,}",
            lambda: stream2py_latency(n), vs=me, note="its blocking read polls every 0.1 s")
    fig.run("redis", "Redis Streams, XADD -> XREAD BLOCK", lambda: redis_latency(bench, n), vs=me,
            note="producer and reader threads, separate connections")
    for system, label in (("lmdb", "raw py-lmdb"), ("sqlite", "sqlite3 WAL")):
        fig.skip(system, label, "no change notification: a live reader can only poll")
    return fig


# ------------------------------------------- 4/5. range queries, open, tail


class BigStores:
    """The stores of figures 4 and 5, each holding keys 0..n-1 (exclusive
    end): built once per run, kept open.  ``stores[system]`` is the open
    store, ``skipped[system]`` the reason a peer is missing, ``failed[system]``
    why building a store failed."""

    def __init__(self, bench, n):
        self.bench = bench
        self.n = n
        self.stores = {}
        self.paths = {}
        self.skipped = {}
        self.failed = {}
        self.build_rates = {}
        self._build("streamlog", self._build_streamlog)
        self._build("lmdb", lambda: self._build_store("lmdb", lambda p: RawLmdb(p, sync=False), "big-lmdb"))
        self._build("sqlite", lambda: self._build_store("sqlite", lambda p: SqliteWal(p, sync=False), "big.sqlite"))
        self._build("redis", lambda: self._build_store("redis", lambda _p: RedisStream(bench.redis(), "big"), None))

    def _build(self, system, fn):
        log(f"building {self.n:,}-record store: {system}")
        try:
            t0 = time.perf_counter()
            fn()
            self.build_rates[system] = self.n / (time.perf_counter() - t0)
        except PeerUnavailable as exc:
            self.skipped[system] = str(exc)
        except Exception as exc:  # reported as a failed row of figures 4 and 5
            log(f"building {system} store FAILED: {type(exc).__name__}: {exc}")
            self.failed[system] = f"building the store failed: {type(exc).__name__}: {exc}"

    def _build_streamlog(self):
        path = self.bench.path("big-streamlog")
        source = BatchCountingSource(self.n, BATCH)
        buf = streamlog.StreamBuffer(source, log=path)
        buf.start()
        wait_until_exhausted(source, buf, TIMEOUT_S * 10)
        buf.stop()
        buf.log.close()
        self.paths["streamlog"] = path
        self.open_streamlog()

    def open_streamlog(self):
        lg = streamlog.Log(self.paths["streamlog"], create=False)
        self.stores["streamlog"] = (lg, lg.session(-1))

    def close_streamlog(self):
        self.stores.pop("streamlog")[0].close()

    def _build_store(self, system, opener, name):
        path = self.bench.path(name) if name else None
        store = opener(path)
        store.append_records(self.n, PAYLOAD, batch=BATCH)
        self.paths[system] = path
        self.stores[system] = store

    def warm(self, system):
        """Read every file of ``system``'s store once, so that its pages are
        in the OS page cache when it is measured (nothing for Redis, which
        serves from RAM).  Needed because a store's pages may have left the
        page cache since it was built (see docs/benchmarks.md, figure 4)."""
        path = self.paths.get(system)
        if path is None:
            return
        if os.path.isdir(path):
            files = [os.path.join(path, name) for name in sorted(os.listdir(path))]
        else:
            files = [path + suffix for suffix in ("", "-wal")]
        for name in files:
            if os.path.isfile(name):
                with open(name, "rb") as f:
                    while f.read(1 << 20):
                        pass

    def close(self):
        for system, store in self.stores.items():
            if system == "streamlog":
                store[0].close()
            elif system == "redis":
                store.drop()
            else:
                store.close()
        self.stores = {}


def fetchers(stores, system):
    """(range(start, count), replay(), head(), tail()) callables for one store."""
    store = stores.stores[system]
    if system == "streamlog":
        _lg, session = store
        return (lambda k, c: session.range(k, k + c - 1), session.irange,
                lambda: session.head(1), lambda: session.tail(1))
    return store.range, store.replay, store.head, store.tail


def major_faults():
    """Page faults of this process so far that had to read from disk."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_majflt


def measure_range(stores, system, queries, seed):
    fetch_range, replay, _head, _tail = fetchers(stores, system)
    n = stores.n
    rng = random.Random(seed)
    times, short = [], 0
    stores.warm(system)
    faults = major_faults()
    for _ in range(queries):
        k = rng.randrange(0, n - RANGE_LEN + 1)
        t0 = time.perf_counter_ns()
        recs = fetch_range(k, RANGE_LEN)
        times.append(time.perf_counter_ns() - t0)
        short += len(recs) != RANGE_LEN or recs[0][0] != k
    faults = major_faults() - faults
    t0 = time.perf_counter()
    count = 0
    for _rec in replay():
        count += 1
    elapsed = time.perf_counter() - t0
    if count != n:
        raise RuntimeError(f"{system}: replay yielded {count:,} records, expected {n:,}")
    if short:
        raise RuntimeError(f"{system}: {short} of {queries} range queries returned the wrong records")
    return {"range_p50_ms": ms(times, 50), "range_p99_ms": ms(times, 99), "range_disk_reads": faults,
            "replay_per_s": n / elapsed}


def fig_range(bench):
    stores = bench.big_stores()
    q = bench.sizes["range_queries"]
    fig = Figure("range", f"4. Range queries on {stores.n:,} records: {RANGE_LEN:,} records at a random key "
                          f"({q:,} queries); full sequential replay, decoded; each store's files read into the page "
                          f"cache just before its row",
                 {"n": stores.n, "range_len": RANGE_LEN, "queries": q, "build_records_per_s": stores.build_rates},
                 [("range_p50_ms", "range p50 ms", "ms", "lower"), ("range_p99_ms", "range p99 ms", "ms", "lower"),
                  ("range_disk_reads", "range major faults", "int", None),
                  ("replay_per_s", "replay records/s", "rate", "higher")])
    labels = {"streamlog": "streamlog, session.range / irange", "lmdb": "raw py-lmdb, cursor",
              "sqlite": "sqlite3 WAL, SELECT ... ORDER BY k", "redis": "Redis Streams, XRANGE"}
    for system, label in labels.items():
        if system in stores.skipped:
            fig.skip(system, label, stores.skipped[system])
            continue
        if system in stores.failed:
            fig.failed.append({"system": system, "label": label, "reason": stores.failed[system]})
            continue
        fig.run(system, label, lambda s=system: measure_range(stores, s, q, seed=7),
                vs=None if system == "streamlog" else labels["streamlog"])
    return fig


def measure_point_reads(stores, system, repeats):
    _range, _replay, head, tail = fetchers(stores, system)
    heads, tails = [], []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        head()
        t1 = time.perf_counter_ns()
        tail()
        t2 = time.perf_counter_ns()
        heads.append(t1 - t0)
        tails.append(t2 - t1)
    return {"head_ms": ms(heads, 50), "tail_ms": ms(tails, 50)}


def measure_open(stores, system, repeats):
    """Open time in a fresh process (median of ``repeats`` processes) and,
    for streamlog, reopening in this process after closing."""
    values = {}
    if system == "streamlog":
        stores.close_streamlog()
        try:
            fresh = [run_child("open", {"kind": "streamlog", "path": stores.paths[system]}) for _ in range(repeats)]
            reopen = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                lg = streamlog.Log(stores.paths[system], create=False)
                reopen.append(time.perf_counter() - t0)
                lg.close()
        finally:
            stores.open_streamlog()
        values["reopen_ms"] = median(reopen) * 1e3
    else:
        fresh = [run_child("open", {"kind": system, "path": stores.paths[system]}) for _ in range(repeats)]
    values["open_ms"] = median([r["open_s"] for r in fresh]) * 1e3
    values["open_tail_ms"] = median([r["open_and_tail_s"] for r in fresh]) * 1e3
    return values


def fig_open(bench):
    stores = bench.big_stores()
    reps, points = bench.sizes["open_repeats"], bench.sizes["point_queries"]
    fig = Figure("open", f"5. tail(1), head(1) (p50 of {points:,}) and open time on the {stores.n:,}-record store; "
                         f"open = fresh process, median of {reps}",
                 {"n": stores.n, "open_repeats": reps, "point_queries": points},
                 [("head_ms", "head(1) ms", "ms", "lower"), ("tail_ms", "tail(1) ms", "ms", "lower"),
                  ("open_ms", "open ms", "ms", "lower"), ("open_tail_ms", "open+tail ms", "ms", "lower"),
                  ("reopen_ms", "reopen ms", "ms", None)])
    labels = {"streamlog": "streamlog, Log(path)", "lmdb": "raw py-lmdb, lmdb.open",
              "sqlite": "sqlite3 WAL, connect", "redis": "Redis Streams"}
    for system, label in labels.items():
        if system in stores.skipped:
            fig.skip(system, label, stores.skipped[system])
            continue
        if system in stores.failed:
            fig.failed.append({"system": system, "label": label, "reason": stores.failed[system]})
            continue

        def row(s=system):
            values = measure_point_reads(stores, s, points)
            if s != "redis":
                values.update(measure_open(stores, s, reps))
            return values

        fig.run(system, label, row, vs=None if system == "streamlog" else labels["streamlog"],
                note="open: n/a, the data lives in the server process" if system == "redis" else None)
    return fig


# ---------------------------------------------- 6. cross-process follow


def streamlog_follow(bench, n, name="follow-streamlog", **buffer_options):
    go = threading.Event()
    source = PacedSource(n, PACED_RATE, time.time_ns, go)
    path = bench.path(name)
    buf = streamlog.StreamBuffer(source, log=path, **buffer_options)
    buf.start()
    try:
        child = start_child("follow-streamlog", {"path": path, "n": n, "timeout_s": TIMEOUT_S})
        wait_ready(child, TIMEOUT_S)
        go.set()
        result = finish_child(child, TIMEOUT_S + n / PACED_RATE)
    finally:
        buf.stop()
        buf.log.close()
    return latency_values(result["latencies_ns"], n)


def redis_follow(bench, n):
    server = bench.redis()
    name = "follow"
    client = server.client()
    client.delete(name)
    go = threading.Event()
    source = PacedSource(n, PACED_RATE, time.time_ns, go)
    child = start_child("follow-redis", {"port": server.port, "stream": name, "n": n, "timeout_s": TIMEOUT_S})
    try:
        wait_ready(child, TIMEOUT_S)
        go.set()
        for _ in range(n):
            rec = source.read()
            client.xadd(name, {"t": rec[1], "v": rec[2]})
        result = finish_child(child, TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        client.delete(name)
        client.close()
    return latency_values(result["latencies_ns"], n)


def fig_follow(bench):
    n = bench.sizes["follow_n"]
    fig = Figure("follow", f"6. Cross-process follow: {n:,} records paced at {PACED_RATE:,}/s; "
                           "time.time_ns() at read() in the recorder -> reader in another process",
                 {"n": n, "rate": PACED_RATE},
                 LATENCY_COLUMNS)
    me = "streamlog, session.reader() in a subprocess"
    fig.run("streamlog", me, lambda: streamlog_follow(bench, n), note="durability='full'")
    fig.run("streamlog", FOLLOW_EAGER, lambda: streamlog_follow(bench, n, "follow-eager", commit_interval_s=0.0005),
            note="durability='full', commit_interval_s=0.0005")
    fig.run("streamlog", FOLLOW_NOSYNC, lambda: streamlog_follow(bench, n, "follow-nosync", commit_interval_s=0.0005,
                                                                 durability="off"),
            note="durability='off' (no fsync), commit_interval_s=0.0005")
    fig.run("redis", "Redis Streams, XREAD BLOCK in a subprocess", lambda: redis_follow(bench, n), vs=me)
    for system, label in (("lmdb", "raw py-lmdb"), ("sqlite", "sqlite3 WAL")):
        fig.skip(system, label, "no change notification: a follower can only poll")
    fig.skip("stream2py", "stream2py", "in-process buffer only; no cross-process reader")
    return fig


# ------------------------------------- 10. followers: idle CPU, recorder with followers


def idle_follower_cpu(bench, system, idle_s):
    """Percent of one core a follower in another process uses over ``idle_s``
    seconds while the session it follows is live but records nothing."""
    if system == "streamlog":
        path = bench.path("idle-follow")
        buf = streamlog.StreamBuffer(PacedSource(1, PACED_RATE, time.time_ns, threading.Event()), log=path)
        buf.start()
        args = {"path": path, "idle_s": idle_s}
    else:
        buf = None
        server = bench.redis()
        args = {"port": server.port, "stream": "idle", "idle_s": idle_s}
    try:
        child = start_child(f"idle-follow-{system}", args)
        wait_ready(child, TIMEOUT_S)
        result = finish_child(child, TIMEOUT_S + idle_s)
    finally:
        if buf is not None:
            buf.stop()
            buf.log.close()
    if result["records"]:
        raise RuntimeError(f"the idle follower received a record: {result}")
    return {"cpu_pct": 100 * result["cpu_s"] / result["wall_s"], "cpu_ms": 1000 * result["cpu_s"],
            "wall_s": result["wall_s"]}


class _GatedCounting(CountingSource):
    """CountingSource that hands out nothing (None) until ``go`` is set."""

    def __init__(self, n, go):
        super().__init__(n)
        self.go = go

    def read(self):
        if not self.go.is_set():
            return None
        return super().read()


def recorder_with_followers(bench, n, followers):
    """Records/s of a recorder at full speed (one record per read()) from go
    to its last commit, with ``followers`` processes following it live."""
    go = threading.Event()
    source = _GatedCounting(n, go)
    path = bench.path(f"followed-{followers}")
    buf = streamlog.StreamBuffer(source, log=path)
    buf.start()
    children = []
    try:
        for _ in range(followers):
            children.append(start_child("drain-streamlog", {"path": path, "timeout_s": TIMEOUT_S}))
        for child in children:
            wait_ready(child, TIMEOUT_S)
        t0 = time.perf_counter()
        go.set()
        wait_until_exhausted(source, buf, TIMEOUT_S * 10)
        buf.stop()
        elapsed = time.perf_counter() - t0
        received = [finish_child(child, TIMEOUT_S)["received"] for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        buf.stop()
        buf.log.close()
    if any(count != n for count in received):
        raise RuntimeError(f"followers received {received} of {n} records")
    return {"records_per_s": n / elapsed}


IDLE_FOLLOWER = "streamlog, a follower of a live session recording nothing"
RECORDER_ALONE = "streamlog, recorder alone"
RECORDER_FOLLOWED = "streamlog, recorder with 4 followers in other processes"


def fig_followers(bench):
    idle_s, n = bench.sizes["idle_s"], bench.sizes["followed_n"]
    fig = Figure("followers", f"10. Followers in other processes: CPU of an idle follower over {idle_s:g} s "
                              f"(getrusage); recorder records/s ({n:,} records, one per read()) with 4 followers",
                 {"idle_s": idle_s, "n": n},
                 [("cpu_pct", "CPU % of a core", "%", "lower"), ("cpu_ms", "CPU ms", "ms", "lower"),
                  ("records_per_s", "records/s", "/s", "higher")])
    fig.run("streamlog", IDLE_FOLLOWER, lambda: idle_follower_cpu(bench, "streamlog", idle_s),
            note="sleeps on the log's notification channel; looks every 0.25 s whether its writer lives")
    fig.run("redis", "Redis Streams, XREAD BLOCK on an idle stream", lambda: idle_follower_cpu(bench, "redis", idle_s),
            vs=IDLE_FOLLOWER)
    fig.run("streamlog", RECORDER_ALONE, lambda: recorder_with_followers(bench, n, 0))
    fig.run("streamlog", RECORDER_FOLLOWED, lambda: recorder_with_followers(bench, n, 4),
            note="each follower reads every record; 2-core machine shared with other work")
    return fig


# ----------------------------------------------------------- 7. memory


def fig_memory(bench):
    n = bench.sizes["memory_n"]
    checkpoints = sorted({n // 100, n // 10, n // 4, n // 2, 3 * n // 4})
    fig = Figure("memory", f"7. Memory: recording {n:,} records (ReadBatch of {BATCH}) with maxlen={MEMORY_MAXLEN:,}, "
                           "RSS of the recording process by records recorded",
                 {"n": n, "maxlen": MEMORY_MAXLEN, "checkpoints": checkpoints},
                 [("records", "records", "int", None), ("rss_mb", "RSS MB", "mb", None),
                  ("peak_rss_mb", "peak RSS MB", "mb", None), ("anon_rss_mb", "anon RSS MB", "mb", None)])
    log("memory: streamlog recording in a subprocess")
    try:
        result = run_child("memory", {"path": bench.path("memory-streamlog"), "n": n, "maxlen": MEMORY_MAXLEN,
                                      "checkpoints": checkpoints, "batch": BATCH},
                           timeout_s=TIMEOUT_S * 10)
    except Exception as exc:
        fig.failed.append({"system": "streamlog", "label": "streamlog recording", "reason": f"{type(exc).__name__}: {exc}"})
        return fig
    for sample in result["samples"]:
        when = "after stop()" if sample.get("after_stop") else "before start()" if sample["records"] == 0 else "recording"
        fig.add("streamlog", f"streamlog, {when}, {sample['records']:,} records",
                {"records": sample["records"], "rss_mb": sample["rss_bytes"] / 1e6,
                 "peak_rss_mb": sample["peak_rss_bytes"] / 1e6, "anon_rss_mb": sample["anon_rss_bytes"] / 1e6})
    return fig


FIGURES = {
    "ingest": fig_ingest,
    "chunks": fig_chunks,
    "latency": fig_latency,
    "range": fig_range,
    "open": fig_open,
    "follow": fig_follow,
    "memory": fig_memory,
    "mirror": lambda bench: fig_mirror(bench, Figure, bench.mode),
    "analysis": lambda bench: fig_analysis(bench, Figure, bench.mode),
    "followers": fig_followers,
}

# ------------------------------------------------------------- targets


def _value(figs, fig, label, key, ratio=False):
    """The value of column ``key`` in row ``label`` of figure ``fig``; with
    ``ratio`` True the row's streamlog / peer ratio instead, and with
    ``ratio`` a row label the value of that (streamlog) row divided by row
    ``label``'s.  None when a row or value is missing."""
    f = figs.get(fig)
    if f is None:
        return None
    rows = {row["label"]: row for row in f["rows"]}
    row = rows.get(label)
    if row is None:
        return None
    if ratio is True:
        return row["ratios"].get(key)
    if ratio:
        mine, theirs = rows.get(ratio, {}).get("values", {}).get(key), row["values"].get(key)
        return mine / theirs if mine is not None and theirs else None
    return row["values"].get(key)


_PER_RECORD, _BATCHED = "streamlog, read() per record", f"streamlog, ReadBatch({BATCH})"
_RAW_SYNC = "raw py-lmdb, sync (fsync per commit)"
TARGETS = [
    # (text, figure, row label, value key, ratio (True: the row's; a label: that row / this one), op, limit, unit)
    ("lossless ingest (ReadBatch) >= 1.5x sqlite3 WAL", "ingest", "sqlite3 WAL, synchronous=FULL",
     "records_per_s", True, ">=", 1.5, "x"),
    ("lossless ingest (ReadBatch) >= 0.6x raw py-lmdb sync", "ingest", _RAW_SYNC, "records_per_s", True, ">=", 0.6,
     "x"),
    ("lossless ingest (per record) >= 0.35x raw py-lmdb sync", "ingest", _RAW_SYNC, "records_per_s", _PER_RECORD,
     ">=", 0.35, "x"),
    ("lossless ingest (per record) >= 10x stream2py lossless", "ingest", "stream2py, maxlen=N (lossless)",
     "records_per_s", True, ">=", 10.0, "x"),
    ("records lost, read() per record = 0", "ingest", _PER_RECORD, "lost", False, "<=", 0, ""),
    (f"records lost, ReadBatch({BATCH}) = 0", "ingest", _BATCHED, "lost", False, "<=", 0, ""),
    ("chunk ingest >= 0.8x raw py-lmdb sync MB/s", "chunks", "raw py-lmdb, sync", "mb_per_s", True, ">=", 0.8, "x"),
    ("chunk bytes on disk per payload byte <= 1.05", "chunks", "streamlog, one buffer per read()",
     "bytes_per_payload_byte", False, "<=", 1.05, ""),
    ("live latency p50 <= 0.1 ms", "latency", "streamlog, reader.read(blocking=True)", "p50_ms", False, "<=", 0.1, "ms"),
    ("live latency p99 <= 1 ms", "latency", "streamlog, reader.read(blocking=True)", "p99_ms", False, "<=", 1.0, "ms"),
    ("range of 1,000 records p99 <= 1.2x raw py-lmdb p99", "range", "raw py-lmdb, cursor", "range_p99_ms", True,
     "<=", 1.2, "x"),
    ("range of 1,000 records p99 <= 1 ms", "range", "streamlog, session.range / irange", "range_p99_ms",
     False, "<=", 1.0, "ms"),
    ("decoded replay >= 1.0x raw py-lmdb replay", "range", "raw py-lmdb, cursor", "replay_per_s", True, ">=", 1.0,
     "x"),
    ("sequential decoded replay >= 2 M records/s", "range", "streamlog, session.range / irange", "replay_per_s",
     False, ">=", 2_000_000, "records/s"),
    ("open (fresh process) < 50 ms", "open", "streamlog, Log(path)", "open_ms", False, "<", 50.0, "ms"),
    ("cross-process follow p99 <= 20 ms", "follow", "streamlog, session.reader() in a subprocess", "p99_ms",
     False, "<=", 20.0, "ms"),
    ("cross-process follow p50 <= 1 ms (0.5 ms commits, no fsync)", "follow", FOLLOW_NOSYNC, "p50_ms", False, "<=",
     1.0, "ms"),
    ("cross-process follow p99 <= 3 ms (0.5 ms commits, no fsync)", "follow", FOLLOW_NOSYNC, "p99_ms", False, "<=",
     3.0, "ms"),
    ("idle follower CPU <= 0.5 % of a core", "followers", IDLE_FOLLOWER, "cpu_pct", False, "<=", 0.5, "%"),
    ("recorder with 4 followers >= 0.9x alone", "followers", RECORDER_ALONE, "records_per_s", RECORDER_FOLLOWED,
     ">=", 0.9, "x"),
    *MIRROR_TARGETS,
    *ANALYSIS_TARGETS,
]

OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}


def evaluate_targets(figures):
    """One entry per target whose figure ran: value, limit and PASS/MISS
    (``passed`` is None when the value could not be measured)."""
    figs = {f["figure"]: f for f in figures}
    out = []
    for text, fig, label, key, ratio, op, limit, unit in TARGETS:
        if fig not in figs:
            continue
        value = _value(figs, fig, label, key, ratio)
        out.append({"target": text, "figure": fig, "row": label, "value": value, "op": op, "limit": limit, "unit": unit,
                    "passed": None if value is None else OPS[op](value, limit)})
    return out


# -------------------------------------------------------- machine, output


def machine_description(workdir):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    import lmdb
    import msgpack

    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", ":(glob)streamlog/*.py"], capture_output=True,
                               text=True, check=True).stdout.strip()
        if dirty:
            commit += " + uncommitted changes in streamlog/*.py"
    except (OSError, subprocess.CalledProcessError):
        commit = None
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    fs = subprocess.run(["df", "--output=fstype", workdir], capture_output=True, text=True).stdout.split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1) if mem else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "streamlog": f"{streamlog.__version__} ({commit})" if commit else streamlog.__version__,
        "lmdb": f"py-lmdb {lmdb.__version__}, LMDB {'.'.join(map(str, lmdb.version()))}",
        "msgpack": msgpack.version and ".".join(map(str, msgpack.version)),
        "numpy": np.__version__,
        "stream2py": version("stream2py"),
        "redis-py": version("redis"),
        "sqlite": sqlite3.sqlite_version,
        "scratch_fs": fs[-1] if fs else None,
    }


def fmt(value, kind):
    if value is None:
        return "-"
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "ms":
        return f"{value:.3f}" if value < 10 else f"{value:,.1f}"
    if kind == "mb":
        return f"{value:,.1f}"
    if kind == "int":
        return f"{value:,}"
    return f"{value:.3f}"


def render(report):
    """The human-readable report: machine header, one table per figure
    (ratios are streamlog / peer), then the targets with PASS/MISS."""
    lines = []
    m = report["machine"]
    lines.append(f"streamlog benchmark ({report['mode']} sizes), {report['date']}")
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}")
    lines.append(f"python {m['python']}; streamlog {m['streamlog']}; {m['lmdb']}; msgpack {m['msgpack']}; "
                 f"numpy {m['numpy']}; stream2py {m['stream2py']}; redis-py {m['redis-py']}, "
                 f"redis-server {m.get('redis_server')}; sqlite {m['sqlite']}; scratch fs {m['scratch_fs']}")
    lines.append("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}; "
                 "run took {:.0f} s".format(*m["load_before"], *m["load_after"], report["elapsed_s"]))
    lines.append("ratio columns: streamlog / peer (rates: > 1 means streamlog is faster; "
                 "times and sizes: < 1 means streamlog is faster/smaller)")
    for fig in report["figures"]:
        lines.append("")
        lines.append(fig["title"])
        cols = fig["columns"]
        ratio_cols = [c for c in cols if c["better"]]
        header = ["system"] + [c["header"] for c in cols] + [f"x {c['header']}" for c in ratio_cols]
        table = []
        for row in fig["rows"]:
            cells = [row["label"]] + [fmt(row["values"].get(c["key"]), c["kind"]) for c in cols]
            cells += [f"{row['ratios'][c['key']]:.2f}" if c["key"] in row["ratios"] else "" for c in ratio_cols]
            table.append(cells)
        widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]
        for cells in [header] + table:
            lines.append("  " + "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                                          for i, c in enumerate(cells)).rstrip())
        for row in fig["rows"]:
            if row["note"]:
                lines.append(f"    note: {row['label']}: {row['note']}")
        for s in fig["skipped"]:
            lines.append(f"    skipped: {s['label']}: {s['reason']}")
        for s in fig["failed"]:
            lines.append(f"    FAILED: {s['label']}: {s['reason']}")
    if report["targets"]:
        lines.append("")
        lines.append("Targets")
        width = max(len(t["target"]) for t in report["targets"])
        skipped = {(f["figure"], s["label"]) for f in report["figures"] for s in f["skipped"]}
        for t in report["targets"]:
            if t["value"] is None:
                shown = "not measured"
                verdict = "n/a (peer skipped)" if (t["figure"], t["row"]) in skipped else "MISS"
            else:
                shown = f"{t['value']:,.3f}" if isinstance(t["value"], float) and t["value"] < 1000 \
                    else f"{t['value']:,.0f}"
                shown = f"{shown} {t['unit']}".strip()
                verdict = "PASS" if t["passed"] else "MISS"
            lines.append(f"  {t['target'].ljust(width)}  {shown:>22}  {verdict}")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Benchmark streamlog against raw py-lmdb, stream2py, sqlite3 and "
                                            "Redis Streams on this machine.")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes; the whole run takes under a minute")
    size.add_argument("--smoke", action="store_true",
                      help="tiny sizes that only check every figure runs (used by tests/test_bench.py)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    p.add_argument("--only", metavar="NAME[,NAME]",
                   help=f"run only these figures, from: {', '.join(FIGURES)}")
    p.add_argument("--dir", help="directory for the scratch stores (default: the system temp dir)")
    args = p.parse_args(argv)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in FIGURES]
        if unknown or not names:
            p.error(f"--only: unknown figure name(s) {', '.join(unknown) or '(none given)'}; "
                    f"choose from {', '.join(FIGURES)}")
        args.only = names
    else:
        args.only = list(FIGURES)
    if args.dir is not None and not os.path.isdir(args.dir):
        p.error(f"--dir: {args.dir!r} is not a directory")
    return args


def exit_on_sigterm(signum, _frame):
    """SIGTERM ends the run through SystemExit, so the redis-server is
    stopped and the scratch directory removed by the ``finally`` in main."""
    raise SystemExit(128 + signum)


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    workdir = tempfile.mkdtemp(prefix="streamlog-bench-", dir=args.dir)
    bench = Bench(SIZES[mode], workdir, mode)
    started = time.perf_counter()
    try:
        machine = machine_description(workdir)
        machine["load_before"] = os.getloadavg()
        figures = [FIGURES[name](bench).to_dict() for name in args.only]
        machine["load_after"] = os.getloadavg()
        machine["redis_server"] = bench.redis_version()
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report = {"mode": mode, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine,
              "sizes": SIZES[mode], "figures": figures, "targets": evaluate_targets(figures),
              "elapsed_s": time.perf_counter() - started}
    print(json.dumps(report, indent=1) if args.json else render(report))
    return 1 if any(f["failed"] for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
