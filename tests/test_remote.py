"""The Redis mirror and RemoteLog against a real redis-server each test starts
on a free 127.0.0.1 port (see redis_helpers); faults are real: the server is
down, SIGKILLed and restarted on its AOF, the mirror process is SIGKILLed."""

import functools
import json
import os
import queue
import signal
import threading
import time

import numpy as np
import pytest

import streamlog
import helpers
from helpers import Counter, Gate, start_python
from redis_helpers import redis_aof_server, redis_cluster, redis_server, redis_tool  # noqa: F401
from streamlog import errors
from streamlog.remote import layout

DEADLINE_S = 60
wait_until = functools.partial(helpers.wait_until, timeout=DEADLINE_S)


def record(path, n, payload=b"payload", **kwargs):
    with streamlog.StreamBuffer(Counter(n, payload=payload), log=path, **kwargs) as buf:
        buf.wait()
    return buf.session.id


class MirrorThread:
    """A Mirror running in a thread of the test."""

    def __init__(self, log, url, name="rig1", **kwargs):
        self.mirror = streamlog.Mirror(log, url, name, **kwargs)
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.mirror.run()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self):
        self.mirror.stop()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def mirror_all(log, url, name="rig1", **kwargs):
    mirror = streamlog.Mirror(log, url, name, exit_when_done=True, **kwargs)
    mirror.run()
    return mirror.stats


def stream_key(name, session_id, stream="main"):
    return layout.session_keys(name, session_id, stream)[1]


def assert_same(local_session, remote_session, client):
    """The remote session holds the local one record for record: same
    records in the same order, XLEN equal to the count, no gap marker."""
    local = list(local_session.irange())
    remote = list(remote_session.irange())
    assert len(remote) == len(local)
    assert remote == local
    key = stream_key(remote_session.log.name, remote_session.id)
    assert client.xlen(key) == local_session.count == remote_session.count
    ids = [layout.parse_id(entry_id) for entry_id, _ in client.xrange(key)]
    assert ids == [(seq, 1) for seq in range(local_session.recorded)]


def remote_count(client, name, session_id):
    return client.xlen(stream_key(name, session_id))


# --------------------------------------------------------------------------
# the mirror and the reader API


def test_mirror_copies_every_session_and_reader_api_matches_local(tmp_path, redis_server):
    path = tmp_path / "rec.streamlog"
    first = record(path, 3000)
    second = record(path, 10)
    stats = mirror_all(path, redis_server.url)
    assert stats["sent"] == 3010 and stats["duplicates"] == 0 and stats["gaps"] == 0
    client = redis_server.client()
    log = streamlog.Log(path, readonly=True)
    remote = streamlog.RemoteLog(redis_server.url, name="rig1")
    assert [s.id for s in remote.sessions()] == [first, second]
    for session_id in (first, second):
        local, mirrored = log.session(session_id), remote.session(session_id)
        assert_same(local, mirrored, client)
        assert (mirrored.status, mirrored.first_key, mirrored.last_key, mirrored.info, mirrored.recorded) == (
            local.status, local.first_key, local.last_key, local.info, local.recorded)
    local, mirrored = log.session(first), remote.session(first)
    lr, rr = local.reader(), mirrored.reader()
    assert next(rr) == next(lr)
    assert rr.read(5) == lr.read(5)
    assert rr.read(3, peek=True) == lr.read(3, peek=True)
    assert rr.range(100, 120) == lr.range(100, 120)
    assert rr.range(100, 1000, step=7) == lr.range(100, 1000, step=7)
    assert next(rr) == next(lr)  # both moved to 1000 by the range
    assert rr.head(3) == lr.head(3) and rr.tail(4) == lr.tail(4)
    assert rr.lag == lr.lag == 0
    rr.seek(2500), lr.seek(2500)
    assert rr.read(2) == lr.read(2) and rr.lag == lr.lag
    assert list(rr.irange(2990)) == list(lr.irange(2990))
    entries = list(local.ientries())
    assert list(mirrored.ientries()) == entries
    assert list(mirrored.ientries(100, 200, after=entries[150])) == entries[151:200]
    t0, t1 = entries[1000].arrival_us / 1e6, entries[1800].arrival_us / 1e6
    assert list(mirrored.ientries(since=t0, until=t1)) == list(local.ientries(since=t0, until=t1))
    assert rr.range_by_time(t0, t1) == lr.range_by_time(t0, t1) and len(lr.range_by_time(t0, t1)) >= 801
    assert mirrored.range(5, 7) == local.range(5, 7) and mirrored.head() == local.head()
    with pytest.raises(errors.NoItemFound):
        rr.range(5000, 6000)
    rest = list(rr)
    assert rest == list(lr) and not rr.read(ignore_no_item_found=True)


def test_mirror_follows_a_live_session_and_remote_reader_follows_with_xread_block(tmp_path, redis_server):
    """A socket_timeout of 0.2 s must not cut the reader's wait for records
    that come seconds later."""
    path = tmp_path / "rec.streamlog"
    items = queue.Queue()
    with streamlog.StreamBuffer(Gate(items), log=path) as buf:
        mirror = MirrorThread(path, redis_server.url)
        remote = streamlog.RemoteLog(redis_server.url + "?name=rig1", socket_timeout=0.2)
        wait_until(lambda: remote.session_ids() == [buf.session.id], "the live session in Redis")
        reader = remote.session(buf.session.id).reader()
        got = []
        follower = threading.Thread(target=lambda: got.extend(reader))
        follower.start()
        for i in range(200):
            items.put((i, f"r{i}"))
            if i == 100:
                wait_until(lambda: len(got) == 101, "the first 101 records remotely")
                time.sleep(1.0)  # the follower waits in XREAD BLOCK across several socket timeouts
        items.put(StopIteration)
        buf.wait()
    follower.join(DEADLINE_S)
    mirror.stop()
    assert got == [(i, f"r{i}") for i in range(200)]
    assert remote.session(buf.session.id).status == "closed"


# --------------------------------------------------------------------------
# faults


def test_redis_down_at_start_recording_goes_on_and_mirror_catches_up(tmp_path):
    server = redis_tool.RedisServer(tmp_path / "redis", port=redis_tool.free_port())
    try:
        redis_tool.require_redis()
    except redis_tool.RedisUnavailable as exc:
        pytest.skip(str(exc))
    path = tmp_path / "rec.streamlog"
    items = queue.Queue()
    with streamlog.StreamBuffer(Gate(items), log=path) as buf:
        mirror = MirrorThread(path, server.url)
        for i in range(500):
            items.put((i, i * 2))
        wait_until(lambda: buf.committed == 500, "500 records committed while Redis is down")
        wait_until(lambda: mirror.mirror.stats["reconnects"] >= 2, "the mirror retrying")
        server.start()
        client = server.client()
        wait_until(lambda: client.exists(stream_key("rig1", buf.session.id)) and
                   remote_count(client, "rig1", buf.session.id) == 500, "the mirror catching up")
        for i in range(500, 700):
            items.put((i, i * 2))
        items.put(StopIteration)
        buf.wait()
    try:
        remote = streamlog.RemoteLog(server.url, name="rig1")
        wait_until(lambda: remote.session(buf.session.id).status == "closed", "the session closed remotely")
        mirror.stop()
        assert_same(streamlog.Log(path).session(buf.session.id), remote.session(buf.session.id), client)
    finally:
        server.stop()


def test_redis_killed_mid_session_and_restarted_on_its_aof(tmp_path, redis_aof_server):
    path = tmp_path / "rec.streamlog"
    items = queue.Queue()
    client = redis_aof_server.client()
    with streamlog.StreamBuffer(Gate(items), log=path) as buf:
        mirror = MirrorThread(path, redis_aof_server.url)
        for i in range(3000):
            items.put((i, b"x" * 100))
        wait_until(lambda: client.exists(stream_key("rig1", buf.session.id)) and
                   remote_count(client, "rig1", buf.session.id) >= 1000, "part of the session in Redis")
        redis_aof_server.kill()  # SIGKILL, while the mirror sends
        for i in range(3000, 4000):
            items.put((i, b"y" * 100))
        wait_until(lambda: buf.committed == 4000, "recording going on while Redis is down")
        redis_aof_server.start()
        client = redis_aof_server.client()
        items.put(StopIteration)
        buf.wait()
    remote = streamlog.RemoteLog(redis_aof_server.url, name="rig1")
    wait_until(lambda: remote.session(buf.session.id).status == "closed", "the mirror finishing after the restart")
    mirror.stop()
    assert mirror.mirror.stats["reconnects"] >= 1
    assert_same(streamlog.Log(path).session(buf.session.id), remote.session(buf.session.id), client)


MIRROR_CHILD = """
import sys
from streamlog.cli import main
main(["mirror", sys.argv[1], sys.argv[2], "--name", "rig1", "--max-inflight", "64KiB", "--exit-when-done"])
"""


@pytest.mark.parametrize("n, size", [(60_000, 200), (8_000, 4096)])  # the append script; plain XADDs
def test_mirror_sigkilled_mid_pipeline_and_restarted(tmp_path, redis_server, n, size):
    path = tmp_path / "rec.streamlog"
    session_id = record(path, n, payload=b"z" * size)
    client = redis_server.client()
    child = start_python(MIRROR_CHILD, path, redis_server.url)
    try:
        wait_until(lambda: client.exists(stream_key("rig1", session_id)) and
                   remote_count(client, "rig1", session_id) > n // 12, "the mirror in the middle of the session")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(DEADLINE_S)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    partial = remote_count(client, "rig1", session_id)
    assert n // 12 < partial < n
    again = start_python(MIRROR_CHILD, path, redis_server.url)
    out, err = again.communicate(timeout=DEADLINE_S)
    assert again.returncode == 0, err
    remote = streamlog.RemoteLog(redis_server.url, name="rig1")
    assert_same(streamlog.Log(path).session(session_id), remote.session(session_id), client)


def test_xadds_a_killed_mirror_never_accounted_for_are_counted_at_the_next_start(tmp_path, redis_server):
    """Large records go as plain XADDs followed by an accounting script; a
    mirror killed between the two leaves entries above ``top:NAME`` that the
    counters miss.  That state is made here by rolling the accounting fields
    of the last 100 records back; the next mirror run counts them again."""
    path = tmp_path / "rec.streamlog"
    session_id = record(path, 1000, payload=b"L" * 2000)
    mirror_all(path, redis_server.url)
    client = redis_server.client()
    meta = layout.meta_key("rig1", session_id)
    client.hset(meta, "top:main", layout.entry_id(899))
    client.hincrby(meta, "count:main", -100)
    before = int(client.hget(meta, "bytes:main"))
    tail_bytes = sum(len(fields[b"r"]) for _, fields in client.xrange(stream_key("rig1", session_id), "(899-1", "+"))
    client.hincrby(meta, "bytes:main", -tail_bytes)
    stats = mirror_all(path, redis_server.url)
    assert stats["sent"] == 0
    remote = streamlog.RemoteLog(redis_server.url, name="rig1").session(session_id)
    assert remote.count == 1000 and int(client.hget(meta, "bytes:main")) == before
    assert_same(streamlog.Log(path).session(session_id), remote, client)


def test_local_retention_pruning_unsent_records_leaves_a_gap_marker(tmp_path, redis_server):
    path = tmp_path / "rec.streamlog"
    items = queue.Queue()
    payload = b"p" * 4096
    client = redis_server.client()
    with streamlog.StreamBuffer(Gate(items), log=path, retention=streamlog.Retention(max_bytes=1 << 20)) as buf:
        for i in range(100):
            items.put((i, payload))
        wait_until(lambda: buf.committed == 100, "100 records committed")
        mirror = MirrorThread(path, redis_server.url)
        wait_until(lambda: client.exists(stream_key("rig1", buf.session.id)) and
                   remote_count(client, "rig1", buf.session.id) == 100, "100 records mirrored")
        mirror.stop()
        for i in range(100, 3000):  # 12 MB under a 1 MiB limit: records 100.. are pruned unsent
            items.put((i, payload))
        items.put(StopIteration)
        buf.wait()
    local = streamlog.Log(path).session(buf.session.id)
    first_kept = next(local.ientries()).seq
    assert first_kept > 100
    stats = mirror_all(path, redis_server.url)
    assert stats["gaps"] == 1
    remote = streamlog.RemoteLog(redis_server.url, name="rig1").session(buf.session.id)
    assert remote.count == 100 + local.count
    reader = remote.reader()
    assert reader.read(100) == [(i, payload) for i in range(100)]
    with pytest.raises(errors.RecordsPruned) as pruned:
        reader.next()
    assert pruned.value.missed == first_kept - 100
    reader.skip_pruned = True
    assert list(reader) == list(local.irange())
    assert len(remote.range(0, 10_000)) == 100 + local.count  # a range steps over the marker


def test_oversize_records_are_split_and_joined(tmp_path, redis_server):
    path = tmp_path / "rec.streamlog"
    rng = np.random.default_rng(7)
    big = [rng.integers(0, 255, size=n, dtype=np.uint8) for n in (10_000, 100, 3000, 2049)]
    items = queue.Queue()
    for item in [*enumerate(big), StopIteration]:
        items.put(item)
    with streamlog.StreamBuffer(Gate(items), log=path) as buf:
        buf.wait()
    stats = mirror_all(path, redis_server.url, part_bytes=1024, max_inflight_bytes=4096)
    assert stats["max_inflight_bytes_seen"] <= 4096
    client = redis_server.client()
    key = stream_key("rig1", buf.session.id)
    assert client.xlen(key) > 4  # parts
    remote = streamlog.RemoteLog(redis_server.url, name="rig1").session(buf.session.id)
    assert remote.count == 4
    got = list(remote.irange())
    assert [k for k, _ in got] == [0, 1, 2, 3]
    assert all(np.array_equal(a, b) for (_, a), b in zip(got, big))
    assert np.array_equal(remote.tail()[1], big[-1]) and np.array_equal(remote.head()[1], big[0])
    assert [k for k, _ in remote.tail(3)] == [1, 2, 3]
    assert [k for k, _ in remote.range(2, 3)] == [2, 3]


def test_inflight_bytes_are_bounded(tmp_path, redis_server):
    path = tmp_path / "rec.streamlog"
    session_id = record(path, 2000, payload=b"q" * 1000)
    stats = mirror_all(path, redis_server.url, max_inflight_bytes=16 << 10, part_bytes=4096)
    assert 4 << 10 < stats["largest_call_bytes"] <= 8 << 10  # calls of half the bound, two at a time
    assert 8 << 10 < stats["max_inflight_bytes_seen"] <= 16 << 10
    assert_same(streamlog.Log(path).session(session_id),
                streamlog.RemoteLog(redis_server.url, name="rig1").session(session_id), redis_server.client())


# --------------------------------------------------------------------------
# consumer groups, retention, cluster


def test_consumer_groups_resume_after_acknowledged_and_claim_a_dead_consumers_records(tmp_path, redis_server):
    path = tmp_path / "rec.streamlog"
    session_id = record(path, 100)
    mirror_all(path, redis_server.url)
    session = streamlog.RemoteLog(redis_server.url, name="rig1").session(session_id)
    a = session.reader(group="spectro", consumer="hostA", batch=10)
    first = [next(a) for _ in range(11)]  # 1..10 acknowledged on fetching 11..20, now pending with hostA
    assert [k for k, _ in first] == list(range(1, 12))
    resumed = session.reader(group="spectro", consumer="hostA", batch=10)  # hostA restarted
    assert [k for k, _ in resumed.read(10)] == list(range(11, 21))  # what it had not acknowledged, again
    resumed.ack()
    b = session.reader(group="spectro", consumer="hostB", batch=5)
    assert [k for k, _ in b.read(5)] == list(range(21, 26))  # pending with hostB, which dies
    c = session.reader(group="spectro", consumer="hostC", claim_idle_s=0)
    assert [k for k, _ in c] == list(range(21, 101))  # claimed 21..25 from hostB, then the rest
    other = session.reader(group="other", consumer="x")
    assert len(list(other)) == 100  # every group has its own cursor
    groups = {g["name"]: g for g in session.log.groups(session_id)}
    assert (groups["spectro"]["pending"], groups["spectro"]["lag"]) == (0, 0)
    late = session.reader(group="late", consumer="y", batch=10)
    assert next(late)[0] == 1
    groups = {g["name"]: g for g in session.log.groups(session_id)}
    assert (groups["late"]["pending"], groups["late"]["lag"]) == (10, 90)


def test_remote_retention_max_sessions_and_max_age(tmp_path, redis_server):
    path = tmp_path / "rec.streamlog"
    ids = [record(path, 50) for _ in range(2)]
    items = queue.Queue()
    with streamlog.StreamBuffer(Gate(items), log=path) as buf:  # 20 records, a pause of 0.5 s, 30 records
        for i in range(20):
            items.put((i, b"old"))
        wait_until(lambda: buf.committed == 20, "the first 20 records")
        pause_from = time.time()
        wait_until(lambda: time.time() > pause_from + 0.5, "half a second")
        for i in range(20, 50):
            items.put((i, b"new"))
        items.put(StopIteration)
        buf.wait()
    ids.append(buf.session.id)
    stats = mirror_all(path, redis_server.url, max_sessions=2)
    assert stats["sent"] == 150
    remote = streamlog.RemoteLog(redis_server.url, name="rig1")
    assert remote.session_ids() == ids[1:]  # the mirror applied --max-sessions
    mirror_all(path, redis_server.url)  # a session removed remotely is not mirrored again
    assert remote.session_ids() == ids[1:]
    removed = remote.prune(max_age_s=time.time() - (pause_from + 0.25))
    assert removed == 50 + 20
    assert remote.session_ids() == [ids[2]]  # session ids[1] was all older: removed whole
    kept = remote.session(ids[2])
    assert kept.count == 30 and kept.head() == (20, b"new")
    assert list(kept.irange()) == [(i, b"new") for i in range(20, 50)]
    assert redis_server.client().xlen(stream_key("rig1", ids[2])) == 30
    reader = kept.reader()
    reader.seek(0)
    assert reader.read(1) == [(20, b"new")]


def test_mirror_to_a_three_master_cluster(tmp_path, redis_cluster):
    path = tmp_path / "rec.streamlog"
    ids = [record(path, n) for n in (500, 20, 300)]
    stats = mirror_all(path, redis_cluster.url)
    assert stats["sent"] == 820 and stats["duplicates"] == 0
    remote = streamlog.RemoteLog(redis_cluster.url, name="rig1")
    log = streamlog.Log(path)
    assert remote.session_ids() == ids
    for session_id in ids:
        assert list(remote.session(session_id).irange()) == list(log.session(session_id).irange())
        assert remote.session(session_id).range(3, 5) == log.session(session_id).range(3, 5)
    holding = [node.client().dbsize() for node in redis_cluster.nodes]
    assert sum(1 for n in holding if n) >= 2  # the sessions' keys spread over the masters


# --------------------------------------------------------------------------
# a recording that mirrors itself, and the CLI


@pytest.mark.parametrize("mirror_in", ["process", "thread"])
def test_stream_buffer_mirror_option(tmp_path, redis_server, mirror_in):
    path = tmp_path / "rec.streamlog"
    url = redis_server.url + "?name=rig2"
    with streamlog.StreamBuffer(Counter(2000), log=path, mirror=url, mirror_in=mirror_in) as buf:
        buf.wait()
    remote = streamlog.RemoteLog(url)
    wait_until(lambda: buf.session.id in remote.session_ids() and
               remote.session(buf.session.id).status == "closed", "the session mirrored by the recording")
    assert_same(streamlog.Log(path).session(buf.session.id), remote.session(buf.session.id), redis_server.client())


def test_stream_buffer_mirror_needs_a_named_redis_url(tmp_path):
    for bad in ("redis://127.0.0.1:1/0", "http://x?name=a", "rig1"):
        with pytest.raises(ValueError, match="redis:// URL naming the rig"):
            streamlog.StreamBuffer(Counter(1), log=tmp_path / "x", mirror=bad)


def test_cli_reads_a_redis_url_wherever_it_takes_a_log(tmp_path, redis_server):
    from click.testing import CliRunner

    from streamlog.cli import main

    path = tmp_path / "lab.streamlog"
    runner = CliRunner()
    url = redis_server.url + "?name=rig1"
    done = runner.invoke(main, ["record", "synth", str(path), "--rate", "1000", "--block", "100", "--count", "20",
                                "--fast", "--mirror", url, "-q"])
    assert done.exit_code == 0, done.output
    remote = streamlog.RemoteLog(url)
    wait_until(lambda: remote.session_ids() == [1] and remote.session(1).status == "closed", "the mirrored session")
    for command in (["head", "-n", "3"], ["tail", "-n", "2"], ["range", "3", "5"], ["follow", "--from-start"],
                    ["tail", "-n", "2", "--keys", "--times"], ["range", "3", "5", "--keys", "--times"]):
        local = runner.invoke(main, [command[0], str(path), *command[1:], "-f", "jsonl"])
        mirrored = runner.invoke(main, [command[0], url, *command[1:], "-f", "jsonl"])
        assert local.exit_code == mirrored.exit_code == 0, mirrored.output
        assert mirrored.output == local.output and mirrored.output
    for command in (["sessions", "--json"], ["info", "--json"]):
        local = json.loads(runner.invoke(main, [command[0], str(path), *command[1:]]).output)
        mirrored = json.loads(runner.invoke(main, [command[0], url, *command[1:]]).output)
        if command[0] == "sessions":
            assert [s.pop("groups") for s in mirrored] == [[]]
        assert mirrored == local
    for command in ("sessions", "info"):
        local, mirrored = runner.invoke(main, [command, str(path)]), runner.invoke(main, [command, url])
        assert mirrored.exit_code == 0 and mirrored.output == local.output.replace(str(path), url)
    for out in ("local.npy", "remote.npy"):
        source = str(path) if out == "local.npy" else url
        assert runner.invoke(main, ["export", source, "-o", str(tmp_path / out)]).exit_code == 0
    assert np.array_equal(np.load(tmp_path / "local.npy"), np.load(tmp_path / "remote.npy"))
    reader = remote.session(1).reader(group="spectro", consumer="hostB", batch=5)
    reader.read(1)
    table = runner.invoke(main, ["sessions", url])
    assert "session 1 group spectro: lag 15, pending 5, 1 consumer(s)" in table.output
    refused = runner.invoke(main, ["prune", url, "--max-age", "1"])
    assert refused.exit_code != 0
    down = runner.invoke(main, ["sessions", "redis://127.0.0.1:1/0?name=rig1"])
    assert down.exit_code == 1 and "cannot reach redis://127.0.0.1:1/0" in down.output
    unnamed = runner.invoke(main, ["mirror", str(path), redis_server.url])
    assert unnamed.exit_code == 2 and "--name RIG" in unnamed.output
