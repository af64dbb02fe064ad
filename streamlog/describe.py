"""Sessions described for people and scripts: one JSON shape everywhere.

:func:`session_summary` is the one dict a session becomes (``streamlog
sessions --json``, ``streamlog info --json``, and Python callers alike):
keys in the notation of :mod:`streamlog.notation` (numbers stay numbers),
times both as epoch seconds and as ISO-8601 text, and every stream's
counters under ``streams`` (a dict by stream name).
:func:`flat_summary` is the same as one flat row (for CSV).
"""

import json
import time

from streamlog import notation, timespec
from streamlog.codec import to_jsonable

__all__ = ["session_summary", "flat_summary", "describe_source", "FLAT_FIELDS"]


def session_summary(session, *, utc=False):
    """The session as a JSON-ready dict with stable field names.

    ``records`` is the count stored now in the main stream, ``recorded`` the
    count ever recorded (pruning lowers the first), ``duration_s`` runs to
    now for a live session and is None when unknown, ``rate_hz`` is
    ``recorded / duration_s``; ``start``/``stop`` are ISO-8601 (local time,
    or UTC with ``utc``); ``pid`` is the creator's, ``crashed_pids`` the
    dead writers' of a crashed session (``[]`` otherwise).  ``streams`` maps each stream's name to its
    ``records, recorded, bytes, first_key, last_key, key_types, error``.
    """
    time_key = notation.is_time_keyed(session.info)
    streams = {}
    for name in session.streams:
        s = session.stream_info(name)
        streams[name] = {
            "records": s["count"], "recorded": s["recorded"], "bytes": s["bytes"],
            "first_key": notation.jsonable_key(s["first_key"], time_key=time_key, utc=utc),
            "last_key": notation.jsonable_key(s["last_key"], time_key=time_key, utc=utc),
            "key_types": s["key_types"], "error": s["error"],
        }
    main = session.stream_info()
    duration = _duration_of(session)
    return {
        "id": session.id,
        "status": session.status,
        "start_time": session.start_time,
        "stop_time": session.stop_time,
        "start": None if session.start_time is None else timespec.format_time(session.start_time, utc=utc),
        "stop": None if session.stop_time is None else timespec.format_time(session.stop_time, utc=utc),
        "duration_s": duration,
        "records": main["count"],
        "recorded": main["recorded"],
        "bytes": main["bytes"],
        "first_key": notation.jsonable_key(main["first_key"], time_key=time_key, utc=utc),
        "last_key": notation.jsonable_key(main["last_key"], time_key=time_key, utc=utc),
        "key_types": main["key_types"],
        "rate_hz": main["recorded"] / duration if duration else None,
        "source": describe_source(session.info),
        "pid": session.pid,
        "crashed_pids": session.crashed_pids,
        "host": session.host,
        "durability": session.durability,
        "error": session.error,
        "info": to_jsonable(session.info),
        "labels": to_jsonable(session.labels),
        "streams": streams,
    }


FLAT_FIELDS = ("id", "status", "start", "stop", "duration_s", "records", "recorded", "bytes", "first_key",
               "last_key", "key_types", "rate_hz", "source", "pid", "host", "durability", "error", "streams", "info",
               "labels")
"""The columns of :func:`flat_summary`, in order."""


def flat_summary(summary):
    """A :func:`session_summary` as one flat row (a dict over :data:`FLAT_FIELDS`):
    ``streams`` becomes the stream names separated by spaces, ``key_types``
    text such as ``(int, str)``, ``info`` and ``labels`` their JSON text."""
    row = {name: summary[name] for name in FLAT_FIELDS}
    row["streams"] = " ".join(summary["streams"])
    row["key_types"] = None if summary["key_types"] is None else notation.describe_key_types(summary["key_types"])
    row["info"] = json.dumps(summary["info"], ensure_ascii=False)
    row["labels"] = json.dumps(summary["labels"], ensure_ascii=False)
    return row


def _duration_of(session):
    if session.start_time is None:
        return None
    if session.stop_time is not None:
        return max(0.0, session.stop_time - session.start_time)
    if session.status == "live":
        return max(0.0, time.time() - session.start_time)
    return None


def describe_source(info):
    """A short description of where a session's records came from, e.g.
    ``lines /var/log/syslog`` or ``command ping -c 3 host``; for a custom
    source without a ``source`` entry, its first few info entries
    (``kind=counter``); ``-`` for no info at all."""
    info = info or {}
    name = info.get("source")
    if name is None:
        simple = [f"{k}={v}" for k, v in info.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
        return " ".join(simple[:3]) or "-"
    if "argv" in info:
        detail = " ".join(str(arg) for arg in info["argv"])
    else:
        detail = info.get("path") or info.get("device") or ""
    text = " ".join(str(part) for part in (name, detail) if part)
    return text or "-"
