"""A recorder in its own process, for crash trials and signal tests.

``python tools/crash_child.py LOG PROGRESS [--durability MODE] [--rate N]
[--payload BYTES] [--max-bytes N] [--stream NAME] [--join ID]`` records
``(i, payload)`` keyed ``i = 1, 2, ...`` at ``--rate`` records a second into
stream NAME (default ``main``) of a new session of LOG, or of the live
session ID that another process records (``--join``), until it is stopped
(the payload is ``--payload`` bytes of ``i % 256``, so every stored record
can be checked).  ``--max-bytes`` records with ``Retention(max_bytes=...)``,
so retention prunes while it records.

PROGRESS is a file of 8 bytes, mapped into memory: the source writes into it
(u64, little-endian) how many records it has produced, before it hands each
record over, so a parent can tell what a kill lost.

Stdout, one flushed line each:

* ``opening`` just before the log is opened (the recorder starts);
* ``session ID`` once the session is recording;
* ``committed N`` from the main thread whenever ``StreamBuffer.committed``
  grows: N records are committed (fsynced with ``--durability full``);
* ``stopped N`` after SIGINT (KeyboardInterrupt) made the ``with`` block
  stop the recorder and end its stream with N records (closing the session
  unless another writer's stream is still live); the exit status is then 0.

SIGINT is Python's KeyboardInterrupt (the script restores Python's own
handler, which a background job started by a shell would lack: SIGINT
ignored); SIGTERM and SIGKILL end the process at once; SIGUSR1 writes every
thread's stack to stderr (``faulthandler``) and goes on.
"""

import argparse
import faulthandler
import mmap
import os
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from streamlog import Retention, SourceReader, StreamBuffer  # noqa: E402

PROGRESS = struct.Struct("<Q")
REPORT_EVERY_S = 0.001


def payload_of(i, size):
    """The payload of record ``i``: ``size`` bytes of ``i % 256``."""
    return bytes([i % 256]) * size


def read_progress(path):
    """How many records the child's source has produced (from PROGRESS)."""
    with open(path, "rb") as f:
        return PROGRESS.unpack(f.read(PROGRESS.size))[0]


def make_progress_file(path):
    """Create PROGRESS holding 0."""
    with open(path, "wb") as f:
        f.write(PROGRESS.pack(0))


class PacedCounter(SourceReader):
    """``(i, payload_of(i))`` for i = 1, 2, ... at ``rate`` records a second,
    publishing i into the mapped PROGRESS file before returning record i."""

    sleep_time_on_read_none_s = 0.0005

    def __init__(self, rate, payload, progress_path):
        self.rate = rate
        self.payload = payload
        self.progress_path = progress_path

    def open(self):
        self._file = open(self.progress_path, "r+b")
        self._progress = mmap.mmap(self._file.fileno(), PROGRESS.size)
        self.i = 0
        self._t0 = time.monotonic()

    def read(self):
        if self.i >= (time.monotonic() - self._t0) * self.rate:
            return None
        self.i += 1
        PROGRESS.pack_into(self._progress, 0, self.i)
        return (self.i, payload_of(self.i, self.payload))

    def close(self):
        self._progress.close()
        self._file.close()

    def key(self, data):
        return data[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log")
    parser.add_argument("progress")
    parser.add_argument("--durability", choices=["full", "normal", "off"], default="full")
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--max-bytes", type=int)
    parser.add_argument("--stream", default="main")
    parser.add_argument("--join", type=int, help="the id of a live session to record a stream of")
    args = parser.parse_args()
    # a shell starts a background job (`... &`) with SIGINT ignored, and Python then keeps it ignored: the
    # trials' SIGINT must raise KeyboardInterrupt whoever started this process
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a parent that finds it stuck asks for its stacks
    retention = Retention(max_bytes=args.max_bytes) if args.max_bytes else None
    source = PacedCounter(args.rate, args.payload, args.progress)
    buf = StreamBuffer(source, log=args.log, maxlen=1000, durability=args.durability, retention=retention,
                       stream=args.stream, session=args.join)
    print("opening", flush=True)
    try:
        with buf:
            print(f"session {buf.session.id}", flush=True)
            reported = 0
            while not buf.wait(REPORT_EVERY_S):
                committed = buf.committed
                if committed != reported:
                    print(f"committed {committed}", flush=True)
                    reported = committed
    except KeyboardInterrupt:
        print(f"stopped {buf.committed}", flush=True)  # after stop() every record read is committed
        return
    raise SystemExit(f"the recording ended by itself: {buf.session.status} {buf.session.error}")


if __name__ == "__main__":
    main()
