"""stream2py's ``buffer_reader`` module: :class:`~streamlog.reader.BufferReader`."""

from streamlog.reader import BufferReader

__all__ = ["BufferReader"]
