"""The source contract: what a :class:`~streamlog.StreamBuffer` reads from."""

import time
from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

from streamlog import errors


@runtime_checkable
class Source(Protocol):
    """What a StreamBuffer needs of a source: any object with these members
    (stream2py's ``protocols.Source``, whose ``sleep_time_on_read_none_s`` is
    optional here); :class:`SourceReader` is the usual base."""

    info: dict

    def open(self): ...

    def read(self): ...

    def close(self): ...

    def key(self, data): ...


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

    As in stream2py, a SourceReader is also a context manager (``with
    source:`` opens and closes it, :attr:`closed` says which), an iterator
    over its reads (waiting on None), a factory of its own buffer
    (:meth:`stream_buffer`), and may implement :meth:`slice_item` and
    :meth:`join_items` for ``BufferReader.range(join=True)``.
    """

    sleep_time_on_read_none_s = 0.01
    drain_on_stop = False
    timestamp_seconds_to_unit_conversion = 1e6  # get_timestamp() in microseconds
    _sleep_time_on_iter_none_s = 0.001
    closed = True  # False between __enter__ and __exit__ (a StreamBuffer calls open and close directly)

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

    def join_items(self, items):
        """(Optional) One item made of ``items`` (consecutive, in key order),
        for ``range(join=True)``; implement it together with :meth:`slice_item`."""
        raise NotImplementedError("implement join_items(items) to support range(join=True)")

    def slice_item(self, item, start=None, stop=None):
        """(Optional) The part of ``item`` with keys in ``[start, stop]`` (None:
        unbounded); must not modify ``item``.  See :meth:`join_items`."""
        raise NotImplementedError("implement slice_item(item, start, stop) to support range(join=True)")

    def __enter__(self):
        self.open()
        self.closed = False
        return self

    def __exit__(self, *exc):
        self.close()
        self.closed = True

    enter, exit = __enter__, __exit__

    def __iter__(self):
        """Read the (opened) source forever, waiting a little on each None."""
        while True:
            data = self.read()
            if data is not None:
                yield data
            else:
                time.sleep(self._sleep_time_on_iter_none_s)

    def set_sleep_time_on_iter_none(self, sleep_time_s=0.001):
        """Seconds :meth:`__iter__` waits after a read returned None."""
        self._sleep_time_on_iter_none_s = sleep_time_s

    @classmethod
    def get_timestamp(cls):
        """Now, as an int in 1/``timestamp_seconds_to_unit_conversion`` s (µs)."""
        return int(time.time() * cls.timestamp_seconds_to_unit_conversion)

    def stream_buffer(self, maxlen, sleep_time_on_read_none_s=None, auto_drop=True, **buffer_options):
        """A new (not started) StreamBuffer recording this source."""
        from streamlog.buffer import StreamBuffer  # the buffer module builds on this one

        return StreamBuffer(self, maxlen=maxlen, sleep_time_on_read_none_s=sleep_time_on_read_none_s,
                            auto_drop=auto_drop, **buffer_options)


class QuickSourceReader(SourceReader):
    """A SourceReader needing only :meth:`read` (stream2py's QuickSourceReader).

    ``open`` sets ``read_idx`` to 0, ``open_time`` (:meth:`get_timestamp`)
    and ``open_instance``; ``close`` does nothing; ``info`` is ``{"open_time",
    "open_instance"}``; ``key`` is the data itself.  Iterating yields the
    reads that :meth:`is_valid_data` accepts and calls :meth:`when_no_data`
    on the others.
    """

    read_idx = None
    open_time = None
    open_instance = None

    def open(self):
        self.read_idx = 0
        self.open_time = self.get_timestamp()
        self.open_instance = self
        self.closed = False

    def close(self):
        self.closed = True

    @property
    def info(self):
        return {"open_time": self.open_time, "open_instance": str(self.open_instance)}

    def key(self, data):
        return data

    def is_valid_data(self, data):
        """Whether iteration yields ``data`` (default: anything but None)."""
        return data is not None

    def when_no_data(self, data=None):
        """What iteration does on data it does not yield (default: wait a little)."""
        time.sleep(self._sleep_time_on_iter_none_s)

    def __iter__(self):
        while True:
            data = self.read()
            if self.is_valid_data(data):
                yield data
            else:
                self.when_no_data(data)


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
