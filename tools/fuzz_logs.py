"""How a damaged log is answered: seeded random bytes over a real log's
``data.mdb``, then a full read through the library and ``streamlog doctor``,
each in its own process.

LMDB does not checksum its pages, so some damage crashes the reader inside
LMDB (SIGSEGV, SIGBUS, an assertion's SIGABRT) or could make it loop; this
counts how often, next to the clean outcomes (read fine, one streamlog
error).  Anything else -- a traceback, a timeout -- is a bug to fix.

    python tools/fuzz_logs.py --trials 300            # figures for the report
    python tools/fuzz_logs.py --trials 20 --show bug  # print the failing seeds

Each trial overwrites 1-4 ranges of 1 B to 4 KiB, placed on a meta page
(offset 0 or 4096), on one of the last two pages, or anywhere (seed = trial
number, so a trial is reproducible).
"""

import argparse
import collections
import concurrent.futures
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from streamlog import ReadBatch, SourceReader, StreamBuffer  # noqa: E402

PAGE = 4096
READ_ALL = """
import sys
import streamlog
from streamlog import errors
try:
    with streamlog.Log(sys.argv[1]) as log:
        for session in log.sessions():
            for stream in session.streams:
                session.stream_info(stream)
                for _ in session.irange(stream=stream):
                    pass
        print(f"read; {len(log.verify())} problem(s)")
except errors.StreamlogError as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(1)
"""


class Shapes(SourceReader):
    """Small tuples, 4 KiB arrays (overflow pages), nested containers, varying arrays with big ints."""

    sleep_time_on_read_none_s = 0.001

    def __init__(self, n):
        self.n = n

    def open(self):
        self.done = False

    def read(self):
        """Every record in one batch, so one group commit: the same page layout every time."""
        if self.done:
            raise StopIteration
        self.done = True
        return ReadBatch([(i, b"x" * (i % 50)), (i, np.full(2048, i, dtype="<i2")), (i, {"a": [i, "s" * (i % 30)]}),
                          (i, np.arange(i % 700, dtype="<f4"), 2**70 + i)][i % 4] for i in range(1, self.n + 1))

    def close(self):
        pass

    def key(self, data):
        return data[0]


def make_log(path):
    for n in (200, 300):
        with StreamBuffer(Shapes(n), log=path, maxlen=50) as buf:
            buf.wait(60)


def damage(data_file, seed):
    """Overwrite 1-4 random ranges of ``data_file``; return them as (offset, length)."""
    rng = random.Random(seed)
    size = os.path.getsize(data_file)
    ranges = []
    with open(data_file, "r+b") as f:
        for _ in range(rng.randint(1, 4)):
            page = rng.choice([0, PAGE, size - 2 * PAGE, size - PAGE, rng.randrange(0, size, PAGE)])
            offset = min(page + rng.randrange(PAGE), size - 1)
            length = min(rng.choice([1, 8, 64, 512, PAGE]), size - offset)
            f.seek(offset)
            f.write(rng.randbytes(length))
            ranges.append((offset, length))
    return ranges


def outcome(args, timeout):
    """``ok``, ``problems reported``, ``streamlog error``, ``reported crash``,
    ``SIGxxx``, ``timeout`` or ``bug: <last stderr line>``."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("STREAMLOG_TRACEBACK", None)
    try:
        result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timeout"
    lines = result.stderr.strip().splitlines()
    if result.returncode < 0:
        return signal.Signals(-result.returncode).name
    if result.returncode == 0:
        return "ok"
    if result.returncode == 1 and not lines and "problem(s):" in result.stdout:
        return "problems reported"  # doctor found damage it can name (counters, order, a status)
    if result.returncode == 1 and len(lines) == 1 and "unexpected" not in lines[0]:
        if "crashed (SIG" in lines[0]:
            return "reported crash"
        return "streamlog error"
    return f"bug: {lines[-1] if lines else result.returncode}"


def trial(base, workdir, seed, timeout):
    log = os.path.join(workdir, f"trial{seed}")
    shutil.copytree(base, log)
    try:
        ranges = damage(os.path.join(log, "data.mdb"), seed)
        library = outcome(["-c", READ_ALL, log], timeout)
        doctor = outcome(["-m", "streamlog", "doctor", log], timeout)
        return seed, ranges, library, doctor
    finally:
        shutil.rmtree(log)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60, help="seconds before a read counts as a hang")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--show", choices=["bug", "all"], help="print the trials with a bug (or every trial)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-logs-") as workdir:
        base = os.path.join(workdir, "base.streamlog")
        make_log(base)
        print(f"log: {os.path.getsize(os.path.join(base, 'data.mdb'))} bytes of data.mdb, 500 records; "
              f"{options.trials} trials from seed {options.first_seed}")
        counts = {"library": collections.Counter(), "doctor": collections.Counter()}
        seeds = range(options.first_seed, options.first_seed + options.trials)
        with concurrent.futures.ThreadPoolExecutor(options.jobs) as pool:
            for seed, ranges, library, doctor in pool.map(lambda s: trial(base, workdir, s, options.timeout), seeds):
                counts["library"][library] += 1
                counts["doctor"][doctor] += 1
                bad = any(o.startswith("bug") or o == "timeout" for o in (library, doctor))
                if options.show == "all" or (options.show == "bug" and bad):
                    print(f"seed {seed}: ranges {ranges}: library {library}; doctor {doctor}")
    for name, counter in counts.items():
        print(f"{name:<8} " + ", ".join(f"{outcome_}: {n}" for outcome_, n in counter.most_common()))


if __name__ == "__main__":
    main()
