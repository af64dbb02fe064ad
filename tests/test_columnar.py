"""Columnar decoding (streamlog.columns) and the frames built on it: blocks
of uniform records gathered from their bytes must give exactly what the
records decoded one by one give, on real recordings (uniform and mixed
blocks, both key types, bounds crossing blocks, empty ranges, damaged and
crafted blocks), and on hostile bytes (hypothesis) nothing but that or a
refusal."""

import os
import shutil
import zlib

import lmdb
import msgpack
import numpy as np
import pandas
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamlog
from streamlog import columns, errors
from streamlog.codec import decode_general_bodies, decode_record, encode_record
from streamlog.keys import decode_key_prefix, encode_key, small_ints
from streamlog.records import common
from audio_helpers import record
from helpers import same, wait_until
from test_frames import Records as FramesRecords


class Records(FramesRecords):
    """``records`` handed out in ReadBatches of ``batch``, keyed by ``key(record)``, with ``info``."""

    def __init__(self, records, key, batch=300, info=None):
        super().__init__(records, key, batch)
        self._info = info or {}

    @property
    def info(self):
        return dict(self._info)


def first(record):
    return record[0]


def decoded(session, **bounds):
    """(keys, times_us, records) of the session's records decoded one by one (Session.ientries)."""
    entries = list(session.ientries(**bounds))
    return ([e.key for e in entries], np.array([e.arrival_us for e in entries], dtype=np.int64),
            [e.record for e in entries])


def expected_numpy(session, concat=False, **bounds):
    keys, times, found = decoded(session, **bounds)
    values = [r[1] if type(r) is tuple and len(r) == 2 and r[0] == k else r for k, r in zip(keys, found)]
    if values and isinstance(values[0], np.ndarray):
        return keys, times, (np.concatenate(values) if concat else np.stack(values))
    return keys, times, np.array(values)


def assert_numpy_matches(session, concat=False, **bounds):
    got = session.to_numpy(**bounds)
    keys, times, values = expected_numpy(session, concat, **bounds)
    assert got.keys.tolist() == keys and np.array_equal(got.times_us, times)
    assert got.values.dtype == values.dtype and got.values.shape == values.shape
    assert np.array_equal(got.values, values)
    return got


INT_WIDTHS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, -1, -32, -33, -128, -129,
              -32768, -32769, -2**31, -2**31 - 1, -2**63]


def test_numbers_and_pairs_of_every_int_width_match_the_records_decoded_one_by_one(lab_log):
    floats = record(Records([(i, i * 0.25 - 7.5) for i in range(5_000)], first), lab_log)
    got = assert_numpy_matches(floats)
    assert got.values.dtype == np.float64 and got.keys.dtype == np.int64 and len(got.values) == 5_000
    ints = record(Records([(i, INT_WIDTHS[i % len(INT_WIDTHS)]) for i in range(3_000)], first), lab_log)
    got = assert_numpy_matches(ints)
    assert got.values.dtype == np.int64 and got.values[:len(INT_WIDTHS)].tolist() == INT_WIDTHS
    bare = record(Records([float(i) / 3 for i in range(2_500)], lambda r: r * 3), lab_log)
    assert assert_numpy_matches(bare).keys.dtype == np.float64
    frame = bare.to_pandas()
    assert frame["value"].tolist() == [float(i) / 3 for i in range(2_500)]


def test_a_number_beyond_int64_or_a_pair_not_keyed_by_its_first_item_is_decoded_record_by_record(lab_log):
    big = record(Records([(i, 2**63 + i) for i in range(2_000)], first), lab_log)
    got = big.to_numpy()
    assert got.values.tolist() == [2**63 + i for i in range(2_000)]
    other = record(Records([(i, i + 1) for i in range(2_000)], lambda r: r[1] * 10), lab_log)
    got = other.to_numpy()  # the pairs are the records themselves: rows of two
    assert got.values.shape == (2_000, 2) and got.values[5].tolist() == [5, 6]


def test_mixed_blocks_match_and_a_record_that_does_not_fit_is_named(lab_log):
    mixed = [(i, float(i) if i % 700 < 350 else i) for i in range(4_000)]
    session = record(Records(mixed, first), lab_log)
    got = assert_numpy_matches(session)
    assert got.values.dtype == np.float64
    rows = record(Records([(i, np.arange(3, dtype=np.int16) + i) for i in range(1_500)]
                          + [(1_500, np.arange(4, dtype=np.int16))], first), lab_log)
    with pytest.raises(errors.RecordShapeError, match="the record with key 1500 does not fit"):
        rows.to_numpy()
    assert_numpy_matches(rows, stop=1_499)


def test_arrays_stacked_and_concatenated_match_across_bounds_that_cross_blocks(lab_log):
    block = np.random.default_rng(3).standard_normal(1_000).astype(np.float32)
    samples = record(Records([(i, block + np.float32(i)) for i in range(400)], first, batch=37,
                             info={"rate_hz": 1000.0}), lab_log)
    got = assert_numpy_matches(samples, concat=True)
    assert got.values.shape == (400_000,) and got.offsets.tolist() == list(range(0, 400_000, 1_000))
    part = assert_numpy_matches(samples, concat=True, start=13, stop=287)
    assert part.keys.tolist() == list(range(13, 288)) and part.offsets[1] == 1_000
    frames = [(np.arange(6).reshape(2, 3) * i).astype(">i4") for i in range(3_000)]
    stacked = record(Records([(i, f) for i, f in enumerate(frames)], first), lab_log)
    got = assert_numpy_matches(stacked, start=999, stop=2_222)
    assert got.values.shape == (1_224, 2, 3) and got.values.dtype == np.dtype("=i4")
    bare = record(Records([np.full(5, i, dtype=np.uint16) for i in range(2_000)], lambda r: float(r[0]) / 2), lab_log)
    got = assert_numpy_matches(bare)
    assert got.values.shape == (2_000, 5) and got.keys.dtype == np.float64
    times = decoded(stacked)[1]
    t0, t1 = times[500] / 1e6, times[2_600] / 1e6
    got = stacked.to_numpy(start=t0, stop=t1, by="time")
    expected = [i for i, t in enumerate(times) if t0 <= t / 1e6 <= t1]
    assert got.keys.tolist() == expected and np.array_equal(got.values, np.stack([frames[i] for i in expected]))


def test_empty_ranges_give_empty_arrays_and_frames(lab_log):
    session = record(Records([(i, i * 0.5) for i in range(3_000)], first), lab_log)
    for bounds in ({"start": 3_000}, {"start": 7, "stop": 6}):
        got = session.to_numpy(**bounds)
        assert len(got.values) == len(got.keys) == len(got.times_us) == len(got.offsets) == 0
        assert len(session.to_pandas(**bounds)) == 0 and session.to_arrow(**bounds).num_rows == 0


def test_dict_records_into_pandas_and_arrow_match_the_records_decoded_one_by_one(lab_log):
    written = [{"n": i, "x": i * 0.25, "label": f"t{i % 3}", "ok": i % 2 == 0, "pair": (i, -i)}
               for i in range(5_000)]
    written[2_345] = {"n": 2_345, "x": None, "label": b"\x00raw", "ok": True, "extra": bytearray(b"ba")}
    session = record(Records(written, lambda r: r["n"]), lab_log)
    frame = session.to_pandas()
    keys, times, found = decoded(session)
    assert frame["key"].tolist() == keys and frame["time"].astype("int64").tolist() == (times * 1000).tolist()
    names = ["n", "x", "label", "ok", "pair", "extra"]
    assert frame.columns.tolist() == ["key", "time"] + names
    for name in names:
        assert [missing_as_none(cell) for cell in frame[name].tolist()] == [r.get(name) for r in found]
    part = session.to_pandas(start=1_000, stop=4_321)
    assert part["n"].tolist() == list(range(1_000, 4_322))
    table = session.to_arrow(start=2_000)
    assert table.column("n").to_pylist() == list(range(2_000, 5_000))
    listed = record(Records([{"n": i, "v": [i, i]} for i in range(1_500)], lambda r: r["n"]), lab_log)
    assert listed.to_pandas()["v"].tolist() == [[i, i] for i in range(1_500)]


def missing_as_none(cell):
    return None if cell is None or (type(cell) is float and cell != cell) else cell


def test_keys_of_either_kind_and_big_ints_match(lab_log):
    floats = record(Records([(i / 4, i) for i in range(3_000)], first), lab_log)
    got = assert_numpy_matches(floats, start=10.25, stop=600.5)
    assert got.keys.dtype == np.float64 and got.keys[0] == 10.25
    text = record(Records([(f"k{i:05}", i) for i in range(2_000)], first), lab_log)
    got = assert_numpy_matches(text)
    assert got.keys.dtype == object and got.keys[3] == "k00003"
    big = [(2**60 + i, i) for i in range(1_000)] + [(2**70 + i, i) for i in range(1_000)]
    session = record(Records(big, first), lab_log)
    got = session.to_numpy()
    assert got.keys.tolist() == [k for k, _ in big] and got.values.tolist() == [v for _, v in big]
    assert session.to_pandas()["key"].tolist() == [k for k, _ in big]


def rewrite_block(path, index, change):
    """Apply ``change(bytearray)`` (same length) to the ``index``-th block of
    stream main, joined from its entries, set its checksum again and store
    it back in the same entries."""
    env = lmdb.open(str(path), max_dbs=128)
    try:
        db = env.open_db(b"r:main")
        with env.begin(write=True) as txn:
            head = [key for key, _ in txn.cursor(db) if common.is_head_key(key)][index]
            value = txn.get(head, db=db)
            names = [head] + [head + i.to_bytes(2, "big") for i in range(1, value[0] + 1)]
            pieces = [value[1:]] + [txn.get(name, db=db) for name in names[1:]]
            block = bytearray(b"".join(pieces))
            size = len(block)
            change(block)
            assert len(block) == size
            block[:4] = zlib.crc32(bytes(block[4:])).to_bytes(4, "little")
            at = 0
            for number, (name, piece) in enumerate(zip(names, pieces)):
                part = bytes(block[at:at + len(piece)])
                txn.put(name, (value[:1] + part) if number == 0 else part, db=db)
                at += len(piece)
    finally:
        env.close()


def error_of(call):
    with pytest.raises(errors.CorruptRecord) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize("kind", ["numbers", "arrays", "dicts"])
def test_a_damaged_or_crafted_block_is_the_error_every_read_gives(tmp_path, kind):
    path = tmp_path / "rec.streamlog"
    make = {"numbers": lambda i: (i, i * 0.5), "arrays": lambda i: (i, np.full(4, i, dtype=np.float32)),
            "dicts": lambda i: {"n": i, "x": i * 0.5}}[kind]
    with streamlog.StreamBuffer(Records([make(i) for i in range(600)], lambda r: r["n"] if type(r) is dict
                                        else r[0], batch=200), log=path, commit_records=200,
                                commit_interval_s=3600) as buf:
        buf.wait(30)

    def read_all(log):
        session = log.session(1)
        return [lambda: list(session.ientries()), session.to_numpy if kind != "dicts" else session.to_pandas,
                session.to_arrow]

    def crafted(block):  # a float's type byte made one msgpack never uses, or a dtype none has; checksum set again
        if kind == "arrays":
            at = block.rindex(b"<f4")
            block[at:at + 3] = b"<f9"
        else:
            block[block.rindex(b"\xcb")] = 0xC1

    rewrite_block(path, 1, crafted)
    with streamlog.Log(path, readonly=True) as log:
        messages = {error_of(call) for call in read_all(log)}
    assert len(messages) == 1 and "is damaged" in messages.pop()

    env = lmdb.open(str(path), max_dbs=128)
    with env.begin(write=True) as txn:  # the checksum left as it was: the block fails it
        db = env.open_db(b"r:main", txn=txn)
        heads = [key for key, _ in txn.cursor(db) if common.is_head_key(key)]
        value = bytearray(txn.get(heads[2], db=db))
        value[-1] ^= 0x40
        txn.put(heads[2], bytes(value), db=db)
    env.close()
    with streamlog.Log(path, readonly=True) as log:
        session = log.session(1)
        assert error_of(lambda: session.to_pandas(start=400)) == error_of(lambda: list(session.ientries(400)))
        assert "its checksum does not match" in error_of(lambda: session.to_arrow(start=400))


def test_chunks_hold_the_columns_of_the_blocks_within_any_bounds(lab_log):
    """BufferReader.ichunks (up to 64 blocks at once) gives, chunk after
    chunk, the encoded keys, arrival times and encodings iblocks gives
    block by block, for key and time bounds inside blocks and chunks."""
    session = record(Records([(i, np.full(200 + i % 3, i, dtype=np.int16)) for i in range(9_000)], first,
                             batch=250), lab_log)
    reader = session.reader()
    times = decoded(session)[1] / 1e6

    def columns_of(parts):
        keys, arrivals, encodings = [], [], []
        for keys_run, times_us, records_run in parts:
            keys += [bytes(keys_run[0][a:b]) for a, b in zip([0, *keys_run[1][:-1].tolist()], keys_run[1])]
            arrivals += times_us.tolist()
            encodings += [bytes(records_run[0][a:b]) for a, b in zip([0, *records_run[1][:-1].tolist()],
                                                                    records_run[1])]
        return keys, arrivals, encodings

    for bounds in ({}, {"start": 77, "stop": 8_123}, {"since": times[1_234], "until": times[7_777]},
                   {"start": 5_000, "since": times[4_000]}, {"start": 8_999}):
        chunks = list(reader.ichunks(**bounds))
        blocks = [(p.block.encoded_keys(p.lo, p.hi), p.block.arrivals(p.lo, p.hi), p.block.encodings(p.lo, p.hi))
                  for p in reader.iblocks(**bounds)]
        assert all(chunk.count == len(chunk.arrivals) for chunk in chunks)
        assert columns_of((c.keys, c.arrivals, c.records) for c in chunks) == columns_of(blocks)
    assert len(list(reader.ichunks())) >= 2


def flip_last_byte(path, index):
    """Flip a bit of the last byte of the head entry of the ``index``-th
    block of stream main, leaving its checksum as it was."""
    env = lmdb.open(str(path), max_dbs=128)
    try:
        with env.begin(write=True) as txn:
            db = env.open_db(b"r:main", txn=txn)
            head = [key for key, _ in txn.cursor(db) if common.is_head_key(key)][index]
            value = bytearray(txn.get(head, db=db))
            value[-1] ^= 0x40
            txn.put(head, bytes(value), db=db)
    finally:
        env.close()


def too_many_records(block):
    block[5:9] = (5_000).to_bytes(4, "little")


def test_a_child_forked_after_a_parallel_read_reads_in_parallel_too(tmp_path):
    """The threads that check blocks do not survive a fork: a child that
    opens the log again gets threads of its own instead of waiting for
    its parent's for ever."""
    path = tmp_path / "rec.streamlog"
    samples = np.arange(1_000, dtype=np.float32)
    with streamlog.StreamBuffer(Records([(i, samples + i) for i in range(800)], first, batch=100), log=path) as buf:
        assert buf.wait(30)
    with streamlog.Log(path, readonly=True) as log:
        expected = log.session(1).to_numpy().values  # 2.4 MB: checked in threads
    pid = os.fork()
    if pid == 0:
        try:
            with streamlog.Log(path, readonly=True) as log:
                os._exit(0 if np.array_equal(log.session(1).to_numpy().values, expected) else 1)
        finally:
            os._exit(2)
    status = []
    try:
        wait_until(lambda: status.append(os.waitpid(pid, os.WNOHANG)) or status[-1][0] == pid,
                   "the forked child's to_numpy", timeout=60)
    finally:
        if status[-1][0] != pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    assert status[-1][1] == 0


def test_record_ends_out_of_order_in_a_crafted_block_are_read_as_one_by_one_reads_read_them(tmp_path):
    """A block with a valid checksum whose record ends go backwards: to_numpy
    decodes it as the records read one by one decode (or raises the error
    they raise), never an IndexError or ValueError of its own."""
    path = tmp_path / "rec.streamlog"
    samples = np.arange(1_000, dtype=np.float32)
    with streamlog.StreamBuffer(Records([(i, samples + i) for i in range(200)], first, batch=100), log=path) as buf:
        assert buf.wait(30)

    def backwards(block):
        n = int.from_bytes(block[5:9], "little")
        at = 33 + 8 * n  # the record end column, after the 33-byte header and two columns of n
        first = int.from_bytes(block[at:at + 4], "little")
        block[at + 8:at + 12] = (first - 1).to_bytes(4, "little")

    rewrite_block(path, 5, backwards)
    with streamlog.Log(path, readonly=True) as log:
        session = log.session(1)
        try:
            expected = list(session.ientries())
        except errors.CorruptRecord as exc:
            assert error_of(session.to_numpy) == str(exc)
        else:
            with pytest.raises((errors.RecordShapeError, errors.CorruptRecord)):
                session.to_numpy()  # the records one by one are no longer arrays of one shape
            assert len(expected) == 200


@pytest.mark.parametrize("index", [5, 70])
@pytest.mark.parametrize("damage", ["checksum", "header"])
def test_a_damaged_block_among_blocks_checked_in_parallel_is_the_error_every_read_gives(tmp_path, damage, index):
    """to_numpy reads up to 64 blocks at once and checks them in parallel
    threads (BufferReader.ichunks); a damaged one, in the first chunk or
    the second, is reported as a record-by-record read reports it."""
    recorded = tmp_path / "recorded.streamlog"
    samples = np.arange(1_000, dtype=np.float32)  # 4 KiB records, 32 a block: 75 blocks, chunks of 64 and 11
    with streamlog.StreamBuffer(Records([(i, samples + i) for i in range(2_400)], first, batch=100),
                                log=recorded) as buf:
        assert buf.wait(30)
    with streamlog.Log(recorded, readonly=True) as log:
        assert log.session(1).to_numpy().values.shape == (2_400, 1_000)
        assert len(list(log.session(1).reader().ichunks())) == 2
    path = tmp_path / "damaged.streamlog"
    shutil.copytree(recorded, path)
    if damage == "checksum":
        flip_last_byte(path, index)
    else:
        rewrite_block(path, index, too_many_records)
    with streamlog.Log(path, readonly=True) as log:
        session = log.session(1)
        message = error_of(lambda: list(session.ientries()))
        assert error_of(session.to_numpy) == message
        assert error_of(lambda: list(session.reader().ichunks(start=3))) == message
    problem = "its checksum does not match" if damage == "checksum" else "a block header that does not fit"
    assert f"of session 1 holding the records after key " in message and problem in message


@pytest.mark.parametrize("first_damage", ["checksum", "header"])
def test_of_two_damaged_blocks_in_one_chunk_the_first_in_key_order_is_reported(tmp_path, first_damage):
    """ichunks checks the blocks' structure first and their checksums while
    copying their records: whichever kind of damage comes first in key
    order is the one reported, as a record-by-record read reports it."""
    path = tmp_path / "damaged.streamlog"
    samples = np.arange(1_000, dtype=np.float32)
    with streamlog.StreamBuffer(Records([(i, samples + i) for i in range(2_400)], first, batch=100), log=path) as buf:
        assert buf.wait(30)
    if first_damage == "checksum":
        rewrite_block(path, 9, too_many_records)
        flip_last_byte(path, 4)
    else:
        rewrite_block(path, 4, too_many_records)
        flip_last_byte(path, 9)
    with streamlog.Log(path, readonly=True) as log:
        session = log.session(1)
        message = error_of(lambda: list(session.ientries()))
        assert error_of(session.to_numpy) == message
        assert error_of(lambda: list(session.reader().ichunks(start=3))) == message
    problem = "its checksum does not match" if first_damage == "checksum" else "a block header that does not fit"
    assert problem in message


def test_the_export_takes_the_pages_it_read_out_of_the_resident_set(lab_log, tmp_path):
    session = record(Records([(i, i * 0.5) for i in range(200_000)], first, batch=5_000), lab_log)
    assert len(session.to_numpy().values) == 200_000  # every page of the records read into this process
    store = lab_log.store
    if not store.release_map_pages():
        pytest.skip("madvise is not available here (not Linux)")
    data = os.path.realpath(os.path.join(lab_log.path, "data.mdb"))
    assert resident_kb(data) == 0
    out = tmp_path / "t.parquet"
    with open(out, "wb") as file:
        assert streamlog.frames.write_arrow(session, file, "parquet") == 200_000
    assert resident_kb(data) == 0
    assert pandas.read_parquet(out)["value"].tolist() == [i * 0.5 for i in range(200_000)]


def resident_kb(path):
    """The resident kB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                inside = len(fields) >= 6 and fields[5] == path
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


# -- hostile bytes -------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=5), st.binary(max_size=5))
values = st.one_of(scalars, st.tuples(st.integers(-2**64, 2**64), st.one_of(st.integers(-2**64, 2**64),
                                                                           st.floats(allow_nan=False))),
                   st.dictionaries(st.text(max_size=3), scalars, max_size=3),
                   st.builds(lambda n, d: np.arange(n, dtype=d), st.integers(1, 4),
                             st.sampled_from(["<f4", ">i2", "u1", "<c8"])),
                   st.builds(lambda k, n: (k, np.arange(n, dtype="<f8")), st.integers(-300, 300), st.integers(1, 3)))


def laid_out(records):
    encodings = [encode_record(r) for r in records]
    return b"".join(encodings), np.cumsum([len(e) for e in encodings], dtype=np.int64)


def one_by_one(buffer, ends):
    """The records decoded one by one, or None if one does not decode."""
    out, start = [], 0
    for end in ends.tolist():
        try:
            out.append(decode_record(buffer[start:end]))
        except errors.CorruptRecord:
            return None
        start = end
    return out


def check_columns(buffer, ends):
    """Every columnar decoder on ``buffer``/``ends`` declines or gives what
    the records decoded one by one give (and declines where one does not decode)."""
    expected = one_by_one(buffer, ends)
    found = columns.numbers(buffer, ends)
    if found is not None:
        assert expected is not None
        values = [r[1] if found.firsts is not None else r for r in expected]
        assert all(type(v) in (int, float) for v in values) and len(found.values) == len(values)
        assert all(map(same, found.values.tolist(), values))  # same(): damaged bytes may make a NaN
        if found.firsts is not None:
            assert found.firsts.tolist() == [r[0] for r in expected]
    found = columns.arrays(buffer, ends)
    if found is not None:
        assert expected is not None and found.count == len(expected)
        arrays = [r[1] if found.firsts is not None else r for r in expected]
        flat = np.concatenate(found.pieces).view(found.dtype).reshape((-1,) + found.shape)
        assert all(same(a, b) for a, b in zip(list(flat), arrays))
    found = columns.general_records(buffer, ends)
    if found is not None:
        assert expected is not None and all(map(same, found, expected))
    found = columns.flat_dicts(buffer, ends)
    if found is not None:
        assert expected is not None and found.count == len(expected)
        cells = {name: column.tolist() if isinstance(column, np.ndarray) else column
                 for name, column in found.columns.items()}
        rows = [{name: cells[name][i] for name in found.names} for i in range(found.count)]
        assert all(map(same, rows, expected))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values, min_size=1, max_size=8), st.integers(1, 4), st.data())
def test_hostile_bytes_give_the_records_or_a_refusal(records, copies, data):
    buffer, ends = laid_out(records * copies)
    check_columns(buffer, ends)
    damaged = bytearray(buffer)
    for _ in range(data.draw(st.integers(1, 4))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    check_columns(bytes(damaged), ends)
    cut = np.array(sorted(set(data.draw(st.lists(st.integers(1, len(buffer)), min_size=1, max_size=5))
                              + [len(buffer)])), dtype=np.int64)
    check_columns(buffer, cut)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.data())
def test_random_bytes_are_refused_or_decoded_exactly(buffer, data):
    ends = np.array(sorted(set(data.draw(st.lists(st.integers(1, len(buffer)), max_size=6)) + [len(buffer)])),
                    dtype=np.int64)
    check_columns(buffer, ends)


def test_general_bodies_that_run_into_each_other_are_refused():
    bodies = msgpack.packb([1]) [:1] + msgpack.packb(1) + msgpack.packb(2)  # [1], 2 spread over a cut body
    assert decode_general_bodies(bodies, [1, 3]) is None
    assert decode_general_bodies(msgpack.packb({"a": 1}) + msgpack.packb((2, 3)), [4, 7]) == [{"a": 1}, (2, 3)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**60), min_size=1, max_size=40), st.data())
def test_small_int_keys_decode_exactly_or_are_refused(keys, data):
    encoded = [encode_key(k) for k in keys]
    buffer = bytearray(b"".join(encoded))
    ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
    found = small_ints(bytes(buffer), ends)
    assert (found is None) == any(k >= 2**56 for k in keys)
    assert found is None or found.tolist() == keys
    for _ in range(data.draw(st.integers(0, 3))):
        buffer[data.draw(st.integers(0, len(buffer) - 1))] = data.draw(st.integers(0, 255))
    found = small_ints(bytes(buffer), ends)
    if found is not None:  # each key decodes alone to what was found, and ends where it should
        starts = [0] + ends[:-1].tolist()
        for value, start, end in zip(found.tolist(), starts, ends.tolist()):
            assert decode_key_prefix(bytes(buffer[start:end])) == (value, end - start)


same_width_dicts = st.lists(st.fixed_dictionaries({
    "n": st.integers(0, 127), "m": st.integers(-2**31, -2**15 - 1), "x": st.floats(allow_nan=False),
    "s": st.text(alphabet="abc\u00e9", min_size=2, max_size=2), "ok": st.booleans(), "none": st.none()}),
    min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(same_width_dicts, st.data())
def test_dicts_of_one_layout_become_columns_exactly_or_are_refused(records, data):
    buffer, ends = laid_out(records)
    check_columns(buffer, ends)
    one_length = len(set(ends.tolist()[:1] + np.diff(ends).tolist())) == 1
    if one_length and len({tuple(r) for r in records}) == 1:  # one layout: taken as columns
        table = columns.flat_dicts(buffer, ends)
        assert table is not None and table.names == tuple(records[0])
        assert table.columns["n"].tolist() == [r["n"] for r in records] and table.columns["s"] == [r["s"] for r in records]
    damaged = bytearray(buffer)
    for _ in range(data.draw(st.integers(1, 3))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    check_columns(bytes(damaged), ends)
