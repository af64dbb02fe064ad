"""streamlog: record streams into a RAM ring mirrored to an LMDB append log.

A :class:`StreamBuffer` reads a :class:`SourceReader` in a thread; any number of
:class:`BufferReader` cursors read its records live, from RAM or from disk;
a :class:`Log` opens the recordings later, from any process; a :class:`Mirror`
copies them to Redis, where a :class:`RemoteLog` reads them from any machine.

stream2py's public names and modules are here too (``protocols``,
``buffer_reader``, ``stream_buffer``, ``source_reader``, ``stream_source``,
``util.Timer``, ``exceptions``, ``simply``, ``sources``): a stream2py program
runs after changing ``stream2py`` to ``streamlog`` in its imports (see the
README's "Coming from stream2py").
"""

from streamlog import buffer_reader, errors, exceptions, protocols, source_reader, stream_buffer, stream_source, util
from streamlog.buffer import StreamBuffer, mk_stream_buffer
from streamlog.log import Log, Retention, Session
from streamlog.marks import mark
from streamlog.reader import BufferReader
from streamlog.remote import Mirror, RemoteLog
from streamlog.source import QuickSourceReader, ReadBatch, Source, SourceReader
from streamlog.stream_source import StreamSource
from streamlog.util import Timer

__version__ = "0.1.0"

__all__ = [
    "BufferReader", "Log", "Mirror", "QuickSourceReader", "ReadBatch", "RemoteLog", "Retention", "Session",
    "Source", "SourceReader", "StreamBuffer", "StreamSource", "Timer", "buffer_reader", "errors", "exceptions", "mark",
    "mk_stream_buffer", "protocols", "source_reader", "stream_buffer", "stream_source", "util", "__version__",
]
