"""tools/bench.py runs every figure end to end and reports every row.

The benchmark runs once per test session at ``--smoke`` size (tiny inputs,
a few seconds; ``--quick`` takes close to a minute) in a real subprocess with
real LMDB files, a real redis-server and real stream2py.  No timing is
asserted: only that it completes, that every row is there (a peer may be
skipped only with a reason) and that streamlog lost no record.
"""

import json
import os
import subprocess
import sys

import pytest

from helpers import TOOLS, load_tool

BENCH = os.path.join(TOOLS, "bench.py")

EXPECTED_ROWS = {
    "ingest": ["streamlog, read() per record", "streamlog, ReadBatch(1000)", "raw py-lmdb, sync (fsync per commit)",
               "raw py-lmdb, no sync", "sqlite3 WAL, synchronous=FULL", "Redis Streams, pipelined XADD",
               "stream2py, default maxlen", "stream2py, maxlen=N (lossless)"],
    "chunks": ["streamlog, one buffer per read()", "raw py-lmdb, sync", "raw py-lmdb, no sync",
               "sqlite3 WAL, synchronous=FULL", "Redis Streams, pipelined XADD"],
    "latency": ["streamlog, reader.read(blocking=True)", "stream2py, read(blocking=True), maxlen=10,000",
                "Redis Streams, XADD -> XREAD BLOCK"],
    "range": ["streamlog, session.range / irange", "raw py-lmdb, cursor", "sqlite3 WAL, SELECT ... ORDER BY k",
              "Redis Streams, XRANGE"],
    "open": ["streamlog, Log(path)", "raw py-lmdb, lmdb.open", "sqlite3 WAL, connect", "Redis Streams"],
    "follow": ["streamlog, session.reader() in a subprocess",
               "streamlog, session.reader() in a subprocess, commits every 0.5 ms",
               "streamlog, session.reader() in a subprocess, commits every 0.5 ms, no fsync",
               "Redis Streams, XREAD BLOCK in a subprocess"],
    "followers": ["streamlog, a follower of a live session recording nothing",
                  "Redis Streams, XREAD BLOCK on an idle stream", "streamlog, recorder alone",
                  "streamlog, recorder with 4 followers in other processes"],
    "mirror": ["streamlog mirror, 64 B records", "raw pipelined XADD, 64 B records", "streamlog mirror, 4 KiB records",
               "raw pipelined XADD, 4 KiB records", "recorder, mirror off", "recorder, mirror in a process",
               "recorder, mirror in a thread", "arrival-to-remote lag at 1,000 records/s",
               "arrival-to-remote lag at 10,000 records/s", "catch-up after a Redis outage at 1,000 records/s",
               "Redis memory per 64 B record"],
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, BENCH, "--smoke", "--json", "--dir", str(scratch)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert os.listdir(scratch) == [], "bench.py left scratch files behind"
    return json.loads(proc.stdout)


def test_every_figure_ran_without_failures(report):
    names = [f["figure"] for f in report["figures"]]
    assert names == ["ingest", "chunks", "latency", "range", "open", "follow", "memory", "mirror", "analysis",
                     "followers"]
    for fig in report["figures"]:
        assert fig["failed"] == [], fig["figure"]


@pytest.mark.parametrize("figure", sorted(EXPECTED_ROWS))
def test_every_row_is_reported_or_skipped_with_a_reason(report, figure):
    fig = next(f for f in report["figures"] if f["figure"] == figure)
    measured = {row["label"] for row in fig["rows"]}
    skipped = {s["label"]: s["reason"] for s in fig["skipped"]}
    for label in EXPECTED_ROWS[figure]:
        if label.startswith("streamlog"):
            assert label in measured, f"{figure}: streamlog row {label!r} missing"
        else:
            assert label in measured or skipped.get(label), f"{figure}: {label!r} neither measured nor skipped"
    for row in fig["rows"]:
        for key, value in row["values"].items():
            assert value is None or value >= 0, (figure, row["label"], key)


def test_streamlog_loses_nothing(report):
    ingest = next(f for f in report["figures"] if f["figure"] == "ingest")
    n = ingest["params"]["n"]
    for row in ingest["rows"]:
        if row["system"] == "streamlog":
            assert row["values"]["lost"] == 0 and row["values"]["misordered"] == 0, row
    lossless = [r for r in ingest["rows"] if r["label"] == "stream2py, maxlen=N (lossless)"]
    for row in lossless:
        assert row["values"]["lost"] == 0, f"stream2py with maxlen={n} lost records"
    for fig in report["figures"]:
        if fig["figure"] in ("latency", "follow"):
            row = next(r for r in fig["rows"] if r["system"] == "streamlog")
            assert row["values"]["lost"] == 0, fig["figure"]


def test_memory_sampled_through_the_recording(report):
    memory = next(f for f in report["figures"] if f["figure"] == "memory")
    counts = [row["values"]["records"] for row in memory["rows"]]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == memory["params"]["n"]
    assert len(counts) == len(memory["params"]["checkpoints"]) + 2


def test_every_target_is_evaluated(report):
    """Each target has a value and a verdict, unless the peer it compares
    with was skipped (not installed here)."""
    bench = load_tool("bench")
    assert len(report["targets"]) == len(bench.TARGETS)
    skipped = {(f["figure"], s["label"]) for f in report["figures"] for s in f["skipped"]}
    for target in report["targets"]:
        if (target["figure"], target["row"]) in skipped:
            assert target["value"] is None and target["passed"] is None
            continue
        assert target["value"] is not None, target["target"]
        assert target["passed"] in (True, False)


def test_table_shows_every_row_and_target(report):
    bench = load_tool("bench")
    text = bench.render(report)
    for fig in report["figures"]:
        assert fig["title"] in text
        for row in fig["rows"]:
            assert row["label"] in text
        for skipped in fig["skipped"]:
            assert skipped["reason"] in text
    for target in report["targets"]:
        assert target["target"] in text
    assert report["machine"]["cpu"] in text


def test_only_rejects_an_unknown_figure():
    proc = subprocess.run([sys.executable, BENCH, "--only", "ingest,nosuch"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "nosuch" in proc.stderr and "ingest" in proc.stderr
