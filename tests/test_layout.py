"""streamlog._scan.layouts (the structure check of a chunk's whole blocks)
against the Python reference, records.v2.Block, on real and damaged blocks
(hypothesis): the same verdict, the same problem, the same layout, whatever
pieces the block's bytes come in."""

import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlog._scan import layouts
from streamlog.codec import encode_record
from streamlog.errors import CorruptRecord
from streamlog.keys import encode_key
from streamlog.records import common, v2

PAGE = 1 << 20  # big enough that every test block is one entry


def block(session, first_seq, keys, records):
    """``(LMDB key, block bytes)`` of records with these keys, written as the writer writes them."""
    prefix = common.session_prefix(session)
    entries = list(v2.encode_commit(prefix, first_seq, [encode_key(k) for k in keys],
                                    [encode_record(r) for r in records], list(range(len(keys))), PAGE))
    assert len(entries) == 1
    key, value = entries[0]
    return key, bytes(value[1:])


def reference(key, data):
    """What records.v2.Block says: ``(problem, None)`` or ``(None, its layout)``."""
    try:
        b = v2.Block(key, data)
    except CorruptRecord as exc:
        return str(exc), None
    except struct.error:  # first_seq + n - 1 beyond u64: the key cannot be its last record's
        return "its entry's key is not the key of its last record", None
    crc = struct.unpack_from("<I", data)[0]
    return None, (b.keys_at, b.n, b.first_arrival, b.key_end[b.n - 1], b.records_at, len(data), crc)


def pieces(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *cuts, len(data)]
    return [memoryview(data)[a:b] for a, b in zip(bounds, bounds[1:])]


records_st = st.lists(st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=False), st.binary(max_size=40),
                                st.tuples(st.integers(0, 9), st.text(max_size=5))), min_size=1, max_size=40)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(records=records_st, session=st.integers(0, 2**32 - 1), first_seq=st.integers(0, 2**63),
       cuts=st.lists(st.integers(0, 10_000), max_size=4),
       damage=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
       fix_crc=st.booleans(), wrong_key=st.booleans())
def test_layouts_match_block(records, session, first_seq, cuts, damage, fix_crc, wrong_key):
    key, data = block(session, first_seq, list(range(len(records))), records)
    data = bytearray(data)
    for at, byte in damage:
        if at < len(data):
            data[at] = byte
    if fix_crc:
        data[0:4] = zlib.crc32(data[4:]).to_bytes(4, "little")
    if wrong_key:
        key = key[:-1] + bytes([key[-1] ^ 1])
    data = bytes(data)
    found, bad = layouts([(key, pieces(data, cuts))])
    problem, layout = reference(key, data)
    crc = struct.unpack_from("<I", data)[0]
    if crc == zlib.crc32(data[4:]):  # Block checks the checksum first; past it, its verdict is the structure's
        if problem is None:
            assert (found, bad) == ([layout], None)
        else:
            assert (found, bad) == ([], (0, problem, crc))
    else:  # the checksum is not layouts' to check: its verdict is that of the block with a right checksum
        fixed = zlib.crc32(data[4:]).to_bytes(4, "little") + data[4:]
        problem, layout = reference(key, fixed)
        if problem is None:
            assert (found, bad) == ([layout[:6] + (crc,)], None)
        else:
            assert (found, bad) == ([], (0, problem, None if len(data) < 33 else crc))


def test_the_first_bad_block_stops_the_list():
    good = [block(7, 100 * i, list(range(100 * i, 100 * i + 3)), [1.5, 2.5, 3.5]) for i in range(3)]
    short_key, short = good[1][0], good[1][1][:20]
    found, bad = layouts([(k, [d]) for k, d in good[:1]] + [(short_key, [short]), (good[2][0], [good[2][1]])])
    assert len(found) == 1 and bad == (1, "a block shorter than its header", None)
    wrong = (good[2][0], [good[1][1]])
    found, bad = layouts([(k, [d]) for k, d in good[:2]] + [wrong])
    assert len(found) == 2 and bad[:2] == (2, "its entry's key is not the key of its last record")


@pytest.mark.parametrize("blocks", [None, [("k", [b""])], [(b"k", b"")], [(b"k",)], [(b"k", [1])]])
def test_bad_arguments_raise(blocks):
    with pytest.raises(TypeError):
        layouts(blocks)
