"""Durable named cursors: where a named reader of a stored session resumes.

Database ``cursors`` of the log maps a cursor's name (UTF-8) to its entry,
encoded with the record codec::

    {"session": id, "stream": name, "position": record key or None,
     "seq": int, "created": epoch_s, "acked": epoch_s or None}

``position`` is the record key (opaque, ordered bytes, see
:mod:`streamlog.records`) of the last record the reader acknowledged and
``seq`` its sequence number in the stream (None and -1 while nothing was
acknowledged); the reader resumes strictly after it.  A cursor follows one
stream of one session.  Every change is one short write transaction of its
own (:meth:`~streamlog.store.Store.write`), so an acknowledgement is as
durable as the log's ``durability`` makes any commit.  One reader at a time
should use a name: the last acknowledgement wins.
"""

import re
import time
from typing import NamedTuple, Optional

from streamlog import errors
from streamlog.codec import decode_record, encode_record

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_FIELDS = {"session", "stream", "position", "seq"}


class Cursor(NamedTuple):
    """A named cursor as :meth:`streamlog.Log.cursors` lists it: ``seq`` is
    the sequence number of the last record acknowledged (-1: none), ``lag``
    how many records of the stream follow it (None when the session is gone)."""

    name: str
    session: int
    stream: str
    seq: int
    acked: Optional[float]
    lag: Optional[int]


ACK_MODES = ("manual", "auto")


def check_ack(ack, named):
    """ConfigurationError unless ``ack`` is one of :data:`ACK_MODES` and fits a reader ``named`` or not."""
    if ack not in ACK_MODES:
        raise errors.ConfigurationError(f"ack must be 'manual' or 'auto', not {ack!r}")
    if ack == "auto" and not named:
        raise errors.ConfigurationError("ack='auto' needs a named reader (Session.reader(name=...))")


def check_name(name):
    """``name`` if it is a valid cursor name; BadCursorName otherwise."""
    if not isinstance(name, str):
        raise errors.BadCursorName(f"a cursor name is a str, not {type(name).__name__}")
    if not _NAME.match(name):
        raise errors.BadCursorName(f"bad cursor name {name!r}: use 1 to 128 of A-Z a-z 0-9 . _ -, "
                                   f"starting with a letter or digit")
    return name


class CursorStore:
    """The named cursors of the log kept in ``store`` (a :class:`~streamlog.store.Store`)."""

    def __init__(self, store):
        self.store = store

    def get(self, name):
        """The entry of cursor ``name`` (a dict, see the module), or None."""
        db = self.store.cursors_db()
        if db is None:
            return None
        with self.store.read() as txn:
            raw = txn.get(check_name(name).encode(), db=db)
        return None if raw is None else _entry(name, raw)

    def all(self):
        """``[(name, entry), ...]`` of every cursor, by name."""
        db = self.store.cursors_db()
        if db is None:
            return []
        with self.store.read() as txn:
            return [(key.decode(), _entry(key.decode(), raw)) for key, raw in txn.cursor(db)]

    def lowest_acked(self, txn, session_id):
        """``{stream: seq}``: for each stream of session ``session_id`` that
        named cursors follow, the lowest ``seq`` they acknowledged (-1: one
        acknowledged nothing yet), as stored in ``txn`` (retention's write
        transaction, so a cursor that acknowledges meanwhile waits for it)."""
        db = self.store.cursors_db()
        lowest = {}
        if db is None:
            return lowest
        for key, raw in txn.cursor(db):
            entry = _entry(key.decode(), raw)
            if entry["session"] == session_id:
                stream = entry["stream"]
                lowest[stream] = min(entry["seq"], lowest.get(stream, entry["seq"]))
        return lowest

    def open(self, name, session_id, stream):
        """The :class:`NamedCursor` ``name`` for ``stream`` of session
        ``session_id``, stored new (nothing acknowledged) if there is none.
        CursorError when the name follows another session or stream;
        LogAccessDenied when this process may not write the log."""
        check_name(name)
        db = self._writable_db(name)

        def work(txn):
            raw = txn.get(name.encode(), db=db)
            if raw is not None:
                entry = _entry(name, raw)
                if (entry["session"], entry["stream"]) != (session_id, stream):
                    raise errors.CursorError(
                        f"cursor {name!r} of {self.store.path} follows session {entry['session']} stream "
                        f"{entry['stream']!r}, not session {session_id} stream {stream!r}; use another name or "
                        f"delete it (streamlog cursors {self.store.path} --delete {name})")
                return entry
            entry = {"session": session_id, "stream": stream, "position": None, "seq": -1,
                     "created": time.time(), "acked": None}
            txn.put(name.encode(), encode_record(entry), db=db)
            return entry

        return NamedCursor(self, name, self.store.write(work))

    def ack(self, name, position, seq):
        """Store record key ``position`` (sequence number ``seq``) as where
        cursor ``name`` resumes.  CursorNotFound if it was deleted meanwhile."""
        db = self._writable_db(name)

        def work(txn):
            raw = txn.get(name.encode(), db=db)
            if raw is None:
                raise errors.CursorNotFound(f"cursor {name!r} of {self.store.path} was deleted while its reader "
                                            f"read; nothing was acknowledged")
            entry = _entry(name, raw)
            entry.update(position=position, seq=seq, acked=time.time())
            txn.put(name.encode(), encode_record(entry), db=db)

        self.store.write(work)

    def delete(self, name):
        """Remove cursor ``name``; CursorNotFound if there is none."""
        if self.get(name) is not None:
            db = self._writable_db(name)
            if self.store.write(lambda txn: txn.delete(name.encode(), db=db)):
                return
        raise errors.CursorNotFound(self._missing(name))

    def _missing(self, name):
        known = ", ".join(n for n, _ in self.all()) or "none"
        return f"log {self.store.path} has no cursor {name!r} (its cursors: {known})"

    def _writable_db(self, name):
        if self.store.readonly:
            raise errors.LogAccessDenied(f"cannot store cursor {name!r} in log {self.store.path}: no write access "
                                         f"to its files (a named cursor is kept in the log)")
        return self.store.cursors_db(create=True)


class NamedCursor:
    """Cursor ``name`` of ``cursors`` (a :class:`CursorStore`) as the reader
    using it holds it: ``position`` and ``seq`` as last stored."""

    def __init__(self, cursors, name, entry):
        self.name = name
        self._cursors = cursors
        self.position = entry["position"]
        self.seq = entry["seq"]

    def save(self, position, seq):
        """Store ``position`` and ``seq`` (one write transaction, none when unchanged)."""
        if (position, seq) != (self.position, self.seq):
            self._cursors.ack(self.name, position, seq)
            self.position, self.seq = position, seq


def _entry(name, raw):
    entry = decode_record(raw)
    if (type(entry) is not dict or not _FIELDS <= entry.keys() or type(entry["session"]) is not int
            or type(entry["seq"]) is not int or not isinstance(entry["position"], (bytes, type(None)))):
        raise errors.CorruptRecord(f"the entry of cursor {name!r} is damaged: {entry!r:.200}")
    return entry
