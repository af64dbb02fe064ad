"""One exception hierarchy for everything streamlog raises on purpose.

Every class derives from :class:`StreamlogError`; where a built-in category
fits, the class also derives from it (``LookupError``, ``ValueError``,
``TypeError``) so generic ``except`` clauses keep working.  The classes named
like stream2py's exceptions (:mod:`streamlog.exceptions` exports them under
stream2py's names) sit in this hierarchy too, so stream2py programs' ``except``
clauses catch streamlog's errors.
"""


class StreamlogError(Exception):
    """Base class of every error streamlog raises deliberately (stream2py's ``Stream2PyError``)."""


class StreamNotStartedError(StreamlogError):
    """An operation needs a started StreamBuffer (``mk_reader``, ``attach_reader``, ...)."""


class StreamAlreadyStoppedError(StreamlogError):
    """An operation needs a running StreamBuffer (stream2py's name; streamlog
    lets readers read a stopped buffer, so it raises this nowhere yet)."""


class StreamBufferError(StreamlogError):
    """Base class of buffer errors (stream2py's ``BufferError``)."""


class BufferOverflowError(StreamBufferError):
    """stream2py's name for a full buffer with ``auto_drop=False``; streamlog
    pauses reading the source instead, so it raises this nowhere."""


class NoDataAvailableError(StreamBufferError):
    """No data where data was asked for (stream2py's name; see NoItemFound)."""


class InvalidDataError(StreamlogError):
    """Data that does not meet the expected format or constraints."""


class ConfigurationError(StreamlogError, ValueError):
    """An object used in a way its configuration does not allow."""


class NoItemFound(NoDataAvailableError, IndexError, ValueError):
    """A read, range, head or tail found no record (the one "empty" error).

    Also an IndexError and a ValueError: what stream2py raised in these cases."""


class NotEnoughItems(NoItemFound):
    """Fewer records than ``n`` after the cursor, read with ``strict_n=True``."""


class JoinNotSupported(ConfigurationError, NotImplementedError):
    """``range(join=True)`` on a stream whose source does not implement both
    ``slice_item`` and ``join_items``."""


class RecordsPruned(StreamlogError):
    """The reader's next record was removed by retention.

    ``missed`` is how many records were pruned between the cursor and the
    oldest record still stored.  The cursor is not moved; a reader made with
    ``skip_pruned=True`` skips ahead instead of raising.
    """

    def __init__(self, missed, message=None):
        self.missed = missed
        super().__init__(message or f"{missed} record(s) after the cursor were pruned by retention")


class InvalidKey(InvalidDataError, TypeError):
    """A key of an unsupported type or value (NaN, a list, an object, ...)."""


class KeyKindError(InvalidKey):
    """A key of another kind than the keys before it in the same stream and
    session (numbers, str, bytes, or tuples of one length with one kind at
    each position): such keys have no meaningful order between them."""


class KeyOrderError(InvalidDataError, ValueError):
    """A key smaller than the previous key of the same stream and session."""


class UnencodableRecord(InvalidDataError, TypeError):
    """A record holding a value that the record codec cannot store."""


class RecordTooLarge(InvalidDataError, ValueError):
    """A record whose encoding is larger than the recorder's
    ``max_record_bytes``; ``size`` and ``limit`` are in bytes."""

    def __init__(self, message, size, limit):
        self.size = size
        self.limit = limit
        super().__init__(message)


class SourceFailed(StreamlogError):
    """The source (or the recording) failed; raised by readers once they have
    read every record stored before the failure.  ``__cause__`` is the
    original exception when it happened in this process."""


class LogError(StreamlogError):
    """Problems with the log on disk."""


class LogNotFound(LogError, FileNotFoundError):
    """No log at the given path (and it was not to be created)."""


class NotALog(LogError, ValueError):
    """The path holds something that is not a streamlog log, or a damaged one."""


class CorruptRecord(NotALog):
    """A record, record key or session entry of the log does not decode: the
    log is damaged there.  ``session``, ``stream`` and ``key`` say where when
    known (else None); ``key`` is the decoded record key, or its raw bytes
    when the key itself is damaged."""

    def __init__(self, message, *, session=None, stream=None, key=None):
        self.session = session
        self.stream = stream
        self.key = key
        super().__init__(message)


class LogAccessDenied(LogError, PermissionError):
    """This process may not read the log's directory or files (file permissions)."""


class LiveLogAccessDenied(LogAccessDenied):
    """A log that a process is writing, opened by a user who may not write its
    ``lock.mdb``: a reader without the lock file may read a log only while no
    process writes it.  The message names the file, the user, the writers'
    pids and the fix; ``writer_pids`` lists the pids."""

    def __init__(self, message, *, writer_pids=()):
        self.writer_pids = list(writer_pids)
        super().__init__(message)


class ReadersWithoutLock(LogError):
    """A process could not start writing a log because readers that may not
    write its ``lock.mdb`` (so read it without LMDB's lock table) have it
    open; ``reader_pids`` lists them as far as the system tells."""

    def __init__(self, message, *, reader_pids=()):
        self.reader_pids = list(reader_pids)
        super().__init__(message)


class FormatVersionError(LogError):
    """The log was written in an on-disk format version this code cannot read."""


class StreamNameTaken(LogError):
    """The session joined already has a stream of that name (streams of a
    session are written by one process each)."""


class CursorError(LogError):
    """A named cursor (``Session.reader(name=...)``) cannot be used as asked:
    a bad name, or a name that follows another session or stream."""


class BadCursorName(CursorError, ValueError):
    """A cursor name that is not 1 to 128 of ``A-Z a-z 0-9 . _ -``, starting with a letter or digit."""


class CursorNotFound(CursorError, LookupError):
    """No named cursor of that name in the log."""


class SessionNotFound(LogError, LookupError):
    """No session with that id (or no stream with that name in it)."""


class StorageError(LogError, OSError):
    """The disk refused a write (full, read-only, I/O error); what was
    committed before stays readable."""


class AudioDeviceError(StreamlogError, ValueError):
    """No usable audio input: no device, a bad device index, or a format
    (rate, channels, sample format) the device does not support."""


class AudioFormatError(StreamlogError, ValueError):
    """An invalid audio format, or data not in a format streamlog can read or write."""


class AudioGapError(StreamlogError, ValueError):
    """Samples were asked for across frames missing from a recording;
    ``gaps`` lists them (``streamlog.audio.Gap``)."""

    def __init__(self, gaps, message):
        self.gaps = gaps
        super().__init__(message)


class TimeFormatError(StreamlogError, ValueError):
    """A time or an age written in a form :mod:`streamlog.timespec` does not read."""


class KeyFormatError(StreamlogError, ValueError):
    """Key text (see :mod:`streamlog.notation`) that is not a key of the stream's key type."""


class QueryError(StreamlogError, ValueError):
    """A query that cannot be answered as asked: a reversed range, a session
    list that does not parse, a ``--where`` condition without an operator."""


class RemoteError(StreamlogError):
    """A remote log (Redis) refused a request or holds something unexpected."""


class RemoteUnavailable(RemoteError, ConnectionError):
    """The remote log's server cannot be reached (down, wrong address, timeout)."""


class MissingExtra(StreamlogError, ImportError):
    """An optional dependency is not installed; the message names the extra
    to install (``pip install 'streamlog[pandas]'``)."""


class RecordShapeError(StreamlogError, ValueError):
    """A record does not fit the array or table being built from a stream
    (another shape or dtype, not numeric, a gap); the message names it."""


class ExportError(StreamlogError, ValueError):
    """An export that cannot be written as asked: an unknown format, records
    that do not fit the format (mixed array shapes for npy, a field outside
    a fixed CSV header, ...), an option the format does not take."""


class ExportTargetError(ExportError):
    """An export's target is refused: inside a log directory or the log
    itself, a directory, a link to nothing, an existing file without
    ``force``, a missing directory, or a temporary file already there."""
