"""The source contract: what a :class:`~streamlog.StreamBuffer` reads from."""

from abc import ABC, abstractmethod

from streamlog import errors


class SourceReader(ABC):
    """A source of records, driven by one recorder thread.

    The thread calls :meth:`open` once, then :meth:`read` in a loop, then
    :meth:`close` once (also after a failure).  :meth:`read` returns

    * a record (any encodable value; never ``None``),
    * ``None`` when there is no data yet: the thread waits
      :attr:`sleep_time_on_read_none_s` seconds and calls again,
    * or a :class:`ReadBatch` of several records at once (the fast path for
      sources that produce many records per call);

    and raises ``StopIteration`` at the end of a finite stream, which ends the
    session cleanly.  Any other exception fails the session: the records read
    before it stay stored and readers see the error after them.

    :meth:`key` maps a record to its key (int, float, str, bytes or a tuple
    of those); keys must not decrease within a session and must all be of
    one kind (numbers, str, bytes, or tuples of one length with one kind at
    each position).

    The session fails (``status == "failed"``, ``error`` naming the cause)
    when :meth:`open`, :meth:`read`, :meth:`key`, :meth:`close` or
    :attr:`info` raises (``"read() failed: RuntimeError: ..."``), and when a
    record is refused: an invalid, decreasing or other-kind key, a value the
    codec cannot store, or a record over ``max_record_bytes``.  Every record
    before the failure is kept.  A failing :meth:`close` or :attr:`info` does
    not stop the recording: all records are kept and the session still ends
    ``failed``, since the source reported a problem it may have had with
    them (data it could not deliver, say).

    :attr:`drain_on_stop`: when True, ``StreamBuffer.stop()`` keeps calling
    :meth:`read` until it returns None (for at most ``DRAIN_LIMIT_S``), so
    records the source already holds (captured audio, say) are kept.
    """

    sleep_time_on_read_none_s = 0.01
    drain_on_stop = False

    @abstractmethod
    def open(self):
        """Acquire the resource (file, device, subprocess)."""

    @abstractmethod
    def read(self):
        """Return the next record, ``None`` for "nothing yet", or a ReadBatch."""

    @abstractmethod
    def close(self):
        """Release the resource; called once, also after a failed read.
        Raising fails the session but keeps every record."""

    @abstractmethod
    def key(self, data):
        """Return the sort key of ``data``."""

    @property
    def info(self):
        """A dict describing the source, stored with the session; read when
        the session starts and again when it ends.  Raising (or returning
        something else than a dict) fails the session but keeps every record."""
        return {}


class ReadBatch(list):
    """Several records returned by one :meth:`SourceReader.read` call.

    A plain ``list`` is a record like any other; wrap records in a ReadBatch
    to have them stored as separate records, in order.
    """


def call_failed(call, exc):
    """The SourceFailed saying that the SourceReader's ``call`` (e.g.
    ``"read()"``) raised ``exc``, with ``exc`` as its ``__cause__``."""
    failure = errors.SourceFailed(f"{call} failed: {type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return failure
