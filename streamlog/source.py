"""The source contract: what a :class:`~streamlog.StreamBuffer` reads from."""

from abc import ABC, abstractmethod


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
    of those); keys must not decrease within a session.

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
        """Release the resource; called once, also after a failed read."""

    @abstractmethod
    def key(self, data):
        """Return the sort key of ``data``."""

    @property
    def info(self):
        """A dict describing the source, stored with the session."""
        return {}


class ReadBatch(list):
    """Several records returned by one :meth:`SourceReader.read` call.

    A plain ``list`` is a record like any other; wrap records in a ReadBatch
    to have them stored as separate records, in order.
    """
