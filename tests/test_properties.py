"""Property-based tests (hypothesis).

Keys: the byte order of ``encode_key`` is Python's order of the keys (numbers
by exact value, then str < bytes < tuple), encodings are prefix-free, and
decoding gives the key back.

Readers: any sequence of ``next``, ``read``, ``range``, ``irange``, ``head``,
``tail`` and ``seek`` on a real recorded session gives the answers, and leaves
the cursor where, a plain list model of the documented semantics says; for a
closed session read from disk, a finished buffer whose small ring holds only
the newest records, and a running buffer with records not yet committed.
"""

import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from streamlog.keys import decode_key, decode_key_prefix, encode_key, key_types_of

# --------------------------------------------------------------------------
# keys


def reference_order(key):
    """Sort key spelling out the documented order: numbers (by exact value,
    as Python compares int with float) < str < bytes < tuple."""
    if isinstance(key, tuple):
        return (3, tuple(reference_order(item) for item in key))
    if isinstance(key, bytes):
        return (2, key)
    if isinstance(key, str):
        return (1, key)
    return (0, key)


def sign(a, b):
    return (a > b) - (a < b)


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
