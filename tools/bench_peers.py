"""The systems streamlog is benchmarked against, each driven the way its own
documentation recommends for bulk appends and key-range reads.

* :class:`RawLmdb` -- py-lmdb used directly: keys are ``u64be(int)``, values
  the payload bytes, appended with ``putmulti(append=True)``, one write
  transaction per batch (``sync=True`` fsyncs every commit).
* :class:`SqliteWal` -- sqlite3 in WAL mode, ``INTEGER PRIMARY KEY`` rows,
  one transaction per batch of ``executemany`` inserts.
* :class:`RedisServer` / :class:`RedisStream` -- a ``redis-server`` started on
  127.0.0.1 on a free port and stopped by its pid; records go in with
  pipelined ``XADD`` (entry id ``0-<key+1>``) and come back with ``XRANGE``.
* stream2py is driven from :mod:`bench` itself since it has no storage.

Every peer raises :class:`PeerUnavailable` (with a reason to print) when its
package or program is missing.
"""

import sqlite3
import struct

import redis_server

U64 = struct.Struct(">Q")


class PeerUnavailable(Exception):
    """The peer cannot run here; ``str(exc)`` says why (printed as a skip)."""


# --------------------------------------------------------------------- LMDB


class RawLmdb:
    """An LMDB environment at ``path`` holding one unnamed database of
    ``u64be(key) -> value`` entries."""

    def __init__(self, path, *, sync=True, readonly=False, map_size=1 << 36):
        import lmdb

        self.path = path
        self.env = lmdb.open(
            path,
            map_size=map_size,
            sync=sync,
            metasync=sync,
            readonly=readonly,
            lock=not readonly,
            readahead=False,
        )

    def append_records(self, n, payload, batch=1000, start=0):
        """Append keys ``start .. start+n-1`` (exclusive end), each with
        ``payload``, one write transaction per ``batch`` keys."""
        pack = U64.pack
        env = self.env
        stop = start + n
        for first in range(start, stop, batch):
            items = [(pack(i), payload) for i in range(first, min(stop, first + batch))]
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(items, append=True)

    def append_values(self, values, batch):
        """Append ``values`` (bytes) under keys 0, 1, ...; one transaction per
        ``batch`` values."""
        pack = U64.pack
        env = self.env
        items = []
        for i, value in enumerate(values):
            items.append((pack(i), value))
            if len(items) == batch:
                with env.begin(write=True) as txn:
                    txn.cursor().putmulti(items, append=True)
                items = []
        if items:
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(items, append=True)

    def used_bytes(self):
        """Bytes of the data file in use: (last page number + 1) * page size."""
        return (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]

    def range(self, start, count):
        """The ``count`` records from key ``start`` on, decoded to (key, value)."""
        unpack = U64.unpack
        out = []
        with self.env.begin(buffers=False) as txn:
            cur = txn.cursor()
            if not cur.set_range(U64.pack(start)):
                return out
            for k, v in cur:
                out.append((unpack(k)[0], v))
                if len(out) == count:
                    break
        return out

    def replay(self):
        """Iterate every record in key order, decoded to (key, value)."""
        unpack = U64.unpack
        with self.env.begin(buffers=False) as txn:
            for k, v in txn.cursor():
                yield unpack(k)[0], v

    def head(self):
        with self.env.begin() as txn:
            cur = txn.cursor()
            cur.first()
            return U64.unpack(cur.key())[0], cur.value()

    def tail(self):
        with self.env.begin() as txn:
            cur = txn.cursor()
            cur.last()
            return U64.unpack(cur.key())[0], cur.value()

    def close(self):
        self.env.close()


# ------------------------------------------------------------------- sqlite


class SqliteWal:
    """A sqlite3 database file in WAL mode with table ``r(k INTEGER PRIMARY
    KEY, v BLOB)``; ``synchronous`` is FULL (fsync at every commit) unless
    ``sync=False`` (OFF)."""

    def __init__(self, path, *, sync=True):
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={'FULL' if sync else 'OFF'}")
        self.conn.execute("CREATE TABLE IF NOT EXISTS r (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")

    def _insert(self, rows):
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO r (k, v) VALUES (?, ?)", rows)
        self.conn.execute("COMMIT")

    def append_records(self, n, payload, batch=1000, start=0):
        stop = start + n
        for first in range(start, stop, batch):
            self._insert([(i, payload) for i in range(first, min(stop, first + batch))])

    def append_values(self, values, batch):
        rows = []
        for i, value in enumerate(values):
            rows.append((i, value))
            if len(rows) == batch:
                self._insert(rows)
                rows = []
        if rows:
            self._insert(rows)

    def range(self, start, count):
        return self.conn.execute(
            "SELECT k, v FROM r WHERE k >= ? ORDER BY k LIMIT ?", (start, count)
        ).fetchall()

    def replay(self):
        return self.conn.execute("SELECT k, v FROM r ORDER BY k")

    def head(self):
        return self.conn.execute("SELECT k, v FROM r ORDER BY k LIMIT 1").fetchone()

    def tail(self):
        return self.conn.execute("SELECT k, v FROM r ORDER BY k DESC LIMIT 1").fetchone()

    def close(self):
        """Close (which checkpoints the WAL into the main file)."""
        self.conn.close()


# -------------------------------------------------------------------- redis


class RedisServer(redis_server.RedisServer):
    """A private ``redis-server`` on 127.0.0.1:<free port>, no persistence,
    working directory ``workdir`` (tools/redis_server.py); :meth:`start`
    raises PeerUnavailable (a skip) where Redis cannot run."""

    def start(self):
        try:
            return super().start()
        except redis_server.RedisUnavailable as exc:
            raise PeerUnavailable(str(exc)) from exc


class RedisStream:
    """One Redis stream ``name``; a record with int key ``k`` is the entry
    ``0-<k+1>`` with field ``v`` holding the payload."""

    def __init__(self, server, name):
        self.client = server.client()
        self.name = name
        self.client.delete(name)

    def append_records(self, n, payload, batch=1000, start=0):
        stop = start + n
        name = self.name
        for first in range(start, stop, batch):
            pipe = self.client.pipeline(transaction=False)
            for i in range(first, min(stop, first + batch)):
                pipe.xadd(name, {"v": payload}, id=f"0-{i + 1}")
            pipe.execute()

    def append_values(self, values, batch):
        name = self.name
        pipe = self.client.pipeline(transaction=False)
        for i, value in enumerate(values):
            pipe.xadd(name, {"v": value}, id=f"0-{i + 1}")
            if (i + 1) % batch == 0:
                pipe.execute()
                pipe = self.client.pipeline(transaction=False)
        pipe.execute()

    def used_memory(self):
        return self.client.info("memory")["used_memory"]

    def range(self, start, count):
        entries = self.client.xrange(self.name, min=f"0-{start + 1}", max="+", count=count)
        return [(int(eid.split(b"-")[1]) - 1, fields[b"v"]) for eid, fields in entries]

    def replay(self, page=10_000):
        lower = "-"
        while True:
            entries = self.client.xrange(self.name, min=lower, max="+", count=page)
            for eid, fields in entries:
                yield int(eid.split(b"-")[1]) - 1, fields[b"v"]
            if len(entries) < page:
                return
            lower = b"(" + entries[-1][0]

    def head(self):
        eid, fields = self.client.xrange(self.name, count=1)[0]
        return int(eid.split(b"-")[1]) - 1, fields[b"v"]

    def tail(self):
        eid, fields = self.client.xrevrange(self.name, count=1)[0]
        return int(eid.split(b"-")[1]) - 1, fields[b"v"]

    def drop(self):
        self.client.delete(self.name)
        self.client.close()
