#!/usr/bin/env python
"""Load test: the recorder ingests at full speed while reader threads and
follower processes read every record.

    python tools/load.py                  # 2,000,000 records in ReadBatches, 500,000 one per read()
    python tools/load.py --batch-records 200000 --single-records 50000
    python tools/load.py --json

Each size is recorded four times, each into a fresh log: the recorder alone,
with 10 reader threads (``StreamBuffer.mk_reader()`` in the recording
process, some reading record by record with ``next()``, some ``read(n)``,
some starting late so they read from disk, behind the ring), with 4 follower
processes (``Session.reader()`` of the live session, in other processes),
and with both.  The recorder's throughput is the records divided by the time
from the first record handed out to the session being committed and closed.
Every reader and follower keeps a :class:`Digest`; the run fails (exit code
1) unless every one of them saw every record exactly once, in order, with
its payload.

``python tools/load.py --follow PATH SESSION`` is one follower process (used
by this tool, ``tools/soak.py`` and ``tests/test_load.py``): it prints
``ready`` once its reader is open, optional progress lines, and its digest
as the last JSON line when the session ends.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from array import array

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, REPO)

import streamlog  # noqa: E402

from bench import finish_child, wait_ready  # noqa: E402
from bench_sources import PAYLOAD, BatchCountingSource, CountingSource  # noqa: E402

BATCH = 1_000          # records per ReadBatch
MAXLEN = 1_000         # a small ring: readers that fall behind it read from disk
TIMEOUT_S = 600.0      # a run, reader or follower that takes longer has failed
DIGEST_EVERY = 1_000   # next() readers hand records to their digest this many at a time

# How each reader thread reads: (name, records per read() or None for next(),
# fraction of the stream committed before it starts).  Readers beyond the
# plan's length reuse it from the start.
READER_PLAN = [
    ("next", None, 0.0), ("next", None, 0.0), ("next, late", None, 0.5),
    ("read(1)", 1, 0.0), ("read(10)", 10, 0.0), ("read(100)", 100, 0.0), ("read(1000)", 1000, 0.0),
    ("read(4096)", 4096, 0.0), ("read(1000), late", 1000, 0.5), ("read(100), late", 100, 0.9),
]
# How each follower process reads: records per read(), 0 for next().
FOLLOWER_PLAN = [0, 1000, 0, 100]


class Digest:
    """What one reader saw of a counting stream (keys 0, 1, 2, ... each with
    PAYLOAD): how many records, the first key and the highest key read in
    order, how many keys were
    skipped (records missed) and how many came back out of order (a key not
    above the previous one: a repeat or a step back), and a checksum (CRC-32
    of the keys as int64 and CRC-32 of the payloads, each in the order read)."""

    def __init__(self):
        self.count = 0
        self.first = None
        self.last = None
        self.skipped = 0
        self.misordered = 0
        self._key_crc = 0
        self._payload_crc = 0

    def add(self, records):
        """Account for ``records`` (a sequence of ``(key, payload)``), read after the previous ones."""
        if not records:
            return
        keys = [rec[0] for rec in records]
        previous = self.last
        expected = 0 if previous is None else previous + 1
        if keys == list(range(expected, expected + len(keys))):
            previous = keys[-1]
        else:
            for key in keys:
                if previous is not None and key <= previous:
                    self.misordered += 1
                    continue
                self.skipped += key - (0 if previous is None else previous + 1)
                previous = key
        if self.first is None:
            self.first = keys[0]
        self.last = previous
        self.count += len(keys)
        self._key_crc = zlib.crc32(array("q", keys).tobytes(), self._key_crc)
        self._payload_crc = zlib.crc32(b"".join(rec[1] for rec in records), self._payload_crc)

    @property
    def checksum(self):
        return f"{self._key_crc:08x}{self._payload_crc:08x}"

    def to_dict(self):
        return {"count": self.count, "first": self.first, "last": self.last, "skipped": self.skipped,
                "misordered": self.misordered, "checksum": self.checksum}


def expected_checksum(n):
    """The Digest checksum of reading all of a counting stream of ``n`` records."""
    key_crc = payload_crc = 0
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        key_crc = zlib.crc32(array("q", range(start, stop)).tobytes(), key_crc)
        payload_crc = zlib.crc32(PAYLOAD * (stop - start), payload_crc)
    return f"{key_crc:08x}{payload_crc:08x}"


def problems_of(digest, n, checksum):
    """Why ``digest`` (a Digest.to_dict()) is not exactly a counting stream of
    ``n`` records with ``checksum``, as a list of strings (empty: it is)."""
    out = []
    if digest["count"] != n:
        out.append(f"{digest['count']:,} records instead of {n:,}")
    if digest["first"] != 0 or digest["last"] != n - 1:
        out.append(f"keys {digest['first']}..{digest['last']} instead of 0..{n - 1}")
    if digest["skipped"]:
        out.append(f"{digest['skipped']:,} keys skipped")
    if digest["misordered"]:
        out.append(f"{digest['misordered']:,} keys out of order or repeated")
    if digest["checksum"] != checksum:
        out.append(f"checksum {digest['checksum']} instead of {checksum}")
    return out


class HeldSource(streamlog.SourceReader):
    """Hands out the records of ``source`` once ``go`` is set (None until
    then), and no faster than ``rate`` records/s when a rate is given.

    ``started`` is ``time.perf_counter()`` when the first record was handed
    out, ``handed`` how many records have been handed out so far.
    """

    sleep_time_on_read_none_s = 0.001

    def __init__(self, source, go, rate=None):
        self.source = source
        self.go = go
        self.rate = rate
        self.started = None
        self.handed = 0

    def open(self):
        self.source.open()

    def close(self):
        self.source.close()

    def key(self, data):
        return self.source.key(data)

    def read(self):
        if self.started is None:
            if not self.go.is_set():
                return None
            self.started = time.perf_counter()
        if self.rate is not None and time.perf_counter() < self.started + self.handed / self.rate:
            return None
        data = self.source.read()
        self.handed += len(data) if type(data) is streamlog.ReadBatch else 1
        return data


def read_into(digest, reader, per_read, on_batch=None):
    """Read ``reader`` to the end of its stream into ``digest``: with
    ``next()`` when ``per_read`` is None, else with blocking ``read(per_read)``.
    ``on_batch()`` is called after each read (``read``) or each
    DIGEST_EVERY records (``next``).  Returns at the end of the stream, or
    when the reader's timeout passes without a record; RecordsPruned and
    SourceFailed propagate."""
    if per_read is None:
        batch = []
        for rec in reader:
            batch.append(rec)
            if len(batch) == DIGEST_EVERY:
                digest.add(batch)
                batch = []
                if on_batch is not None:
                    on_batch()
        digest.add(batch)
    else:
        while True:
            recs = reader.read(per_read, blocking=True, ignore_no_item_found=True)
            if recs is None:
                return
            digest.add(recs)
            if on_batch is not None:
                on_batch()


class ReaderThread(threading.Thread):
    """One reader of a live StreamBuffer in its own thread: waits until
    ``start_after`` records are committed, then reads everything into
    ``digest``, noting the largest lag seen (records between its cursor and
    the newest record) and any error it ended with.  ``reader_options`` go
    to ``buffer.mk_reader()`` (e.g. ``skip_pruned=True``)."""

    def __init__(self, buffer, name, per_read, start_after, timeout_s, **reader_options):
        super().__init__(name=f"load-reader {name}", daemon=True)
        self.label = name
        self.buffer = buffer
        self.reader = buffer.mk_reader(timeout=timeout_s, **reader_options)
        self.per_read = per_read
        self.start_after = start_after
        self.timeout_s = timeout_s
        self.digest = Digest()
        self.max_lag = 0
        self.error = None
        self.done_at = None

    def run(self):
        try:
            deadline = time.monotonic() + self.timeout_s
            while self.buffer.committed < self.start_after and self.buffer.is_running:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.start_after:,} records not committed within {self.timeout_s} s")
                time.sleep(0.002)
            read_into(self.digest, self.reader, self.per_read, self._note_lag)
        except Exception as exc:  # reported with the reader's results
            self.error = f"{type(exc).__name__}: {exc}"
        self.done_at = time.perf_counter()

    def _note_lag(self):
        lag = self.reader.lag
        if lag > self.max_lag:
            self.max_lag = lag


def start_follower(path, session_id, per_read=0, skip_pruned=False, progress_s=None):
    """Start a follower process of session ``session_id`` of the log at ``path``
    (see ``--follow``); stdout and stderr are text pipes."""
    args = [sys.executable, os.path.abspath(__file__), "--follow", str(path), str(session_id),
            "--per-read", str(per_read)]
    if skip_pruned:
        args.append("--skip-pruned")
    if progress_s is not None:
        args += ["--progress", str(progress_s)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def follow(path, session_id, per_read, skip_pruned, progress_s):
    """The follower process: read the session to its end, print the digest.

    Prints ``ready`` once the reader is open, then (with ``progress_s``) a
    JSON line ``{"progress": count, "last": key}`` at most
    every ``progress_s`` seconds, and finally the digest as a JSON line.
    """
    log = streamlog.Log(path, readonly=True, create=False)
    reader = log.session(session_id).reader(skip_pruned=skip_pruned)
    print("ready", flush=True)
    digest = Digest()
    due = time.monotonic()

    def print_progress():
        nonlocal due
        if time.monotonic() >= due:
            due = time.monotonic() + progress_s
            print(json.dumps({"progress": digest.count, "last": digest.last}), flush=True)

    read_into(digest, reader, per_read or None, print_progress if progress_s is not None else None)
    log.close()
    print(json.dumps(digest.to_dict()), flush=True)


def run_load(path, n, batch, readers, followers, maxlen=MAXLEN, timeout_s=TIMEOUT_S):
    """Record a counting stream of ``n`` records (``batch`` per ReadBatch, or
    one per read() when ``batch`` is None) into a new log at ``path`` with
    ``readers`` reader threads and ``followers`` follower processes attached
    before the first record.

    Returns a dict: ``records_per_s`` (the recorder's), ``recorder_s``,
    ``readers_done_s`` (from the first record until the last reader thread
    finished), ``readers`` and ``followers`` (one dict each with its digest
    and problems), ``problems`` (all of them, with who had them) and the
    readers' largest lag.  Raises RuntimeError if the recording fails or a
    follower cannot start.
    """
    go = threading.Event()
    counting = BatchCountingSource(n, batch) if batch else CountingSource(n)
    source = HeldSource(counting, go)
    buf = streamlog.StreamBuffer(source, log=path, maxlen=maxlen)
    buf.start()
    procs = []
    try:
        for i in range(followers):
            procs.append(start_follower(path, buf.session.id, FOLLOWER_PLAN[i % len(FOLLOWER_PLAN)]))
        for proc in procs:
            wait_ready(proc, timeout_s)
        threads = []
        for i in range(readers):
            name, per_read, fraction = READER_PLAN[i % len(READER_PLAN)]
            threads.append(ReaderThread(buf, f"{i}: {name}", per_read, int(fraction * n), timeout_s))
        for thread in threads:
            thread.start()
        go.set()
        if not buf.wait(timeout_s):
            raise RuntimeError(f"recording of {n:,} records did not end within {timeout_s} s")
        ended = time.perf_counter()
        buf.stop()
        if buf.session.status != "closed" or buf.committed != n:
            raise RuntimeError(f"recording ended {buf.session.status!r} with {buf.committed:,} of {n:,} records "
                               f"committed (error {buf.session.error!r})")
        for thread in threads:
            thread.join(timeout_s)
        follower_digests = [finish_child(proc, timeout_s) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        buf.close()
    checksum = expected_checksum(n)
    result = {"records": n, "batch": batch, "readers": [], "followers": [], "problems": []}
    for thread in threads:
        problems = problems_of(thread.digest.to_dict(), n, checksum)
        if thread.is_alive():
            problems.append(f"still reading {timeout_s} s after the recording ended")
        if thread.error:
            problems.append(thread.error)
        result["readers"].append({"name": thread.label, "digest": thread.digest.to_dict(),
                                  "max_lag": thread.max_lag, "problems": problems})
        result["problems"] += [f"reader {thread.label}: {p}" for p in problems]
    for i, digest in enumerate(follower_digests):
        problems = problems_of(digest, n, checksum)
        result["followers"].append({"digest": digest, "problems": problems})
        result["problems"] += [f"follower {i}: {p}" for p in problems]
    recorder_s = ended - source.started
    done = [t.done_at for t in threads if t.done_at is not None]
    result.update(recorder_s=recorder_s, records_per_s=n / recorder_s,
                  readers_done_s=(max(done) - source.started) if done else None,
                  max_reader_lag=max((t.max_lag for t in threads), default=None),
                  ring_capacity=maxlen + buf.commit_records)
    return result


CONFIGS = [("alone", 0, 0), ("10 readers", 10, 0), ("4 followers", 0, 4), ("10 readers + 4 followers", 10, 4)]


def run_all(workdir, sizes, log=None):
    """Every configuration of CONFIGS for each ``(label, n, batch)`` in
    ``sizes``; returns a list of sections ``{"label", "n", "batch", "rows"}``,
    each row the run_load() result plus ``config`` and ``vs_alone``."""
    sections = []
    for label, n, batch in sizes:
        rows = []
        for config, readers, followers in CONFIGS:
            if log:
                log(f"{label}: {config}")
            path = os.path.join(workdir, f"{len(sections)}-{len(rows)}.streamlog")
            row = run_load(path, n, batch, readers, followers)
            shutil.rmtree(path, ignore_errors=True)
            row["config"] = config
            row["vs_alone"] = row["records_per_s"] / rows[0]["records_per_s"] if rows else 1.0
            rows.append(row)
        sections.append({"label": label, "n": n, "batch": batch, "rows": rows})
    return sections


def render(sections, header):
    lines = list(header)
    for section in sections:
        lines.append("")
        lines.append(f"{section['label']}: {section['n']:,} records")
        table = [["configuration", "recorder records/s", "x alone", "recorder s", "readers done s",
                  "max reader lag", "verified"]]
        for row in section["rows"]:
            seen = len(row["readers"]) + len(row["followers"])
            verified = "-" if not seen else (f"{seen}/{seen} exact" if not row["problems"]
                                             else f"{len(row['problems'])} PROBLEMS")
            table.append([row["config"], f"{row['records_per_s']:,.0f}", f"{row['vs_alone']:.2f}",
                          f"{row['recorder_s']:.2f}",
                          "-" if row["readers_done_s"] is None else f"{row['readers_done_s']:.2f}",
                          "-" if row["max_reader_lag"] is None else f"{row['max_reader_lag']:,}", verified])
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        for cells in table:
            lines.append("  " + "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                                          for i, c in enumerate(cells)))
        for row in section["rows"]:
            for problem in row["problems"]:
                lines.append(f"    PROBLEM ({row['config']}): {problem}")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description="The recorder at full speed with 10 reader threads and 4 follower "
                                            "processes: throughput and a check that every reader saw every record.")
    p.add_argument("--batch-records", type=int, default=2_000_000, metavar="N",
                   help=f"records of the ReadBatch({BATCH}) runs (0 skips them; default 2,000,000)")
    p.add_argument("--single-records", type=int, default=500_000, metavar="N",
                   help="records of the one-record-per-read() runs (0 skips them; default 500,000)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    p.add_argument("--dir", help="directory for the scratch logs (default: the system temp dir)")
    p.add_argument("--follow", nargs=2, metavar=("PATH", "SESSION"),
                   help="(internal) be one follower process of session SESSION of the log at PATH")
    p.add_argument("--per-read", type=int, default=0, help="(--follow) records per read(); 0 reads with next()")
    p.add_argument("--skip-pruned", action="store_true", help="(--follow) skip records pruned by retention")
    p.add_argument("--progress", type=float, metavar="S", help="(--follow) print a progress line every S seconds")
    args = p.parse_args(argv)
    for name in ("batch_records", "single_records", "per_read"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    if args.dir is not None and not os.path.isdir(args.dir):
        p.error(f"--dir: {args.dir!r} is not a directory")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.follow:
        path, session = args.follow
        follow(path, int(session), args.per_read, args.skip_pruned, args.progress)
        return 0
    sizes = []
    if args.batch_records:
        sizes.append((f"ReadBatch({BATCH})", args.batch_records, BATCH))
    if args.single_records:
        sizes.append(("one record per read()", args.single_records, None))
    workdir = tempfile.mkdtemp(prefix="streamlog-load-", dir=args.dir)
    load_before = os.getloadavg()
    try:
        sections = run_all(workdir, sizes, log=lambda msg: print(f"[load {time.strftime('%H:%M:%S')}] {msg}",
                                                                 file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    failed = any(row["problems"] for section in sections for row in section["rows"])
    if args.json:
        print(json.dumps({"sections": sections, "load_before": load_before, "load_after": load_after}, indent=1))
    else:
        print(render(sections, [
            f"streamlog load test, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} cores; "
            f"maxlen={MAXLEN:,}; load average before {load_before[0]:.2f} {load_before[1]:.2f}, "
            f"after {load_after[0]:.2f} {load_after[1]:.2f}",
            "reader threads: " + "; ".join(name for name, _, _ in READER_PLAN)
            + " (late: starts when half / 90% is committed)",
            "followers: Session.reader() in other processes, " + "; ".join(
                "next()" if per_read == 0 else f"read({per_read})" for per_read in FOLLOWER_PLAN),
            "recorder s: first record handed out -> session committed and closed; "
            "x alone: records/s / records/s alone",
        ]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
