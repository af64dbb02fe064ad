"""One notation for keys, read from and printed for people.

The same text means the same key everywhere: typed as a query bound,
printed beside a record, in a session's key span, in JSON.

* numbers as numbers: ``42``, ``0.25``;
* ``str`` keys as the text itself;
* ``bytes`` keys as ``0x`` and hex (``0x01ff``); typed, text without ``0x``
  also reads as its UTF-8 bytes;
* tuples as their items joined by commas (``3,0.25``), or as a JSON array
  (``[3, [0.25, "a"]]``; bytes items as ``"0x.."`` strings), which is how
  nested tuples, and tuples whose text items hold commas, are printed;
* time keys (a session whose info says ``"key_kind": "timestamp_us"``: keys
  are microseconds since the epoch) as ISO-8601 times with microseconds
  (:func:`streamlog.timespec.format_time`); typed, any time of
  :mod:`streamlog.timespec` reads (``-10m``, ``2026-12-01T18:52``, ``@``
  epoch seconds), and a plain integer is the key itself, in microseconds.
"""

import json
import math

from streamlog import timespec
from streamlog.errors import KeyFormatError, TimeFormatError

__all__ = ["is_time_keyed", "parse_key", "format_key", "jsonable_key", "describe_key_types"]


def is_time_keyed(info):
    """True when a session's ``info`` says its keys are microseconds since the epoch."""
    return (info or {}).get("key_kind") == "timestamp_us"


# --------------------------------------------------------------------------
# reading


def parse_key(text, key_types, *, time_key=False, utc=False):
    """The key written as ``text`` for a stream of ``key_types`` (as stored in
    a stream's counters; None for a stream without records yet: numbers read
    as numbers, anything else as text).

    ``time_key`` reads times (see the module docstring); ``utc`` reads an ISO
    time without an offset as UTC.  Raises
    :class:`~streamlog.errors.KeyFormatError` naming ``text`` and the type.
    """
    if time_key:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return round(timespec.parse_time(text, utc=utc) * 1e6)
        except TimeFormatError as exc:
            raise KeyFormatError(str(exc)) from None
    try:
        if key_types is None:
            return _parse_untyped(text)
        if isinstance(key_types, list):
            return _parse_tuple(text, key_types)
        return _parse_scalar(text, key_types)
    except (ValueError, TypeError) as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise KeyFormatError(f"{text!r} is not a key of type {describe_key_types(key_types)}{detail}") from None


def describe_key_types(key_types):
    """``["int", "str"]`` -> ``(int, str)``; None -> ``no records``."""
    if key_types is None:
        return "no records"
    if isinstance(key_types, list):
        return "(" + ", ".join(describe_key_types(t) for t in key_types) + ")"
    return str(key_types)


def _parse_scalar(text, key_type):
    if key_type == "int":
        return _number(int, text)
    if key_type == "float":
        value = _number(float, text)
        if math.isnan(value):
            raise ValueError("NaN is not a key")
        return value
    if key_type == "str":
        return text
    if key_type == "bytes":
        if text[:2].lower() == "0x":
            return bytes.fromhex(text[2:])
        return text.encode("utf-8")
    raise ValueError(f"unknown key type {key_type!r}")


def _number(kind, text):
    """``kind(text)``; its ValueError carries no message (the caller names the type)."""
    try:
        return kind(text)
    except ValueError:
        raise ValueError() from None


def _parse_tuple(text, key_types):
    if text.lstrip().startswith("["):
        return _coerce(json.loads(text), key_types)
    if any(isinstance(t, list) for t in key_types):
        raise ValueError("write nested tuple keys as a JSON array")
    parts = text.split(",", len(key_types) - 1) if key_types else []
    if len(parts) != len(key_types):
        raise ValueError(f"expected {len(key_types)} comma-separated items")
    return tuple(_parse_scalar(part.strip() if t != "str" else part, t)
                 for part, t in zip(parts, key_types))


def _coerce(value, key_types):
    """A JSON-decoded value as a key of ``key_types``."""
    if isinstance(key_types, list):
        if not isinstance(value, list) or len(value) != len(key_types):
            raise ValueError(f"expected a JSON array of {len(key_types)} items")
        return tuple(_coerce(v, t) for v, t in zip(value, key_types))
    if key_types in ("str", "bytes"):
        if not isinstance(value, str):
            raise ValueError(f"expected a string for a {key_types} item, got {value!r}")
        return _parse_scalar(value, key_types)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return _parse_scalar(str(value), key_types)


def _parse_untyped(text):
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


# --------------------------------------------------------------------------
# printing


def format_key(key, *, time_key=False, utc=False):
    """``key`` in the notation (``-`` for None); reads back with :func:`parse_key`."""
    if key is None:
        return "-"
    if time_key and isinstance(key, int) and not isinstance(key, bool):
        return timespec.format_time(key / 1e6, utc=utc)
    if isinstance(key, tuple):
        if all(not isinstance(item, tuple) and not (isinstance(item, str) and ("," in item or item[:1] == "["))
               for item in key) and key:
            return ",".join(format_key(item) for item in key)
        return json.dumps(_json_items(key), ensure_ascii=False)
    return _scalar(key)


def _scalar(key):
    if isinstance(key, (bytes, bytearray, memoryview)):
        return "0x" + bytes(key).hex()
    if isinstance(key, float):
        return repr(key)
    return str(key)


def _json_items(key):
    if isinstance(key, tuple):
        return [_json_items(item) for item in key]
    if isinstance(key, (bytes, bytearray, memoryview)):
        return "0x" + bytes(key).hex()
    return key


def jsonable_key(key, *, time_key=False, utc=False):
    """``key`` for a JSON document: numbers stay numbers (and None null), every
    other key is its notation text (:func:`format_key`)."""
    if key is None:
        return None
    if isinstance(key, (int, float)) and not isinstance(key, bool) and not time_key:
        return key if math.isfinite(key) else repr(key)
    return format_key(key, time_key=time_key, utc=utc)
