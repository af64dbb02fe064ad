"""The one time grammar (streamlog.timespec) and the one key notation (streamlog.notation)."""

import datetime as dt

import pytest

from streamlog.errors import KeyFormatError, StreamlogError, TimeFormatError
from streamlog.notation import format_key, jsonable_key, parse_key
from streamlog.timespec import format_time, parse_age, parse_time

NOW = 1_796_151_120.0  # 2026-12-01T18:52:00Z


@pytest.mark.parametrize("text, expected", [
    ("now", NOW), ("NOW", NOW), ("-10m", NOW - 600), ("-2h", NOW - 7200), ("+30s", NOW + 30),
    ("-1h30m", NOW - 5400), ("now-10m", NOW - 600), ("now + 1d", NOW + 86400), ("-500ms", NOW - 0.5),
    ("1796151120", 1796151120.0), ("1796151120.25", 1796151120.25), ("@1796151120", 1796151120.0),
    ("2026-12-01T18:52:00Z", NOW), ("2026-12-01T19:52:00+01:00", NOW), ("2026-12-01 18:52:00.5z", NOW + 0.5),
])
def test_times(text, expected):
    assert parse_time(text, now=NOW) == expected


def test_iso_without_offset_is_local_time_or_utc_when_asked():
    local = dt.datetime(2026, 12, 1, 18, 52).astimezone().timestamp()
    assert parse_time("2026-12-01T18:52:00", now=NOW) == local
    assert parse_time("2026-12-01T18:52:00", now=NOW, utc=True) == NOW
    assert parse_time("2026-12-01", utc=True) == NOW - (18 * 3600 + 52 * 60)


@pytest.mark.parametrize("text", ["", "yesterday", "10m", "-", "--5m", "-10x", "2026-13-01", "20261201T"])
def test_bad_times_name_the_text_and_the_grammar(text):
    with pytest.raises(TimeFormatError) as caught:
        parse_time(text, now=NOW)
    assert repr(text) in str(caught.value) and "-10m" in str(caught.value)
    with pytest.raises(TimeFormatError, match="after @ come epoch seconds"):
        parse_time("@x")
    assert isinstance(caught.value, StreamlogError) and isinstance(caught.value, ValueError)


def test_a_bare_duration_as_a_time_says_how_to_write_it_ago():
    with pytest.raises(TimeFormatError, match="write -10m"):
        parse_time("10m")


@pytest.mark.parametrize("text, seconds", [("7d", 7 * 86400), ("12h", 43200), ("90m", 5400), ("30s", 30),
                                           ("2w", 1209600), ("1h30m", 5400), ("90", 90), ("1.5", 1.5),
                                           ("500ms", 0.5), (" 7D ", 7 * 86400)])
def test_ages(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-1d", "+1d", "x", "1y", "d", ""])
def test_bad_ages(text):
    with pytest.raises(TimeFormatError, match="is not an age"):
        parse_age(text)


def test_format_time_has_microseconds_and_an_offset_and_reads_back():
    t = NOW + 0.123456
    assert format_time(t, utc=True) == "2026-12-01T18:52:00.123456Z"
    local = format_time(t)
    assert local[-6] in "+-" and ".123456" in local
    assert parse_time(local) == pytest.approx(t, abs=1e-6) and parse_time(format_time(t, utc=True)) == \
        pytest.approx(t, abs=1e-6)
    assert format_time(None) == "-"


# -- keys ----------------------------------------------------------------------

@pytest.mark.parametrize("key, key_types, text", [
    (1, "int", "1"), (-3, "int", "-3"), (0.5, "float", "0.5"), ("a b", "str", "a b"), ("a,b", "str", "a,b"),
    (b"\x01\xff", "bytes", "0x01ff"), ((1, 0.5), ["int", "float"], "1,0.5"), ((3, "x"), ["int", "str"], "3,x"),
    ((1, "x,y"), ["int", "str"], '[1, "x,y"]'), ((1, (2, b"a")), ["int", ["int", "bytes"]], '[1, [2, "0x61"]]'),
])
def test_every_key_prints_in_a_notation_that_reads_back(key, key_types, text):
    printed = format_key(key)
    assert printed == text
    assert parse_key(printed, key_types) == key


def test_tuple_keys_also_read_as_json_arrays():
    assert parse_key("[1, 0.5]", ["int", "float"]) == (1, 0.5)


def test_time_keys_print_as_iso_and_read_any_time_or_raw_microseconds():
    us = 1_796_151_120_123_456
    assert format_key(us, time_key=True, utc=True) == "2026-12-01T18:52:00.123456Z"
    assert parse_key("2026-12-01T18:52:00.123456Z", "int", time_key=True) == us
    assert parse_key(str(us), "int", time_key=True) == us
    assert parse_key("@1796151120", "int", time_key=True) == 1_796_151_120_000_000
    assert parse_key("2026-12-01T18:52:00", "int", time_key=True, utc=True) == 1_796_151_120_000_000
    with pytest.raises(KeyFormatError, match="'yesterday' is not a time"):
        parse_key("yesterday", "int", time_key=True)


def test_bad_key_text_names_the_type():
    with pytest.raises(KeyFormatError, match=r"'x' is not a key of type int"):
        parse_key("x", "int")
    with pytest.raises(KeyFormatError, match=r"of type \(int, str\).*2 comma-separated"):
        parse_key("1", ["int", "str"])


def test_json_keys_keep_numbers_and_write_the_rest_in_the_notation():
    assert jsonable_key(3) == 3 and jsonable_key(0.5) == 0.5 and jsonable_key(None) is None
    assert jsonable_key(b"\x01") == "0x01" and jsonable_key((1, 2)) == "1,2"
    assert jsonable_key(1_796_151_120_000_000, time_key=True, utc=True) == "2026-12-01T18:52:00.000000Z"
