"""Hostile sources: a SourceReader that raises in open, read, key, close or
info, returns unencodable records, decreasing keys, keys of mixed kinds or
records over the size limit.  Each case must end with a clear error that a
live reader, the session, another process and the CLI all show, and with
every record before the failure kept, in order.  Real threads, real LMDB,
real subprocesses, the real CLI."""

import json
import math
import queue
import tempfile
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import streamlog
from streamlog import ReadBatch, SourceReader, StreamBuffer, errors
from streamlog.cli import main
from helpers import Gate, run_python

N = 100
LIMIT = 1000  # max_record_bytes in the cases below; a default-sized record is far smaller


class Hostile(SourceReader):
    """Records ``(key, b"payload")`` for i = 1..N, keyed ``keys(i)``, one per
    read or in ReadBatches of ``batch``, then the end of the stream.

    ``raise_in``: ``"open"``, ``"read"`` (at read number ``at``), ``"key"``
    (at record ``at``), ``"close"``, ``"info"``; ``records``: record i
    replaced by ``records[i]``.  ``open()`` waits for ``go`` so that the test's
    reader exists before the first record.
    """

    sleep_time_on_read_none_s = 0.001

    def __init__(self, *, raise_in=None, at=None, batch=None, records=None, keys=lambda i: i, info=None):
        self.raise_in = raise_in
        self.at = at
        self.batch = batch
        self.records = records or {}
        self.keys = keys
        self._info = {"kind": "hostile"} if info is None else info
        self.go = threading.Event()

    def open(self):
        assert self.go.wait(30)
        if self.raise_in == "open":
            raise OSError("no such device")
        self.i = 0
        self.reads = 0

    def read(self):
        self.reads += 1
        if self.raise_in == "read" and self.reads == self.at:
            raise RuntimeError(f"sensor unplugged at read {self.reads}")
        if self.i >= N:
            raise StopIteration
        if self.batch is None:
            return self._next()
        return ReadBatch(self._next() for _ in range(min(self.batch, N - self.i)))

    def _next(self):
        self.i += 1
        return self.records.get(self.i, (self.keys(self.i), b"payload"))

    def close(self):
        if self.raise_in == "close":
            raise OSError("device busy")

    def key(self, data):
        if self.raise_in == "key" and data[0] == self.keys(self.at):
            raise KeyError("timestamp")
        return data[0]

    @property
    def info(self):
        if self.raise_in == "info":
            raise RuntimeError("firmware query timed out")
        return self._info


def keys_through(last, keys=lambda i: i):
    return [keys(i) for i in range(1, last + 1)]


def pair(i):
    return (i, "x")


def padded(i):
    return f"{i:03d}"


def queued(records, end=True):
    """A queue for :class:`helpers.Gate`: ``records``, then the end of the stream unless ``end`` is False."""
    items = queue.Queue()
    for record in records:
        items.put(record)
    if end:
        items.put(StopIteration)
    return items


# id: (source options, StreamBuffer options, keys stored before the failure, words of the error)
CASES = {
    "open raises": (dict(raise_in="open"), {}, [], "open() failed: OSError: no such device"),
    "first read raises": (dict(raise_in="read", at=1), {}, [], "read() failed: RuntimeError: sensor unplugged"),
    "read raises after 50": (dict(raise_in="read", at=51), {}, keys_through(50), "read() failed: RuntimeError"),
    "read raises after 5 batches": (dict(raise_in="read", at=6, batch=10), {}, keys_through(50), "sensor unplugged"),
    "close raises after a clean end": (dict(raise_in="close"), {}, keys_through(N),
                                       "close() failed: OSError: device busy"),
    "info raises": (dict(raise_in="info"), {}, keys_through(N), "info failed: RuntimeError: firmware query timed out"),
    "info is not a dict": (dict(info=["not", "a", "dict"]), {}, keys_through(N), "info failed: it is a list"),
    "key() raises": (dict(raise_in="key", at=31), {}, keys_through(30), "key() failed: KeyError: 'timestamp'"),
    "key() raises in a batch": (dict(raise_in="key", at=35, batch=10), {}, keys_through(34), "key() failed: KeyError"),
    "None inside a batch": (dict(records={35: None}, batch=10), {}, keys_through(34), "None inside a ReadBatch"),
    "set record": (dict(records={3: (3, {1, 2})}), {}, keys_through(2),
                   "key 3 of stream 'main': cannot encode a value of type set"),
    "object() record": (dict(records={3: (3, object())}), {}, keys_through(2), "type object at record[1]"),
    "numpy object array in a batch": (dict(records={35: (35, np.array([1, "a"], dtype=object))}, batch=10), {},
                                      keys_through(34), "dtype object holds Python objects"),
    "decreasing key": (dict(records={61: (5, b"late")}), {}, keys_through(60),
                       "key 5 is smaller than the previous key 60"),
    "decreasing key in a batch": (dict(records={45: (43.5, b"late")}, batch=10), {}, keys_through(44),
                                  "key 43.5 is smaller than the previous key 44"),
    "NaN key": (dict(records={4: (math.nan, b"")}), {}, keys_through(3), "NaN has no order"),
    "str key after int keys": (dict(records={41: ("a", b"")}), {}, keys_through(40),
                               "key 'a' (str) cannot follow key 40 (int) in stream 'main': "
                               "keys of one stream must be of one kind"),
    "bytes key after str keys in a batch": (dict(keys=padded, records={25: (b"z", b"")}, batch=10), {},
                                            keys_through(24, padded), "key b'z' (bytes) cannot follow key '024' (str)"),
    "int key after str keys (smaller too)": (dict(keys=padded, records={7: (7, b"")}), {}, keys_through(6, padded),
                                             "key 7 (int) cannot follow key '006' (str)"),
    "tuple with another kind at a position": (dict(keys=pair, records={21: ((21, 5), b"")}, batch=8), {},
                                              keys_through(20, pair), "key (21, 5) (tuple (int, int)) cannot follow "
                                                                      "key (20, 'x') (tuple (int, str))"),
    "tuple of another length": (dict(keys=pair, records={21: ((21,), b"")}), {}, keys_through(20, pair),
                                "key (21,) (tuple (int)) cannot follow"),
    "record over the limit": (dict(records={26: (26, b"x" * 2 * LIMIT)}), dict(max_record_bytes=LIMIT),
                              keys_through(25), "key 26 of stream 'main' is 2,0"),
    "record over the limit in a batch": (dict(records={26: (26, np.zeros(LIMIT, np.uint8))}, batch=10),
                                         dict(max_record_bytes=LIMIT), keys_through(25),
                                         "bytes encoded, over the limit of 1,000 bytes (max_record_bytes)"),
}
# the same bad records in batches of 20: a batch of 16 or more is first tried whole by the writer, which falls
# back to record by record when any record is bad
CASES.update({f"{name} (batch of 20)": (dict(options, batch=20), buffer_options, stored, words)
              for name, (options, buffer_options, stored, words) in list(CASES.items())
              if options.get("batch") and "read" not in name})

READ_BACK = """
    import json, sys
    import streamlog
    from streamlog import errors
    log = streamlog.Log(sys.argv[1], readonly=True)
    session = log.session(-1)
    keys = []
    try:
        for record in session.reader(timeout=30):
            keys.append(record[0])
        failure = None
    except errors.SourceFailed as exc:
        failure = str(exc)
    print(json.dumps({"keys": keys, "status": session.status, "error": session.error, "failure": failure}))
"""


@pytest.mark.parametrize("source_options, buffer_options, stored, words", list(CASES.values()), ids=list(CASES))
def test_bad_source_fails_clearly_and_keeps_every_record_before(tmp_path, source_options, buffer_options, stored,
                                                                words):
    path = str(tmp_path / "rec.streamlog")
    source = Hostile(**source_options)
    buf = StreamBuffer(source, log=path, **buffer_options)
    buf.start()
    reader = buf.mk_reader(timeout=30)
    source.go.set()
    got = []
    with pytest.raises(errors.SourceFailed) as failure:  # (a) a live reader: every record in order, then the error
        for record in reader:
            got.append(record[0])
    assert got == stored
    assert words in str(failure.value)
    buf.close()
    session = buf.session  # (b) the session
    assert session.status == "failed" and words in session.error
    assert session.count == session.recorded == len(stored)
    assert str(failure.value) == session.error
    if source_options.get("raise_in") in ("open", "read", "key", "close", "info"):
        assert isinstance(failure.value.__cause__, (OSError, RuntimeError, KeyError))

    seen = json.loads(run_python(READ_BACK, path, timeout=60).stdout)  # (c) another process
    assert seen == {"keys": json.loads(json.dumps(stored)), "status": "failed", "error": session.error,
                    "failure": session.error}

    runner = CliRunner()  # (d) the CLI
    listed = runner.invoke(main, ["sessions", path])
    assert listed.exit_code == 0 and "failed" in listed.output.splitlines()[1]
    assert listed.output.splitlines()[2].startswith(f"session {session.id} failed: {session.error[:100]}")
    shown = runner.invoke(main, ["info", path, str(session.id)])
    assert shown.exit_code == 0 and f"{'error':<11} {session.error}\n" in shown.output
    if source_options.get("raise_in") == "info":
        assert "kind" not in session.info  # the info that could not be read is not invented
    elif "info" not in source_options:
        assert session.info["kind"] == "hostile"


def test_info_failing_only_at_the_end_keeps_the_info_read_at_the_start(tmp_path):
    class LateInfo(Hostile):
        @property
        def info(self):
            if getattr(self, "i", 0) >= N:
                raise RuntimeError("device gone")
            return {"kind": "late"}

    source = LateInfo()
    source.go.set()
    with StreamBuffer(source, log=str(tmp_path / "rec.streamlog")) as buf:
        assert buf.wait(30)
    assert buf.session.status == "failed" and buf.session.error == "info failed: RuntimeError: device gone"
    assert buf.session.info == {"kind": "late"} and buf.session.count == N


def test_a_record_of_exactly_the_limit_is_kept(tmp_path):
    limit = len(streamlog.codec.encode_record((2, b"x" * 1500)))
    items = queued([(1, b""), (2, b"x" * 1500), (3, b"x" * 1501)])
    with StreamBuffer(Gate(items), log=str(tmp_path / "rec.streamlog"), max_record_bytes=limit) as buf:
        assert buf.wait(30)
    assert buf.session.count == 2
    assert buf.session.error == (f"the record with key 3 of stream 'main' is {limit + 1:,} bytes encoded, over the "
                                 f"limit of {limit:,} bytes (max_record_bytes)")
    reader = streamlog.Log(str(tmp_path / "rec.streamlog"), readonly=True).session(-1).reader()
    assert reader.read(n=5) == [(1, b""), (2, b"x" * 1500)]
    with pytest.raises(errors.SourceFailed, match="over the limit"):
        next(reader)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1MiB", None])
def test_max_record_bytes_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match=f"max_record_bytes must be a positive int, not {bad!r}"):
        StreamBuffer(Gate(queued([])), max_record_bytes=bad)


def test_numbers_of_every_type_are_one_kind(tmp_path):
    records = [(False, "bool"), (1, "int"), (1.5, "float"), (np.int64(2), "np.int64"), (np.float64(2.5), "np.float64"),
               (2**70, "big int"), (math.inf, "inf")]
    with StreamBuffer(Gate(queued(records)), log=str(tmp_path / "rec.streamlog")) as buf:
        assert buf.wait(30)
    assert buf.session.status == "closed" and buf.session.count == len(records)


def test_a_joined_stream_keeps_the_one_kind_rule(tmp_path):
    """A second stream recorded into a live session has its own first key and the same rule."""
    main_items = queued([(1, "a"), (2, "b")], end=False)
    with StreamBuffer(Gate(main_items), log=str(tmp_path / "rec.streamlog")) as owner:
        markers = StreamBuffer(Gate(queued([("start", 1), ("stop", 2), (3.0, 3)])), stream="markers",
                               session=owner.session)
        with markers:
            got = []
            with pytest.raises(errors.SourceFailed, match=r"key 3.0 \(float\) cannot follow key 'stop' \(str\) "
                                                          "in stream 'markers'"):
                for record in markers.mk_reader(timeout=30):
                    got.append(record[0])
            assert got == ["start", "stop"]
        main_items.put(StopIteration)
        assert owner.wait(30)
        owner.stop()
        markers_info = owner.session.stream_info("markers")
    assert markers_info["count"] == 2 and "cannot follow" in markers_info["error"]
    assert owner.session.count == 2


def kind(key):
    """Reference model: numbers, str, bytes, or a tuple of its items' kinds."""
    if isinstance(key, tuple):
        return tuple(kind(item) for item in key)
    return type(key).__name__ if isinstance(key, (str, bytes)) else "number"


scalar_keys = st.one_of(st.integers(-3, 3), st.floats(-3, 3, allow_nan=False), st.sampled_from(["a", "b"]),
                        st.sampled_from([b"a", b"b"]))
any_keys = st.one_of(scalar_keys, st.tuples(scalar_keys), st.tuples(scalar_keys, scalar_keys))


@settings(max_examples=40, deadline=None)
@given(st.lists(any_keys, min_size=1, max_size=12))
def test_the_writer_keeps_exactly_the_longest_ordered_one_kind_prefix(keys):
    expected = [keys[0]]
    for key in keys[1:]:
        if kind(key) != kind(expected[0]) or key < expected[-1]:
            break
        expected.append(key)
    with tempfile.TemporaryDirectory() as directory:
        with StreamBuffer(Gate(queued([(key, i) for i, key in enumerate(keys)])),
                          log=f"{directory}/rec.streamlog") as buf:
            assert buf.wait(30)
            buf.stop()
            stored = []
            try:
                for record in buf.session.reader():
                    stored.append(record[1])
            except errors.SourceFailed:
                assert len(expected) < len(keys)
        assert stored == list(range(len(expected)))
        if len(expected) == len(keys):
            assert buf.session.status == "closed"
        else:
            bad = keys[len(expected)]
            error = buf.session.error
            if kind(bad) != kind(expected[0]):
                assert error.startswith(f"key {bad!r} (") and "must be of one kind" in error
            else:
                assert error.startswith(f"key {bad!r} is smaller than the previous key {expected[-1]!r}")
