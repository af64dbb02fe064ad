"""Load: a recorder ingesting as fast as it can, with 10 reader threads and 4
follower processes attached, loses nothing, and ``tools/soak.py --smoke``
runs end to end and reports its verdict.

The recordings are real (LMDB in ``tmp_path``, real threads, followers in
real subprocesses) and run through ``tools/load.py``'s ``run_load``, the
code the load tool measures with.  No timing is asserted: only counts,
order, payloads and the soak tool's checks that do not depend on speed.
"""

import os
import re
import queue
import subprocess
import sys
import threading
import time

import pytest

from helpers import TOOLS, Counter, Gate, load_tool, start_python
from streamlog import StreamBuffer

SOAK = os.path.join(TOOLS, "soak.py")


load = load_tool("load")


@pytest.mark.parametrize("n, batch", [(200_000, 1_000), (50_000, None)], ids=["ReadBatch(1000)", "one-per-read"])
def test_every_reader_and_follower_sees_every_record_once_in_order(tmp_path, n, batch):
    result = load.run_load(str(tmp_path / "load.streamlog"), n, batch, readers=10, followers=4, timeout_s=120)

    checksum = load.expected_checksum(n)
    digests = [r["digest"] for r in result["readers"]] + [f["digest"] for f in result["followers"]]
    assert len(digests) == 14
    for digest in digests:
        assert (digest["count"], digest["first"], digest["last"]) == (n, 0, n - 1)
        assert (digest["skipped"], digest["misordered"]) == (0, 0)
        assert digest["checksum"] == checksum
    assert result["problems"] == []
    # the late readers started far behind the ring (maxlen + commit_records) and read from disk
    assert result["max_reader_lag"] > result["ring_capacity"]


FOLLOW_AND_COUNT = """
import sys
import streamlog

log = streamlog.Log(sys.argv[1], readonly=True, create=False)
reader = log.session(int(sys.argv[2])).reader()
print("ready", flush=True)
print(sum(1 for _ in reader), flush=True)
"""


def test_a_follower_reads_on_while_the_recorder_grows_the_map(tmp_path):
    n = 12_000  # records of 8 KiB: about 100 MB, past the initial 64 MiB map, so the map grows while followed
    path = str(tmp_path / "grow.streamlog")
    go = threading.Event()
    with StreamBuffer(load.HeldSource(Counter(n, payload=bytes(8192)), go), log=path) as buf:
        follower = start_python(FOLLOW_AND_COUNT, path, buf.session.id)
        try:
            assert follower.stdout.readline() == "ready\n"
            go.set()
            assert buf.wait(60)
            buf.stop()
            out, err = follower.communicate(timeout=30)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.communicate()
    assert (follower.returncode, out) == (0, f"{n}\n"), err


def test_readers_woken_before_their_record_are_woken_again_when_it_comes(tmp_path):
    """The soak found live readers asleep for their whole timeout while records
    poured in: the recorder, preempted between publishing and notifying, woke
    readers that had meanwhile read everything and waited again; they slept on
    and the recorder, seeing them notified, never woke them again.  This test
    makes that early wake-up happen on purpose."""
    items = queue.Queue()
    items.put((1, b"first"))
    with StreamBuffer(Gate(items), log=str(tmp_path / "wake.streamlog")) as buf:
        got = []

        def read_two(reader):
            got.append((reader.next(), reader.next()))

        threads = [threading.Thread(target=read_two, args=(buf.mk_reader(timeout=60),), daemon=True)
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        feed = buf._feed
        deadline = time.monotonic() + 30
        while len(feed._cond._waiters) < 2:  # both read record 1 and sleep waiting for record 2
            assert time.monotonic() < deadline, "the readers never waited for record 2"
            time.sleep(0.005)
        feed.notify()  # the early wake-up: record 2 is not there yet
        while len(feed._cond._waiters) < 2:  # both went back to sleep
            assert time.monotonic() < deadline, "the readers did not wait again"
            time.sleep(0.005)
        items.put((2, b"second"))
        for thread in threads:
            thread.join(15)  # far below the readers' 60 s timeout
        assert not any(thread.is_alive() for thread in threads), "record 2 did not wake the readers"
        assert got == [((1, b"first"), (2, b"second"))] * 2
        items.put(StopIteration)


def test_digest_names_a_lost_a_repeated_and_a_changed_record():
    n = 10
    records = [(i, load.PAYLOAD) for i in range(n)]
    cases = {
        "lost": records[:4] + records[5:],
        "repeated": records[:5] + records[4:],
        "changed": records[:3] + [(3, b"other")] + records[4:],
    }
    found = {}
    for name, seen in cases.items():
        digest = load.Digest()
        digest.add(seen[:6])
        digest.add(seen[6:])
        found[name] = load.problems_of(digest.to_dict(), n, load.expected_checksum(n))
    assert found["lost"] == ["9 records instead of 10", "1 keys skipped", f"checksum {_checksum(cases['lost'])} "
                                                                          f"instead of {load.expected_checksum(n)}"]
    assert found["repeated"][:2] == ["11 records instead of 10", "1 keys out of order or repeated"]
    assert len(found["changed"]) == 1 and found["changed"][0].startswith("checksum ")

    whole = load.Digest()
    whole.add(records)
    assert load.problems_of(whole.to_dict(), n, load.expected_checksum(n)) == []


def _checksum(records):
    digest = load.Digest()
    digest.add(records)
    return digest.checksum


def test_soak_smoke_reports_its_checks_and_a_verdict(tmp_path):
    proc = subprocess.run([sys.executable, SOAK, "--smoke", "--dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    out = proc.stdout
    assert proc.stderr == ""

    rows = [line.split() for line in out.splitlines() if re.match(r"\s+[0-9.]+\s+[0-9,]+\s", line)]
    assert len(rows) >= 10 and all(len(row) == 12 for row in rows)
    records = [int(row[1].replace(",", "")) for row in rows]
    assert records == sorted(records) and records[-1] > 0

    checks = dict(re.findall(r"^check (.+?): (PASS|FAIL): ", out, re.MULTILINE))
    assert set(checks) == {"rss flat", "file flat", "file within limit", "throughput stable", "cost per record stable",
                           "live reader read(1000)", "live reader read(100)", "stalled reader", "follower",
                           "log verify"}
    # what does not depend on the machine's speed must pass
    for name in ("live reader read(1000)", "live reader read(100)", "stalled reader", "follower", "log verify"):
        assert checks[name] == "PASS", out
    missed = int(re.search(r"RecordsPruned\(missed=([0-9,]+)\)", out).group(1).replace(",", ""))
    assert missed > 0

    passed = sum(status == "PASS" for status in checks.values())
    verdict = "PASS" if passed == len(checks) else "FAIL"
    assert out.splitlines()[-1].startswith(f"verdict: {verdict} ({passed}/{len(checks)} checks passed")
    assert proc.returncode == (0 if verdict == "PASS" else 1)
    assert os.listdir(tmp_path) == [], "soak.py left its scratch log behind"


def test_soak_refuses_a_run_without_a_length_or_with_a_tiny_limit():
    for args, message in ((["--interval", "5"], "--minutes is required"),
                          (["--minutes", "1", "--max-bytes", "100KiB"], "--max-bytes must be at least 1MiB"),
                          (["--minutes", "1", "--max-bytes", "lots"], "not a size: 'lots'")):
        proc = subprocess.run([sys.executable, SOAK, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert message in proc.stderr
