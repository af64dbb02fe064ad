"""Format 2's replay path (``records.v2.scan_records``, each block decoded
when the iteration reaches it, and ``BufferReader.irange`` over it) gives
exactly what ``scan`` and ``decode_record`` of each stored encoding give,
for random records, key kinds, ranges, limits and resumption points, and
damaged blocks raise CorruptRecord naming the session and key range."""

import math
import zlib

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import streamlog
from helpers import Replay
from streamlog.codec import decode_record, encode_record
from streamlog.errors import CorruptRecord
from streamlog.keys import encode_key
from streamlog.records import common, v2

SESSION = 9
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

arrays = st.builds(lambda values, dtype: np.array(values, dtype=dtype),
                   st.lists(st.integers(0, 100), max_size=6), st.sampled_from(["<i4", "<f8", "u1", "<i8"]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.integers(2**64, 2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.binary(max_size=40))
records_ = st.recursive(scalars | arrays, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(tuple), st.lists(inner, max_size=3),
    st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=8)
plain_records = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)
key_kinds = {
    "small int": st.integers(0, 2**40),
    "int": st.integers(-2**70, 2**70),
    "float": st.floats(allow_nan=False, allow_infinity=True),
    "str": st.text(max_size=6),
    "bytes": st.binary(max_size=6),
    "tuple": st.tuples(st.integers(-5, 5), st.text(max_size=2)),
}


def same(a, b):
    """Equal, and of the same types all the way down (NaN equals NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if type(a) in (tuple, list) and type(b) is type(a):
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is dict and type(b) is dict:
        return list(a) == list(b) and all(map(same, a.values(), b.values()))
    if type(a) is float and type(b) is float and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    environment = lmdb.open(str(tmp_path_factory.mktemp("scan") / "env"), map_size=256 << 20, max_dbs=4)
    yield environment
    environment.close()


def store(env, commits, page_size=4096):
    """A records database holding ``commits`` (lists of ``(key, record)``, keys
    not decreasing across all of them) of session SESSION as
    ``encode_commit`` writes them; the stored ``(record key, encoding)`` pairs."""
    db = env.open_db(b"records")
    prefix = common.session_prefix(SESSION)
    stored = []
    with env.begin(write=True) as txn:
        txn.drop(db, delete=False)
        seq = 0
        for commit in commits:
            keys = [encode_key(key) for key, _ in commit]
            payloads = [encode_record(record) for _, record in commit]
            entries = v2.encode_commit(prefix, seq, keys, payloads, [1000 + seq + i for i in range(len(commit))],
                                       page_size)
            txn.cursor(db).putmulti([(key, bytes(value)) for key, value in entries])
            stored += [(common.record_key(prefix, key, seq + i), payload) for i, (key, payload)
                       in enumerate(zip(keys, payloads))]
            seq += len(commit)
    return db, stored


@st.composite
def logs(draw, records=records_):
    """Commits of sorted keys of one kind, with records, and some records
    large enough for blocks split over continuations and several blocks."""
    kind = draw(st.sampled_from(sorted(key_kinds)))
    pairs = draw(st.lists(st.tuples(key_kinds[kind], records), min_size=1, max_size=60))
    if draw(st.booleans()):  # many small records: blocks of BLOCK_RECORDS, and more than one
        pairs += [(pairs[-1][0], (i, b"x" * 20)) for i in range(draw(st.integers(1, 2 * v2.BLOCK_RECORDS)))]
    if draw(st.booleans()):
        pairs.append((pairs[-1][0], b"y" * draw(st.integers(1, 70_000))))
    pairs.sort(key=lambda pair: encode_key(pair[0]))
    cuts = sorted(draw(st.lists(st.integers(1, len(pairs)), max_size=3)))
    return [pairs[a:b] for a, b in zip([0] + cuts, cuts + [len(pairs)]) if b > a]


@st.composite
def bounds(draw, stored):
    """``(start, stop, after, limit)`` record-key bounds around the stored keys."""
    keys = [key for key, _ in stored]
    def bound():
        choice = draw(st.sampled_from(["session", "a key", "between", "same key"]))
        if choice == "session":
            return None
        key = draw(st.sampled_from(keys))
        if choice == "a key":
            return key
        if choice == "between":
            return key + b"\x00"
        return common.same_key_bounds(key)[draw(st.integers(0, 1))]
    start = bound() or common.session_prefix(SESSION)
    stop = bound() or common.after_session(SESSION)
    after = draw(st.none() | st.sampled_from(keys))
    limit = draw(st.integers(1, len(keys) + 2))
    return start, stop, after, limit


@SETTINGS
@given(st.data(), logs())
def test_scan_records_gives_what_scan_and_decode_record_give(env, data, commits):
    db, stored = store(env, commits)
    start, stop, after, limit = data.draw(bounds(stored))
    with env.begin() as txn:
        records, last, exhausted = v2.scan_records(txn, db, start, stop, limit, after)
        entries = v2.scan(txn, db, start, stop, limit=limit, after=after)
    wanted = [(key, payload) for key, payload in stored
              if (key > after if after is not None else key >= start) and key <= stop][:limit]
    found = list(records)  # decoded after the transaction ended: the blocks hold their own bytes
    assert [key for key, _ in entries] == [key for key, _ in wanted]
    assert len(found) == len(wanted) and all(map(same, found, [record for _, record in entries]))
    assert all(same(record, decode_record(payload)) for record, (_, payload) in zip(found, wanted))
    assert last == (wanted[-1][0] if wanted else None)
    if exhausted:
        assert not [key for key, _ in stored if key > (last or start) and key <= stop and key > (after or b"")]
    else:
        assert len(found) == limit


@SETTINGS
@given(logs(plain_records))
def test_plain_blocks_read_in_any_chunks_give_every_record_once(env, commits):
    db, stored = store(env, commits)
    start, stop = common.session_prefix(SESSION), common.after_session(SESSION)
    found, after = [], None
    while True:
        with env.begin() as txn:
            records, last, exhausted = v2.scan_records(txn, db, start, stop, 7, after)
        found += records
        if exhausted:
            break
        after = last
    assert len(found) == len(stored) and all(same(r, decode_record(p)) for r, (_, p) in zip(found, stored))


def test_a_damaged_block_is_reported_before_any_record_of_its_chunk(env):
    commits = [[(i, (i, b"p" * 30)) for i in range(1, 3001)]]
    db, stored = store(env, commits)
    with env.begin() as txn:
        keys = list(txn.cursor(db).iternext(values=False))
    assert len(keys) > 3
    heads = [key for key in keys if key in {k for k, _ in stored}]
    victim = heads[1]  # the second block
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(victim, db=db))
        value[-1] ^= 0x40
        txn.put(victim, bytes(value), db=db)
    start, stop = common.session_prefix(SESSION), common.after_session(SESSION)
    with env.begin() as txn:
        with pytest.raises(CorruptRecord, match=rf"the block of session {SESSION} holding the records after key "
                                                rf"{common.key_of(heads[0])!r} up to key "
                                                rf"{common.key_of(victim)!r} \(seq {common.seq_of(victim)}\) "
                                                "is damaged: its checksum does not match") as caught:
            v2.scan_records(txn, db, start, stop, 10_000)
        records, last, _ = v2.scan_records(txn, db, start, stop, 1)
    assert (caught.value.session, caught.value.key) == (SESSION, common.key_of(victim))
    assert list(records) == [(1, b"p" * 30)] and last == stored[0][0]


def test_a_block_that_does_not_decode_raises_corrupt_record_from_the_iteration(env):
    # a crafted block with a valid checksum: its plain records' msgpack array holds one record too few
    prefix = common.session_prefix(SESSION)
    keys, payloads = [encode_key(1), encode_key(2)], [encode_record(1), encode_record(2)]
    (key, value), = [(k, bytes(v)) for k, v in v2.encode_commit(prefix, 0, keys, payloads, [5, 6], 4096)]
    data = bytearray(value[1:])
    at = data.index(b"\xdd\x00\x00\x00\x02")
    data[at + 4] = 3
    data[:4] = zlib.crc32(bytes(data[4:])).to_bytes(4, "little")
    db = env.open_db(b"records")
    with env.begin(write=True) as txn:
        txn.drop(db, delete=False)
        txn.put(key, bytes([0]) + bytes(data), db=db)
    with env.begin() as txn:
        records, last, exhausted = v2.scan_records(txn, db, prefix, common.after_session(SESSION), 10)
    assert last == key and exhausted
    with pytest.raises(CorruptRecord, match="damaged records"):
        list(records)


def test_irange_equals_range_on_a_recorded_log_and_reads_lazily(tmp_path):
    n = 10_000
    path = tmp_path / "rec.streamlog"
    with streamlog.StreamBuffer(Replay([(i, f"r{i}") for i in range(n)]), log=str(path)) as buffer:
        assert buffer.wait(30)
    with streamlog.Log(path, create=False) as log:
        session = log.session(-1)
        lazy = session.irange(10, 5000)
        assert next(lazy) == (10, "r10")
        rest = list(lazy)
        assert rest == session.range(11, 5000) and len(rest) == 4990
        assert list(session.irange()) == [(i, f"r{i}") for i in range(n)]
        assert list(session.irange(n)) == [] and list(session.irange(20, 19)) == []
