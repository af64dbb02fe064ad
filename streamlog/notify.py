"""Change notification across processes: writers wake the followers of a log.

The channel lives in the log's directory ``notify/``.  A follower (a
:class:`Listener`) makes an empty file ``notify/<pid>-<random>`` there and
binds a UNIX datagram socket of the same name in Linux's abstract socket
namespace (no path, so no length limit and nothing to clean up when it
dies); it sleeps in ``recv`` until a datagram comes or its timeout passes.
A writer (a :class:`Notifier`) sends one empty datagram to every listener
named in ``notify/`` after each write transaction it commits; a listener
whose socket is gone (its process died) has its file removed by the next
writer that meets it.

A wake-up says only "something was committed": the follower then reads
the log as before.  Since the listener's socket exists before it first
looks at the log, a commit between its look and its sleep leaves a
datagram queued, and no wake-up is lost.  Where ``notify/`` cannot be
written (a reader without write access to the log's directory) a follower
has no listener and polls instead (see :data:`POLL_FALLBACK_S`).
"""

import os
import re
import secrets
import socket
import time
import weakref

NOTIFY_DIR = "notify"
POLL_FALLBACK_S = 0.005
"""How often a follower without a listener looks at the log."""
LOOK_EVERY_S = 0.25
"""How often a follower with a listener looks at the log although nothing
woke it: a SIGKILLed writer sends nothing, and its death is seen so."""
_ADDRESS_PREFIX = b"\0streamlog-notify-"
_LISTENER_NAME = re.compile(r"[0-9]+-[0-9a-f]{12}")


class Notifier:
    """The writer's side for the log directory ``path``: :meth:`signal` after a commit."""

    def __init__(self, path):
        self._dir = os.path.join(path, NOTIFY_DIR)
        self._sock = None

    def signal(self):
        """Wake every listener of the log (never blocks, never raises)."""
        try:
            if os.path.islink(self._dir):  # a planted link: never list, let alone remove, files elsewhere
                return
            names = [name for name in os.listdir(self._dir) if _LISTENER_NAME.fullmatch(name)]
        except OSError:
            return
        if not names:
            return
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        for name in names:
            try:
                self._sock.sendto(b"", _ADDRESS_PREFIX + os.fsencode(name))
            except BlockingIOError:
                pass  # its queue is full: it has wake-ups pending already
            except ConnectionRefusedError:  # nobody is bound to it any more: its process is gone
                _remove_quietly(os.path.join(self._dir, name))
            except OSError:
                pass

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Listener:
    """A follower's side for the log directory ``path``.  ``available`` is
    False when the channel cannot be set up here (the caller polls).
    ``share(path)``, if given, is called on ``notify/`` when this makes it
    and on the listener's file (the store makes them group-writable in a
    shared log)."""

    def __init__(self, path, dir_mode, file_mode, *, share=None):
        self.available = False
        self._sock = None
        directory = os.path.join(path, NOTIFY_DIR)
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(_ADDRESS_PREFIX + name.encode())
            try:
                os.mkdir(directory, dir_mode)
                if share is not None:
                    share(directory)
            except FileExistsError:
                pass
            if os.path.islink(directory):
                raise IsADirectoryError(directory)
            entry = os.path.join(directory, name)
            os.close(os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file_mode))
            if share is not None:
                share(entry)
        except OSError:
            sock.close()
            return
        self._sock = sock
        self.available = True
        self._finalizer = weakref.finalize(self, _release, sock, entry)

    def wait(self, timeout):
        """Sleep until a writer signals or ``timeout`` seconds pass; True if
        signalled.  Takes every wake-up queued, so one look at the log
        answers them all."""
        self._sock.settimeout(timeout)
        try:
            self._sock.recv(1)
        except (socket.timeout, BlockingIOError):
            return False
        self._sock.setblocking(False)
        try:
            while True:
                self._sock.recv(1)
        except BlockingIOError:
            pass
        return True

    def pause(self, timeout=None):
        """Sleep between two looks at the log: until a writer signals, at most
        LOOK_EVERY_S; without the channel (``available`` False) POLL_FALLBACK_S.
        Never longer than ``timeout`` seconds (None: no limit of its own)."""
        longest = LOOK_EVERY_S if self.available else POLL_FALLBACK_S
        pause = longest if timeout is None else max(0.0, min(timeout, longest))
        if self.available:
            self.wait(pause)
        else:
            time.sleep(pause)

    def close(self):
        """Remove this listener from the channel."""
        if self._sock is not None:
            self._finalizer()
            self._sock = None
            self.available = False


def _release(sock, entry):
    _remove_quietly(entry)
    sock.close()


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
