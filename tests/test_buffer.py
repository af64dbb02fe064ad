"""StreamBuffer and BufferReader in one process: real threads, real LMDB files."""

import os
import queue
import threading
import time

import numpy as np
import pytest

import streamlog
from streamlog import ReadBatch, StreamBuffer, errors, mk_stream_buffer
from helpers import Counter, Gate, run_python


def log_path(tmp_path):
    return str(tmp_path / "rec.streamlog")


def test_user_example_counter(tmp_path):
    with StreamBuffer(Counter(1000), maxlen=1000, log=log_path(tmp_path)) as buf:
        reader = buf.mk_reader()
        assert next(reader) == (1, b"payload")
        assert buf.wait(timeout=30)
        some = reader.range(start=10, stop=20)
    assert [r[0] for r in some] == list(range(10, 21))
    log = streamlog.Log(log_path(tmp_path))
    (session,) = log.sessions()
    assert (session.status, session.count, session.first_key, session.last_key) == ("closed", 1000, 1, 1000)
    assert session.info == {"kind": "counter", "n": 1000}
    reader = log.session(-1).reader()
    assert [r[0] for r in reader.range(start=10, stop=20)] == list(range(10, 21))
    assert reader.head() == (1, b"payload") and reader.tail() == (1000, b"payload")
    log.close()


def test_slow_reader_behind_small_ring_reads_every_record_once_in_order(tmp_path):
    n = 200_000
    with StreamBuffer(Counter(n), maxlen=100, log=log_path(tmp_path)) as buf:
        reader = buf.mk_reader()
        first = [next(reader)[0] for _ in range(10)]
        buf.wait(timeout=60)  # the reader is now ~200,000 records behind a 100-record ring
        rest = [record[0] for record in reader]
    assert first + rest == list(range(1, n + 1))


def test_many_readers_in_threads_each_get_everything(tmp_path):
    n = 20_000
    results = {}
    with StreamBuffer(Counter(n), maxlen=50, log=log_path(tmp_path)) as buf:
        readers = [buf.mk_reader() for _ in range(4)]

        def consume(i):
            results[i] = [record[0] for record in readers[i]]

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert all(results[i] == list(range(1, n + 1)) for i in range(4))


def test_blocking_next_wakes_on_new_record_and_nonblocking_returns_none(tmp_path):
    items = queue.Queue()
    with StreamBuffer(Gate(items), log=log_path(tmp_path)) as buf:
        blocking = buf.mk_reader()
        polling = buf.mk_reader(blocking=False)
        assert polling.next() is None
        got = []
        waiter = threading.Thread(target=lambda: got.append(next(blocking)))
        waiter.start()
        items.put((1, "a"))
        waiter.join(10)
        assert got == [(1, "a")]
        assert blocking.read(timeout=0.01, ignore_no_item_found=True) is None
        with pytest.raises(errors.NoItemFound):
            blocking.read(blocking=False)
        items.put((2, "b"))
        assert blocking.read(timeout=10) == (2, "b")
        assert polling.read(5) == [(1, "a"), (2, "b")]
        items.put(StopIteration)
        assert buf.wait(10)
        with pytest.raises(StopIteration):
            next(blocking)
        with pytest.raises(StopIteration):
            polling.next()


def test_builtin_next_and_for_on_a_nonblocking_reader_agree_with_its_next_method(tmp_path):
    # next(reader) used to raise StopIteration while the stream was live with nothing new, so a
    # for loop over a non-blocking reader ended early and silently
    items = queue.Queue()
    with StreamBuffer(Gate(items), log=log_path(tmp_path)) as buf:
        polling = buf.mk_reader(blocking=False)
        assert next(polling) is None and polling.next() is None
        items.put((1, "a"))
        deadline = time.monotonic() + 10
        while (record := next(polling)) is None and time.monotonic() < deadline:
            time.sleep(0.001)
        assert record == (1, "a")
        items.put((2, "b"))
        items.put((3, "c"))
        while polling.lag < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert list(polling) == [(2, "b"), (3, "c")]  # what there is now; stops once nothing is new
        assert next(polling) is None  # the stream is still live
        items.put(StopIteration)
        assert buf.wait(10)
        with pytest.raises(StopIteration):
            next(polling)


def test_read_peek_and_lists(tmp_path):
    with StreamBuffer(Counter(50), log=log_path(tmp_path)) as buf:
        buf.wait(10)
        r = buf.mk_reader()
        assert r.read(peek=True) == (1, b"payload")
        assert r.read(3) == [(1, b"payload"), (2, b"payload"), (3, b"payload")]
        assert r.lag == 47
        assert r.read(2, peek=True)[0][0] == 4
        assert next(r)[0] == 4
        assert len(r.read(100)) == 46
        with pytest.raises(errors.NoItemFound):
            r.read()
        assert r.read(ignore_no_item_found=True) is None


def test_head_tail_range_seek_beyond_the_ring(tmp_path):
    with StreamBuffer(Counter(5000), maxlen=10, log=log_path(tmp_path)) as buf:
        buf.wait(30)
        r = buf.mk_reader()
        assert r.head()[0] == 1
        assert next(r)[0] == 2                       # head moved the cursor
        assert [x[0] for x in r.head(3, peek=True)] == [1, 2, 3]
        assert next(r)[0] == 3                       # peek did not
        assert [x[0] for x in r.tail(3)] == [4998, 4999, 5000]
        with pytest.raises(StopIteration):
            next(r)
        assert [x[0] for x in r.range(start=100, stop=105)] == [100, 101, 102, 103, 104, 105]
        assert next(r)[0] == 106                     # range moved the cursor
        assert [x[0] for x in r.range(start=10, stop=20, step=5, peek=True)] == [10, 15, 20]
        assert [x[0] for x in r.range(start=4995, only_new_items=False, peek=True)] == [4995, 4996, 4997, 4998,
                                                                                        4999, 5000]
        assert [x[0] for x in r.range(stop=120, only_new_items=True)] == list(range(107, 121))
        with pytest.raises(errors.NoItemFound):
            r.range(start=6000, stop=7000)
        assert r.range(start=6000, ignore_no_item_found=True) is None
        r.seek(2500)
        assert next(r)[0] == 2500
        assert r.lag == 2500
        assert sum(1 for _ in r.irange(1000, 3999)) == 3000


def test_source_failure_is_kept_on_session_and_raised_after_the_records(tmp_path):
    buf = StreamBuffer(Counter(100, fail_at=51), log=log_path(tmp_path))
    buf.start()
    reader = buf.mk_reader()
    assert buf.wait(10)
    buf.stop()  # must not raise
    assert buf.session.status == "failed" and "sensor unplugged at 51" in buf.session.error
    got = []
    with pytest.raises(errors.SourceFailed, match="sensor unplugged"):
        for record in reader:
            got.append(record[0])
    assert got == list(range(1, 51))
    buf.close()
    stored = streamlog.Log(log_path(tmp_path), readonly=True).session(-1)
    assert stored.status == "failed" and stored.count == 50
    with pytest.raises(errors.SourceFailed):
        list(stored.reader())


def test_decreasing_key_fails_clearly_and_keeps_every_record_before(tmp_path):
    with StreamBuffer(Counter(100, key_at={61: 5}), log=log_path(tmp_path)) as buf:
        reader = buf.mk_reader()
        buf.wait(10)
        got = []
        with pytest.raises(errors.SourceFailed, match="smaller than the previous key 60"):
            for record in reader:
                got.append(record[0])
    assert got == list(range(1, 61))
    assert streamlog.Log(log_path(tmp_path)).session(-1).count == 60


@pytest.mark.parametrize("bad, words", [((3, {1, 2}), "set"), ((3, object()), "object")])
def test_unencodable_record_names_its_type(tmp_path, bad, words):
    with StreamBuffer(Counter(10, record_at={3: bad}), log=log_path(tmp_path)) as buf:
        buf.wait(10)
    session = buf.session
    assert session.status == "failed" and words in session.error and session.count == 2


@pytest.mark.parametrize("key, words", [(float("nan"), "NaN"), (None, "None"), ([1], "list")])
def test_invalid_key_names_the_problem(tmp_path, key, words):
    with StreamBuffer(Counter(10, key_at={4: key}), log=log_path(tmp_path)) as buf:
        buf.wait(10)
    assert buf.session.status == "failed" and words in buf.session.error and buf.session.count == 3


def test_equal_keys_keep_arrival_order_and_int_float_are_equal(tmp_path):
    items = queue.Queue()
    for record in [(1, "a"), (1.0, "b"), (1, "c"), (1.5, "d"), (2, "e"), StopIteration]:
        items.put(record)
    with StreamBuffer(Gate(items), log=log_path(tmp_path)) as buf:
        buf.wait(10)
        r = buf.mk_reader()
        assert [x[1] for x in r] == list("abcde")
        assert [x[1] for x in r.range(start=1.0, stop=1)] == ["a", "b", "c"]


def test_records_read_back_identical_from_ram_and_disk(tmp_path):
    records = [
        (1, (1, 2), [3, 4], b"\x00raw", "text"),
        (2, np.arange(12, dtype=">i4").reshape(3, 4)),
        (3, {"t": (1, 2.5), "v": [None, True]}),
    ]
    items = queue.Queue()
    for record in records + [StopIteration]:
        items.put(record)
    with StreamBuffer(Gate(items), log=log_path(tmp_path)) as buf:
        buf.wait(10)
        from_ram = list(buf.mk_reader())
    from_disk = list(streamlog.Log(log_path(tmp_path)).session(-1).reader())
    for got in (from_ram, from_disk):
        assert got[0] == records[0] and type(got[0][1]) is tuple and type(got[0][2]) is list
        assert got[1][1].dtype == np.dtype(">i4") and got[1][1].shape == (3, 4)
        assert np.array_equal(got[1][1], records[1][1])
        assert got[2] == records[2] and type(got[2][1]["t"]) is tuple


def test_batch_reads_store_each_record(tmp_path):
    class Batches(Counter):
        def read(self):
            if self.i >= self.n:
                raise StopIteration
            self.i += 100
            return ReadBatch((k, b"x") for k in range(self.i - 99, self.i + 1))

    with StreamBuffer(Batches(10_000), maxlen=300, log=log_path(tmp_path)) as buf:
        assert [x[0] for x in buf.mk_reader()] == list(range(1, 10_001))


@pytest.mark.parametrize("bad_at", [None, 230])
def test_key_is_asked_once_per_record_in_order_also_in_batches(tmp_path, bad_at):
    """ReadBatches of 50 (the writer first tries each whole, and goes record by
    record for the stream's first key and for a bad record): key() sees every
    record once, in order; a decreasing key at ``bad_at`` fails the session
    with every record before it stored."""
    asked = []

    class Batches(Counter):
        def read(self):
            if self.i >= self.n:
                raise StopIteration
            self.i += 50
            return ReadBatch((k - 2 if k == bad_at else k, b"x") for k in range(self.i - 49, self.i + 1))

        def key(self, data):
            asked.append(data[0])
            return data[0]

    with StreamBuffer(Batches(1_000), log=log_path(tmp_path)) as buf:
        buf.wait(30)
    stored = [x[0] for x in streamlog.Log(log_path(tmp_path)).session(-1).reader()] if bad_at is None else None
    if bad_at is None:
        assert asked == stored == list(range(1, 1_001))
    else:
        assert asked == [k - 2 if k == bad_at else k for k in range(1, 251)]  # its batch (201..250) is the last asked
        assert buf.session.status == "failed" and "is smaller than the previous key" in buf.session.error
        assert buf.session.count == bad_at - 1


def test_an_empty_read_batch_records_nothing_and_the_stream_goes_on(tmp_path):
    """ReadBatch() between batches, also as the first read: nothing recorded, no failure."""
    class Sometimes(Counter):
        def read(self):
            if self.i >= self.n:
                raise StopIteration
            self.i += 1
            return ReadBatch() if self.i % 3 == 1 else ReadBatch([(self.i, b"x")] * (self.i % 2 + 1))

    with StreamBuffer(Sometimes(30), log=log_path(tmp_path)) as buf:
        buf.wait(30)
    assert buf.session.status == "closed", buf.session.error
    expected = [(i, b"x") for i in range(1, 31) if i % 3 != 1 for _ in range(i % 2 + 1)]
    assert list(streamlog.Log(log_path(tmp_path)).session(-1).reader()) == expected


def test_batches_of_bare_numpy_arrays_are_stored_whole(tmp_path):
    """Records that are numpy arrays themselves, in ReadBatches of 20 (tried
    whole by the writer: nothing may compare a record with ==)."""
    class Arrays(Counter):
        def read(self):
            if self.i >= self.n:
                raise StopIteration
            self.i += 20
            return ReadBatch(np.arange(3) + k for k in range(self.i - 20, self.i))

        def key(self, data):
            return int(data[0])

    with StreamBuffer(Arrays(100), log=log_path(tmp_path)) as buf:
        buf.wait(30)
    assert buf.session.status == "closed", buf.session.error
    got = list(streamlog.Log(log_path(tmp_path)).session(-1).reader())
    assert [a.tolist() for a in got] == [[k, k + 1, k + 2] for k in range(100)]


def test_big_records_are_split_and_reassembled(tmp_path):
    payloads = [np.full(n, n % 251, dtype=np.uint8) for n in (10, 700, 2048, 4096, 8192, 100_000)]
    items = queue.Queue()
    for i, p in enumerate(payloads):
        items.put((i, p))
    items.put(StopIteration)
    with StreamBuffer(Gate(items), maxlen=1, log=log_path(tmp_path)) as buf:
        buf.wait(10)
    reader = streamlog.Log(log_path(tmp_path)).session(-1).reader()
    got = list(reader)
    assert [len(g[1]) for g in got] == [len(p) for p in payloads]
    assert all(np.array_equal(g[1], p) for g, p in zip(got, payloads))
    assert [len(x[1]) for x in reader.tail(2, peek=True)] == [8192, 100_000]


def test_mk_stream_buffer_example(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    with mk_stream_buffer(read_stream=lambda f: next(f, None), open_stream=lambda: open(path, "rt"),
                          close_stream=lambda f: f.close(), key=lambda d: d[0], maxlen=None,
                          log=log_path(tmp_path)) as sb:
        r = sb.mk_reader()
        [next(r) for _ in range(100)]  # wait for every line rather than sleep
        got = r.range(start=40, stop=50)
    assert got == [(i, f"line {i}\n") for i in range(40, 51)]
    assert sb.session.count == 100


def test_temporary_log_is_removed_at_close():
    with StreamBuffer(Counter(300), maxlen=10) as buf:
        path = buf.log.path
        reader = buf.mk_reader()
        assert [x[0] for x in reader] == list(range(1, 301))
        assert os.path.isdir(path)
    assert not os.path.exists(path)


def test_second_stream_in_the_same_session(tmp_path):
    markers = queue.Queue()
    resume = threading.Event()
    with StreamBuffer(Counter(100, pause_at=(50, resume)), log=log_path(tmp_path)) as audio:
        with StreamBuffer(Gate(markers), session=audio.session, stream="markers") as marks:
            markers.put((5, "stimulus"))
            markers.put((7, "response"))
            reader = marks.mk_reader()
            assert [reader.read(timeout=10) for _ in range(2)] == [(5, "stimulus"), (7, "response")]
        resume.set()
        audio.wait(10)
    session = streamlog.Log(log_path(tmp_path)).session(-1)
    assert session.streams == ["main", "markers"] and session.count == 100
    assert session.stream_info("markers")["count"] == 2
    assert session.range(stream="markers") == [(5, "stimulus"), (7, "response")]


def test_range_by_time_on_counter_keys(tmp_path):
    items = queue.Queue()
    with StreamBuffer(Gate(items), log=log_path(tmp_path), commit_interval_s=0.001) as buf:
        reader = buf.mk_reader()
        stamps = []
        for i in range(30):
            items.put((i, "x"))
            reader.read(timeout=10)
            stamps.append(time.time())
            if i % 10 == 9:
                # wait until the previous group is committed, so records fall in several commits
                deadline = time.monotonic() + 10
                while buf.session.refresh().count < i + 1 and time.monotonic() < deadline:
                    time.sleep(0.001)
        items.put(StopIteration)
        buf.wait(10)
    session = streamlog.Log(log_path(tmp_path)).session(-1)
    everything = session.range_by_time(0, time.time())
    assert [r[0] for r in everything] == list(range(30))
    window = session.range_by_time(stamps[9], stamps[19])
    keys = [r[0] for r in window]
    assert keys == sorted(keys) and 10 in keys and 19 in keys and 9 not in keys and 20 not in keys


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(TypeError, match="SourceReader"):
        StreamBuffer(object())
    with pytest.raises(ValueError, match="maxlen"):
        StreamBuffer(Counter(1), maxlen=0)
    with pytest.raises(ValueError, match="durability"):
        StreamBuffer(Counter(1), durability="sometimes")
    with pytest.raises(ValueError, match="max_bytes"):
        streamlog.Retention(max_bytes=-5)
    with StreamBuffer(Counter(3), log=log_path(tmp_path)) as buf:
        r = buf.mk_reader()
        with pytest.raises(ValueError, match="step"):
            r.range(step=0)
        with pytest.raises(ValueError, match="n must be"):
            r.read(0)


@pytest.mark.parametrize("durability", ["full", "normal", "off"])
def test_durability_modes_record(tmp_path, durability):
    with StreamBuffer(Counter(500), log=log_path(tmp_path), durability=durability) as buf:
        buf.wait(10)
    session = streamlog.Log(log_path(tmp_path)).session(-1)
    assert session.count == 500 and session.durability == durability


def test_stop_keeps_what_a_draining_source_already_holds(tmp_path):
    class Captured(Gate):
        """Holds 500 records; asks the buffer to stop as the first one is read."""
        drain_on_stop = True

        def read(self):
            record = super().read()
            if record is not None and record[0] == 0:
                buf._stop_requested.set()  # what stop() does first, while the source still holds 499
            return record

    items = queue.Queue()
    for i in range(500):
        items.put((i, "held"))
    source = Captured(items)
    buf = StreamBuffer(source, log=log_path(tmp_path))
    with buf:
        buf.wait(10)
    assert buf.session.count == 500 and buf.session.status == "closed"


def test_durability_follows_the_log_unless_it_conflicts(tmp_path):
    resume = threading.Event()
    with streamlog.Log(log_path(tmp_path), durability="off") as log:
        with StreamBuffer(Counter(10, pause_at=(5, resume)), log=log) as fast:
            with StreamBuffer(Gate(queue.Queue()), session=fast.session, stream="markers"):
                resume.set()
        assert fast.session.durability == "off"
        with pytest.raises(ValueError, match="open with durability 'off'"):
            StreamBuffer(Counter(1), log=log, durability="full").start()
        reader_side = streamlog.Log(log_path(tmp_path))  # a plain open shares the store as it is
        assert reader_side.durability == "off"
        reader_side.close()


def test_a_second_stream_started_while_the_first_commits_never_hangs(tmp_path):
    # py-lmdb 3.0.0's env.open_db() without txn= waits for LMDB's write lock holding the GIL, so
    # opening the markers' databases while the recorder thread was inside a commit hung both threads
    # (caught within the first few tries).  A hang dumps both stacks and fails instead of blocking.
    code = """
        import faulthandler, os, sys, time
        from streamlog import ReadBatch, SourceReader, StreamBuffer
        from streamlog.sources.markers import markers_beside
        faulthandler.dump_traceback_later(float(sys.argv[3]), exit=True)

        class FlatOut(SourceReader):
            def open(self): self.i = 0
            def read(self):
                batch = ReadBatch((self.i + j, b"x" * 64) for j in range(50))
                self.i += 50
                return batch
            def close(self): pass
            def key(self, data): return data[0]
            @property
            def info(self): return {"source": "flat-out"}

        for trial in range(int(sys.argv[2])):
            log = os.path.join(sys.argv[1], f"t{trial}.streamlog")
            with StreamBuffer(FlatOut(), maxlen=10_000, log=log) as buf:
                deadline = time.monotonic() + 30
                while buf.committed == 0 and time.monotonic() < deadline:
                    time.sleep(0.0005)
                with markers_beside(buf) as markers:
                    markers.mark(f"trial {trial}")
            print(trial, flush=True)
    """
    trials = 40
    result = run_python(code, tmp_path, trials, 60, timeout=120, check=False)
    assert result.returncode == 0, f"hung or failed after {len(result.stdout.split())} trials:\n{result.stderr}"
    assert result.stdout.split() == [str(t) for t in range(trials)]
    for trial in range(trials):
        session = streamlog.Log(str(tmp_path / f"t{trial}.streamlog")).session(-1)
        assert session.range(stream="markers")[0][1] == f"trial {trial}"


class NoneFirst(Gate):
    """A Gate whose first read returns None, with ``sleep_time_on_read_none_s`` as given."""

    def __init__(self, items, sleep_time_on_read_none_s):
        super().__init__(items)
        self.sleep_time_on_read_none_s = sleep_time_on_read_none_s
        self.reads = 0

    def read(self):
        self.reads += 1
        return None if self.reads == 1 else super().read()


def test_sleep_time_on_read_none_of_none_means_the_default(tmp_path):
    # the recorder used to wait(None) after the first None read: it stalled until stop()
    items = queue.Queue()
    with StreamBuffer(NoneFirst(items, None), log=log_path(tmp_path)) as buf:
        reader = buf.mk_reader()
        items.put((1, "a"))
        assert reader.read(timeout=10, ignore_no_item_found=True) == (1, "a")
        items.put(StopIteration)
        assert buf.wait(10)
    assert streamlog.Log(log_path(tmp_path)).session(-1).status == "closed"
