"""On-disk formats: a format-1 log (made by the format-1 writer, tests/data)
stays readable, is never written to, and `streamlog upgrade` rewrites it as
format 2 atomically; a damaged format-2 block is a clear error."""

import os
import shutil
import signal
import subprocess
import sys
import time

import lmdb
import numpy as np
import pytest
from click.testing import CliRunner

import streamlog
from streamlog import StreamBuffer, errors
from streamlog.cli import main
from streamlog.records import common
from streamlog.upgrade import PARTIAL_DIR

from helpers import REPO, Counter, run_python

V1_LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "v1-log")
DEADLINE_S = 60


@pytest.fixture
def v1_log(tmp_path):
    path = tmp_path / "old.streamlog"
    shutil.copytree(V1_LOG, path)
    return str(path)


def check_contents(log):
    """What tests/data/make_v1_log.py recorded, read every way."""
    s1, s2, s3 = log.sessions()
    assert [(s.id, s.status, s.count, s.streams) for s in (s1, s2, s3)] == [
        (1, "closed", 300, ["main", "markers"]), (2, "closed", 41, ["main"]), (3, "failed", 10, ["main"])]
    assert s1.range() == [(i, b"payload-%d" % i) for i in range(300)]
    assert s1.range(100, 102) == [(i, b"payload-%d" % i) for i in (100, 101, 102)]
    assert list(s1.irange(297)) == [(i, b"payload-%d" % i) for i in (297, 298, 299)]
    assert (s1.head(), s1.tail(2)) == ((0, b"payload-0"), [(298, b"payload-298"), (299, b"payload-299")])
    assert s1.range_by_time(s1.start_time - 1, time.time()) == s1.range()
    assert s1.range(stream="markers") == [(j * 60.0, f"m{j}", float(j)) for j in range(5)]
    assert (s1.first_key, s1.last_key) == (0, 299)
    reader = s1.reader()
    reader.seek(150)
    assert next(reader) == (150, b"payload-150")
    arrays = s2.range(("a", 3), ("a", 5))
    assert [key for key, _ in arrays] == [("a", 3), ("a", 4), ("a", 5)]
    assert all(np.array_equal(array, np.full(2048, i, dtype=np.int16)) for (_, i), array in arrays)
    last_key, last = s2.tail()
    assert last_key == ("a", 40) and np.array_equal(last, np.arange(9000, dtype=np.int16))
    assert "sensor unplugged at 11" in s3.error
    reader = s3.reader()
    assert [next(reader)[0] for _ in range(10)] == list(range(1, 11))
    with pytest.raises(errors.SourceFailed, match="sensor unplugged at 11"):
        next(reader)
    assert log.verify() == []


def test_a_format_1_log_is_read_as_it_is(v1_log):
    with streamlog.Log(v1_log, readonly=True) as log:
        assert log.format_version == 1 and log.stats()["format_version"] == 1
        check_contents(log)


def test_recording_into_a_format_1_log_is_refused_and_changes_nothing(v1_log):
    with open(os.path.join(v1_log, "data.mdb"), "rb") as f:
        before = f.read()
    with pytest.raises(errors.FormatVersionError, match=f"run `streamlog upgrade {v1_log}`"):
        StreamBuffer(Counter(5), log=v1_log).start()
    with streamlog.Log(v1_log) as log:
        with pytest.raises(errors.FormatVersionError, match="reads but does not write"):
            log.prune(streamlog.Retention(max_sessions=1))
        check_contents(log)
    result = subprocess.run([sys.executable, "-m", "streamlog", "record", "synth", v1_log, "--duration", "1"],
                            capture_output=True, text=True, timeout=DEADLINE_S, cwd=REPO)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "streamlog upgrade" in result.stderr
    with open(os.path.join(v1_log, "data.mdb"), "rb") as f:
        assert f.read() == before


def test_upgrade_rewrites_a_format_1_log_as_format_2_with_everything_kept(v1_log):
    result = subprocess.run([sys.executable, "-m", "streamlog", "upgrade", v1_log], capture_output=True, text=True,
                            timeout=DEADLINE_S, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert f"Rewrote 356 record(s) of {v1_log} from format version 1 to 2." in result.stdout
    assert "upgrading" in result.stderr
    assert not os.path.exists(os.path.join(v1_log, PARTIAL_DIR))
    with streamlog.Log(v1_log) as log:
        assert log.format_version == 2
        check_contents(log)
        with StreamBuffer(Counter(5), log=log) as buf:
            buf.wait(DEADLINE_S)
        assert [(s.id, s.count) for s in log.sessions()][-1] == (4, 5)
    again = CliRunner().invoke(main, ["upgrade", v1_log])
    assert again.exit_code == 0 and "already format version 2; nothing to do" in again.output


KILLED_HALF_WAY = """
import os, signal, sys
from streamlog.upgrade import upgrade
upgrade(sys.argv[1], progress=lambda n: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_an_upgrade_killed_half_way_leaves_the_format_1_log_as_it_was(v1_log):
    with open(os.path.join(v1_log, "data.mdb"), "rb") as f:
        before = f.read()
    result = run_python(KILLED_HALF_WAY, v1_log, check=False, timeout=DEADLINE_S)
    assert result.returncode == -signal.SIGKILL
    assert os.path.exists(os.path.join(v1_log, PARTIAL_DIR, "data.mdb"))  # killed while it was building
    with open(os.path.join(v1_log, "data.mdb"), "rb") as f:
        assert f.read() == before
    with streamlog.Log(v1_log, readonly=True) as log:
        assert log.format_version == 1
        check_contents(log)
    assert CliRunner().invoke(main, ["upgrade", v1_log]).exit_code == 0
    assert not os.path.exists(os.path.join(v1_log, PARTIAL_DIR))
    with streamlog.Log(v1_log, readonly=True) as log:
        assert log.format_version == 2
        check_contents(log)


def test_upgrade_refuses_a_log_another_process_has_open(v1_log):
    reader = subprocess.Popen([sys.executable, "-c", "import sys, streamlog\n"
                               "log = streamlog.Log(sys.argv[1], readonly=True); log.sessions()\n"
                               "print('open', flush=True); sys.stdin.read()", v1_log],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=REPO))
    try:
        assert reader.stdout.readline() == "open\n"
        result = CliRunner().invoke(main, ["upgrade", v1_log])
        assert result.exit_code == 1 and "is open in another process" in result.output
    finally:
        reader.communicate("", timeout=DEADLINE_S)
    with streamlog.Log(v1_log, readonly=True) as log:
        assert log.format_version == 1


def test_a_damaged_block_is_an_error_naming_session_and_keys(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    with StreamBuffer(Counter(3000), log=path, commit_records=1000, commit_interval_s=3600) as buf:
        buf.wait(DEADLINE_S)
    env = lmdb.open(path, max_dbs=128)
    db = env.open_db(b"r:main")
    with env.begin(write=True) as txn:
        keys = [key for key, _ in txn.cursor(db) if common.is_head_key(key)]
        victim = keys[1]  # the second of three blocks (one per commit of 1,000): records 1001 .. 2000
        value = bytearray(txn.get(victim, db=db))
        value[-1] ^= 0x40
        txn.put(victim, bytes(value), db=db)
    env.close()
    assert [common.seq_of(key) for key in keys] == [999, 1999, 2999]
    with streamlog.Log(path, readonly=True) as log:
        session = log.session(1)
        assert session.range(1, 999) == [(i, b"payload") for i in range(1, 1000)]
        assert session.range(2001, 3000) == [(i, b"payload") for i in range(2001, 3001)]
        with pytest.raises(errors.CorruptRecord, match=r"the block of session 1 holding the records after key 1000 "
                                                       r"up to key 2000 \(seq 1999\) is damaged: its checksum"):
            session.range()
        with pytest.raises(errors.CorruptRecord, match="up to key 2000"):
            log.verify()
    result = CliRunner().invoke(main, ["range", path, "1000", "1100"])
    assert result.exit_code == 1 and "up to key 2000" in result.output


@pytest.mark.parametrize("payload, per_block", [
    (np.arange(2048, dtype=np.int16).reshape(1024, 2), 32),  # 4 KiB audio buffers: blocks of about 128 KiB
    (b"x" * 2000, 32),  # 2 KiB: 64 KiB
    (b"x" * 1000, 33),  # records up to 1 KiB: blocks of about 32 KiB, as before
], ids=["4KiB-audio", "2KiB", "1KiB"])
def test_blocks_hold_about_32_kib_of_records_or_32_records_above_1_kib(tmp_path, payload, per_block):
    path = str(tmp_path / "rec.streamlog")
    n = 3 * per_block + 5
    with StreamBuffer(Counter(n, payload=payload), log=path, commit_records=n, commit_interval_s=3600) as buf:
        buf.wait(DEADLINE_S)
    env = lmdb.open(path, max_dbs=128, readonly=True, lock=False)
    with env.begin() as txn:
        keys = [key for key, _ in txn.cursor(env.open_db(b"r:main", txn=txn)) if common.is_head_key(key)]
    env.close()
    assert [common.seq_of(key) for key in keys] == [per_block - 1, 2 * per_block - 1, 3 * per_block - 1, n - 1]
    with streamlog.Log(path, readonly=True) as log:
        records = log.session(1).range()
        assert [key for key, _ in records] == list(range(1, n + 1))
        assert all(np.array_equal(data, payload) for _, data in records)
