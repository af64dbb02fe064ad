"""Figure 8 of tools/bench.py: the Redis Streams mirror (``streamlog.Mirror``).

Rows, each against a private redis-server started for it on 127.0.0.1
(tools/redis_server.py) and stopped by pid (sizes per mode in SIZES):

* mirror throughput for 64-byte and 4 KiB records (a closed session, from
  the log into Redis), and raw redis-py pipelined XADD of the same fields
  (key, arrival time, encoded record; ids ``seq-1``), prepared in memory;
* recorder throughput (one record per ``read()``) with no mirror, with the
  mirror in a child process and with the mirror in a thread;
* arrival-to-remote lag at 1,000 and 10,000 records/s: from the moment the
  recorder received a record (its arrival time, before the commit of up to
  5 ms) to the moment a client blocked in XREAD BLOCK got it;
* catch-up after a Redis outage (SIGKILL, then a restart on its AOF) while
  recording at 1,000 records/s: time from the restart to zero lag, records
  lost and duplicated (the remote session compared with the local one);
* Redis memory (``used_memory`` growth) per 64-byte record, mirror layout vs
  raw XADD of one field per record.
"""

import threading
import time

import numpy as np

import streamlog
from bench_sources import PAYLOAD, CountingSource, PacedSource, wait_until_exhausted
from redis_server import RedisServer, RedisUnavailable
from streamlog.codec import encode_record
from streamlog.keys import encode_key
from streamlog.remote import layout

RIG = "bench"
SIZES = {
    "full": dict(mirror_n=200_000, mirror_big_n=20_000, recorder_n=300_000, lag_s=10.0, outage_s=30.0,
                 memory_n=100_000),
    "quick": dict(mirror_n=50_000, mirror_big_n=5_000, recorder_n=100_000, lag_s=3.0, outage_s=5.0,
                  memory_n=50_000),
    "smoke": dict(mirror_n=2_000, mirror_big_n=200, recorder_n=5_000, lag_s=0.3, outage_s=0.3, memory_n=2_000),
}
TIMEOUT_S = 300.0


class _Servers:
    """Fresh redis-servers for one figure; all stopped by :meth:`close`."""

    def __init__(self, bench):
        self.bench = bench
        self.started = []

    def start(self, appendonly=False):
        try:
            server = RedisServer(self.bench.path("redis-remote"), appendonly=appendonly).start()
        except RedisUnavailable as exc:
            from bench_peers import PeerUnavailable

            raise PeerUnavailable(str(exc)) from exc
        self.started.append(server)
        return server

    def close(self):
        for server in self.started:
            server.stop()


def _recorded_log(bench, n, payload):
    path = bench.path("remote-log")
    with streamlog.StreamBuffer(CountingSource(n) if payload is PAYLOAD else _PayloadSource(n, payload),
                                log=path) as buf:
        buf.wait()
    return path


class _PayloadSource(CountingSource):
    def __init__(self, n, payload):
        super().__init__(n)
        self.payload = payload

    def read(self):
        i, _ = super().read()
        return (i, self.payload)


def mirror_throughput(servers, bench, n, payload):
    path = _recorded_log(bench, n, payload)
    server = servers.start()
    mirror = streamlog.Mirror(path, server.url, RIG, exit_when_done=True)
    t0 = time.perf_counter()
    mirror.run()
    elapsed = time.perf_counter() - t0
    client = server.client()
    xlen = client.xlen(layout.session_keys(RIG, 1, "main")[1])
    if xlen != n or mirror.stats["duplicates"]:
        raise RuntimeError(f"mirrored {xlen} of {n} records, {mirror.stats['duplicates']} duplicates")
    return {"records_per_s": n / elapsed, "mb_per_s": n * len(payload) / elapsed / 1e6}


def raw_xadd_throughput(servers, n, payload, batch=1000):
    server = servers.start()
    client = server.client()
    record = encode_record((0, payload))
    now = str(int(time.time() * 1e6))
    prepared = [(f"{i}-1", {"k": encode_key(i), "t": now, "r": record}) for i in range(n)]
    t0 = time.perf_counter()
    for first in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        for entry_id, fields in prepared[first:first + batch]:
            pipe.xadd("raw", fields, id=entry_id)
        pipe.execute()
    elapsed = time.perf_counter() - t0
    return {"records_per_s": n / elapsed, "mb_per_s": n * len(payload) / elapsed / 1e6}


def recorder_throughput(servers, bench, n, mirror_in):
    url = None
    if mirror_in is not None:
        url = servers.start().url + f"?name={RIG}"
    source = CountingSource(n)
    buf = streamlog.StreamBuffer(source, log=bench.path("remote-recorder"), mirror=url,
                                 mirror_in=mirror_in or "process")
    t0 = time.perf_counter()
    buf.start()
    wait_until_exhausted(source, buf, TIMEOUT_S)
    buf.stop()
    elapsed = time.perf_counter() - t0
    buf.close()
    if url is not None:  # let the mirror finish before the next row (a child process runs on by itself)
        remote = streamlog.RemoteLog(url)
        _wait(lambda: buf.session.id in remote.session_ids() and remote.session(buf.session.id).status == "closed",
              "the mirror to finish")
        remote.close()
    return {"records_per_s": n / elapsed}


def remote_lag(servers, bench, rate, seconds):
    server = servers.start()
    url = server.url + f"?name={RIG}"
    n = max(10, int(rate * seconds))
    go = threading.Event()
    source = PacedSource(n, rate, time.time, go)
    lags = []
    client = server.client(socket_timeout=None)
    key = layout.session_keys(RIG, 1, "main")[1]

    def listen():
        last = "0-0"
        while len(lags) < n:
            got = client.xread({key: last}, count=1000, block=2000)
            now = time.time()
            if not got:
                continue
            for entry_id, fields in got[0][1]:
                lags.append(now * 1e6 - int(fields[b"t"]))
                last = entry_id

    listener = threading.Thread(target=listen, daemon=True)
    with streamlog.StreamBuffer(source, log=bench.path("remote-lag"), mirror=url) as buf:
        meta = layout.meta_key(RIG, buf.session.id)
        _wait(lambda: client.exists(meta), "the mirror process to start")  # its start-up is not lag
        listener.start()
        go.set()
        wait_until_exhausted(source, buf, TIMEOUT_S)
        buf.stop()
        listener.join(TIMEOUT_S)
    if len(lags) != n:
        raise RuntimeError(f"the listener got {len(lags)} of {n} records")
    values = np.asarray(lags) / 1000.0
    return {"rate": rate, "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "max_ms": float(values.max()), "lost": n - len(lags)}


def outage_catch_up(servers, bench, outage_s, rate=1000):
    server = servers.start(appendonly=True)
    url = server.url + f"?name={RIG}"
    n = int(rate * (outage_s + 3.0))
    go = threading.Event()
    source = PacedSource(n, rate, time.time, go)
    key = layout.session_keys(RIG, 1, "main")[1]
    path = bench.path("remote-outage")
    with streamlog.StreamBuffer(source, log=path, mirror=url) as buf:
        go.set()
        _wait(lambda: buf.committed >= rate, "a second of records")
        server.kill()
        t_kill = time.monotonic()
        while time.monotonic() < t_kill + outage_s:
            time.sleep(0.05)
        server.start()
        t_up = time.monotonic()
        client = server.client()
        _wait(lambda: client.xlen(key) >= buf.committed, "zero lag")
        catch_up = time.monotonic() - t_up
        wait_until_exhausted(source, buf, TIMEOUT_S)
        buf.stop()
    remote = streamlog.RemoteLog(url)
    _wait(lambda: remote.session(1).status == "closed", "the mirror to finish")
    local = [r[0] for r in streamlog.Log(path).session(1).irange()]
    mirrored = [r[0] for r in remote.session(1).irange()]
    xlen = client.xlen(key)
    return {"outage_s": outage_s, "catch_up_s": catch_up, "records": len(local),
            "lost": len(set(local) - set(mirrored)), "duplicates": xlen - len(set(mirrored)),
            "equal": float(local == mirrored)}


def memory_per_record(servers, bench, n):
    path = _recorded_log(bench, n, PAYLOAD)
    mirrored = servers.start()
    before = mirrored.client().info("memory")["used_memory"]
    streamlog.Mirror(path, mirrored.url, RIG, exit_when_done=True).run()
    mirror_bytes = (mirrored.client().info("memory")["used_memory"] - before) / n
    raw = servers.start()
    client = raw.client()
    before = client.info("memory")["used_memory"]
    for first in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(first, min(n, first + 1000)):
            pipe.xadd("raw", {"v": PAYLOAD}, id=f"0-{i + 1}")
        pipe.execute()
    raw_bytes = (client.info("memory")["used_memory"] - before) / n
    return {"mirror_bytes": mirror_bytes, "raw_bytes": raw_bytes, "ratio": mirror_bytes / raw_bytes}


def _wait(predicate, what, timeout=TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def fig_mirror(bench, Figure, mode):
    sizes = SIZES[mode]
    n, big_n = sizes["mirror_n"], sizes["mirror_big_n"]
    fig = Figure("mirror", "8. Redis Streams mirror: throughput, recorder cost, lag, outage catch-up, memory",
                 {**sizes, "sessions": 1},
                 [("records_per_s", "records/s", "rate", "higher"), ("mb_per_s", "MB/s", "float", "higher"),
                  ("of_off", "x mirror off", "float", None), ("p50_ms", "p50 ms", "ms", None), ("p99_ms", "p99 ms", "ms", None),
                  ("catch_up_s", "catch-up s", "float", None), ("lost", "lost", "int", None),
                  ("duplicates", "dup", "int", None), ("mirror_bytes", "B/record", "float", "lower"),
                  ("raw_bytes", "raw B/record", "float", None)])
    servers = _Servers(bench)
    big = bytes(range(256)) * 16
    try:
        fig.run("streamlog", "streamlog mirror, 64 B records", lambda: mirror_throughput(servers, bench, n, PAYLOAD))
        fig.run("redis", "raw pipelined XADD, 64 B records", lambda: raw_xadd_throughput(servers, n, PAYLOAD),
                vs="streamlog mirror, 64 B records")
        fig.run("streamlog", "streamlog mirror, 4 KiB records",
                lambda: mirror_throughput(servers, bench, big_n, big))
        fig.run("redis", "raw pipelined XADD, 4 KiB records", lambda: raw_xadd_throughput(servers, big_n, big),
                vs="streamlog mirror, 4 KiB records")
        rn = sizes["recorder_n"]
        off = {}

        def recorder(mirror_in):
            row = recorder_throughput(servers, bench, rn, mirror_in)
            if mirror_in is None:
                off.update(row)
            elif off:
                row["of_off"] = row["records_per_s"] / off["records_per_s"]
            return row

        fig.run("streamlog", "recorder, mirror off", lambda: recorder(None))
        fig.run("streamlog", "recorder, mirror in a process", lambda: recorder("process"))
        fig.run("streamlog", "recorder, mirror in a thread", lambda: recorder("thread"))
        for rate in (1000, 10000):
            fig.run("streamlog", f"arrival-to-remote lag at {rate:,} records/s",
                    lambda: remote_lag(servers, bench, rate, sizes["lag_s"]))
        fig.run("streamlog", OUTAGE_ROW,
                lambda: outage_catch_up(servers, bench, sizes["outage_s"]))
        fig.run("streamlog", "Redis memory per 64 B record", lambda: memory_per_record(servers, bench,
                                                                                       sizes["memory_n"]))
    finally:
        servers.close()
    return fig


OUTAGE_ROW = "catch-up after a Redis outage at 1,000 records/s"
TARGETS = [  # (text, figure, row label, value key, is a ratio, op, limit, unit), as in tools/bench.py
        ("mirror 64 B >= 0.7x raw pipelined XADD", "mirror", "raw pipelined XADD, 64 B records", "records_per_s",
         True, ">=", 0.7, "x"),
        ("mirror 4 KiB >= 0.7x raw pipelined XADD", "mirror", "raw pipelined XADD, 4 KiB records", "records_per_s",
         True, ">=", 0.7, "x"),
        ("recorder with the mirror (process) >= 0.8x without", "mirror", "recorder, mirror in a process",
         "of_off", False, ">=", 0.8, "x"),
        ("arrival-to-remote lag p99 at 1,000/s <= 20 ms", "mirror", "arrival-to-remote lag at 1,000 records/s",
         "p99_ms", False, "<=", 20.0, "ms"),
        ("arrival-to-remote lag p99 at 10,000/s <= 20 ms", "mirror", "arrival-to-remote lag at 10,000 records/s",
         "p99_ms", False, "<=", 20.0, "ms"),
        ("records lost after an outage = 0", "mirror", OUTAGE_ROW, "lost", False, "<=", 0, ""),
        ("records duplicated after an outage = 0", "mirror", OUTAGE_ROW, "duplicates", False, "<=", 0, ""),
]
