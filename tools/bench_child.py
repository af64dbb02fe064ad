"""Subprocess side of the benchmark: ``python tools/bench_child.py ROLE JSON_ARGS``.

Each role prints at most one ``ready`` line (when the parent must wait for
it) and then one JSON line with its measurements on stdout; anything else
goes to stderr.  Roles:

* ``open``: time to open an existing store in this fresh process (imports
  done before the clock starts), then one ``tail`` read.
* ``follow-streamlog`` / ``follow-redis``: follow a live recording made by the
  parent and report, per record, ``time.time_ns()`` at receipt minus the
  ``time.time_ns()`` stamped in the record when the source produced it.
* ``memory``: record into a streamlog log with a bounded ring and sample this
  process's RSS and peak RSS at several record counts.
"""

import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import streamlog  # noqa: E402

from bench_sources import BatchCountingSource, wait_until_exhausted  # noqa: E402


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def role_open(args):
    kind, path = args["kind"], args["path"]
    if kind == "streamlog":
        t0 = time.perf_counter()
        log = streamlog.Log(path, create=False)
        t1 = time.perf_counter()
        log.session(-1).tail(1)
        t2 = time.perf_counter()
        log.close()
    elif kind == "lmdb":
        from bench_peers import RawLmdb

        t0 = time.perf_counter()
        store = RawLmdb(path)
        t1 = time.perf_counter()
        store.tail()
        t2 = time.perf_counter()
        store.close()
    elif kind == "sqlite":
        from bench_peers import SqliteWal

        t0 = time.perf_counter()
        store = SqliteWal(path)
        t1 = time.perf_counter()
        store.tail()
        t2 = time.perf_counter()
        store.close()
    else:
        raise SystemExit(f"open: unknown kind {kind!r} (streamlog, lmdb or sqlite)")
    emit({"open_s": t1 - t0, "open_and_tail_s": t2 - t0})


def role_follow_streamlog(args):
    path, n, timeout = args["path"], args["n"], args["timeout_s"]
    log = streamlog.Log(path, readonly=True, create=False)
    deadline = time.monotonic() + timeout
    session = log.session(-1)
    while session.status != "live":
        if time.monotonic() > deadline:
            raise SystemExit(f"follow-streamlog: no live session in {path} within {timeout} s")
        time.sleep(0.01)
        session = log.session(-1)
    reader = session.reader()
    print("ready", flush=True)
    latencies = []
    while len(latencies) < n:
        rec = reader.read(blocking=True, timeout=timeout)
        latencies.append(time.time_ns() - rec[1])
    log.close()
    emit({"latencies_ns": latencies})


def role_follow_redis(args):
    import redis

    client = redis.Redis(host="127.0.0.1", port=args["port"])
    name, n, timeout = args["stream"], args["n"], args["timeout_s"]
    last_id = "0-0"
    print("ready", flush=True)
    latencies = []
    while len(latencies) < n:
        reply = client.xread({name: last_id}, block=int(timeout * 1000), count=1000)
        now = time.time_ns()
        if not reply:
            raise SystemExit(f"follow-redis: nothing on stream {name!r} within {timeout} s")
        for eid, fields in reply[0][1]:
            latencies.append(now - int(fields[b"t"]))
            last_id = eid
    client.close()
    emit({"latencies_ns": latencies})


TIMEOUT_MARGIN_S = 30.0


def _cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def role_idle_follow_streamlog(args):
    """Follow the live session of ``path`` while nothing is recorded for
    ``idle_s``; report this process's CPU seconds (getrusage) over that time."""
    log = streamlog.Log(args["path"], readonly=True, create=False)
    reader = log.session(-1).reader()
    print("ready", flush=True)
    cpu0, t0 = _cpu_s(), time.monotonic()
    got = reader.read(blocking=True, timeout=args["idle_s"], ignore_no_item_found=True)
    emit({"cpu_s": _cpu_s() - cpu0, "wall_s": time.monotonic() - t0, "records": 0 if got is None else 1})


def role_idle_follow_redis(args):
    import redis

    client = redis.Redis(host="127.0.0.1", port=args["port"], socket_timeout=args["idle_s"] + TIMEOUT_MARGIN_S)
    client.ping()
    print("ready", flush=True)
    cpu0, t0 = _cpu_s(), time.monotonic()
    reply = client.xread({args["stream"]: "$"}, block=int(args["idle_s"] * 1000), count=1)
    emit({"cpu_s": _cpu_s() - cpu0, "wall_s": time.monotonic() - t0, "records": len(reply)})


def role_drain_streamlog(args):
    """Follow the newest session of ``path`` to its end; report how many records came."""
    log = streamlog.Log(args["path"], readonly=True, create=False)
    reader = log.session(-1).reader()
    print("ready", flush=True)
    received = 0
    while True:
        batch = reader.read(1000, blocking=True, timeout=args["timeout_s"], ignore_no_item_found=True)
        if not batch:
            break
        received += len(batch)
    emit({"received": received})


def _memory_status():
    """VmRSS, VmHWM and RssAnon of this process in bytes, from /proc/self/status.

    VmHWM is the peak RSS of this process image (getrusage's ru_maxrss is
    not used: Linux carries it over from the parent across fork+exec).
    RssAnon leaves out file pages, i.e. the LMDB map's pages that reads and
    writes bring into the page cache.
    """
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon"):
                values[name] = int(rest.split()[0]) * 1024
    return values


def role_memory(args):
    path, n, maxlen, checkpoints = args["path"], args["n"], args["maxlen"], sorted(args["checkpoints"])
    samples = []

    def sample(count):
        status = _memory_status()
        samples.append({"records": count, "rss_bytes": status["VmRSS"], "peak_rss_bytes": status["VmHWM"],
                        "anon_rss_bytes": status["RssAnon"]})

    pending = list(checkpoints)

    def on_progress(count):
        while pending and count >= pending[0]:
            pending.pop(0)
            sample(count)

    sample(0)
    source = BatchCountingSource(n, args["batch"], on_progress=on_progress)
    buf = streamlog.StreamBuffer(source, maxlen=maxlen, log=path)
    with buf:
        wait_until_exhausted(source, buf, timeout_s=3600)
    sample(n)
    samples[-1]["after_stop"] = True
    emit({"samples": samples})


ROLES = {
    "open": role_open,
    "follow-streamlog": role_follow_streamlog,
    "follow-redis": role_follow_redis,
    "memory": role_memory,
    "idle-follow-streamlog": role_idle_follow_streamlog,
    "idle-follow-redis": role_idle_follow_redis,
    "drain-streamlog": role_drain_streamlog,
}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ROLES:
        raise SystemExit(f"usage: bench_child.py {{{','.join(ROLES)}}} JSON_ARGS")
    ROLES[sys.argv[1]](json.loads(sys.argv[2]))
