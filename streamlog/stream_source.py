"""stream2py's ``stream_source`` module: a source that owns its StreamBuffer."""

from streamlog.buffer import StreamBuffer
from streamlog.errors import ConfigurationError
from streamlog.reader import BufferReader
from streamlog.source import SourceReader

__all__ = ["StreamSource"]


class StreamSource(SourceReader):
    """A SourceReader that records itself: :meth:`open_reader` starts its
    StreamBuffer with the first reader, and the buffer is closed when the
    last open reader closes (``reader.close()`` or the end of ``with
    source.open_reader() as reader:``).  Opening a reader again records anew.

    ``reader_cls``: the BufferReader subclass :meth:`open_reader` makes.
    """

    _buffer_kwargs = {}
    _open_readers = 0
    _stream_buffer = None

    def __init__(self, *, reader_cls=BufferReader):
        self._reader_cls = reader_cls

    def configure_buffer(self, *, maxlen=None, sleep_time_on_read_none_s=None, auto_drop=True, **buffer_options):
        """Set the StreamBuffer's options (``maxlen`` None: every record in
        RAM); ConfigurationError once it is recording.  Returns self."""
        if self._stream_buffer is not None:
            raise ConfigurationError("Buffer has already been started.")
        self._buffer_kwargs = dict(maxlen=maxlen, sleep_time_on_read_none_s=sleep_time_on_read_none_s,
                                   auto_drop=auto_drop, **buffer_options)
        return self

    def open_reader(self, read_size=1, strict_n=False, ignore_no_item_found=False, **reader_defaults):
        """A new open reader of this source's recording (started if needed)."""
        if self._stream_buffer is None:
            self._stream_buffer = StreamBuffer(self, **self._buffer_kwargs).start()
        reader = self._stream_buffer.mk_reader(self._reader_cls, read_size=read_size, strict_n=strict_n,
                                               ignore_no_item_found=ignore_no_item_found, **reader_defaults)
        self._open_readers += 1
        reader.onclose = self._reader_closed
        return reader.open()

    def _reader_closed(self):
        self._open_readers -= 1
        if self._open_readers <= 0:
            self.exit()

    def exit(self):
        """Close the recording (or, with none, the source itself)."""
        if self._stream_buffer is not None:
            self._stream_buffer.close()
            self._stream_buffer = None
        else:
            self.close()
