"""One grammar for times and ages typed by people (the CLI, scripts).

A **time** (:func:`parse_time`) is one of

* ``now``;
* a relative time: a signed duration from now, ``-10m``, ``-2h``, ``+30s``,
  ``-1h30m``, also written ``now-10m``;
* epoch seconds: ``1796151120`` or ``1796151120.25``, also ``@1796151120``;
* an ISO-8601 date or date and time: ``2026-12-01``, ``2026-12-01T18:52``,
  ``2026-12-01 18:52:00.123456``, with an optional offset (``Z``,
  ``+01:00``); without one it is local time (UTC with ``utc=True``).

An **age** (:func:`parse_age`) is a positive duration: ``7d``, ``12h``,
``90m``, ``30s``, ``2w``, ``1h30m``, ``500ms``, or a plain number of seconds.

Times are printed (:func:`format_time`) as ISO-8601 with microseconds and
the offset, so every printed time reads back as the same instant.
"""

import datetime as dt
import re
import time

from streamlog.errors import TimeFormatError

__all__ = ["parse_time", "parse_age", "format_time", "UNITS"]

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
"""Seconds per duration unit."""

_DURATION = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:us|ms|s|m|h|d|w)")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_TIME_HELP = ("expected now, a relative time such as -10m or -2h, epoch seconds such as 1796151120, "
              "or an ISO-8601 date/time such as 2026-12-01T18:52:00")


def _duration_s(text):
    """Seconds in ``1h30m``-style text (units from :data:`UNITS`), or None."""
    parts = _DURATION.findall(text)
    if not parts or "".join(parts) != text:
        return None
    total = 0.0
    for part in parts:
        unit = part.lstrip("0123456789.")
        total += float(part[:len(part) - len(unit)]) * UNITS[unit]
    return total


def parse_age(text):
    """Seconds in the age ``text`` (``7d``, ``12h``, ``1h30m``, ``90``); a float > 0.

    Raises :class:`~streamlog.errors.TimeFormatError` naming ``text``.
    """
    word = str(text).strip().lower()
    seconds = float(word) if _NUMBER.fullmatch(word) and word[0] not in "+-" else _duration_s(word)
    if seconds is None or not seconds > 0:
        raise TimeFormatError(f"{text!r} is not an age: expected a positive duration such as 7d, 12h, 90m, "
                              f"30s or 1h30m (units us, ms, s, m, h, d, w), or a number of seconds")
    return seconds


def parse_time(text, *, now=None, utc=False):
    """Epoch seconds (a float) for the time ``text`` (see the module's grammar).

    ``now`` (epoch seconds, default the clock) anchors relative times;
    ``utc`` reads an ISO time without an offset as UTC instead of local time.
    Raises :class:`~streamlog.errors.TimeFormatError` naming ``text``.
    """
    word = str(text).strip()
    lower = word.lower()
    if lower.startswith("now"):
        rest = lower[3:].replace(" ", "")
        if not rest:
            return time.time() if now is None else now
        lower = rest
    elif lower.startswith("@"):
        lower = lower[1:]
        if _NUMBER.fullmatch(lower):
            return float(lower)
        raise TimeFormatError(f"{text!r} is not a time: after @ come epoch seconds, e.g. @1796151120")
    if lower[:1] in ("+", "-") and lower[1:2] not in ("", "+", "-"):
        seconds = _duration_s(lower[1:])
        if seconds is not None:
            base = time.time() if now is None else now
            return base - seconds if lower[0] == "-" else base + seconds
    if _NUMBER.fullmatch(lower) and word == lower:
        return float(lower)
    moment = _iso(word)
    if moment is None:
        hint = ""
        if _duration_s(lower) is not None:
            hint = f" (for {word} ago write -{word})"
        raise TimeFormatError(f"{text!r} is not a time: {_TIME_HELP}{hint}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc) if utc else moment.astimezone()
    return (moment - _EPOCH).total_seconds()


def _iso(text):
    iso = text
    if iso[-1:] in ("Z", "z"):
        iso = iso[:-1] + "+00:00"
    if not re.match(r"\d{4}-\d{2}-\d{2}", iso):
        return None  # fromisoformat also reads forms like 20261201 that look like numbers
    try:
        return dt.datetime.fromisoformat(iso)
    except ValueError:
        return None


def format_time(epoch_s, *, utc=False):
    """``epoch_s`` as ISO-8601 with microseconds and offset, e.g.
    ``2026-12-01T18:52:00.123456+01:00`` (local) or ``...Z`` (``utc``);
    ``-`` for None."""
    if epoch_s is None:
        return "-"
    moment = _EPOCH + dt.timedelta(microseconds=round(epoch_s * 1e6))
    if utc:
        return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return moment.astimezone().isoformat(timespec="microseconds")
