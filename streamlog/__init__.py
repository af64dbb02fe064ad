"""streamlog: record streams into a RAM ring mirrored to an LMDB append log.

A :class:`StreamBuffer` reads a :class:`SourceReader` in a thread; any number of
:class:`BufferReader` cursors read its records live, from RAM or from disk;
a :class:`Log` opens the recordings later, from any process; a :class:`Mirror`
copies them to Redis, where a :class:`RemoteLog` reads them from any machine.
"""

from streamlog import errors
from streamlog.buffer import StreamBuffer, mk_stream_buffer
from streamlog.log import Log, Retention, Session
from streamlog.reader import BufferReader
from streamlog.remote import Mirror, RemoteLog
from streamlog.source import ReadBatch, SourceReader

__version__ = "0.1.0"

__all__ = [
    "BufferReader", "Log", "Mirror", "ReadBatch", "RemoteLog", "Retention", "Session", "SourceReader",
    "StreamBuffer",
    "errors", "mk_stream_buffer", "__version__",
]
