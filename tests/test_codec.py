"""Record codec: exact round trips with the same types at every depth, errors, JSON view."""

import collections
import enum
import json
import math
import struct
import threading

import msgpack
import numpy as np
import pytest

from streamlog.codec import decode_record, encode_record, record_encoder, to_jsonable
from streamlog.errors import NotALog, UnencodableRecord


def assert_identical(got, want, where="record"):
    """Equal values with exactly the same types, recursively (NaN equals NaN)."""
    assert type(got) is type(want), f"{where}: {type(got)} is not {type(want)}"
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.dtype.str == want.dtype.str, where
        assert got.dtype.descr == want.dtype.descr, where
        assert got.shape == want.shape, where
        assert got.tobytes() == want.tobytes(), where
        assert got.flags.writeable, where
        if want.flags.f_contiguous and not want.flags.c_contiguous:
            assert got.flags.f_contiguous, where
    elif isinstance(want, np.generic):
        assert got.dtype == want.dtype, where
        assert got.tobytes() == want.tobytes(), where
    elif type(want) is float:
        assert struct.pack(">d", got) == struct.pack(">d", want), where
    elif type(want) in (tuple, list):
        assert len(got) == len(want), where
        for index, (g, w) in enumerate(zip(got, want)):
            assert_identical(g, w, f"{where}[{index}]")
    elif type(want) is dict:
        assert list(got) == list(want), where
        for (gk, gv), (wk, wv) in zip(got.items(), want.items()):
            assert_identical(gk, wk, f"a key of {where}")
            assert_identical(gv, wv, f"{where}[{wk!r}]")
    else:
        assert got == want, where


def round_trip(record):
    encoded = encode_record(record)
    assert type(encoded) is bytes
    decoded = decode_record(encoded)
    assert_identical(decoded, record)
    assert_identical(decode_record(memoryview(encoded)), record)
    return decoded


SCALARS = [
    None, True, False, 0, 1, -1, 127, -33, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1,
    2**1000 + 7, -(2**1000) - 7, 0.0, -0.0, 1.5, -2.25e-300, math.inf, -math.inf, math.nan, 5e-324,
    "", "plain", "h\u00e9llo \U0001f600", "\x00inside\x00", "lone \udc80 surrogate", b"", b"\x00\xff" * 40,
    bytearray(), bytearray(b"mutable\x00"),
]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_scalars_round_trip_alone_and_in_tuples(value):
    round_trip(value)
    round_trip((value,))
    round_trip((12345, value, "tail"))
    round_trip([value])
    round_trip({"v": value})


def test_the_common_records_round_trip():
    round_trip((12345, b"x" * 64))
    round_trip((12345, np.arange(1024, dtype=np.float32)))
    round_trip((1717000000.25, "a line of text", None, 3))


def test_a_recorder_encoder_encodes_as_encode_record_one_by_one_and_many_at_once():
    plain = [(i, b"x" * i, "s", None, 2.5, True, 1 << 70) for i in range(50)] + [(), (1,)]
    mixed = plain + [[1, 2], {"a": 1}, 7, "text", (1, [2]), (3, np.arange(3)), np.float32(1.5), bytearray(b"b")]
    encode = record_encoder()
    for records in (plain, mixed, mixed[::-1], [7, "a", None]):
        expected = [encode_record(r) for r in records]
        assert [encode(r) for r in records] == expected
        assert encode.many(records) == expected
    with pytest.raises(UnencodableRecord, match="type set"):
        encode.many(plain + [(1, {2})])


def test_tuples_stay_tuples_and_lists_stay_lists_at_every_depth():
    record = (
        [1, (2, [3, (4,)]), []],
        (),
        [],
        [[[]]],
        ((),),
        {"list": [1, 2], "tuple": (1, 2), "nested": {"deeper": [(), [()]]}},
        [{"in": "list"}, ({"in": "tuple"},)],
    )
    decoded = round_trip(record)
    assert type(decoded[0][1][1]) is list
    assert type(decoded[5]["tuple"]) is tuple


def test_top_level_containers_round_trip():
    round_trip([1, 2, 3])
    round_trip({})
    round_trip(())
    round_trip([])
    round_trip({"a": 1, "b": [1.5, b"x"]})


def test_dict_keys_of_every_hashable_kind():
    record = {
        (1, "a"): [1],
        ((1, 2), (3,)): "nested tuple key",
        (): "empty tuple key",
        b"bytes": (),
        3: None,
        2.5: 1,
        None: 0,
        True: "bool",
        2**100: "big",
        np.float32(0.5): "numpy scalar key",
        "str": {"inner": {(): []}},
    }
    round_trip(record)
    round_trip((7, record))


def test_big_ints_nested_everywhere():
    round_trip((2**64, [-(2**64) - 1, {2**65: (2**200,)}]))


@pytest.mark.parametrize(
    "scalar",
    [
        np.float32(1.5), np.float64(2.5), np.float16(0.1), np.longdouble(1) / 3, np.int8(-5), np.uint64(2**64 - 1),
        np.int64(-(2**63)), np.bool_(True), np.complex64(1 + 2j), np.complex128(-0.0 - 1j), np.str_("h\u00e9"),
        np.str_(""), np.str_("a\x00"), np.bytes_(b"ab\x00"), np.bytes_(b""), np.datetime64("2024-06-11T12:00:00.123", "ms"),
        np.timedelta64(5, "us"), np.void(b"\x01\x02"), np.zeros(2, dtype=[("a", "<i2"), ("b", ">f8")])[1],
    ],
    ids=repr,
)
def test_numpy_scalars_keep_their_type(scalar):
    round_trip(scalar)
    round_trip((1, scalar))
    round_trip([scalar, {"k": scalar}])


STRUCTURED = np.dtype([("id", "<u4"), ("pos", ">f8", (3,)), ("name", "S5"), ("inner", [("a", "i1"), ("b", "<c8")])])
ALIGNED = np.dtype([("a", "i1"), ("b", "<f8"), ("c", "i2")], align=True)
TITLED = np.dtype({"names": ["x", "y"], "formats": ["<i4", "<f4"], "titles": ["X title", None]})
PADDED = np.dtype({"names": ["x"], "formats": ["<i4"], "offsets": [4], "itemsize": 12})


def make_arrays():
    grid = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
    structured = np.zeros(3, dtype=STRUCTURED)
    structured["id"] = [1, 2, 3]
    structured["pos"][1] = [1.5, -2.5, 3.5]
    structured["name"] = [b"ab", b"\x00c", b"five5"]
    structured["inner"]["b"] = 1 + 2j
    return {
        "c_order": grid,
        "f_order": np.asfortranarray(grid),
        "transposed": grid.T,
        "strided": grid[:, ::2, 1::2],
        "reversed": np.arange(10.0)[::-1],
        "big_endian": np.arange(5, dtype=">i4"),
        "big_endian_float": np.linspace(0, 1, 7).astype(">f8"),
        "structured": structured,
        "aligned": np.ones(2, dtype=ALIGNED),
        "titled": np.ones(2, dtype=TITLED),
        "padded": np.ones(3, dtype=PADDED),
        "subarray_dtype": np.zeros(2, dtype=("<f4", (2, 2))),
        "zero_d": np.array(3.25),
        "zero_d_structured": np.zeros((), dtype=STRUCTURED),
        "empty": np.zeros((0,)),
        "empty_2d": np.zeros((3, 0), dtype="<u2"),
        "bool": np.array([True, False, True]),
        "complex": np.array([1 + 1j, -2j], dtype=np.complex64),
        "unicode": np.array(["a", "h\u00e9llo"]),
        "bytes": np.array([b"a", b"\x00\xff"]),
        "datetime": np.array(["2024-01-01", "NaT"], dtype="datetime64[D]"),
        "timedelta": np.arange(3, dtype="timedelta64[ns]"),
        "float16": np.arange(4, dtype=np.float16),
        "longdouble": np.arange(3, dtype=np.longdouble) / 7,
        "void": np.zeros(2, dtype="V3"),
        "nan": np.array([np.nan, -0.0, np.inf]),
        "big": np.random.default_rng(0).random((64, 64)),
    }


@pytest.mark.parametrize("name", sorted(make_arrays()))
def test_arrays_round_trip_exactly(name):
    array = make_arrays()[name]
    decoded = round_trip(array)
    np.testing.assert_array_equal(decoded, array)
    round_trip((42, array))
    round_trip({"deep": [(array, array)]})


def _general_layout(record):
    """The general-layout bytes of a tuple of scalars (ints within 64 bits)
    and arrays, built from the layout's description (module docstring)."""
    items, data = [], b""
    for item in record:
        if type(item) is np.ndarray:
            fortran = item.flags.f_contiguous and not item.flags.c_contiguous
            items.append((msgpack.ExtType(4, b""), item.dtype.str, item.shape, fortran, len(data)))
            data += (item.T if fortran else item).tobytes()
        else:
            items.append(item)
    body = msgpack.packb(tuple(items), use_bin_type=True)
    return b"\xc1" + struct.pack(">I", len(body)) + body + data


@pytest.mark.parametrize("record", [
    (5, np.arange(2048, dtype=np.int16).reshape(1024, 2)),
    (1.5, "s", b"x", None, True, np.arange(7, dtype=">f4"), np.ones((2, 3), np.uint8), -(2**63), 2**64 - 1),
    (np.array([0, 5, 9], dtype="datetime64[ms]"), np.array([b"ab", b"c"]), np.array(["\u00e9"])),
    (1, np.zeros(0, np.int16)),
    (1, np.asfortranarray(np.arange(12.0).reshape(3, 4))),
    (1, np.arange(20, dtype=np.int32)[::3]),
], ids=["audio", "mixed", "text-and-times", "empty", "fortran", "strided"])
def test_tuples_of_scalars_and_arrays_encode_exactly_as_the_layout_says(record):
    # the first encoding of a dtype takes the general path, later ones a shorter one: both write the same bytes
    for encode in (encode_record, encode_record, record_encoder()):
        assert encode(record) == _general_layout(record)
    round_trip(record)


def test_big_ints_beside_arrays_keep_their_ext():
    record = (2**70, np.arange(3, dtype=np.int16))
    encode_record(record)
    assert decode_record(encode_record(record))[0] == 2**70
    round_trip((2**70, -(2**64), np.arange(3, dtype=np.int16)))


def test_non_contiguous_arrays_come_back_contiguous():
    source = np.arange(100, dtype=np.int32).reshape(10, 10)[::3, 1::2]
    decoded = decode_record(encode_record((1, source)))[1]
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, source)


def test_fortran_arrays_come_back_fortran_ordered():
    source = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    decoded = decode_record(encode_record(source))
    assert decoded.flags.f_contiguous and not decoded.flags.c_contiguous


def test_several_arrays_in_one_record_keep_their_own_data():
    arrays = [np.full(n, n, dtype=np.uint16) for n in (1, 0, 7, 300)]
    record = (arrays[0], [arrays[1], {"x": arrays[2]}], (arrays[3], np.float32(2.0)))
    round_trip(record)


def test_decoded_arrays_are_writable_and_independent_of_the_buffer():
    source = np.arange(256, dtype=np.uint16)
    frame = bytearray(b"head" + encode_record((5, source)) + b"tail")
    view = memoryview(frame)[4:-4]
    key, decoded = decode_record(view)
    view.release()
    frame[:] = b"\xee" * len(frame)
    np.testing.assert_array_equal(decoded, source)
    decoded[0] = 999
    assert decoded[0] == 999 and source[0] == 0


def test_decode_from_a_memoryview_slice_of_a_bigger_buffer():
    for record in [(12345, b"x" * 64), (1, np.arange(10)), {"a": [1]}, 7]:
        encoded = encode_record(record)
        frame = b"\x00" * 17 + encoded + b"\xff" * 9
        assert_identical(decode_record(memoryview(frame)[17 : 17 + len(encoded)]), record)


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "record, type_name, where",
    [
        ({1, 2}, "set", "at record;"),
        ((1, object()), "object", "at record[1]"),
        ((1, frozenset()), "frozenset", "at record[1]"),
        ({"a": [1, {2}]}, "set", "at record['a'][1]"),
        ([1, (2, complex(1, 2))], "complex", "at record[1][1]"),
        ((1, np.array([1, None], dtype=object)), "numpy.ndarray (dtype object", "at record[1]"),
        ((1, Color.RED), "Color", "at record[1]"),
        (collections.OrderedDict(a=1), "OrderedDict", "at record"),
        ((msgpack.ExtType(1, b"x"),), "ExtType", "at record[0]"),
        ({(1, Color.RED): 2}, "Color", "at a key of record"),
        ((np.ma.masked_array([1, 2]),), "MaskedArray", "at record[0]"),
    ],
)
def test_unencodable_values_name_their_type_and_position(record, type_name, where):
    with pytest.raises(UnencodableRecord) as caught:
        encode_record(record)
    assert type_name in str(caught.value)
    assert where in str(caught.value)


def test_a_record_containing_itself_is_unencodable():
    looped = [1]
    looped.append(looped)
    with pytest.raises(UnencodableRecord, match="nested too deeply or contains itself"):
        encode_record(looped)


def test_unencodable_record_is_a_type_error():
    with pytest.raises(TypeError):
        encode_record({1})


@pytest.mark.parametrize(
    "damaged",
    [
        b"",
        b"\xc1",
        b"\xc1\x00\x00\x00\x09\x90",
        encode_record((1, 2))[:-1],
        encode_record((1, np.arange(8)))[:-1],
        encode_record([1, 2]) + b"\x00",
        b"\xd4\x7f\x00",  # an ext type the codec does not know
    ],
)
def test_damaged_records_raise_not_a_log(damaged):
    with pytest.raises(NotALog, match="damaged record"):
        decode_record(damaged)


def test_encoding_from_several_threads_at_once():
    def records(seed):
        return [
            (seed * 100_000 + i, b"x" * (i % 70), [i, {"t": (i, 2**70 + i)}] if i % 3 else np.arange(i % 50))
            for i in range(1500)
        ]

    results = {}
    start = threading.Barrier(4)

    def encode_all(seed):
        start.wait()
        results[seed] = [encode_record(r) for r in records(seed)]

    threads = [threading.Thread(target=encode_all, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in range(4):
        expected = list(records(seed))
        assert len(results[seed]) == len(expected)
        for encoded, record in zip(results[seed], expected):
            assert_identical(decode_record(encoded), record)


def test_to_jsonable_gives_plain_json_types():
    record = (
        3,
        b"\x00\xffraw",
        bytearray(b"ba"),
        np.arange(6, dtype=np.int16).reshape(2, 3),
        np.float32(1.5),
        np.bool_(True),
        {"k": [1, (2, 3)], (1, "a"): None, 5: "int key", b"b": 1},
        1 + 2j,
        np.array(["2024-01-02T03:04:05"], dtype="datetime64[s]"),
        np.zeros(1, dtype=[("a", "<i4"), ("b", "S2")]),
        2**100,
    )
    view = to_jsonable(record)
    assert view == [
        3,
        {"$bytes": "AP9yYXc="},
        {"$bytes": "YmE="},
        [[0, 1, 2], [3, 4, 5]],
        1.5,
        True,
        {"k": [1, [2, 3]], '[1, "a"]': None, "5": "int key", '{"$bytes": "Yg=="}': 1},
        [1.0, 2.0],
        ["2024-01-02T03:04:05"],
        [[0, {"$bytes": ""}]],
        2**100,
    ]
    assert type(view[4]) is float and type(view[5]) is bool
    json.loads(json.dumps(view, allow_nan=False))


def test_to_jsonable_of_a_decoded_record():
    record = (12345, np.linspace(0, 1, 4), {"tag": "x", "values": [1, 2]})
    assert to_jsonable(decode_record(encode_record(record))) == [
        12345,
        [0.0, 1 / 3, 2 / 3, 1.0],
        {"tag": "x", "values": [1, 2]},
    ]


def test_to_jsonable_rejects_what_has_no_json_form():
    with pytest.raises(UnencodableRecord, match="set"):
        to_jsonable((1, {2}))
