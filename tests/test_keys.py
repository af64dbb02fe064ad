"""Order-preserving key encoding: order, round trips, prefix-freedom, errors."""

import math
import random
import struct

import pytest

from streamlog.errors import InvalidKey, NotALog
from streamlog.keys import decode_key, decode_key_prefix, encode_key, key_types_of
from helpers import reference_order, sign


def random_int(rng):
    choice = rng.randrange(6)
    if choice == 0:
        return rng.randrange(300)
    if choice == 1:
        return -rng.randrange(1, 300)
    if choice == 2:  # around the byte-length boundaries
        length = rng.randrange(1, 12)
        return rng.choice([1, -1]) * ((1 << (8 * length)) + rng.randrange(-2, 3))
    if choice == 3:
        return rng.randrange(-(2**70), 2**70)
    if choice == 4:
        return rng.choice([1, -1]) * rng.randrange(2**1000 - 5, 2**1000 + 5)
    return rng.choice([True, False])


def random_float(rng):
    choice = rng.randrange(7)
    if choice == 0:
        return rng.uniform(-1000, 1000)
    if choice == 1:
        return float(rng.randrange(-1000, 1000))  # integral: must match the int
    if choice == 2:
        return rng.uniform(-1, 1) * 10.0 ** rng.randrange(-320, 308)
    if choice == 3:  # any finite double, from its bits
        while True:
            value = struct.unpack(">d", rng.randbytes(8))[0]
            if math.isfinite(value):
                return value
    if choice == 4:
        return rng.choice([math.inf, -math.inf, 0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308])
    if choice == 5:
        return rng.randrange(-300, 300) + rng.choice([0.5, 0.25, 1 / 3, 1e-9, 0.999999])
    return rng.choice([-1, 1]) * float(2**1000) * rng.choice([1, 1.5, 2])


def random_text(rng):
    alphabet = ["a", "b", "\x00", "\x01", "\xff", "é", "\u20ac", "\ud800", "\U0001f600", "z"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(4)))


def random_bytes(rng):
    return bytes(rng.choice([0, 1, 0x7F, 0xFE, 0xFF, 0x61]) for _ in range(rng.randrange(4)))


def random_key(rng, depth=0):
    choice = rng.randrange(5 if depth < 3 else 4)
    if choice == 0:
        return random_int(rng)
    if choice == 1:
        return random_float(rng)
    if choice == 2:
        return random_text(rng)
    if choice == 3:
        return random_bytes(rng)
    return tuple(random_key(rng, depth + 1) for _ in range(rng.randrange(4)))


@pytest.fixture(scope="module")
def mixed_keys():
    rng = random.Random(20240611)
    return [random_key(rng) for _ in range(4000)]


def test_sorting_by_encoding_sorts_by_value(mixed_keys):
    by_encoding = sorted(mixed_keys, key=encode_key)
    by_value = sorted(mixed_keys, key=reference_order)
    assert [reference_order(k) for k in by_encoding] == [reference_order(k) for k in by_value]


def test_pairwise_comparison_matches_python(mixed_keys):
    rng = random.Random(7)
    for _ in range(20_000):
        a, b = rng.choice(mixed_keys), rng.choice(mixed_keys)
        assert sign(encode_key(a), encode_key(b)) == sign(reference_order(a), reference_order(b)), (a, b)


def test_order_of_numbers_mixing_ints_and_floats():
    numbers = [
        -math.inf, -(2**1000) - 1, -(2**1000), -1e300, -(2**64) - 1, -(2**64), -(2**64) + 1,
        -257, -256.5, -256, -255, -1.5, -1, -0.5, -5e-324, 0, 5e-324, 0.1, 0.5, 1, 1.0000000000000002,
        1.5, 255, 255.75, 256, 2**53, 2**53 + 1, 2.0**64 - 2048, 2**64 - 1, 2**64, 1e300, 2**1000,
        2**1000 + 1, 2**5000, math.inf,
    ]
    encoded = [encode_key(n) for n in numbers]
    assert encoded == sorted(encoded)
    assert len(set(encoded)) == len(encoded)


def test_numpy_numbers_are_keys_equal_to_their_python_values():
    import numpy as np

    numbers = [np.float16(-2.5), np.int64(-2), np.float32(-0.25), np.uint8(0), np.float32(0.5), 1,
               np.float16(1.5), np.float64(2.75), np.int32(3)]
    encoded = [encode_key(n) for n in numbers]
    assert encoded == sorted(encoded)
    assert encode_key(np.float32(0.1)) == encode_key(float(np.float32(0.1)))
    assert key_types_of(np.float32(1.5)) == "float" and key_types_of(np.int16(1)) == "int"
    with pytest.raises(InvalidKey, match="NaN"):
        encode_key(np.float32("nan"))


def test_equal_numbers_have_identical_encodings():
    assert encode_key(1) == encode_key(1.0) == encode_key(True)
    assert encode_key(0) == encode_key(0.0) == encode_key(-0.0) == encode_key(False)
    assert encode_key(-3) == encode_key(-3.0)
    assert encode_key(2**60) == encode_key(float(2**60))
    assert encode_key(-(2**1000)) == encode_key(-float(2**1000))
    assert encode_key((1, "a")) == encode_key((1.0, "a"))


def test_cross_type_order_is_numbers_str_bytes_tuple():
    ordered = [math.inf, "", "\U0010ffff", b"", b"\xff\xff", (), (-math.inf,)]
    encoded = [encode_key(k) for k in ordered]
    assert encoded == sorted(encoded)


def test_tuple_prefix_sorts_first():
    assert encode_key((1,)) < encode_key((1, -math.inf)) < encode_key((1, 0))
    assert encode_key(()) < encode_key((-math.inf,))
    assert encode_key(("a",)) < encode_key(("a", "")) < encode_key(("a\x00",))
    assert encode_key(((1,), 5)) < encode_key(((1, 0),))


def test_round_trip_gives_equal_value_and_int_for_integral(mixed_keys):
    for key in mixed_keys:
        decoded = decode_key(encode_key(key))
        assert reference_order(decoded) == reference_order(key), key
    assert type(decode_key(encode_key(2.0))) is int
    assert type(decode_key(encode_key(2.5))) is float
    assert type(decode_key(encode_key(math.inf))) is float


def exact_types(key):
    if isinstance(key, tuple):
        return tuple(exact_types(item) for item in key)
    return int if type(key) is bool else type(key)


def test_round_trip_with_key_types_restores_types(mixed_keys):
    for key in mixed_keys:
        decoded = decode_key(encode_key(key), key_types_of(key))
        assert decoded == key
        assert exact_types(decoded) == exact_types(key), key


def test_key_types_are_a_hint_and_keep_ints_too_big_for_float():
    assert decode_key(encode_key(3), "float") == 3.0
    assert type(decode_key(encode_key(3), "float")) is float
    assert type(decode_key(encode_key(2**1100), "float")) is int  # no float can hold it
    assert type(decode_key(encode_key(2**53 + 1), "float")) is int  # float would round it
    assert decode_key(encode_key((1, 2)), "float") == (1, 2)  # shape mismatch: ignored
    assert decode_key(encode_key((1, 2)), ["float"]) == (1.0, 2)
    assert decode_key(encode_key((1, (2,))), ("int", ("float",))) == (1, (2.0,))


def test_key_types_of():
    assert key_types_of(3) == "int"
    assert key_types_of(True) == "int"
    assert key_types_of(3.0) == "float"
    assert key_types_of("s") == "str"
    assert key_types_of(b"s") == "bytes"
    assert key_types_of((1.5, (2, "x"), b"")) == ["float", ["int", "str"], "bytes"]
    with pytest.raises(InvalidKey, match="list"):
        key_types_of((1, [2]))


def test_encodings_are_prefix_free(mixed_keys):
    distinct = sorted({encode_key(k) for k in mixed_keys})
    for shorter, longer in zip(distinct, distinct[1:]):
        assert not longer.startswith(shorter), (shorter, longer)


def test_suffixes_never_change_the_order_of_different_keys(mixed_keys):
    rng = random.Random(99)
    suffixes = [b"", b"\x00", b"\xff" * 10, struct.pack(">Q", 0), struct.pack(">QH", 2**64 - 1, 65535)]
    for _ in range(5000):
        a, b = rng.choice(mixed_keys), rng.choice(mixed_keys)
        if reference_order(a) == reference_order(b):
            continue
        x, y = rng.choice(suffixes), rng.choice(suffixes)
        assert sign(encode_key(a) + x, encode_key(b) + y) == sign(reference_order(a), reference_order(b))


def test_equal_keys_order_by_their_suffixes(mixed_keys):
    rng = random.Random(5)
    for key in mixed_keys[:500]:
        x, y = struct.pack(">Q", rng.randrange(2**64)), struct.pack(">Q", rng.randrange(2**64))
        assert sign(encode_key(key) + x, encode_key(key) + y) == sign(x, y)


def test_decode_key_prefix_splits_key_from_suffix(mixed_keys):
    for seq, key in enumerate(mixed_keys):
        data = encode_key(key) + struct.pack(">Q", seq)
        decoded, end = decode_key_prefix(data)
        assert reference_order(decoded) == reference_order(key)
        assert struct.unpack(">Q", data[end:]) == (seq,)


def test_decode_key_prefix_from_an_offset_and_a_memoryview():
    data = b"\x00\x00\x00\x07" + encode_key(("k", 2.5)) + struct.pack(">Q", 1)
    assert decode_key_prefix(memoryview(data), start=4) == (("k", 2.5), len(data) - 8)
    assert decode_key(memoryview(encode_key(b"\x00raw"))) == b"\x00raw"


@pytest.mark.parametrize(
    "bad, named",
    [
        (math.nan, "NaN"),
        (None, "NoneType"),
        ([1, 2], "list"),
        ({"a": 1}, "dict"),
        (object(), "object"),
        ({1}, "set"),
        (1j, "complex"),
        ((1, ("a", [3])), "list"),
        ((1, math.nan), "NaN"),
        (bytearray(b"x"), "bytearray"),
    ],
)
def test_invalid_keys_raise_invalid_key_naming_the_problem(bad, named):
    with pytest.raises(InvalidKey, match=named):
        encode_key(bad)


def test_invalid_key_is_a_type_error():
    with pytest.raises(TypeError):
        encode_key(None)


@pytest.mark.parametrize(
    "damaged",
    [b"", b"\x00", b"\x21", b"\x21\x05", b"\x40abc", b"\x40a\x00\x07\x00\x00", b"\x60\x21\x01\x00", b"\x29\x01\x09\x01"],
)
def test_damaged_encodings_raise_not_a_log(damaged):
    with pytest.raises(NotALog, match="damaged key"):
        decode_key(damaged)


def test_trailing_bytes_are_damage_for_decode_key():
    with pytest.raises(NotALog, match="after the key"):
        decode_key(encode_key(5) + b"\x00")
