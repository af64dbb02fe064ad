"""Property-based tests (hypothesis).

Keys: the byte order of ``encode_key`` is Python's order of the keys (numbers
by exact value, then str < bytes < tuple), encodings are prefix-free,
decoding gives the key back, and a non-key anywhere in a key is refused.

Readers: any sequence of ``next``, ``read``, ``range``, ``irange``, ``head``,
``tail``, ``seek`` and iteration on a real recorded session gives the answers
(records, NoItemFound, StopIteration, errors for bad arguments) and leaves the
cursor where a plain list model of the documented semantics says: for a closed
session read from disk, a finished buffer whose small ring holds only the
newest records, and a running buffer with records not yet committed and
records arriving between the reads.
"""

import itertools
import math
import os
import queue
import struct
import tempfile
import time
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamlog
from streamlog import SourceReader, StreamBuffer, errors
from streamlog.errors import InvalidKey
from streamlog import reader as reader_module
from streamlog import records
from streamlog.records import v2
from streamlog.keys import decode_key, decode_key_prefix, encode_key, key_types_of
from helpers import Gate, reference_order, sign

# --------------------------------------------------------------------------
# keys


def exact_types(key):
    if isinstance(key, tuple):
        return tuple(exact_types(item) for item in key)
    return int if type(key) is bool else type(key)


_BOUNDARIES = [2**k for k in (0, 7, 8, 15, 16, 31, 32, 52, 53, 54, 63, 64, 65, 127, 128, 1000, 1024, 5000)]
_BOUNDARIES += [256**k for k in range(1, 12)]

boundary_ints = st.builds(lambda base, negative, delta: (-base if negative else base) + delta,
                          st.sampled_from(_BOUNDARIES), st.booleans(), st.integers(-3, 3))
ints = st.one_of(st.integers(), st.integers(-(2**200), 2**200), boundary_ints, st.booleans())


_FLOAT_RANGE = 2**1023  # the boundaries below it have neighbouring floats
float_boundaries = boundary_ints.filter(lambda n: abs(n) < _FLOAT_RANGE).map(float)
floats = st.one_of(
    st.floats(allow_nan=False),  # subnormals, +-0.0, +-inf, the extremes
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    st.builds(lambda whole, fraction: whole + fraction, float_boundaries,
              st.sampled_from([0.0, 0.5, -0.5, 0.25, 1 / 3, 1e-9])),
    float_boundaries.map(lambda x: math.nextafter(x, math.inf)),
    float_boundaries.map(lambda x: math.nextafter(x, -math.inf)),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, math.inf,
                     -math.inf]),
)
numbers = st.one_of(ints, floats)
texts = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=6),  # lone surrogates included
    st.text(st.sampled_from(["a", "\x00", "\x01", "\x7f", "\xff", "\ud7ff", "\ud800", "\udfff", "\ue000",
                             "\U0010ffff"]), max_size=5),
)
binaries = st.one_of(st.binary(max_size=8), st.lists(st.sampled_from([0, 1, 0xFE, 0xFF]), max_size=5).map(bytes))
scalars = st.one_of(numbers, texts, binaries)
keys = st.recursive(scalars, lambda items: st.lists(items, max_size=4).map(tuple), max_leaves=10)
suffixes = st.one_of(st.binary(max_size=10), st.integers(0, 2**64 - 1).map(struct.Struct(">Q").pack))

KEY_SETTINGS = settings(max_examples=300, deadline=None)


@KEY_SETTINGS
@given(numbers, numbers)
def test_number_byte_order_is_exact_value_order(a, b):
    assert sign(encode_key(a), encode_key(b)) == sign(a, b)


@KEY_SETTINGS
@given(numbers, st.sampled_from([-1, 1]))
def test_numbers_next_to_each_other_keep_their_order(x, direction):
    neighbours = [x + direction]
    if isinstance(x, float) and math.isfinite(x):
        neighbours += [math.nextafter(x, direction * math.inf), math.floor(x), math.floor(x) + direction]
    elif not isinstance(x, float):
        as_float = _float_or_none(x)
        if as_float is not None:
            neighbours += [as_float, math.nextafter(as_float, direction * math.inf)]
    for y in neighbours:
        assert sign(encode_key(x), encode_key(y)) == sign(x, y), (x, y)


def _float_or_none(n):
    try:
        return float(n)
    except OverflowError:
        return None


@KEY_SETTINGS
@given(ints)
def test_an_int_and_the_float_equal_to_it_encode_the_same(n):
    as_float = _float_or_none(n)
    if as_float is None:
        return
    if as_float == n:
        assert encode_key(n) == encode_key(as_float)
        assert encode_key((n, "x")) == encode_key((as_float, "x"))
    else:
        assert sign(encode_key(n), encode_key(as_float)) == sign(n, as_float) != 0


@KEY_SETTINGS
@given(keys, keys)
def test_key_byte_order_is_the_documented_order(a, b):
    assert sign(encode_key(a), encode_key(b)) == sign(reference_order(a), reference_order(b))


@KEY_SETTINGS
@given(keys)
def test_decoding_gives_the_key_back(key):
    data = encode_key(key)
    assert reference_order(decode_key(data)) == reference_order(key)
    typed = decode_key(data, key_types_of(key))
    assert typed == key and exact_types(typed) == exact_types(key)
    assert encode_key(decode_key(data)) == data


@KEY_SETTINGS
@given(keys, keys, suffixes, suffixes)
def test_encodings_are_prefix_free_so_suffixes_keep_the_order(a, b, x, y):
    ea, eb = encode_key(a), encode_key(b)
    if ea != eb:
        assert not ea.startswith(eb) and not eb.startswith(ea)
        assert sign(ea + x, eb + y) == sign(reference_order(a), reference_order(b))
    else:
        assert sign(ea + x, eb + y) == sign(x, y)  # equal keys order by their suffixes (arrival)
    decoded, end = decode_key_prefix(ea + x)
    assert end == len(ea) and reference_order(decoded) == reference_order(a)


non_keys = st.sampled_from([(math.nan, "NaN"), (None, "NoneType"), ([1], "list"), ({}, "dict"), (1j, "complex"),
                            (bytearray(b"x"), "bytearray"), (object(), "object")])


@KEY_SETTINGS
@given(keys, non_keys, st.integers(0, 3), st.booleans())
def test_a_non_key_anywhere_in_a_key_is_refused_naming_it(key, non_key, depth, first):
    bad, named = non_key
    for _ in range(depth):
        bad = (bad, key) if first else (key, bad)
    with pytest.raises(InvalidKey, match=named):
        encode_key(bad)


# --------------------------------------------------------------------------
# blocks


@KEY_SETTINGS
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.integers(-1, 7), st.integers(0, 45),
       st.sampled_from(["record", "key", "above key", "session", "after session"]), st.booleans())
def test_a_blocks_bisect_finds_what_a_linear_search_finds(user_keys, probe, seq, shape, strict):
    """Block.bisect over records with equal keys, for record keys in, before,
    after and between the block's, and for the bounds readers use (a key's
    lowest and highest record key, the session's first and past its last)."""
    user_keys = sorted(user_keys)
    prefix = records.session_prefix(3)
    encoded = [encode_key(k) for k in user_keys]
    (block_key, head), *continuations = v2.encode_commit(prefix, 5, encoded, [b"\xc0"] * len(encoded),
                                                         [1] * len(encoded), 4096)
    assert head[0] == len(continuations)  # one block: its head entry and its continuations
    block = v2.Block(block_key, b"".join([head[1:], *(value for _, value in continuations)]))  # values are views
    record_keys = block.record_keys(0, block.n)
    if shape == "record":
        target = records.record_key(prefix, encode_key(probe), seq)
    elif shape == "key":
        target = prefix + encode_key(probe)
    elif shape == "above key":
        target = records.same_key_bounds(records.record_key(prefix, encode_key(probe), 0))[1]
    else:
        target = prefix if shape == "session" else records.after_session(3)
    expected = next((i for i, k in enumerate(record_keys) if k > target or (k == target and not strict)), block.n)
    assert block.bisect(target, strict) == expected


# --------------------------------------------------------------------------
# reader cursors


class ListModel:
    """The documented reader semantics over a plain list of records in key
    order (equal keys in arrival order).  ``cursor`` is the index of the last
    record read, -1 before the first.  ``sees``: which records of a running
    recording the reader sees (see RunningRecording.visible)."""

    def __init__(self, records, *, ended, blocking=True, sees="published"):
        self.records = list(records)
        self.blocking = blocking
        self.sees = sees
        self.keys = [reference_order(record[0]) for record in records]  # numbers < str < bytes < tuple
        self.ended = ended
        self.cursor = -1

    def recorded(self, records, *, ended):
        """The stream now holds ``records`` (the old ones and new ones after them)."""
        assert records[:len(self.records)] == self.records
        self.records = list(records)
        self.keys = [reference_order(record[0]) for record in records]
        self.ended = ended

    @property
    def lag(self):
        return len(self.records) - 1 - self.cursor

    def next(self):
        if self.cursor + 1 < len(self.records):
            self.cursor += 1
            return self.records[self.cursor]
        if self.ended or self.blocking:  # the end, or a blocking reader's timeout passed
            raise StopIteration
        return None  # a non-blocking reader of a running stream

    def read(self, n=None, peek=False, ignore_no_item_found=False):
        _check_count(n)
        taken = self.records[self.cursor + 1:][:1 if n is None else n]
        if not taken:
            return _nothing(ignore_no_item_found)
        if not peek:
            self.cursor += len(taken)
        return taken[0] if n is None else taken

    def range(self, start=None, stop=None, step=None, peek=False, only_new_items=False,
              ignore_no_item_found=False):
        if step is not None and not _is_count(step):
            raise ValueError("step")
        chosen = [i for i in self._between(start, stop) if not only_new_items or i > self.cursor][::step or 1]
        if not chosen:
            return _nothing(ignore_no_item_found)
        if not peek:
            self.cursor = chosen[-1]
        return [self.records[i] for i in chosen]

    def irange(self, start=None, stop=None):
        return [self.records[i] for i in self._between(start, stop)]

    def head(self, n=None, peek=False):
        _check_count(n)
        taken = self.records[:1 if n is None else n]
        return self._pick(taken, len(taken) - 1, n, peek)

    def tail(self, n=None, peek=False):
        _check_count(n)
        return self._pick(self.records[-(1 if n is None else n):], len(self.records) - 1, n, peek)

    def seek(self, key):
        _check_key(key)
        key = reference_order(key)
        first = next((i for i, k in enumerate(self.keys) if k >= key), len(self.records))
        self.cursor = first - 1

    def _pick(self, taken, last, n, peek):
        if not taken:
            raise errors.NoItemFound("empty")
        if not peek:
            self.cursor = last
        return taken[0] if n is None else taken

    def iterate(self):
        rest = self.records[self.cursor + 1:]
        self.cursor = len(self.records) - 1
        return rest

    def _between(self, start, stop):
        for bound in (start, stop):
            if bound is not None:
                _check_key(bound)
        low = None if start is None else reference_order(start)
        high = None if stop is None else reference_order(stop)
        return [i for i, k in enumerate(self.keys) if (low is None or low <= k) and (high is None or k <= high)]


def _is_count(n):
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1


def _check_count(n):
    if n is not None and not _is_count(n):
        raise ValueError("n")


def _check_key(key):
    if isinstance(key, tuple):
        for item in key:
            _check_key(item)
    elif not isinstance(key, (int, float, str, bytes)) or key != key:
        raise errors.InvalidKey("key")


def _nothing(ignore_no_item_found):
    if ignore_no_item_found:
        return None
    raise errors.NoItemFound("nothing")


def outcome(call):
    """``("returned", value)`` or ``("raised", exception type)``."""
    try:
        return "returned", call()
    except (StopIteration, ValueError, TypeError, errors.StreamlogError) as exc:
        return "raised", type(exc)


def check_readers_against_models(cases, operations, recording=None):
    """Apply ``operations`` to each ``(reader, model, where)`` of ``cases``;
    the answers and the lag must agree after each.  ``recording`` carries
    out ``record`` and ``finish`` (the running buffer only); then each model
    takes the records its reader can see (``model.sees``)."""
    for reader, model, where in cases:
        assert reader.lag == model.lag, where
    for step, (name, arguments) in enumerate(operations):
        if name in ("record", "finish"):
            getattr(recording, name)(**arguments)
            for _, model, _ in cases:
                model.recorded(recording.visible(model.sees), ended=recording.finished)
        for reader, model, where in cases:
            context = f"{where}: operation {step} {name}({arguments})"
            if name not in ("record", "finish"):
                expected = outcome(lambda: getattr(model, name)(**arguments))
                got = outcome(lambda: _call(reader, name, arguments))
                assert got == expected, context
            assert reader.lag == model.lag, f"{context} left the cursor at lag {reader.lag}, not {model.lag}"


def _call(reader, name, arguments):
    if name == "irange":
        return list(reader.irange(**arguments))
    if name == "iterate":  # a non-blocking reader's loop yields None while nothing is new: stop there
        return list(itertools.takewhile(lambda record: record is not None, reader))
    return getattr(reader, name)(**arguments)


class ListSource(SourceReader):
    """Records the given ``(key, index)`` tuples, then ends."""

    def __init__(self, records):
        self.records = records

    def open(self):
        self._left = iter(self.records)

    def read(self):
        return next(self._left)

    def close(self):
        pass

    def key(self, data):
        return data[0]


# A stream's keys are all of one kind: numbers (int, float and bool mixed), str, or tuples of one shape.
_NUMBER_KEYS = [-math.inf, -2, -1, -0.5, -0.0, 0, True, 1.0, 1.5, 2, 2.0, 3, 4, 4.25, 5, 7, math.inf]
_TEXT_KEYS = ["", "a", "a\x00", "b", "\xe9", "\ud800", "\U0001f600"]
_PAIR_KEYS = [(-1, ""), (0, "a"), (0, "b"), (0.0, "b"), (1, ""), (True, "a"), (2.5, "z"), (3, "\x00")]
record_keys = st.sampled_from([_NUMBER_KEYS, _TEXT_KEYS, _PAIR_KEYS]).flatmap(
    lambda pool: st.lists(st.sampled_from(pool), max_size=20)).map(lambda keys: sorted(keys, key=reference_order))
# on, between and beyond the keys, and of other kinds (numbers < str < bytes < tuple)
seek_keys = st.sampled_from(_NUMBER_KEYS + _TEXT_KEYS + _PAIR_KEYS + [
    -100, -1.5, 0.25, 2.5, 6, 100, "0", "zz", b"", b"\xff", (), (0,), (0, "a", 1), (1, "a"), (9, "")])
bounds = st.one_of(st.none(), seek_keys)
counts = st.one_of(st.none(), st.integers(1, 6))
bad_counts = st.sampled_from([0, -1, True, 2.5, "2"])
bad_keys = st.sampled_from([None, [1], math.nan, {}])
flags = st.booleans()


def _operation(name, **strategies):
    """Strategy for ``(name, arguments)``; every argument is optional."""
    return st.fixed_dictionaries({}, optional=strategies).map(lambda arguments: (name, arguments))


queries = st.one_of(
    st.just(("next", {})),
    st.just(("iterate", {})),
    _operation("read", n=counts, peek=flags, ignore_no_item_found=flags),
    _operation("range", start=bounds, stop=bounds, step=st.one_of(st.none(), st.integers(1, 4)), peek=flags,
               only_new_items=flags, ignore_no_item_found=flags),
    _operation("irange", start=bounds, stop=bounds),
    _operation("head", n=counts, peek=flags),
    _operation("tail", n=counts, peek=flags),
    st.builds(lambda key: ("seek", {"key": key}), seek_keys),
    # bad arguments: a clear error, and the cursor stays
    st.builds(lambda name, n: (name, {"n": n}), st.sampled_from(["read", "head", "tail"]), bad_counts),
    st.builds(lambda step: ("range", {"step": step}), bad_counts),
    st.builds(lambda key: ("seek", {"key": key}), bad_keys),
    st.builds(lambda key: ("range", {"start": key}), bad_keys),
)
recording_steps = st.one_of(st.builds(lambda count: ("record", {"count": count}), st.integers(1, 6)),
                            st.just(("finish", {})))
read_chunk_sizes = st.sampled_from([None, 1, 2, 3])  # None: the library's; small ones make every read page
READER_SETTINGS = settings(max_examples=250, deadline=None)


@contextmanager
def read_chunks(size):
    """Make readers fetch ``size`` entries per read-ahead and scan chunk."""
    if size is None:
        yield
        return
    saved = reader_module._READ_AHEAD, reader_module._SCAN_CHUNK
    reader_module._READ_AHEAD = reader_module._SCAN_CHUNK = size
    try:
        yield
    finally:
        reader_module._READ_AHEAD, reader_module._SCAN_CHUNK = saved


def _records(keys):
    return [(key, index) for index, key in enumerate(keys)]


@READER_SETTINGS
@given(record_keys, st.lists(queries, max_size=30), read_chunk_sizes)
def test_readers_of_a_finished_recording_follow_the_list_model(keys, ops, chunk):
    """A finished buffer whose ring (3 + 2 slots) holds only the newest
    records, then the same session read back from disk once closed."""
    records = _records(keys)
    with tempfile.TemporaryDirectory() as directory, read_chunks(chunk):
        with streamlog.Log(os.path.join(directory, "rec.streamlog"), durability="off") as log:
            with StreamBuffer(ListSource(records), maxlen=3, commit_records=2, log=log) as buffer:
                assert buffer.wait(timeout=30)
                check_readers_against_models([(buffer.mk_reader(), ListModel(records, ended=True), "live buffer")], ops)
            check_readers_against_models([(log.session(-1).reader(), ListModel(records, ended=True), "from disk")], ops)


COMMIT_RECORDS = 4


class RunningRecording:
    """A running buffer fed from a queue: records commit in groups of
    ``COMMIT_RECORDS`` (no timed commits), so the newest ``published % 4``
    stay uncommitted in the ring; its 3 + 4 slots hold only the newest."""

    def __init__(self, buffer, items, records):
        self.buffer = buffer
        self.items = items
        self.waiting = list(records)
        self.published = []
        self.finished = False

    def visible(self, sees):
        """The records a reader sees: all ``"published"``, or only the
        ``"committed"`` ones (a reader of the stored session, as from another process)."""
        if sees == "published" or self.finished:
            return self.published
        return self.published[:len(self.published) - len(self.published) % COMMIT_RECORDS]

    def record(self, count):
        """Publish the next ``count`` records (fewer at the end, none once
        finished) and wait until the recorder has published and committed them."""
        if self.finished:
            return
        batch, self.waiting = self.waiting[:count], self.waiting[count:]
        for record in batch:
            self.items.put(record)
        self.published += batch
        published, committed = len(self.published), len(self.visible("committed"))
        probe = self.buffer.mk_reader(blocking=False)
        deadline = time.monotonic() + 30
        # a new reader's lag counts the records published; the commit follows the publishing
        while probe.lag < published or self.buffer.committed < committed:
            assert time.monotonic() < deadline, "the recorder did not publish and commit every record"
            time.sleep(0.001)
        assert (probe.lag, self.buffer.committed) == (published, committed)

    def finish(self):
        if not self.finished:
            self.finished = True
            self.items.put(StopIteration)
            assert self.buffer.wait(timeout=30)


@READER_SETTINGS
@given(record_keys, st.integers(0, 20), st.lists(st.one_of(queries, recording_steps), max_size=30), read_chunk_sizes,
       st.sampled_from([{"blocking": False}, {"blocking": True, "timeout": 0}]))
def test_reader_of_a_running_buffer_follows_the_list_model(keys, first, ops, chunk, reader_options):
    """Records published while the readers read, some committed and some
    only in the ring, then the end of the stream: the buffer's reader sees
    every record published, a reader of the stored session the committed
    ones.  With nothing new, a non-blocking reader's ``next`` returns None
    and a blocking one's with a zero timeout raises StopIteration."""
    records = _records(keys)
    items = queue.Queue()
    with tempfile.TemporaryDirectory() as directory, read_chunks(chunk):
        with StreamBuffer(Gate(items), maxlen=3, commit_records=COMMIT_RECORDS, commit_interval_s=3600,
                          log=os.path.join(directory, "rec.streamlog"), durability="off") as buffer:
            recording = RunningRecording(buffer, items, records)
            recording.record(first)
            cases = []
            for where, sees, reader in [("running buffer", "published", buffer.mk_reader(**reader_options)),
                                        ("its stored session", "committed", buffer.session.reader(**reader_options))]:
                model = ListModel(recording.visible(sees), ended=False, blocking=reader_options["blocking"], sees=sees)
                cases.append((reader, model, where))
            check_readers_against_models(cases, ops, recording)
