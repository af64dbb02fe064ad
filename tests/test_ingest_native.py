"""streamlog._ingest: add_plain (the common case of StreamWriter.add in C)
against the Python encoders: the same bytes, and it takes exactly the
records of the common case, stopping at the first other one; and
Writer.read_records (the recorder's loop in C) against the Python path:
a StreamBuffer keeps the same records of a random source and fails with
the same error as StreamWriter.add called read by read."""

import tempfile
from itertools import accumulate

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import streamlog
from streamlog import ReadBatch, SourceReader, StreamBuffer, _ingest, codec, errors, records
from streamlog.codec import encode_record
from streamlog.keys import encode_key
from streamlog.writer import StreamWriter

PREFIX = records.session_prefix(7)
NUMBER_BOUND = b"\x40"  # the bound of the number kind (writer._KIND_BOUND)
LIMIT = 1 << 30

EDGE_INTS = [0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**56, 2**63 - 1,
             2**63, 2**64 - 1, 2**64, -1, -32, -33, -128, -129, -256, -257, -32768, -32769, -2**31, -2**31 - 1,
             -2**56, -2**63, -2**63 - 1, -2**64, -2**64 - 1, 2**100, -2**100]
EDGE_SIZES = [0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536]
edge_ints = st.sampled_from(EDGE_INTS)
ints = st.one_of(edge_ints, st.integers(), st.integers(-2**64, 2**64))
sized_text = st.integers(0, 70_000).map(lambda n: "é" * (n // 2) + "a" * (n % 2))
texts = st.one_of(st.text(), st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3),
                  sized_text)
blobs = st.one_of(st.binary(), st.integers(0, 70_000).map(bytes))
scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=True), texts, blobs)
others = st.one_of(st.lists(scalars, max_size=3), st.builds(bytearray, st.binary(max_size=5)),
                   st.dictionaries(st.text(max_size=3), scalars, max_size=2), st.tuples(st.tuples(scalars)))
plain_tuples = st.one_of(st.lists(scalars, max_size=20).map(tuple), st.integers(16, 70_000).map(lambda n: (1,) * n))
any_records = st.one_of(scalars, plain_tuples, others, st.lists(st.one_of(scalars, others), max_size=4).map(tuple))
keys = st.one_of(ints, st.booleans(), st.floats(allow_nan=False), st.text(max_size=3))


def is_scalar(value):
    """A scalar of the common case: exact types, ints within [-2**63, 2**64), str without lone surrogates."""
    if value is None or type(value) in (bool, float, bytes):
        return True
    if type(value) is int:
        return -2**63 <= value < 2**64
    if type(value) is str:
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    return False


def is_common(key, record):
    if record is None or type(key) is not int or not -2**63 <= key < 2**64:
        return False
    return all(map(is_scalar, record)) if type(record) is tuple else is_scalar(record)


def add(batch, keys_, *, seq=5, last=b"", bound=NUMBER_BOUND, max_bytes=LIMIT, now=123):
    out = ([], [], [], [])
    result = _ingest.add_plain(batch, keys_, *out, PREFIX, seq, last, bound, max_bytes, now)
    assert out[3] == [now] * result[0]  # arrivals
    return result, out[:3]


@settings(max_examples=400, deadline=None)
@given(key=keys, record=any_records)
def test_one_record_has_the_python_bytes_or_is_left_to_python(key, record):
    (taken, last, size), (entries, encoded_keys, payloads) = add([record], [key])
    if not is_common(key, record):
        assert (taken, last, size, entries, encoded_keys, payloads) == (0, b"", 0, [], [], [])
        return
    encoded, payload = encode_key(key), encode_record(record)
    assert (taken, last, size) == (1, encoded, len(payload))
    assert encoded_keys == [encoded] and payloads == [payload]
    assert len(entries) == 1 and entries[0][0] == records.record_key(PREFIX, encoded, 5)
    assert entries[0][1] is record and entries[0][2] == 123


@pytest.mark.parametrize("record", [*EDGE_INTS, *(("é" * (n // 2) + "a" * (n % 2)) for n in EDGE_SIZES),
                                    *map(bytes, EDGE_SIZES), *((1,) * n for n in EDGE_SIZES), 0.5, -0.0, float("inf"),
                                    float("nan"), True, False, (None, True, 2**64 - 1, -2**63, "s", b"b", 1.5)])
def test_every_msgpack_width(record):
    """Each int, str, bytes and array header width, at both ends."""
    test_one_record_has_the_python_bytes_or_is_left_to_python.hypothesis.inner_test(3, record)
    test_one_record_has_the_python_bytes_or_is_left_to_python.hypothesis.inner_test(3, (record,))


@pytest.mark.parametrize("key", EDGE_INTS)
def test_every_int_key_width(key):
    test_one_record_has_the_python_bytes_or_is_left_to_python.hypothesis.inner_test(key, b"x")


@settings(max_examples=200, deadline=None)
@given(batch_keys=st.lists(st.one_of(ints, st.just(None)), min_size=1, max_size=30),
       records_=st.lists(st.one_of(scalars, plain_tuples, st.lists(scalars, max_size=2)), min_size=1, max_size=30),
       start=st.one_of(st.just(b""), ints.map(encode_key)), max_bytes=st.integers(1, 200))
def test_a_batch_stops_at_the_first_record_python_must_see(batch_keys, records_, start, max_bytes):
    """Order (from ``last`` on, below ``bound``), record kinds and sizes: the
    records taken are the longest prefix of common ones, one seq each."""
    n = min(len(batch_keys), len(records_))
    keys_ = [k if k is not None else -2**70 for k in batch_keys]
    batch = records_[:n]
    (taken, last, size), (entries, encoded_keys, payloads) = add(batch, keys_, last=start, max_bytes=max_bytes)
    expect, previous = 0, start
    for key, record in zip(keys_, batch):
        if not is_common(key, record):
            break
        encoded, payload = encode_key(key), encode_record(record)
        if not previous <= encoded < NUMBER_BOUND or len(payload) > max_bytes:
            break
        assert encoded_keys[expect] == encoded and payloads[expect] == payload
        assert entries[expect] == (records.record_key(PREFIX, encoded, 5 + expect), record, 123)
        expect += 1
        previous = encoded
    assert taken == expect == len(encoded_keys) == len(payloads) == len(entries)
    assert last == previous and size == sum(map(len, payloads))


def test_it_takes_nothing_below_the_first_key_bound():
    """A stream's first key (bound b"") is always left to Python, which sets the stream's kind."""
    assert add([(1, b"x")], [1], bound=b"")[0] == (0, b"", 0)


def test_keys_shorter_than_the_batch():
    """key() failed for a record: only the records with keys are taken."""
    (taken, _, _), (entries, _, _) = add([1, 2, 3], [1, 2])
    assert taken == 2 and [e[1] for e in entries] == [1, 2]


class SubArray(np.ndarray):
    pass


simple_dtypes = st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(), hnp.unicode_string_dtypes(),
                          st.sampled_from([np.dtype("<i2"), np.dtype(">i2"), np.dtype("V3"), np.dtype("V0")]))


@st.composite
def arrays_of_chunks(draw, common=False):
    """An array as sources return them (always, when ``common``: C-contiguous, non-empty, of a simple dtype
    the general path has seen), or one that is not the common case: empty, 0-d, high-dimensional, not
    C-contiguous (sliced, Fortran-ordered), an ndarray subclass, of a structured or object dtype."""
    dtype = draw(simple_dtypes.filter(lambda d: d.itemsize) if common else
                 st.one_of(simple_dtypes, st.just(np.dtype([("a", "<i2"), ("b", "f4")])), st.just(np.dtype("O"))))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=5) if common else
                 st.one_of(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
                           hnp.array_shapes(min_dims=16, max_dims=18, max_side=1)))
    if dtype.kind == "O" or not dtype.itemsize:
        array = np.full(shape, None, dtype) if dtype.kind == "O" else np.zeros(shape, dtype)
    else:  # any bytes: NaNs, NaTs, code points beyond unicode are all stored as they are
        nbytes = int(np.prod(shape)) * dtype.itemsize
        array = np.frombuffer(draw(st.binary(min_size=nbytes, max_size=nbytes)), dtype).reshape(shape).copy()
    view = "c" if common else draw(st.sampled_from(["c", "c", "sliced", "fortran", "subclass"]))
    if view == "sliced" and array.ndim:
        array = array[::2]
    elif view == "fortran":
        array = np.asfortranarray(array)
    elif view == "subclass":
        array = array.view(SubArray)
    if common or draw(st.booleans()):  # the general path has seen this dtype (or refused it)
        try:
            encode_record((array,))
        except errors.UnencodableRecord:
            pass
    return array


def is_common_array(item):
    return (type(item) is np.ndarray and item.flags.c_contiguous and item.size > 0
            and item.dtype in codec.array_heads)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.one_of(st.lists(st.one_of(scalars, arrays_of_chunks(), arrays_of_chunks()), max_size=12),
                       st.lists(st.one_of(st.integers(-2**63, 2**64 - 1), edge_ints, arrays_of_chunks(common=True)),
                                max_size=12)),
       max_bytes=st.one_of(st.just(LIMIT), st.integers(1, 400)))
def test_a_record_of_arrays_has_the_python_bytes_or_is_left_to_python(items, max_bytes):
    """A tuple of scalars and arrays (a chunk and its key): C encodes it byte for byte as
    codec._encode_flat_arrays does, copying the arrays' bytes, when every item is a scalar or an array of
    the common case, there are at most 8 arrays and the encoding fits max_bytes; else it takes nothing."""
    record = tuple(items)
    arrays = [item for item in record if isinstance(item, np.ndarray)]
    (taken, _, size), (_, _, payloads) = add([record], [1], max_bytes=max_bytes)
    common = all(is_scalar(item) or is_common_array(item) for item in record) and len(arrays) <= 8
    if not common or len(encode_record(record)) > max_bytes:
        assert (taken, size, payloads) == (0, 0, [])
        return
    assert taken == 1 and payloads == [encode_record(record)] and size == len(payloads[0])
    if arrays:
        assert payloads == [codec._encode_flat_arrays(record)]
        before = bytes(payloads[0])
        for array in arrays:  # sources refill their buffers: the payload holds a copy
            np.ndarray(array.nbytes, np.uint8, buffer=array)[:] ^= 0xFF
        assert payloads[0] == before


class Chunks(SourceReader):
    """``(i, buffer)`` for i in 0..n-1, refilling one int16 (1024, 2) buffer with i, as audio sources do."""

    sleep_time_on_read_none_s = 0

    def __init__(self, n):
        self.n, self.i, self.buffer = n, 0, np.zeros((1024, 2), np.int16)

    def open(self):
        pass

    def read(self):
        if self.i == self.n:
            raise StopIteration
        self.buffer[:] = self.i
        self.i += 1
        return (self.i - 1, self.buffer)

    def key(self, data):
        return data[0]

    def close(self):
        pass


def test_items_without_bytes_are_refused_whatever_was_encoded_before():
    """An empty V0 array encodes; a non-empty one is refused by Python and so must be left to Python by C,
    also after the empty one has been encoded (the general path then must not list V0 for C)."""
    nonempty = (1, np.zeros(3, dtype="V0"))
    assert add([nonempty], [1])[0] == (0, b"", 0)
    encode_record((np.zeros(0, dtype="V0"),))
    assert add([nonempty], [1])[0] == (0, b"", 0)
    with pytest.raises(errors.UnencodableRecord, match="have no bytes"):
        encode_record(nonempty)


def test_a_chunk_source_keeps_each_buffer_as_read():
    """The common chunk case, taken by the C loop from the second record on: every record keeps the
    bytes its buffer held when read() returned it."""
    with tempfile.TemporaryDirectory() as directory:
        with StreamBuffer(Chunks(3000), log=f"{directory}/buffer.streamlog") as buf:
            assert buf.wait(30)
            buf.stop()
            got = [(entry.key, entry.record) for entry in buf.session.reader().ientries()]
    assert [key for key, _ in got] == list(range(3000))
    assert all(type(record) is tuple and record[0] == key and record[1].dtype == np.int16
               and record[1].shape == (1024, 2) and (record[1] == key % 2**15).all() for key, record in got)


def test_bad_arguments_raise_type_error():
    with pytest.raises(TypeError, match="12 arguments"):
        _ingest.add_plain([], [])
    with pytest.raises(TypeError, match="lists or tuples"):
        _ingest.add_plain({}, [], [], [], [], [], PREFIX, 0, b"", NUMBER_BOUND, 1, 0)


# -- Writer.read_records: the recorder's loop in C, against the Python path --------------------------------------

KEY_FAILS = object()  # in a script: key() raises for this record


class Scripted(SourceReader):
    """Reads ``script`` (each step a record, None, a ReadBatch, or an exception to raise), then ends;
    ``key()`` returns the next of ``keys`` (one per record, in the order read), raising for KEY_FAILS."""

    sleep_time_on_read_none_s = 0

    def __init__(self, script, keys_):
        self.script, self.keys = script, keys_

    def open(self):
        self.steps, self.key_queue = iter(self.script), iter(self.keys)

    def read(self):
        step = next(self.steps)  # StopIteration at the end: the end of the stream
        if isinstance(step, Exception):
            raise step
        return step

    def close(self):
        pass

    def key(self, data):
        key = next(self.key_queue)
        if key is KEY_FAILS:
            raise ValueError("no key in this record")
        return key


def python_path(script, keys_, directory):
    """What StreamWriter.add (the Python path) keeps of ``script`` and the session error it raises."""
    source = Scripted(script, keys_)
    source.open()
    with streamlog.Log(f"{directory}/reference.streamlog") as log:
        log.begin_writing()
        try:
            writer = StreamWriter(log.catalog, log.catalog.create_session("main", {}, {}, "full"), "main")
            entries = []
            for _ in script:
                try:
                    data = source.read()
                except Exception as exc:
                    return entries, f"read() failed: {type(exc).__name__}: {exc}"
                if data is not None:
                    try:
                        writer.add(data if type(data) is ReadBatch else (data,), source.key, entries)
                    except errors.StreamlogError as exc:
                        return entries, str(exc)
            return entries, None
        finally:
            log.end_writing()


def recorded(script, keys_, directory):
    """What a StreamBuffer (its loop in C) stores of ``script`` (encoded keys and records) and the error."""
    with StreamBuffer(Scripted(script, keys_), log=f"{directory}/buffer.streamlog") as buf:
        assert buf.wait(30)
        buf.stop()
        reader = buf.session.reader()
        stored = []
        try:
            for entry in reader.ientries():
                stored.append((encode_key(entry.key), encode_record(entry.record), entry.seq))
        except errors.SourceFailed:
            pass
        return stored, buf.session.error


codec_records = st.one_of(scalars, plain_tuples, others, st.builds(np.arange, st.integers(0, 5)),
                          st.builds(np.float32, st.floats(width=32)), st.just({1, 2}), st.just(object))
any_keys = st.one_of(st.integers(-3, 50), st.integers(), st.booleans(), st.floats(-3, 50), st.just(float("nan")),
                     st.text(max_size=2), st.binary(max_size=2), st.tuples(st.integers(0, 9)), st.just(None),
                     st.just([1]), st.just(KEY_FAILS))
ordered_int_keys = st.lists(st.integers(0, 3), min_size=1, max_size=40).map(lambda steps: list(accumulate(steps)))


@st.composite
def scripts(draw):
    """A script of reads and the keys of its records: mostly records with increasing int keys (the C
    loop's case), among records of every codec type, keys of every type, ReadBatches, None and failures."""
    keys_ = draw(ordered_int_keys)
    script, used = [], []
    for key in keys_:
        kind = draw(st.sampled_from(["plain"] * 6 + ["record", "key", "batch", "none", "raise"]))
        if kind == "none":
            script.append(None)
        if kind == "raise":
            script.append(RuntimeError(f"sensor unplugged before key {key}"))
            continue
        if kind == "batch":
            batch = draw(st.lists(st.one_of(st.none(), codec_records), max_size=4))
            script.append(ReadBatch(batch))
            used += [draw(st.one_of(st.just(key), any_keys)) for _ in batch]
            continue
        script.append(draw(codec_records) if kind == "record" else (key, b"payload"))
        used.append(draw(any_keys) if kind == "key" else key)
    return script, used


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripts())
def test_the_c_loop_keeps_what_the_python_path_keeps_and_fails_alike(script_and_keys):
    script, keys_ = script_and_keys
    with tempfile.TemporaryDirectory() as directory:
        entries, error = python_path(script, keys_, directory)
        stored, stored_error = recorded(script, keys_, directory)
    assert stored_error == error
    assert [(encoded, payload) for encoded, payload, _ in stored] == [
        (entry[0][len(PREFIX):-8], encode_record(entry[1])) for entry in entries]
    assert [seq for _, _, seq in stored] == list(range(len(entries)))
