"""stream2py's ``stream_buffer`` module: :class:`~streamlog.buffer.StreamBuffer`."""

from streamlog.buffer import SourceBuffer, StreamBuffer

__all__ = ["SourceBuffer", "StreamBuffer"]
