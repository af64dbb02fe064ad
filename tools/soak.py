#!/usr/bin/env python
"""Soak test: a long recording under a byte retention limit with readers
attached; memory, file size and throughput must stay flat.

    python tools/soak.py --minutes 12                  # 64 MiB limit, a sample every 10 s
    python tools/soak.py --minutes 30 --max-bytes 256MiB --interval 30 --rate 50000
    python tools/soak.py --smoke                       # a few seconds (tests/test_load.py)
    python tools/soak.py --minutes 12 --json           # one JSON document at the end

The recorder (in this process) records a counting stream in ReadBatches at
full speed (or ``--rate`` records/s) into a fresh log with
``Retention(max_bytes=...)``.  Attached: two reader threads that keep up
(``read(n)``, ``skip_pruned=True``), one reader thread that reads one record,
stalls for the whole run and then reads on (it must get RecordsPruned with a
missed count), and one follower process (``tools/load.py --follow``).

Every interval it prints: elapsed time, records recorded, throughput in the
interval (per wall-clock second and per CPU second of this process), the
recording process's RSS and anonymous RSS, the size of
``data.mdb``, LMDB's free pages, the records stored, and the lag (records
between cursor and newest record) of the live readers (the larger), the
stalled reader and the follower (as of its last progress line).

Verdict (exit code 0 only if every check passes).  The steady state starts
at the first sample after retention has pruned records and at least 10 %
of the run has passed; its samples are split into a first and a last half.

* RSS flat: the last half's largest RSS <= the first half's largest x 1.10.
* file flat: the same for the size of data.mdb, and it stays within 1.25x
  the limit (what docs/architecture.md promises).
* throughput stable: the coefficient of variation (standard deviation /
  mean) of the steady intervals' throughput <= 0.30, and the last half's
  mean >= 0.80 x the first half's (no downward trend).
* cost per record stable: the same for records per CPU second of this
  process (all its threads), cv <= 0.15 and trend >= 0.90.  Other
  processes on a shared machine move the wall-clock throughput; this
  figure shows whether each record costs more as the run goes on.
* readers: the live readers and the follower read to the last record in
  order; the stalled reader got RecordsPruned with a missed count > 0;
  ``Log.verify()`` finds no problem.  Records the live readers or the
  follower skipped because retention removed them first are reported.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))

import streamlog  # noqa: E402

from bench import exit_on_sigterm, wait_ready  # noqa: E402
from bench_child import _memory_status  # noqa: E402
from bench_sources import BatchCountingSource  # noqa: E402
from load import HeldSource, ReaderThread, start_follower  # noqa: E402

BATCH = 1_000
MAXLEN = 10_000
WARMUP_FRACTION = 0.10
RSS_TOLERANCE = 1.10
FILE_TOLERANCE = 1.10
FILE_LIMIT_FACTOR = 1.25
THROUGHPUT_MAX_CV = 0.30
THROUGHPUT_MIN_TREND = 0.80
COST_MAX_CV = 0.15
COST_MIN_TREND = 0.90
SMOKE = dict(minutes=6 / 60, interval=0.25, max_bytes=2 << 20)
READER_TIMEOUT_S = 60.0
ENDLESS = 10 ** 15           # records of the counting source: more than any run records
COLUMN_WIDTH = 11
COLUMNS = [
    # (key, header, format)
    ("elapsed_s", "elapsed s", "{:,.1f}"),
    ("records", "records", "{:,}"),
    ("records_per_s", "rec/s", "{:,.0f}"),
    ("records_per_cpu_s", "rec/CPU s", "{:,.0f}"),
    ("rss_mb", "RSS MB", "{:,.1f}"),
    ("anon_rss_mb", "anon MB", "{:,.1f}"),
    ("file_mb", "data.mdb MB", "{:,.1f}"),
    ("free_pages", "free pages", "{:,}"),
    ("stored", "stored", "{:,}"),
    ("live_lag", "lag live", "{:,}"),
    ("stalled_lag", "lag stalled", "{:,}"),
    ("follower_lag", "lag follower", "{:,}"),
]


class StalledReader(threading.Thread):
    """Reads the first record, waits for ``wake``, then reads on with
    ``next()`` until the stream raises.  ``served`` counts the records
    served after waking (the read-ahead it had fetched before the stall),
    ``missed`` is RecordsPruned's count, ``error`` anything else raised."""

    def __init__(self, buffer, wake, timeout_s):
        super().__init__(name="soak-stalled-reader", daemon=True)
        self.reader = buffer.mk_reader(timeout=timeout_s)
        self.wake = wake
        self.served = 0
        self.missed = None
        self.error = None

    def run(self):
        try:
            self.reader.next()
            self.wake.wait()
            while True:
                self.reader.next()
                self.served += 1
        except streamlog.errors.RecordsPruned as exc:
            self.missed = exc.missed
        except Exception as exc:  # StopIteration included: reported by the verdict
            self.error = f"{type(exc).__name__}: {exc}"


class FollowerWatch(threading.Thread):
    """Reads a follower process's stdout: keeps its latest progress line
    (``last`` key read) and its final digest."""

    def __init__(self, proc):
        super().__init__(name="soak-follower-watch", daemon=True)
        self.proc = proc
        self.last = None
        self.digest = None

    def run(self):
        for line in self.proc.stdout:
            message = json.loads(line)
            if "progress" in message:
                self.last = message["last"]
            else:
                self.digest = message


def sample(buf, started, previous, live, stalled, follower):
    """One row of the table (a dict keyed like COLUMNS)."""
    now = time.perf_counter()
    cpu = time.process_time()
    records = buf.committed
    memory = _memory_status()
    stats = buf.log.stats()
    newest = records - 1
    return {
        "elapsed_s": now - started,
        "records": records,
        "records_per_s": (records - previous["records"]) / (now - started - previous["elapsed_s"]),
        "cpu_s": cpu,
        "records_per_cpu_s": (records - previous["records"]) / max(cpu - previous["cpu_s"], 1e-9),
        "rss_mb": memory["VmRSS"] / 1e6,
        "anon_rss_mb": memory["RssAnon"] / 1e6,
        "file_mb": stats["bytes_on_disk"] / 1e6,
        "free_pages": stats["free_pages"],
        "stored": stats["records"],
        "live_lag": max(thread.reader.lag for thread in live),
        "stalled_lag": stalled.reader.lag,
        "follower_lag": None if follower.last is None else max(0, newest - follower.last),
    }


def steady_state(samples, run_s):
    """The samples after warm-up: from the first one with records pruned and
    at least WARMUP_FRACTION of the run passed."""
    return [s for s in samples if s["stored"] < s["records"] and s["elapsed_s"] >= WARMUP_FRACTION * run_s]


def flatness_checks(samples, run_s, max_bytes):
    """[(name, passed, explanation)] for RSS, file size and throughput."""
    steady = steady_state(samples, run_s)
    if len(steady) < 4:
        reason = f"only {len(steady)} sample(s) after warm-up; need 4 (a longer run or a shorter --interval)"
        names = ("rss flat", "file flat", "file within limit", "throughput stable", "cost per record stable")
        return [(name, False, reason) for name in names]
    first, last = steady[:len(steady) // 2], steady[len(steady) // 2:]
    checks = []
    for name, key, tolerance in (("rss flat", "rss_mb", RSS_TOLERANCE), ("file flat", "file_mb", FILE_TOLERANCE)):
        before, after = max(s[key] for s in first), max(s[key] for s in last)
        checks.append((name, after <= before * tolerance,
                       f"last half max {after:,.1f} MB vs first half max {before:,.1f} MB "
                       f"(x{after / before:.3f}, limit x{tolerance:.2f})"))
    file_max = max(s["file_mb"] for s in steady)
    limit_mb = FILE_LIMIT_FACTOR * max_bytes / 1e6
    checks.append(("file within limit", file_max <= limit_mb,
                   f"data.mdb at most {file_max:,.1f} MB; {FILE_LIMIT_FACTOR}x max_bytes = {limit_mb:,.1f} MB"))
    for name, key, unit, max_cv, min_trend in (
            ("throughput stable", "records_per_s", "rec/s", THROUGHPUT_MAX_CV, THROUGHPUT_MIN_TREND),
            ("cost per record stable", "records_per_cpu_s", "rec/CPU s", COST_MAX_CV, COST_MIN_TREND)):
        mean, cv, trend = stability([s[key] for s in first], [s[key] for s in last])
        checks.append((name, cv <= max_cv and trend >= min_trend,
                       f"mean {mean:,.0f} {unit} over {len(steady)} intervals, cv {cv:.3f} (limit {max_cv}), "
                       f"last/first half mean {trend:.3f} (limit {min_trend})"))
    return checks


def stability(first, last):
    """``(mean, coefficient of variation, last half's mean / first half's)``
    of the values ``first + last``."""
    values = first + last
    mean = statistics.fmean(values)
    cv = statistics.pstdev(values) / mean if mean else float("inf")
    first_mean = statistics.fmean(first)
    return mean, cv, statistics.fmean(last) / first_mean if first_mean else 0.0


def reader_checks(total, live, stalled, follower, follower_error, problems):
    """[(name, passed, explanation)] for the readers and the log."""
    checks = []
    for thread in live:
        d = thread.digest
        ok = thread.error is None and d.misordered == 0 and d.last == total - 1
        checks.append((f"live reader {thread.label}", ok,
                       f"{d.count:,} records, last key {d.last}, misordered {d.misordered}, "
                       f"skipped (pruned first) {d.skipped:,}, largest lag {thread.max_lag:,}"
                       + (f", error {thread.error}" if thread.error else "")))
    checks.append(("stalled reader", stalled.missed is not None and stalled.missed > 0,
                   f"served {stalled.served:,} read-ahead records after waking, then "
                   + (f"RecordsPruned(missed={stalled.missed:,})" if stalled.missed is not None
                      else f"no RecordsPruned: {stalled.error}")))
    d = follower.digest
    if d is None:
        checks.append(("follower", False, f"no digest: {follower_error}"))
    else:
        checks.append(("follower", d["misordered"] == 0 and d["last"] == total - 1,
                       f"{d['count']:,} records, last key {d['last']}, misordered {d['misordered']}, "
                       f"skipped (pruned first) {d['skipped']:,}"))
    checks.append(("log verify", not problems, "no problems" if not problems else "; ".join(problems[:5])))
    return checks


def render_header():
    return " ".join(header.rjust(max(len(header), COLUMN_WIDTH)) for _, header, _ in COLUMNS)


def render_row(row):
    return " ".join(("-" if row[key] is None else fmt.format(row[key])).rjust(max(len(header), COLUMN_WIDTH))
                    for key, header, fmt in COLUMNS)


def parse_size(text):
    """Bytes from ``123``, ``64MiB``, ``1.5GiB``, ``500MB``."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmg]i?b?)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 67108864, 64MiB, 500MB)")
    number, unit = float(match.group(1)), (match.group(2) or "").lower().rstrip("b")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}[unit]
    return int(number * scale)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Record for a long time under a byte retention limit with readers "
                                            "attached; check that RSS, file size and throughput stay flat.")
    p.add_argument("--minutes", type=float, help="how long to record (required unless --smoke)")
    p.add_argument("--max-bytes", type=parse_size, help="Retention(max_bytes=...) (default 64MiB; --smoke: 2MiB)")
    p.add_argument("--interval", type=float, help="seconds between samples (default 10; --smoke: 0.25)")
    p.add_argument("--rate", type=float, help="records/s to record (default: as fast as possible)")
    p.add_argument("--smoke", action="store_true", help="a run of a few seconds that checks the tool works")
    p.add_argument("--json", action="store_true", help="print one JSON document at the end instead of the table")
    p.add_argument("--dir", help="directory for the scratch log (default: the system temp dir)")
    args = p.parse_args(argv)
    defaults = SMOKE if args.smoke else dict(minutes=None, interval=10.0, max_bytes=64 << 20)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.minutes is None:
        p.error("--minutes is required (or --smoke)")
    if not args.minutes > 0:
        p.error(f"--minutes must be positive, not {args.minutes}")
    if not args.interval > 0:
        p.error(f"--interval must be positive, not {args.interval}")
    if args.rate is not None and not args.rate > 0:
        p.error(f"--rate must be positive, not {args.rate}")
    if args.max_bytes < 1 << 20:
        p.error(f"--max-bytes must be at least 1MiB, not {args.max_bytes}")
    if args.dir is not None and not os.path.isdir(args.dir):
        p.error(f"--dir: {args.dir!r} is not a directory")
    return args


def soak(path, run_s, interval_s, max_bytes, rate, emit):
    """Record into a new log at ``path`` for ``run_s`` seconds; ``emit(line)``
    gets the table as it grows.  Returns ``(samples, checks, session status)``,
    checks as ``[(name, passed, explanation)]``."""
    go, wake = threading.Event(), threading.Event()
    source = HeldSource(BatchCountingSource(ENDLESS, BATCH), go, rate)
    buf = streamlog.StreamBuffer(source, log=path, maxlen=MAXLEN, retention=streamlog.Retention(max_bytes=max_bytes))
    buf.start()
    proc = None
    try:
        proc = start_follower(path, buf.session.id, per_read=1000, skip_pruned=True,
                              progress_s=min(1.0, interval_s / 2))
        wait_ready(proc, READER_TIMEOUT_S)
        follower = FollowerWatch(proc)
        follower.start()
        live = [ReaderThread(buf, name, per_read, 0, READER_TIMEOUT_S, skip_pruned=True)
                for name, per_read in (("read(1000)", 1000), ("read(100)", 100))]
        stalled = StalledReader(buf, wake, READER_TIMEOUT_S)
        for thread in live + [stalled]:
            thread.start()
        emit(render_header())
        go.set()
        started = time.perf_counter()
        samples, previous, ended_early = [], {"records": 0, "elapsed_s": 0.0, "cpu_s": time.process_time()}, False
        for i in range(1, int(run_s / interval_s) + 1):
            time.sleep(max(0.0, started + i * interval_s - time.perf_counter()))
            if not buf.is_running:
                ended_early = True
                break
            previous = sample(buf, started, previous, live, stalled, follower)
            samples.append(previous)
            emit(render_row(previous))
        wake.set()
        stalled.join(READER_TIMEOUT_S)
        buf.stop()
        total = buf.committed
        for thread in live:
            thread.join(READER_TIMEOUT_S)
        proc.wait(READER_TIMEOUT_S)
        follower.join(READER_TIMEOUT_S)
        follower_error = None if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.read()[-2000:]}"
        problems = buf.log.verify()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        buf.close()
    checks = flatness_checks(samples, run_s, max_bytes) + reader_checks(total, live, stalled, follower,
                                                                        follower_error, problems)
    if ended_early:
        checks.append(("recording", False, f"ended before the run's end: {buf.session.error}"))
    return samples, checks, buf.session.status


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    run_s = args.minutes * 60
    workdir = tempfile.mkdtemp(prefix="streamlog-soak-", dir=args.dir)
    load_before = os.getloadavg()

    def emit(line):
        if not args.json:
            print(line, flush=True)

    emit(f"streamlog soak: {run_s:,.0f} s, Retention(max_bytes={args.max_bytes:,}), "
         f"{'full speed' if args.rate is None else f'{args.rate:,.0f} records/s'}, ReadBatch({BATCH}), "
         f"maxlen={MAXLEN:,}, sample every {args.interval:g} s; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
         f"{os.cpu_count()} cores, load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    try:
        samples, checks, status = soak(os.path.join(workdir, "soak.streamlog"), run_s, args.interval,
                                       args.max_bytes, args.rate, emit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    passed = all(ok for _, ok, _ in checks)
    if args.json:
        print(json.dumps({"run_s": run_s, "max_bytes": args.max_bytes, "rate": args.rate, "interval_s": args.interval,
                          "load_before": load_before, "load_after": load_after, "session_status": status,
                          "samples": samples,
                          "checks": [{"check": n, "passed": ok, "detail": d} for n, ok, d in checks],
                          "passed": passed}, indent=1))
    else:
        print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
              f"session {status}")
        for name, ok, detail in checks:
            print(f"check {name}: {'PASS' if ok else 'FAIL'}: {detail}")
        failed = [name for name, ok, _ in checks if not ok]
        print(f"verdict: {'PASS' if passed else 'FAIL'} ({len(checks) - len(failed)}/{len(checks)} checks passed"
              + (f"; failed: {', '.join(failed)})" if failed else ")"))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
