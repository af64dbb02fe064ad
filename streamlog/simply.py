"""stream2py's ``simply.mk_stream_buffer``, with stream2py's signature and defaults."""

from contextlib import contextmanager

from streamlog import buffer
from streamlog.source import SourceReader

__all__ = ["mk_stream_buffer"]


@contextmanager
def mk_stream_buffer(read_stream, open_stream=None, close_stream=None, info=None, key=None, maxlen=100,
                     sleep_time_on_read_none_seconds=None, auto_drop=True, enumerate_data=True, **buffer_options):
    """:func:`streamlog.mk_stream_buffer` as stream2py's ``simply`` module has it:
    ``read_stream`` and ``close_stream`` always get the open instance (None
    without ``open_stream``); ``info(open_instance)`` defaults to
    ``{"open_time", "open_instance"}``; without ``enumerate_data`` the key
    defaults to the data itself; ``maxlen`` defaults to 100 (every record
    is kept in the log whatever it is)."""
    opened = {}

    def open_and_stamp():
        handle = open_stream() if open_stream is not None else None
        opened.update(open_time=SourceReader.get_timestamp(), open_instance=str(handle))
        return handle

    with buffer.mk_stream_buffer(read_stream, open_and_stamp, close_stream or _ignore, key=key or (
            None if enumerate_data else _itself), maxlen=maxlen, info=info or (lambda handle: dict(opened)),
            enumerate_data=enumerate_data, sleep_time_on_read_none_seconds=sleep_time_on_read_none_seconds,
            auto_drop=auto_drop, **buffer_options) as stream_buffer:
        yield stream_buffer


def _ignore(handle):
    pass


def _itself(data):
    return data
