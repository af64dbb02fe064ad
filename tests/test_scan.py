"""Format 2's read paths: ``records.v2.scan_blocks`` with each block decoded
when the iteration reaches it (``BufferReader.irange`` and ``ientries``) gives
exactly what ``scan`` and ``decode_record`` of each stored encoding give,
for random records, key kinds, ranges, limits and resumption points;
damaged blocks raise CorruptRecord naming the session and key range; the C
of ``streamlog._scan`` (``Block.record_keys``, ``Block.entries``, and so
``ientries``) gives exactly what the Python reference gives, also on
damaged and crafted block bytes."""

import os
import shutil

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import streamlog
from helpers import Replay, same
from test_columnar import rewrite_block
from streamlog.codec import decode_record, encode_record
from streamlog.errors import CorruptRecord
from streamlog.keys import encode_key
from streamlog import _scan
from streamlog.keys import decode_key_prefix
from streamlog.reader import Entry
from streamlog.records import common, v1, v2

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
    """``(start, stop, after, limit)`` as the readers make them: record-key
    bounds of encoded keys (``records.key_bounds``), ``after`` a record key."""
    prefix = common.session_prefix(SESSION)
    encoded = [key[len(prefix):-8] for key, _ in stored]
    start_key = draw(st.none() | st.sampled_from(encoded))
    stop_key = draw(st.none() | st.sampled_from(encoded))
    start, stop = common.key_bounds(prefix, start_key, stop_key)
    after = draw(st.none() | st.sampled_from([key for key, _ in stored]))
    limit = draw(st.integers(1, len(stored) + 2))
    return start, stop, after, limit


def decoded(parts):
    """The records of ``scan_blocks`` parts, each block decoded (after the transaction ended)."""
    return [record for block, lo, hi in parts for record in block.records(lo, hi)]


@SETTINGS
@given(st.data(), logs())
def test_blocks_decoded_after_the_scan_give_what_scan_and_decode_record_give(env, data, commits):
    db, stored = store(env, commits)
    start, stop, after, limit = data.draw(bounds(stored))
    with env.begin() as txn:
        parts, last, exhausted = v2.scan_blocks(txn, db, start, stop, limit, after)
        entries = v2.scan(txn, db, start, stop, limit=limit, after=after)
    wanted = [(key, payload) for key, payload in stored
              if (key > after if after is not None else key >= start) and key <= stop][:limit]
    found = decoded(parts)  # the blocks hold their own bytes
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
            parts, last, exhausted = v2.scan_blocks(txn, db, start, stop, 7, after)
        found += decoded(parts)
        if exhausted:
            break
        after = last
    assert len(found) == len(stored) and all(same(r, decode_record(p)) for r, (_, p) in zip(found, stored))


def test_a_damaged_block_is_reported_before_any_record_of_its_chunk(env):
    commits = [[(i, (i, b"p" * 30)) for i in range(1, 3001)]]
    db, stored = store(env, commits)
    with env.begin() as txn:
        keys = list(txn.cursor(db).iternext(values=False))
    heads = [key for key in keys if key in {k for k, _ in stored}]
    assert len(heads) > 3
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
            v2.scan_blocks(txn, db, start, stop, 10_000)
        parts, last, _ = v2.scan_blocks(txn, db, start, stop, 1)
    assert (caught.value.session, caught.value.key) == (SESSION, common.key_of(victim))
    assert decoded(parts) == [(1, b"p" * 30)] and last == stored[0][0]


def test_a_block_that_does_not_decode_is_the_error_every_read_gives(tmp_path):
    # a crafted block with a valid checksum: its plain records' msgpack array holds one record too many
    path = tmp_path / "rec.streamlog"
    with streamlog.StreamBuffer(Replay([(i, f"r{i}") for i in range(3000)]), log=str(path)) as buffer:
        assert buffer.wait(30)

    def one_too_many(block):
        n = int.from_bytes(block[5:9], "little")
        at = block.index(b"\xdd" + n.to_bytes(4, "big"))
        block[at + 1:at + 5] = (n + 1).to_bytes(4, "big")

    rewrite_block(path, 1, one_too_many)  # and its checksum set again
    with streamlog.Log(path, create=False) as log:
        session = log.session(-1)
        messages = set()
        for read in (lambda: list(session.irange()), lambda: session.range(), lambda: list(session.ientries()),
                     lambda: list(session.reader()), lambda: list(session.ientries(since=0))):
            with pytest.raises(CorruptRecord) as caught:
                read()
            messages.add(str(caught.value))
        assert len(messages) == 1 and f"log {path} is damaged: damaged records" in messages.pop()
        first = session.irange()
        assert [next(first) for _ in range(5)] == [(i, f"r{i}") for i in range(5)]  # the first block reads


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


# -- streamlog._scan against the Python reference ------------------------------------------------------------


def blocks_of(env, db):
    """Every block of ``db``, read and checked."""
    start, stop = common.session_prefix(SESSION), common.after_session(SESSION)
    with env.begin() as txn:
        parts, _, _ = v2.scan_blocks(txn, db, start, stop, 10**9)
    return [block for block, _, _ in parts]


def reference_record_keys(data, prefix, lo, hi):
    """Block.record_keys as it was in Python, from the block's bytes alone."""
    n, first_seq, keys_len = (int.from_bytes(data[a:b], "little") for a, b in ((5, 9), (13, 21), (29, 33)))
    at = 33 + 12 * n
    ends = [int.from_bytes(data[33 + 4 * i:37 + 4 * i], "little") for i in range(n)]
    start = at + (ends[lo - 1] if lo else 0)
    out = []
    for i in range(lo, hi):
        stop = at + ends[i]
        out.append(prefix + data[start:stop] + common.SEQ.pack(first_seq + i))
        start = stop
    return out


def reference_entries(data, lo, hi, records):
    """What a list from _scan.entries must hold, from the block's bytes alone."""
    n, first_seq, first_arrival = (int.from_bytes(data[a:b], "little") for a, b in ((5, 9), (13, 21), (21, 29)))
    at = 33 + 12 * n
    ends = [0] + [int.from_bytes(data[33 + 4 * i:37 + 4 * i], "little") for i in range(n)]
    return [Entry(decode_key_prefix(data, None, at + ends[i])[0],
                  first_arrival + int.from_bytes(data[33 + 4 * (n + i):37 + 4 * (n + i)], "little"),
                  record, first_seq + i) for i, record in zip(range(lo, hi), records)]


@SETTINGS
@given(st.data(), logs())
def test_block_entries_and_record_keys_equal_the_python_reference(env, data, commits):
    db, stored = store(env, commits)
    key_types = data.draw(st.sampled_from([None, "int", "float"]))
    keys = iter([key for key, _ in stored])
    for block in blocks_of(env, db):
        lo = data.draw(st.integers(0, block.n - 1))
        hi = data.draw(st.integers(lo + 1, block.n))  # the readers never ask a block for no records
        assert block.record_keys(0, block.n) == [next(keys) for _ in range(block.n)]
        assert block.record_keys(lo, hi) == reference_record_keys(block.data, block.prefix, lo, hi)
        assert block.record_keys(lo, lo) == []
        assert block.records(0, 0) == [] and block.records(lo, lo) == [] and block.entries(0, 0, Entry) == []
        records = block.records(lo, hi)
        found = block.entries(lo, hi, Entry, key_types)
        python = python_entries(block, lo, hi, key_types, records)
        assert all(type(entry) is Entry for entry in found) and len(found) == len(python)
        assert all(same(tuple(a), tuple(b)) for a, b in zip(found, python))
        fast = _scan.entries(Entry, block.data, lo, hi, records)
        assert (fast is not None) == all(type(key) is int and 0 <= key < 2**64 for key in block.keys(lo, hi))
        if fast is not None:  # what Block.entries gives unless key_types is "float"
            assert all(same(tuple(a), tuple(b)) for a, b in zip(fast, python_entries(block, lo, hi, None, records)))


def python_entries(block, lo, hi, key_types, records):
    """Block.entries without the C."""
    return list(map(Entry, block.keys(lo, hi, key_types), block.arrivals(lo, hi).tolist(), records,
                    range(block.first_seq + lo, block.first_seq + hi)))


@st.composite
def crafted(draw):
    """Bytes of a valid block, then damaged anywhere after the checksum (the C
    is given what a crafted block with a valid checksum could hold), with n
    and keys_len kept plausible half of the time."""
    n = draw(st.integers(1, 6))
    keys = sorted(draw(st.lists(st.integers(0, 2**64 - 1) | st.integers(-5, 5) | st.text(max_size=3),
                                min_size=n, max_size=n)), key=lambda k: encode_key(k))
    payloads = [encode_record(i) for i in range(n)]
    (_, value), *_ = [(k, bytes(v)) for k, v in v2.encode_commit(common.session_prefix(SESSION), 
                      draw(st.integers(0, 2**64 - n)), [encode_key(k) for k in keys], payloads,
                      sorted(draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n))), 1 << 20)]
    block = bytearray(value[1:])
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(4, len(block) - 1))
        block[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del block[draw(st.integers(0, len(block))):]
    return bytes(block)


@settings(max_examples=600, deadline=None)
@given(crafted(), st.integers(-1, 8), st.integers(-1, 8), st.binary(max_size=6))
def test_scan_c_on_crafted_blocks_equals_the_reference_or_refuses(data, lo, hi, prefix):
    try:
        keys = _scan.record_keys(data, prefix, lo, hi)
    except ValueError:
        n = int.from_bytes(data[5:9], "little") if len(data) >= 9 else 0
        keys_len = int.from_bytes(data[29:33], "little") if len(data) >= 33 else 0
        assert len(data) < 33 or not 1 <= n or 33 + 12 * n + keys_len > len(data) or not 0 <= lo <= hi <= n
        with pytest.raises(ValueError):
            _scan.entries(Entry, data, lo, hi, [None] * max(hi - lo, 0))
        return
    except OverflowError:
        assert int.from_bytes(data[13:21], "little") + hi - 1 >= 2**64
        return
    assert keys == reference_record_keys(data, prefix, lo, hi)
    records = [object() for _ in range(lo, hi)]
    found = _scan.entries(Entry, data, lo, hi, records)
    if found is not None:
        assert found == reference_entries(data, lo, hi, records)
        assert all(type(entry) is Entry and entry.record is record for entry, record in zip(found, records))
    with pytest.raises(ValueError, match="records for"):
        _scan.entries(Entry, data, lo, hi, records + [None])
    with pytest.raises(TypeError):
        _scan.entries(dict, data, lo, hi, records)


@SETTINGS
@given(st.data(), logs())
def test_ientries_gives_what_the_record_by_record_path_gives(env, data, commits):
    db, stored = store(env, commits)
    key_types = data.draw(st.sampled_from([None, "float"]))
    start, stop, after, limit = data.draw(bounds(stored))
    with env.begin() as txn:
        parts, last, _ = v2.scan_blocks(txn, db, start, stop, limit, after)
        timed = v2.scan(txn, db, start, stop, limit=limit, after=after, with_time=True)
    found = [entry for block, lo, hi in parts for entry in block.entries(lo, hi, Entry, key_types)]
    expected = [Entry(common.key_of(key, key_types), arrival, record, common.seq_of(key))
                for key, arrival, record in timed]
    assert len(found) == len(expected) and all(same(tuple(a), tuple(b)) for a, b in zip(found, expected))
    run = v1.Run(timed)
    assert all(same(tuple(a), tuple(b)) for a, b in zip(run.entries(0, run.n, Entry, key_types), expected))


def test_ientries_of_a_recorded_log_with_time_bounds(tmp_path):
    n = 5000
    path = tmp_path / "rec.streamlog"
    with streamlog.StreamBuffer(Replay([(i * 3, f"r{i}") for i in range(n)]), log=str(path)) as buffer:
        assert buffer.wait(30)
    with streamlog.Log(path, create=False) as log:
        session = log.session(-1)
        every = list(session.ientries())
        assert [(e.key, e.record, e.seq) for e in every] == [(i * 3, (i * 3, f"r{i}"), i) for i in range(n)]
        assert all(type(e) is Entry for e in every)
        middle = every[n // 2].arrival_us
        assert list(session.ientries(since=middle / 1e6)) == [e for e in every if e.arrival_us >= middle]
        assert list(session.ientries(until=middle / 1e6)) == [e for e in every if e.arrival_us <= middle]
        assert list(session.ientries(30, 60, after=every[12])) == every[13:21]
        floats = list(session.reader().ientries(key_types="float"))
        assert [type(e.key) for e in floats[:2]] == [float, float] and floats == every
        assert session.reader().tail_entries(3) == every[-3:]


def test_ientries_of_a_format_1_log(tmp_path):
    path = tmp_path / "old.streamlog"
    shutil.copytree(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "v1-log"), path)
    with streamlog.Log(path, create=False) as log:
        s1 = log.session(1)
        entries = list(s1.ientries())
        assert [(e.key, e.record, e.seq) for e in entries] == [(i, (i, b"payload-%d" % i), i) for i in range(300)]
        markers = list(s1.ientries(stream="markers"))
        assert [(e.key, e.seq) for e in markers] == [(j * 60.0, j) for j in range(5)]
        assert list(s1.ientries(since=entries[150].arrival_us / 1e6))[0].seq <= 150
