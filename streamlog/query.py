"""Queries across the sessions of a log, as rows ``(session, key, time, record)``.

* :func:`select_sessions` -- sessions named by a list such as ``3,5-7``,
  ``all`` or ``-1`` (the newest);
* :class:`Where` -- a condition on a field of dict records (or an item of
  tuple/list records): ``FIELD=VALUE``, ``!=``, ``<``, ``<=``, ``>``, ``>=``;
* :func:`pick_fields` -- a record reduced to some of its fields;
* :func:`rows` -- the records of several sessions in one pass: key range
  (key text in :mod:`streamlog.notation`, read per session as its key type),
  arrival-time range (from each stream's time index, whatever the key type),
  conditions, every N-th, at most N.

Every bad input raises a :class:`~streamlog.errors.StreamlogError`
(``QueryError``, ``KeyFormatError``, ``SessionNotFound``).
"""

import json
import operator
import re
from dataclasses import dataclass
from itertools import islice
from typing import Any

from streamlog import errors, notation, timespec
from streamlog.keys import encode_key

__all__ = ["Row", "select_sessions", "Where", "pick_fields", "rows", "key_bounds"]


LABELS = ("session", "key", "time")
"""What can be shown beside a record, in this order (see :meth:`Row.labels`)."""


@dataclass(frozen=True)
class Row:
    """One record of a query: its session id, key, arrival time (integer
    microseconds since the epoch; ``time`` in seconds), the record, and
    whether the session's keys are times (``time_key``)."""

    session: int
    key: Any
    arrival_us: int
    record: Any
    time_key: bool = False

    @property
    def time(self):
        return self.arrival_us / 1e6

    def labels(self, which=LABELS, *, utc=False):
        """``{"session": id, "key": ..., "time": ...}`` for the names in
        ``which`` (in :data:`LABELS` order): the key in the notation of
        :mod:`streamlog.notation` (a JSON number when it is one, ISO-8601
        for time keys), the arrival time as ISO-8601 with microseconds
        (local, or UTC with ``utc``)."""
        out = {}
        for name in LABELS:
            if name not in which:
                continue
            if name == "session":
                out[name] = self.session
            elif name == "key":
                out[name] = notation.jsonable_key(self.key, time_key=self.time_key, utc=utc)
            else:
                out[name] = timespec.format_time(self.time, utc=utc)
        return out


# --------------------------------------------------------------------------
# sessions


_SPAN = re.compile(r"(-?\d+)(?:\s*-\s*(-?\d+))?")


def select_sessions(log, spec=None):
    """The sessions of ``log`` that ``spec`` names, oldest first, each once.

    ``spec``: None (the newest session), ``all``, or a comma-separated list
    of ids and inclusive id spans (``3,5-7``); a negative id counts from the
    end (``-1`` the newest).  Ids in a span that the log does not hold
    (removed by retention) are skipped; a single id that it does not hold
    raises SessionNotFound, and so does a log without sessions.  Raises
    QueryError for a list that does not parse or a reversed span.
    """
    sessions = log.sessions()
    if not sessions:
        raise errors.SessionNotFound(f"log {log.path} has no sessions")
    if spec is None:
        return [sessions[-1]]
    text = str(spec).strip()
    if text.lower() == "all":
        return sessions
    by_id = {s.id: s for s in sessions}
    chosen = {}
    for part in text.split(","):
        match = _SPAN.fullmatch(part.strip())
        if not match:
            raise errors.QueryError(f"{spec!r} is not a list of sessions: expected ids and spans such as 3,5-7, "
                                    f"a negative id counting from the end, or all")
        first, last = match.group(1), match.group(2)
        if last is None:
            session = log.session(int(first)) if int(first) < 0 else by_id.get(int(first))
            if session is None:
                raise errors.SessionNotFound(f"log {log.path} has no session {first}")
            chosen[session.id] = session
            continue
        low, high = int(first), int(last)
        if low > high:
            raise errors.QueryError(f"session span {part.strip()!r} runs backwards; write {high}-{low}")
        chosen.update((sid, by_id[sid]) for sid in by_id if low <= sid <= high)
    if not chosen:
        raise errors.SessionNotFound(f"log {log.path} holds none of the sessions {spec}")
    return [chosen[sid] for sid in sorted(chosen)]


# --------------------------------------------------------------------------
# conditions and fields


_OPERATORS = {"!=": operator.ne, "<=": operator.le, ">=": operator.ge, "=": operator.eq, "<": operator.lt,
              ">": operator.gt}
_CONDITION = re.compile(r"([^=<>!]+?)\s*(!=|<=|>=|==|=|<|>)\s*(.*)", re.S)
_MISSING = object()


class Where:
    """A condition ``FIELD OP VALUE`` on a record, parsed from text such as
    ``channel=stdout``, ``t>=10.5`` or ``meta.rate<8000``.

    FIELD names a key of a dict record, an index of a tuple or list record
    (``1``), or a path through nested ones (``meta.rate``).  VALUE is read as
    JSON when it parses (``3``, ``true``, ``null``, ``"x"``) and as text
    otherwise; a text field compares with VALUE as typed.  A record without
    the field, or whose value does not compare with VALUE, does not match.  Raises QueryError for text without an
    operator or with an empty field.
    """

    def __init__(self, text):
        match = _CONDITION.fullmatch(text.strip())
        if not match or not match.group(1).strip():
            raise errors.QueryError(f"{text!r} is not a condition: expected FIELD=VALUE, FIELD!=VALUE, FIELD<VALUE, "
                                    f"FIELD<=VALUE, FIELD>VALUE or FIELD>=VALUE")
        self.text = text
        self.path = _field_path(match.group(1).strip())
        op = match.group(2)
        self.op = _OPERATORS["=" if op == "==" else op]
        self.raw = match.group(3)
        try:
            self.value = json.loads(self.raw)
        except ValueError:
            self.value = self.raw

    def __repr__(self):
        return f"Where({self.text!r})"

    def __call__(self, record):
        found = _lookup(record, self.path)
        if found is _MISSING:
            return False
        if isinstance(found, (bytes, bytearray)):
            found = bytes(found).decode("utf-8", "replace")
        value = self.value
        if isinstance(found, str) and not isinstance(value, str):
            value = self.raw  # a text field compares with the text as typed: line=3 matches "3"
        try:
            return bool(self.op(found, value))
        except (TypeError, ValueError):  # values that do not compare (or arrays) do not match
            return False


def _field_path(name):
    return tuple(int(part) if part.lstrip("-").isdigit() else part for part in name.split("."))


def _lookup(record, path):
    value = record
    for part in path:
        if isinstance(value, dict):
            if part in value:
                value = value[part]
            elif str(part) in value:
                value = value[str(part)]
            else:
                return _MISSING
        elif isinstance(value, (tuple, list)) and isinstance(part, int) and -len(value) <= part < len(value):
            value = value[part]
        else:
            return _MISSING
    return value


def pick_fields(record, fields):
    """``record`` reduced to ``fields`` (names or paths as for :class:`Where`),
    in that order: a dict ``{field: value}`` (None where a record lacks the
    field) for dict records, a tuple for tuple and list records, else the
    record unchanged."""
    if not isinstance(record, (dict, tuple, list)):
        return record
    values = [_lookup(record, _field_path(name)) for name in fields]
    values = [None if value is _MISSING else value for value in values]
    if isinstance(record, dict):
        return dict(zip(fields, values))
    return tuple(values)


# --------------------------------------------------------------------------
# rows


def key_bounds(session, start=None, stop=None, *, stream=None, utc=False):
    """The keys written ``start`` and ``stop`` (key notation text, None for
    open), read as the keys of ``session``'s stream.  Raises KeyFormatError,
    and QueryError when ``start`` is after ``stop``."""
    key_types = session.stream_info(stream).get("key_types")
    time_key = notation.is_time_keyed(session.info)
    low = None if start is None else _key(start, key_types, time_key, utc)
    high = None if stop is None else _key(stop, key_types, time_key, utc)
    if low is not None and high is not None and encode_key(low) > encode_key(high):
        raise errors.QueryError(f"the range runs backwards: start {start} is after stop {stop}")
    return low, high


def _key(text, key_types, time_key, utc):
    try:
        return notation.parse_key(text, key_types, time_key=time_key, utc=utc)
    except errors.KeyFormatError as exc:
        try:
            timespec.parse_time(text)
        except errors.TimeFormatError:
            raise exc from None
        raise errors.KeyFormatError(f"{exc}; this session's keys are not times: select by arrival time with "
                                    f"since/until (--since/--until) instead") from None


def rows(sessions, *, stream=None, start=None, stop=None, since=None, until=None, where=(), step=None, limit=None,
         utc=False):
    """The records of ``sessions`` (in that order) as :class:`Row`s, lazily.

    ``start``/``stop``: key text (see :func:`key_bounds`, read per session);
    ``since``/``until``: arrival times, epoch seconds; all bounds inclusive.
    Then the ``where`` conditions (all must hold), then every ``step``-th
    row, then at most ``limit`` rows.  A session without ``stream`` is
    skipped.  Raises QueryError for ``since`` after ``until`` or a bad
    ``step``/``limit``, before anything is read.
    """
    if since is not None and until is not None and since > until:
        raise errors.QueryError("the time range runs backwards: --since is after --until")
    for name, value in (("step", step), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise errors.QueryError(f"{name} must be a positive integer, not {value!r}")
    wanted = [s for s in sessions if stream is None or stream in s.streams]
    bounds = [key_bounds(s, start, stop, stream=stream, utc=utc) for s in wanted]  # errors before any output
    found = _all_rows(wanted, bounds, stream, since, until, list(where))
    return islice(found, 0, limit if limit is None else limit * (step or 1), step or 1)


def _all_rows(sessions, bounds, stream, since, until, where):
    for session, (low, high) in zip(sessions, bounds):
        time_key = notation.is_time_keyed(session.info)
        for entry in session.ientries(low, high, since=since, until=until, stream=stream):
            if all(condition(entry.record) for condition in where):
                yield Row(session.id, entry.key, entry.arrival_us, entry.record, time_key)
