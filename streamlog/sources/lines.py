"""``LineSource``: the lines of a text file or stream as records."""

import codecs
import errno
import logging
import os
import select
import stat
import time

from streamlog.source import ReadBatch, SourceReader

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
SEEN_BYTES = 64  # bytes before the read position compared on each read to notice a rewritten file


class LineSource(SourceReader):
    """Each line of a text file (or open text stream) as ``(line_number, line)``.

    ``line_number`` is 1-based and is the key; ``line`` has its trailing
    newline (``"\\n"`` or ``"\\r\\n"``) removed.  Bytes are decoded with
    ``encoding``; undecodable bytes follow ``errors`` (as in :func:`open`,
    default ``"replace"``: they become U+FFFD).

    ``path_or_stream`` is a path, or an open stream such as ``sys.stdin``.
    A path may name any readable file: a regular file, or a FIFO, a
    terminal or serial port (``/dev/ttyUSB0``, ``/dev/pts/3``), a character
    device such as ``/dev/null``, or a pipe (``/dev/fd/63`` from a shell's
    ``<(...)``).  A stream with a file descriptor, and a path that is not a
    regular file, are read from the descriptor without blocking (the
    recorder can stop while a pipe is silent; a FIFO waits for its first
    writer, as ``cat`` does) and past a stream's own buffer, so hand it over
    unread; their input ends at end of file, or when a terminal hangs up.  A
    stream without a descriptor (``io.StringIO``) is read with ``readline()``.

    Each :meth:`read` takes everything available up to the first complete
    lines, however long the line: it never returns None while data is
    waiting (a 16 MB line is read in one call).

    Without ``follow`` the session ends (``read()`` raises ``StopIteration``)
    at end of file; a last line without a newline is still a line.

    With ``follow=True`` (paths only; a path that is not a regular file is
    read to its end as without it) a regular file is read from its start and then
    followed like ``tail -f``: ``read()`` returns ``None`` while nothing new
    has been written (the recorder polls every ``poll_s`` seconds), and a
    partial last line is held back until its newline arrives.  When the file
    is truncated (it shrank below the read position, or the last bytes read
    changed: truncated and written again), or replaced by a new file at the
    same path (log rotation), reading restarts at the beginning of the new content; the held-back
    partial line of the old content is emitted first, line numbers keep
    counting up (keys never decrease), a warning is logged and the restart
    is listed under ``info["restarts"]``.

    :meth:`open` raises ``FileNotFoundError`` (naming the path) when the file
    does not exist.
    """

    def __init__(self, path_or_stream, *, follow=False, poll_s=0.05, encoding="utf-8", errors="replace"):
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0 seconds, got {poll_s!r}")
        codecs.lookup(encoding)  # raises LookupError naming an unknown encoding
        self._is_path = isinstance(path_or_stream, (str, bytes, os.PathLike))
        if follow and not self._is_path:
            raise ValueError("follow=True needs a file path; a stream cannot be reopened after rotation")
        if self._is_path:
            self.path = os.path.abspath(os.fsdecode(path_or_stream))
            self._stream = None
        else:
            if not hasattr(path_or_stream, "readline"):
                raise TypeError("LineSource needs a path or a readable text stream, "
                                f"got {type(path_or_stream).__name__}")
            self.path = None
            self._stream = path_or_stream
        self.follow = follow
        self.poll_s = poll_s
        self.sleep_time_on_read_none_s = poll_s
        self.encoding = encoding
        self.errors = errors
        self._file = None        # binary file object (a regular file's path)
        self._fd = None          # descriptor read with os.read (a stream, or a path that is not a regular file)
        self._owns_fd = False    # the descriptor was opened here, from a path
        self._decoder = None
        self._partial = []       # decoded text after the last newline, in pieces
        self._seen = b""         # follow mode: the last bytes read, to notice a rewritten file
        self._line_number = 0
        self._restarts = []
        self._done = False

    # -- SourceReader ----------------------------------------------------
    def open(self):
        if self._is_path:
            self._open_path()
        else:
            self._fd = _usable_fileno(self._stream)
        self._decoder = codecs.getincrementaldecoder(self.encoding)(self.errors)

    def read(self):
        """Return a ReadBatch of the complete lines available now, ``None``
        when there are none yet (follow mode, silent pipe), or raise
        ``StopIteration`` at the end of the input."""
        if self._done:
            raise StopIteration
        if self._file is not None and self.follow:
            return self._read_followed()
        read_more = self._read_file if self._file is not None else (
            self._read_fd if self._fd is not None else self._read_textio)
        lines = []
        while not lines:  # data without a newline yet: read on, never wait while more is there
            text, at_eof = read_more()
            lines = self._split(text)
            if at_eof:
                if self._partial:
                    lines.append(self._number(self._take_partial()))
                if not lines:
                    self._done = True
                    raise StopIteration
                break
            if not text:
                break
        return ReadBatch(lines) if lines else None

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._owns_fd and self._fd is not None:
            os.close(self._fd)
        self._fd = None

    def key(self, data):
        return data[0]

    @property
    def info(self):
        info = {
            "source": "lines",
            "path": self.path if self._is_path else getattr(self._stream, "name", repr(self._stream)),
            "mode": "follow" if self.follow else "read",
            "encoding": self.encoding,
            "key_kind": "line_number",
        }
        if self._restarts:
            info["restarts"] = list(self._restarts)
        return info

    # -- reading ---------------------------------------------------------
    def _open_path(self):
        """A regular file as a file object (seekable, followed); anything
        else readable as a non-blocking descriptor."""
        try:
            mode = os.stat(self.path).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(f"is a directory, not a text file: {self.path}")
            if stat.S_ISREG(mode):
                self._file = open(self.path, "rb")
            else:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
                self._owns_fd = True
        except FileNotFoundError:
            raise FileNotFoundError(f"no such file: {self.path}") from None

    def _read_file(self):
        data = self._file.read(CHUNK_BYTES)
        if self.follow:
            self._seen = (self._seen + data)[-SEEN_BYTES:]
        return self._decoder.decode(data, final=not data and not self.follow), not data

    def _read_followed(self):
        lines = self._restart_if_truncated()
        while True:  # read on while the file has more and no line is complete
            text, at_eof = self._read_file()
            lines += self._split(text)
            if lines or at_eof:
                break
        if not lines and at_eof:
            lines = self._restart_if_rotated()
        return ReadBatch(lines) if lines else None

    def _read_fd(self):
        """``(text, at_eof)`` from the descriptor: ``("", False)`` when nothing
        is waiting; a terminal that hung up (EIO) is the end of its input."""
        ready, _, _ = select.select([self._fd], [], [], 0)
        if not ready:
            return "", False
        try:
            data = os.read(self._fd, CHUNK_BYTES)
        except BlockingIOError:
            return "", False
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        return self._decoder.decode(data, final=not data), not data

    def _read_textio(self):
        line = self._stream.readline()
        if isinstance(line, bytes):
            line = self._decoder.decode(line, final=not line)
        return line, not line

    def _split(self, text):
        """Append ``text`` to the pending partial line; return the records of
        every line that is now complete.  A long partial line is kept in
        pieces and joined once, when its newline comes."""
        if "\n" not in text:
            if text:
                self._partial.append(text)
            return []
        parts = text.split("\n")
        parts[0] = self._take_partial() + parts[0]
        last = parts.pop()
        if last:
            self._partial.append(last)
        return [self._number(p) for p in parts]

    def _take_partial(self):
        """The pending partial line as one string; there is none afterwards."""
        text = "".join(self._partial)
        self._partial = []
        return text

    def _number(self, line):
        """The next record: ``line`` (newline already split off, a trailing
        carriage return is dropped here) with its line number."""
        self._line_number += 1
        return (self._line_number, line[:-1] if line.endswith("\r") else line)

    def _restart_if_truncated(self):
        """Rewind when the file shrank below the read position, or when the
        bytes just before it are no longer those read (truncated and written
        again, possibly longer than before, since the last call)."""
        position = self._file.tell()
        if not position:
            return []
        fd = self._file.fileno()
        if os.fstat(fd).st_size >= position and os.pread(fd, len(self._seen), position - len(self._seen)) == self._seen:
            return []
        self._file.seek(0)
        return self._restart("truncated", b"")

    def _restart_if_rotated(self):
        """At end of file: when another file now sits at the path (log
        rotation), read what was still appended to the old one, then switch
        to the new one."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return []  # rotated away and not recreated yet: keep waiting
        mine = os.fstat(self._file.fileno())
        if (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino):
            return []
        rest = self._file.read()
        self._file.close()
        self._file = None
        self._open_path()
        return self._restart("rotated", rest)

    def _restart(self, reason, rest):
        """Start over on new content: return the records of what the old
        content held after its last complete line (``rest``, the held-back
        partial line), note the restart in ``info`` and log a warning."""
        lines = (self._take_partial() + self._decoder.decode(rest, final=True)).split("\n")
        if not lines[-1]:
            lines.pop()
        self._seen = b""
        flushed = [self._number(line) for line in lines]
        self._decoder = codecs.getincrementaldecoder(self.encoding)(self.errors)
        self._restarts.append({"reason": reason, "after_line": self._line_number, "time": time.time()})
        logger.warning("%s was %s; reading it again from the start after line %d", self.path, reason, self._line_number)
        return flushed


def _usable_fileno(stream):
    """The stream's file descriptor, or None when it has none (StringIO)."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
