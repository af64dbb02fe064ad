"""streamlog._crc.crc32 (the blocks' checksum in C) against zlib.crc32, bit
for bit, in both of its implementations (carry-less multiplication where
the CPU has it, tables everywhere): random lengths and alignments, chained
values, every length around the folding steps."""

import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streamlog import _crc

IMPLEMENTATIONS = ["chosen", "tables"]


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request):
    _crc.force_tables(request.param == "tables")
    yield request.param
    _crc.force_tables(False)


def test_the_chosen_implementation_is_named():
    assert _crc.implementation() in ("pclmul", "tables")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=4096), size=st.integers(0, 100 << 10), skip=st.integers(0, 15),
       value=st.integers(0, 2**32 - 1), seed=st.integers(0, 2**32 - 1))
def test_equals_zlib(data, size, skip, value, seed):
    body = np.random.default_rng(seed).integers(0, 256, size + skip, dtype=np.uint8).tobytes() + data
    view = memoryview(body)[skip:]  # any alignment
    for tables in (False, True):
        _crc.force_tables(tables)
        try:
            assert _crc.crc32(view) == zlib.crc32(view)
            assert _crc.crc32(view, value) == zlib.crc32(view, value)
        finally:
            _crc.force_tables(False)


@settings(max_examples=100, deadline=None)
@given(pieces=st.lists(st.binary(max_size=300), max_size=8), value=st.integers(0, 2**32 - 1))
def test_chained_equals_one_call(pieces, value):
    crc = expected = value
    for piece in pieces:
        crc = _crc.crc32(piece, crc)
        expected = zlib.crc32(piece, expected)
    assert crc == expected == zlib.crc32(b"".join(pieces), value)


def test_every_length_around_the_folding_steps(implementation):
    body = bytes(range(256)) * 2
    for length in range(len(body)):
        for start in range(0, 9):
            piece = body[start:start + length]
            assert _crc.crc32(piece, 0xFFFFFFFF) == zlib.crc32(piece, 0xFFFFFFFF), (length, start)


def test_a_big_buffer_with_the_gil_released(implementation):
    body = np.random.default_rng(3).integers(0, 256, 3 << 20, dtype=np.uint8)
    assert _crc.crc32(body) == zlib.crc32(body)
    assert _crc.crc32(bytearray(body.tobytes())) == zlib.crc32(body)


def test_values_as_zlib_takes_them():
    assert _crc.crc32(b"abc", 2**32 + 5) == zlib.crc32(b"abc", 2**32 + 5)
    assert _crc.crc32(b"abc", -1) == zlib.crc32(b"abc", -1)
    assert _crc.crc32(b"") == 0


def test_bad_arguments_raise():
    with pytest.raises(TypeError):
        _crc.crc32("text")
    with pytest.raises(TypeError):
        _crc.crc32()
    with pytest.raises(TypeError):
        _crc.crc32(b"", 0, 0)
    with pytest.raises(TypeError):
        _crc.crc32(b"", "0")
    with pytest.raises(ValueError, match="contiguous"):
        _crc.crc32(np.arange(10)[::2])


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), size=st.integers(0, 100 << 10), at=st.integers(0, 64),
       spare=st.integers(0, 64), value=st.integers(0, 2**32 - 1), seed=st.integers(0, 2**32 - 1))
def test_crc32_copy_checks_and_copies_in_one_pass(data, size, at, spare, value, seed):
    body = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes() + data
    for tables in (False, True):
        _crc.force_tables(tables)
        try:
            dst = np.full(at + len(body) + spare, 7, dtype=np.uint8)
            assert _crc.crc32_copy(dst, at, body, value) == zlib.crc32(body, value)
            assert dst[at:at + len(body)].tobytes() == body
            assert (dst[:at] == 7).all() and (dst[at + len(body):] == 7).all()
        finally:
            _crc.force_tables(False)


def test_crc32_copy_refuses_what_does_not_fit():
    dst = bytearray(10)
    for at, data in [(-1, b"a"), (8, b"abc"), (11, b""), (0, bytes(11))]:
        with pytest.raises(ValueError, match="do not fit a buffer of 10 bytes"):
            _crc.crc32_copy(dst, at, data)
    assert dst == bytearray(10)
    assert _crc.crc32_copy(dst, 10, b"") == 0
    with pytest.raises(BufferError):
        _crc.crc32_copy(b"read only", 0, b"a")
    with pytest.raises(TypeError):
        _crc.crc32_copy(dst, 0)
