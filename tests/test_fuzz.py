"""Fuzzing the decoders with hypothesis: arbitrary bytes and damaged valid
encodings of records, keys and stored records either decode or raise
CorruptRecord -- never another exception, never a hang, never an allocation
the input does not justify, never code from the bytes (no pickle)."""

import struct
import tracemalloc

import lmdb
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from streamlog.codec import decode_plain_records, decode_record, encode_record, plain_array_header
from streamlog.records import common, v1, v2
from streamlog.errors import CorruptRecord, UnencodableRecord
from streamlog.keys import decode_key, encode_key

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- record shapes -------------------------------------------------------------

DTYPES = ["<f4", ">f8", "<i2", "u1", "?", "<c8", "S3", "<U2", "<M8[us]", [("a", "<i4"), ("b", ">f2", (2,))]]


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    raw = draw(st.binary(min_size=int(np.prod(shape)) * dtype.itemsize, max_size=int(np.prod(shape)) * dtype.itemsize))
    array = np.frombuffer(raw, dtype).reshape(shape).copy()
    return np.asfortranarray(array) if draw(st.booleans()) else array


numpy_scalars = st.builds(lambda value, kind: np.dtype(kind).type(value),
                          st.integers(0, 100), st.sampled_from(["<f4", "<i8", "u2", "?", "<c16"]))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**64, max_value=2**200), st.floats(),
    st.text(max_size=20), st.binary(max_size=40), st.binary(max_size=10).map(bytearray), numpy_scalars, arrays(),
)
hashable = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=5))
records_ = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(hashable, inner, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def damaged(draw, valid):
    """``valid`` (bytes) with bits flipped, bytes overwritten, cut short or extended."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["flip", "overwrite", "truncate", "extend"]))
        if how == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "overwrite" and data:
            i = draw(st.integers(0, len(data) - 1))
            patch = draw(st.binary(min_size=1, max_size=8))
            data[i:i + len(patch)] = patch
        elif how == "truncate":
            del data[draw(st.integers(0, len(data))):]
        else:
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def decodes_or_is_corrupt(decode, data):
    try:
        decode(data)
    except CorruptRecord:
        pass


# -- records ---------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_corrupt_record(data):
    decodes_or_is_corrupt(decode_record, data)
    decodes_or_is_corrupt(decode_record, b"\xc1" + struct.pack(">I", len(data) // 2) + data)


@FUZZ
@given(st.data(), records_)
def test_damaged_encodings_of_records_decode_or_raise_corrupt_record(data, record):
    encoded = encode_record(record)
    decodes_or_is_corrupt(decode_record, data.draw(damaged(encoded)))


def test_the_fuzzed_shapes_include_every_layout():
    """The strategies reach both layouts, arrays, scalars, lists and big ints
    (so the fuzz above damages every part of the decoder)."""
    grid = np.arange(6, dtype="<i2").reshape(2, 3)
    record = [{"a": (np.asfortranarray(grid), np.float32(1.5))}, 2**70, bytearray(b"x")]
    encoded = encode_record(record)
    assert encoded[0] == 0xC1 and encode_record((1, "a"))[0] != 0xC1
    got = decode_record(encoded)
    assert got[0]["a"][0].flags.f_contiguous and (got[0]["a"][0] == grid).all() and got[1:] == [2**70, b"x"]


def general(body, data=b""):
    """A record of the general layout with this msgpack ``body`` and array data."""
    packed = msgpack.packb(body, use_bin_type=True)
    return b"\xc1" + struct.pack(">I", len(packed)) + packed + data


ARRAY = msgpack.ExtType(4, b"")
SCALAR = msgpack.ExtType(5, b"")
LIST = msgpack.ExtType(3, b"")


CRAFTED = [
    (general((ARRAY, "<f8", (2**40,), False, 0), b"\x00" * 8), "items in a record"),
    (general((ARRAY, "<f8", (2**20, 2**20, 0), False, 0)), None),  # empty: fine, and allocates nothing
    (general((ARRAY, "<f8", (4,), False, 0), b"\x00" * 16), "only 16 are left"),
    (general(((ARRAY, "|u1", (8,), False, 0),) * 1000, b"\x00" * 8), "offset 0, expected 8"),
    (general((ARRAY, "|u1", (4,), False, 4), b"\x00" * 8), "offset 4, expected 0"),
    (general((ARRAY, "|O8", (1,), False, 0), b"\x00" * 8), "bad dtype"),
    (general((ARRAY, {"names": ["o"], "formats": ["|O8"], "offsets": [0], "itemsize": 8}, (1,), False, 0),
             b"\x00" * 8), "bad dtype"),
    (general((SCALAR, "|O8", b"\x00" * 8)), "bad dtype"),
    (general((SCALAR, "<f8", b"\x00" * 4)), "needs 8 bytes"),
    (general((ARRAY, "<f8", (-1, -1), False, 0), b"\x00" * 8), "bad array shape"),
    (general((ARRAY, "<f8", (1,) * 65, False, 0), b"\x00" * 8), "bad array shape"),
    (general((1, LIST)), "outside the head"),
    (general({LIST: 1}), "outside the head"),
    (b"\xdd\xff\xff\xff\xff", "exceeds max_array_len"),  # a list claiming 2**32 - 1 items
    (b"\xc6\xff\xff\xff\xff" + b"\x00" * 8, "incomplete input"),  # bytes claiming 4 GiB
    (b"\xdb\xff\xff\xff\xff" + b"\x00" * 8, "incomplete input"),  # str claiming 4 GiB
    (b"\xdf\xff\xff\xff\xff", "exceeds max_map_len"),
    (b"\xc9\xff\xff\xff\xff\x01", "exceeds max_ext_len"),
    (b"\xd4\x03\x00", "ext type 3 in a plain record"),
    (b"\xc1\xff\xff\xff\xff\x90", "runs past the end"),
]


@pytest.mark.parametrize("crafted, problem", CRAFTED, ids=[problem or "empty array" for _, problem in CRAFTED])
def test_crafted_records_are_refused_before_allocating(crafted, problem):
    tracemalloc.start()
    try:
        if problem is None:
            assert decode_record(crafted).size == 0
        else:
            with pytest.raises(CorruptRecord, match=problem):
                decode_record(crafted)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100_000


def test_no_decoded_array_outgrows_its_record():
    """1000 array entries all pointing at the same 1 MB of data would copy
    1 GB if each were served; the decoder serves the first and stops."""
    crafted = general(tuple((ARRAY, "|u1", (1 << 20,), False, 0) for _ in range(1000)), b"\x00" * (1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(CorruptRecord, match="offset 0, expected 1048576"):
            decode_record(crafted)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20


def test_big_ints_crafted_to_share_one_hash_are_refused():
    """``k * (2**61 - 1)`` all hash alike: a dict of 20,000 of them (250 KB)
    would take seconds to build, of 80,000 (1 MB) minutes."""
    alike = [k * (2**61 - 1) for k in range(9, 20_009)]  # from 9 on, beyond 64 bits
    crafted = general({msgpack.ExtType(1, n.to_bytes(12, "big", signed=True)): 0 for n in alike})
    with pytest.raises(CorruptRecord, match="share one hash"):
        decode_record(crafted)
    with pytest.raises(UnencodableRecord, match="share its hash"):
        encode_record({n: 0 for n in alike[:17]})
    assert decode_record(encode_record({n: 0 for n in alike[:16]})) == {n: 0 for n in alike[:16]}


# -- keys --------------------------------------------------------------------------

keys = st.recursive(
    st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=8), st.binary(max_size=8)),
    lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=8,
)


@FUZZ
@given(st.binary(max_size=60))
def test_arbitrary_bytes_decode_as_a_key_or_raise_corrupt_record(data):
    decodes_or_is_corrupt(decode_key, data)


@FUZZ
@given(st.data(), keys)
def test_damaged_key_encodings_decode_or_raise_corrupt_record(data, key):
    decodes_or_is_corrupt(decode_key, data.draw(damaged(encode_key(key))))


@pytest.mark.parametrize("crafted", [
    b"\x60" * 5000,  # tuples nested past the recursion limit
    b"\x29\x01\xff" + b"\x01" * 255 + b"\x03\x02",  # a 255-byte integer with a fraction: no float holds it
])
def test_crafted_keys_raise_corrupt_record(crafted):
    with pytest.raises(CorruptRecord, match="damaged key"):
        decode_key(crafted)


# -- stored records (head entries, blocks and continuations) -------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    environment = lmdb.open(str(tmp_path_factory.mktemp("fuzz") / "env"), map_size=64 << 20, max_dbs=4)
    yield environment
    environment.close()


def stored_entries(version, sizes):
    """Entries of records 1..n of session 7 with payloads of ``sizes`` (some
    split over continuations): format 1, or format 2 in blocks of two."""
    prefix = common.session_prefix(7)
    payloads = [encode_record((seq + 1, b"p" * size)) for seq, size in enumerate(sizes)]
    keys = [encode_key(seq + 1) for seq in range(len(sizes))]
    out = []
    for seq, payload in enumerate(payloads):
        if version == 1:
            out += v1.entries(common.record_key(prefix, keys[seq], seq), 1000 + seq, payload, 4096)
        elif seq % 2 == 0:
            pair = payloads[seq:seq + 2]
            entries = v2.encode_commit(prefix, seq, keys[seq:seq + 2], pair, [1000 + seq] * len(pair), 4096)
            out += [(key, bytes(value)) for key, value in entries]  # the values are views of one buffer per block
    return out


def put_entries(env, entries):
    db = env.open_db(b"records")
    with env.begin(write=True) as txn:
        txn.drop(db, delete=False)
        for key, value in entries:
            txn.put(key, value, db=db)
    return db


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data(), st.sampled_from([1, 2]), st.lists(st.sampled_from([10, 700, 3000, 9000]), min_size=1, max_size=4))
def test_damaged_stored_records_read_back_or_raise_corrupt_record(env, data, version, sizes):
    entries = stored_entries(version, sizes)
    first_key = entries[0][0]
    index = data.draw(st.integers(0, len(entries) - 1))
    how = data.draw(st.sampled_from(["value", "drop", "key"]))
    if how == "value":
        entries[index] = (entries[index][0], data.draw(damaged(entries[index][1])))
    elif how == "drop":
        del entries[index]
    else:
        entries[index] = (data.draw(damaged(entries[index][0])) or b"\x00", entries[index][1])
    db = put_entries(env, entries)
    layout = v1 if version == 1 else v2
    start, stop = common.session_prefix(7), common.after_session(7)
    with env.begin() as txn:
        for read in (
            lambda: layout.scan(txn, db, start, None, with_time=True),
            lambda: [r for b, lo, hi in layout.scan_blocks(txn, db, start, stop, 1000)[0] for r in b.records(lo, hi)],
            lambda: layout.scan_reverse(txn, db, start, stop, 1000),
            lambda: layout.scan(txn, db, start, None, after=first_key),
            lambda: layout.last_arrival_us(txn, db, 7),
        ):
            try:
                read()
            except CorruptRecord as exc:  # a damaged key may move the record to another session
                assert "damaged" in str(exc) or "continuation" in str(exc) or "header" in str(exc)


def test_a_missing_continuation_names_the_record(env):
    db = put_entries(env, stored_entries(1, [9000])[:-1])
    with env.begin() as txn:
        with pytest.raises(CorruptRecord, match=r"session 7 with key 1 \(seq 0\): continuation \d+ of \d+ is missing") as caught:
            v1.scan(txn, db, common.session_prefix(7), None)
        with pytest.raises(CorruptRecord, match="continuation entries follow a record that has"):
            v1.scan_reverse(txn, db, common.session_prefix(7), common.after_session(7), 5)
    assert (caught.value.session, caught.value.key) == (7, 1)


def test_a_damaged_block_names_its_session_and_key_range(env):
    entries = stored_entries(2, [10, 10, 10, 10])
    assert [common.seq_of(key) for key, _ in entries] == [1, 3]  # two blocks, keyed by their last records
    key, value = entries[1]
    entries[1] = (key, value[:-3] + bytes([value[-3] ^ 1]) + value[-2:])
    db = put_entries(env, entries)
    start, stop = common.session_prefix(7), common.after_session(7)
    with env.begin() as txn:
        assert [record[0] for _, record in v2.scan(txn, db, start, stop, limit=2)] == [1, 2]  # the first block is fine
        with pytest.raises(CorruptRecord, match=r"the block of session 7 holding the records after key 2 up to key 4 "
                                                r"\(seq 3\) is damaged: its checksum does not match") as caught:
            v2.scan(txn, db, start, stop)
        with pytest.raises(CorruptRecord, match="up to key 4"):
            v2.scan_reverse(txn, db, start, stop, 1)
    assert (caught.value.session, caught.value.key) == (7, 4)


plain_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**64, max_value=2**100),
                          st.floats(allow_nan=False), st.text(max_size=10), st.binary(max_size=20))
plain_records = st.one_of(plain_scalars, st.lists(plain_scalars, max_size=4).map(tuple))


@FUZZ
@given(st.lists(plain_records, max_size=20))
def test_plain_records_decode_together_as_they_do_alone(batch):
    payloads = [encode_record(record) for record in batch]
    assert decode_plain_records(plain_array_header(len(batch)) + b"".join(payloads), len(batch)) == tuple(
        map(decode_record, payloads))


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 40))
def test_arbitrary_bytes_as_plain_records_decode_or_raise_corrupt_record(data, count):
    decodes_or_is_corrupt(lambda buf: decode_plain_records(buf, count), plain_array_header(count) + data)
