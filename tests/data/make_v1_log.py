"""Make ``v1-log``, the format-1 log that tests/test_format.py reads.

It was made once, by the format-1 writer of commit 5a0167c (run from the
repository root: ``PYTHONPATH=. python tests/data/make_v1_log.py``); the
writer of later commits writes format 2, so running this again with them
makes a format-2 log.  Every record is a function of its index, so the
tests know what each session holds without a second copy of the data:

* session 1 (closed): stream ``main``, 300 records ``(i, b"payload-<i>")``
  keyed ``i`` = 0..299, committed in groups of 50; stream ``markers``,
  5 records ``(f"m{j}", float(j))`` keyed by the float ``j * 60.0``.
* session 2 (closed): 40 records ``(("a", i), numpy int16 array of 2048
  samples, all i)`` keyed by the tuple ``("a", i)`` (4 KiB payloads: split
  into an overflow page and a continuation), and record 40 a 9,000-sample
  array (several continuations).
* session 3 (failed): 10 records ``(i, b"x" * i)`` keyed ``i`` = 1..10,
  then the source raised ``RuntimeError("sensor unplugged at 11")``.
"""

import os
import shutil
import sys

import numpy as np

import streamlog
from streamlog import ReadBatch, SourceReader, StreamBuffer

HERE = os.path.dirname(os.path.abspath(__file__))


class Source(SourceReader):
    def __init__(self, batches, fail=None):
        self.batches = batches
        self.fail = fail

    def open(self):
        self.it = iter(self.batches)

    def read(self):
        try:
            return ReadBatch(next(self.it))
        except StopIteration:
            if self.fail:
                raise RuntimeError(self.fail) from None
            raise

    def close(self):
        pass

    def key(self, data):
        return data[0]

    @property
    def info(self):
        return {"kind": "v1 test data"}


def main(path):
    if os.path.exists(path):
        shutil.rmtree(path)
    with streamlog.Log(path) as log:
        main_batches = [[(i, b"payload-%d" % i) for i in range(j, j + 50)] for j in range(0, 300, 50)]
        with StreamBuffer(Source(main_batches), log=log, commit_records=50) as buf:
            markers = Source([[(j * 60.0, f"m{j}", float(j))] for j in range(5)])
            markers.key = lambda data: data[0]
            with StreamBuffer(markers, log=log, stream="markers", session=buf.session) as marks:
                marks.wait(10)
            buf.wait(10)
        arrays = [[(("a", i), np.full(2048, i, dtype=np.int16)) for i in range(k, k + 10)] for k in range(0, 40, 10)]
        arrays.append([(("a", 40), np.arange(9000, dtype=np.int16))])
        with StreamBuffer(Source(arrays), log=log) as buf:
            buf.wait(10)
        with StreamBuffer(Source([[(i, b"x" * i) for i in range(1, 11)]], fail="sensor unplugged at 11"),
                          log=log) as buf:
            buf.wait(10)
        print([(s.id, s.status, s.streams, s.count) for s in log.sessions()], log.verify())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "v1-log"))
