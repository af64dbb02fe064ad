"""``CommandSource``: the output lines of a subprocess as timestamped records."""

import codecs
import os
import selectors
import signal
import subprocess
import time

from streamlog.source import ReadBatch, SourceReader

CHUNK_BYTES = 1 << 16


class CommandSource(SourceReader):
    """Run ``argv`` and record each line it prints as ``(t_us, channel, line)``.

    ``channel`` is ``"stdout"`` or ``"stderr"``; ``line`` has its trailing
    newline removed (bytes decoded as UTF-8, undecodable bytes replaced).
    ``t_us`` is the key: integer microseconds since the epoch at which the
    line was read from the pipe (a child that buffers its output, such as
    ``python`` without ``-u``, delivers its lines late and together).  Keys
    never decrease: when the wall clock steps back, the previous key is
    reused.

    The child runs in its own process group with stdin from ``/dev/null``;
    ``env`` (when given) replaces the environment, as in :mod:`subprocess`.
    :meth:`open` raises ``FileNotFoundError``/``PermissionError`` naming the
    command when it cannot be started.  The session ends (``StopIteration``)
    once the child has exited and both pipes are drained.  When the recording
    is stopped, the lines already waiting in the pipes are still recorded
    (``drain_on_stop``).  :meth:`close`
    stops a child that is still running: SIGTERM to its process group, then
    SIGKILL after ``grace_s`` seconds, so no process outlives the recording.

    ``info`` holds ``argv``, ``cwd``, ``pid`` and ``exit_status`` (``None``
    while running; negative ``-N`` when killed by signal N, as in
    :attr:`subprocess.Popen.returncode`, with ``exit_signal`` naming it).
    """

    drain_on_stop = True

    def __init__(self, argv, *, cwd=None, env=None, grace_s=3.0):
        if isinstance(argv, (str, bytes)):
            raise TypeError(f"argv must be a list of strings such as ['ls', '-l'], not one string: {argv!r} "
                            "(split a command line with shlex.split)")
        argv = [os.fspath(a) for a in argv]
        if not argv:
            raise ValueError("argv is empty: no command to run")
        self.argv = argv
        self.cwd = None if cwd is None else os.fspath(cwd)
        self.env = env
        self.grace_s = grace_s
        self._process = None
        self._selector = None
        self._decoders = {}
        self._pending = {}
        self._last_key = 0
        self._exit_status = None

    # -- SourceReader ----------------------------------------------------
    def open(self):
        try:
            self._process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except FileNotFoundError:
            missing = self.cwd if self.cwd is not None and not os.path.isdir(self.cwd) else self.argv[0]
            raise FileNotFoundError(
                f"cannot start command {self.argv[0]!r}: no such file or directory: {missing}") from None
        except PermissionError:
            raise PermissionError(f"cannot start command {self.argv[0]!r}: permission denied") from None
        self._selector = selectors.DefaultSelector()
        for channel, pipe in (("stdout", self._process.stdout), ("stderr", self._process.stderr)):
            os.set_blocking(pipe.fileno(), False)
            self._selector.register(pipe, selectors.EVENT_READ, channel)
            self._decoders[channel] = codecs.getincrementaldecoder("utf-8")("replace")
            self._pending[channel] = ""

    def read(self):
        """Return a ReadBatch of the lines printed since the last call,
        ``None`` when there are none, ``StopIteration`` once the child has
        exited and its output is drained."""
        if not self._selector.get_map():
            if self._process.poll() is None:
                return None  # output closed, child still running
            self._exit_status = self._process.returncode
            raise StopIteration
        records = []
        for selector_key, _ in self._selector.select(timeout=0):
            pipe, channel = selector_key.fileobj, selector_key.data
            data = os.read(pipe.fileno(), CHUNK_BYTES)
            t_us = self._next_key()
            parts = (self._pending[channel] + self._decoders[channel].decode(data, final=not data)).split("\n")
            self._pending[channel] = parts.pop()
            if not data:  # end of this pipe: an unterminated last line is still a line
                if self._pending[channel]:
                    parts.append(self._pending[channel])
                    self._pending[channel] = ""
                self._selector.unregister(pipe)
                pipe.close()
            records.extend((t_us, channel, p[:-1] if p.endswith("\r") else p) for p in parts)
        return ReadBatch(records) if records else None

    def close(self):
        """Stop the child's process group if anything of it may still run
        (SIGTERM, SIGKILL after ``grace_s``), reap the child, close the pipes."""
        if self._process is None:
            return
        pipes_open = self._selector is not None and bool(self._selector.get_map())
        if self._process.poll() is None or pipes_open:
            self._signal_group(signal.SIGTERM)
            try:
                self._process.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._process.wait()
        self._exit_status = self._process.returncode
        if self._selector is not None:
            for selector_key in list(self._selector.get_map().values()):
                selector_key.fileobj.close()
            self._selector.close()
            self._selector = None

    def key(self, data):
        return data[0]

    @property
    def info(self):
        info = {
            "source": "command",
            "argv": list(self.argv),
            "cwd": self.cwd,
            "pid": None if self._process is None else self._process.pid,
            "exit_status": self._exit_status,
            "key_kind": "timestamp_us",
        }
        if self._exit_status is not None and self._exit_status < 0:
            info["exit_signal"] = _signal_name(-self._exit_status)
        return info

    # -- helpers ---------------------------------------------------------
    def _next_key(self):
        self._last_key = max(self._last_key, time.time_ns() // 1000)
        return self._last_key

    def _signal_group(self, signum):
        try:
            os.killpg(self._process.pid, signum)
        except ProcessLookupError:
            pass


def _signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
