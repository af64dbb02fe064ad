"""The mirror: follow a local log and copy every committed record to Redis.

The LMDB log stays the source of truth.  :class:`Mirror` reads it like any
follower (``Log.sessions()``, ``Session.reader().ientries(after=...)``), so a
Redis outage never slows or stops a recording: the mirror reconnects with
back-off, asks Redis where each stream ends (the last entry id), and goes on
from the next local sequence number.  Entry ids come from sequence numbers
(see :mod:`streamlog.remote.layout`), so what a killed mirror had sent
already is refused as a duplicate when it is sent again: every record lands
once.  Records the local retention pruned before they were sent leave a gap
marker, never a silent hole.

At most ``max_inflight_bytes`` of encoded records are on their way to Redis
at any moment: one script call per batch of at most half of it, run in order
by a sender thread, so that reading and encoding the next batch overlaps
Redis appending this one.
"""

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections import deque
from itertools import islice

import msgpack

from streamlog import errors
from streamlog.codec import encode_record
from streamlog.keys import decode_key_prefix, encode_key
from streamlog.log import Log
from streamlog.reader import Entry
from streamlog.remote import layout

DEFAULT_INFLIGHT_BYTES = 4 << 20
DEFAULT_PART_BYTES = 512 << 10
INDEX_EVERY = 256
_RESCAN_S = 0.25
_IDLE_S = 0.001  # how long the mirror sleeps when no stream had anything new
_META_EVERY_S = 1.0
_RETENTION_EVERY_S = 1.0
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 2.0
LARGE_RECORD_BYTES = 1024  # batches of records this large on average go as plain XADDs (see layout.ACCOUNT_SCRIPT)
_packb = msgpack.Packer(use_bin_type=False).pack  # Redis's Lua cmsgpack reads no bin types


def _redis_down_errors():
    redis = layout.redis_module()
    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, errors.RemoteUnavailable,
            ConnectionError)


class Mirror:
    """Copy the sessions of the log at ``log`` (a path or a :class:`Log`) to
    the Redis at ``url`` under rig ``name`` (or ``?name=`` in the URL).

    * ``session_ids``: only these sessions (None: every session, old and new).
    * ``max_inflight_bytes``: bound on encoded bytes sent and not yet answered.
    * ``part_bytes``: records encoded larger than this are split into parts
      (default 512 KiB, at most ``max_inflight_bytes``).
    * ``max_age_s``, ``max_sessions``: remote retention, applied in Redis
      about once a second (independent of the local log's retention).
    * ``exit_when_done``: :meth:`run` returns once no local session is live
      and everything is mirrored (else it runs until :meth:`stop`).
    * ``give_up_s``: with ``exit_when_done``, also return when Redis has
      been unreachable this long and no local session is live any more
      (``stats["gave_up"]``; a later mirror run sends the rest).

    ``stats`` counts what happened: ``sent`` entries, ``duplicates`` refused,
    ``gaps`` markers written, ``reconnects``, ``largest_call_bytes``,
    ``max_inflight_bytes_seen``.
    """

    def __init__(self, log, url, name=None, *, session_ids=None, max_inflight_bytes=DEFAULT_INFLIGHT_BYTES,
                 part_bytes=None, max_age_s=None, max_sessions=None, exit_when_done=False, give_up_s=None,
                 socket_timeout=5.0):
        base, url_name = layout.split_url(url)
        self.url = base
        self.name = layout.check_rig(name or url_name or "")
        if part_bytes is None:
            part_bytes = min(DEFAULT_PART_BYTES, max_inflight_bytes)
        if max_inflight_bytes < 1024 or part_bytes < 256 or part_bytes > max_inflight_bytes:
            raise ValueError("need 1024 <= max_inflight_bytes and 256 <= part_bytes <= max_inflight_bytes")
        for label, value in (("max_age_s", max_age_s), ("max_sessions", max_sessions)):
            if value is not None and not value > 0:
                raise ValueError(f"{label} must be positive or None, not {value!r}")
        self._log_arg = log
        self.session_ids = None if session_ids is None else set(session_ids)
        self.max_inflight_bytes = max_inflight_bytes
        self.part_bytes = part_bytes
        self.max_age_s = max_age_s
        self.max_sessions = max_sessions
        self.exit_when_done = exit_when_done
        self.give_up_s = give_up_s
        self.socket_timeout = socket_timeout
        self.stats = {"sent": 0, "duplicates": 0, "gaps": 0, "reconnects": 0, "largest_call_bytes": 0,
                      "max_inflight_bytes_seen": 0,
                      "connected": False, "last_error": None, "gave_up": False}
        self._stop = threading.Event()
        self._followers = {}
        self._done = set()
        self._finishing = set()
        self._sender = None

    def stop(self):
        """Make :meth:`run` return after its current batch (from any thread)."""
        self._stop.set()

    def run(self):
        """Mirror until :meth:`stop` (or, with ``exit_when_done``, until every
        local session has ended and is mirrored).  Redis being down is not an
        error: it retries with back-off (``stats["last_error"]`` says why)."""
        from streamlog.remote.log import RemoteLog

        log = self._log_arg if isinstance(self._log_arg, Log) else Log(self._log_arg, readonly=True, create=False)
        down = _redis_down_errors()
        client = remote = None
        backoff = _BACKOFF_FIRST_S
        next_scan = next_retention = 0.0
        down_since = None
        self._sender = _Sender(self.stats, self.max_inflight_bytes)
        try:
            while not self._stop.is_set():
                try:
                    if client is None:
                        client = layout.connect(self.url, socket_timeout=self.socket_timeout)
                        remote = RemoteLog(self.url, name=self.name, client=client)
                        self._sender.reset(client)
                        client.sadd(layout.RIGS, self.name)
                        self._finishing.clear()  # what was not confirmed is mirrored again (refused if there)
                        for follower in self._followers.values():
                            follower.synced = False
                        self.stats["connected"] = True
                        backoff = _BACKOFF_FIRST_S
                        down_since = None
                    now = time.monotonic()
                    if now >= next_scan or self._asked_for_are_done():
                        if not self._asked_for_are_done():
                            self._scan(log, client)
                        next_scan = now + _RESCAN_S
                        if self.exit_when_done and not self._followers:
                            self._sender.drain()
                            if self._finishing:
                                continue
                            if self.max_age_s or self.max_sessions:  # once more, over what was just sent
                                remote.prune(max_age_s=self.max_age_s, max_sessions=self.max_sessions)
                            return
                    busy = self._pump_all(client)
                    if self.exit_when_done and not self._followers:
                        next_scan = now  # the last stream just finished: look (and exit) at once
                    if (self.max_age_s or self.max_sessions) and now >= next_retention:
                        remote.prune(max_age_s=self.max_age_s, max_sessions=self.max_sessions)
                        next_retention = now + _RETENTION_EVERY_S
                    if not busy:  # nothing new: look again soon (for new sessions: at the next scan)
                        self._stop.wait(_IDLE_S if self._followers else max(0.0, next_scan - time.monotonic()))
                except down as exc:
                    self.stats.update(connected=False, last_error=f"{type(exc).__name__}: {exc}")
                    self.stats["reconnects"] += 1
                    if client is not None:
                        client.close()
                    client = remote = None
                    down_since = down_since or time.monotonic()
                    if (self.exit_when_done and self.give_up_s is not None
                            and time.monotonic() - down_since > self.give_up_s and not self._any_live(log)):
                        self.stats["gave_up"] = True
                        return
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
        finally:
            self._sender.close()
            for follower in self._followers.values():
                follower.close()
            if client is not None:
                client.close()
            if log is not self._log_arg:
                log.close()

    def _asked_for_are_done(self):
        """With ``session_ids`` and ``exit_when_done``: every stream followed is
        confirmed mirrored, so there is nothing to look for (a child of a
        recording exits at once, not at its next scan)."""
        return (self.exit_when_done and self.session_ids is not None and not self._followers
                and not self._finishing and self.session_ids <= {session_id for session_id, _ in self._done})

    def _any_live(self, log):
        return any(s.status == "live" for s in log.sessions()
                   if self.session_ids is None or s.id in self.session_ids)

    def _scan(self, log, client):
        """Start a follower for each (session, stream) not yet mirrored."""
        retired = {int(m) for m in client.zrange(layout.retired_key(self.name), 0, -1)}
        for session in log.sessions():
            if self.session_ids is not None and session.id not in self.session_ids:
                continue
            if session.id in retired:
                continue
            for stream in session.streams:
                key = (session.id, stream)
                if key not in self._followers and key not in self._done and key not in self._finishing:
                    self._followers[key] = _StreamFollower(self, log, session.id, stream)

    def _pump_all(self, client):
        busy = False
        for key, follower in list(self._followers.items()):
            if not follower.synced:
                follower.sync(client)
            busy |= follower.pump()
            if follower.finished:
                follower.close()
                del self._followers[key]
                if follower.final_sent:
                    self._finishing.add(key)
        return busy

    def _confirmed(self, key):
        """The final call of a (session, stream) succeeded (the sender thread calls this)."""
        self._finishing.discard(key)
        self._done.add(key)


class _StreamFollower:
    """One stream of one local session, mirrored entry by entry."""

    def __init__(self, mirror, log, session_id, stream):
        self.mirror = mirror
        self.log = log
        self.session_id = session_id
        self.stream = stream
        self.keys = layout.session_keys(mirror.name, session_id, stream)
        self.synced = False
        self.finished = False
        self.final_sent = False
        self.reader = None
        self.next_seq = 0
        self._after = None
        self._lazy = None
        self._key_types = None
        self._meta_due = 0.0
        self._avg_size = 256

    def close(self):
        self.reader = None

    def _session(self):
        return self.log.session(self.session_id)

    def _meta_blob(self, session, final=False):
        """The session's metadata for Redis.  Its status stays ``live`` until
        the last stream of the session is mirrored to its end (``final``):
        remote readers end on any other status."""
        streams = {}
        for name in session.streams:
            info = session.stream_info(name)
            streams[name] = {"recorded": info["recorded"], "key_types": info["key_types"], "error": info["error"]}
        return encode_record({
            "id": session.id, "status": session.status if final else "live", "start_time": session.start_time,
            "stop_time": session.stop_time, "info": session.info, "labels": session.labels, "error": session.error,
            "pid": session.pid, "host": session.host, "durability": session.durability, "streams": streams,
        })

    def sync(self, client):
        """Find where the remote stream ends and place the local reader after it."""
        try:
            session = self._session()
        except errors.SessionNotFound:
            self.finished = True
            return
        sender = self.mirror._sender
        sender.drain()
        sender.call_now(self.keys, [self.stream, self._meta_blob(session), 0, b""])
        sender.reconcile(self.keys, self.stream)
        client.zadd(layout.sessions_key(self.mirror.name), {str(self.session_id): self.session_id})
        last = client.xrevrange(self.keys[1], "+", "-", count=1)
        resume_key = None
        if last:
            entry_id, fields = last[0]
            seq = layout.parse_id(entry_id)[0]
            resume_key = fields.get(b"k")
            if b"gap" in fields:
                self.next_seq = seq + int(fields[b"gap"])
            elif b"p" in fields:
                index, _, total = fields[b"p"].partition(b"/")
                self.next_seq = seq + 1 if int(index) == int(total) else seq
            else:
                self.next_seq = seq + 1
        elif client.exists(self.keys[1]):  # emptied by remote retention: go on after what it had
            self.next_seq = int(client.hget(self.keys[0], f"next:{self.stream}") or 0)
        else:
            self.next_seq = 0
        self.reader = session.reader(self.stream)
        self._key_types = session.stream_info(self.stream)["key_types"]
        self._after = self._lazy = None
        if resume_key:  # strictly after (key, next_seq - 1): the local record next_seq on
            self._after = Entry(decode_key_prefix(resume_key, self._key_types)[0], 0, None, self.next_seq - 1)
        self._meta_due = 0.0
        self.synced = True

    def pump(self):
        """Send what the local stream has beyond the remote one; True if anything was sent.

        The session is looked up (a catalog read, see :meth:`_look`) only
        when the stream's key types are still unknown, when the scan ran dry
        (for its status, read before the fresh scan that decides whether the
        stream ended, so nothing committed before the end is missed) and
        about once a second for the metadata sent along."""
        if self.finished:
            return False
        now = time.monotonic()
        want = max(1, min(4096, self.mirror.max_inflight_bytes // 2 // max(self._avg_size, 1)))
        looked = self._look(now) if self._key_types is None else None
        entries = self._read(want, fresh=False)
        if not entries or now >= self._meta_due:
            looked = looked or self._look(now)
            if not entries:  # a scan begun earlier ran dry: look again, after the status was read
                entries = self._read(want, fresh=True)
        ended, meta = looked or (False, b"")
        entries = [e for e in entries if e.seq >= self.next_seq]
        if entries:
            self._send(entries, meta)
        elif ended:
            self._finish()
        elif meta:
            self._flush([], self.next_seq, meta, 0)
        return bool(entries)

    def _look(self, now):
        """``(ended, metadata to send or b"")`` from the session as the
        catalog has it now; learns the stream's key types once known."""
        try:
            session = self._session()
        except errors.SessionNotFound:  # pruned away locally: nothing more will come
            return True, b""
        meta = b""
        if now >= self._meta_due:
            meta = self._meta_blob(session)
            self._meta_due = now + _META_EVERY_S
        if self._key_types is None:
            self._key_types = session.stream_info(self.stream)["key_types"]
        return session.status != "live", meta

    def _read(self, want, fresh):
        """Up to ``want`` entries after the last one read.  One lazy scan
        serves many calls (it reads the log in chunks); ``fresh`` starts a
        new one, which sees everything committed by now.  Nothing when the
        session is gone (pruned away locally: :meth:`_look` says it ended)."""
        try:
            if fresh or self._lazy is None:
                self._lazy = self.reader.ientries(after=self._after, key_types=self._key_types)
            entries = list(islice(self._lazy, want))
        except errors.SessionNotFound:
            self._lazy = None
            return []
        if len(entries) < want:
            self._lazy = None
        if entries:
            self._after = entries[-1]
        return entries

    def _send(self, entries, meta):
        mirror = self.mirror
        part_bytes = mirror.part_bytes
        limit = max(part_bytes, mirror.max_inflight_bytes // 2)
        batch = []
        size = 0
        total = 0
        for entry in entries:
            seq = entry.seq
            encoded_key = encode_key(entry.key)
            new_start = seq != self.next_seq
            if new_start:  # the local log pruned these before they were mirrored
                batch.append([layout.entry_id(self.next_seq), 0, 0, "", "",
                              ["gap", str(seq - self.next_seq), "k", encoded_key]])
                mirror.stats["gaps"] += 1
            record = encode_record(entry.record)
            total += len(record)
            t = str(entry.arrival_us)
            indexed = new_start or seq % INDEX_EVERY == 0
            if len(record) <= part_bytes:
                if size and size + len(record) > limit:
                    self._flush(batch, self.next_seq, meta, size)
                    batch, size, meta = [], 0, b""
                batch.append([f"{seq}-1", 1, len(record), layout.index_member(encoded_key, seq) if indexed else "",
                              t if indexed else "", ["k", encoded_key, "t", t, "r"], record])
                size += len(record)
            else:
                pieces = range(0, len(record), part_bytes)
                for index, start in enumerate(pieces, 1):
                    piece = record[start:start + part_bytes]
                    if size and size + len(piece) > limit:
                        self._flush(batch, seq if index > 1 else self.next_seq, meta, size)
                        batch, size, meta = [], 0, b""
                    first = index == 1
                    batch.append([layout.entry_id(seq, index), 1 if first else 0, len(record) if first else 0,
                                  layout.index_member(encoded_key, seq) if indexed and first else "",
                                  t if indexed and first else "",
                                  ["k", encoded_key, "t", t, "p", f"{index}/{len(pieces)}", "r"], piece])
                    size += len(piece)
            self.next_seq = seq + 1
        self._flush(batch, self.next_seq, meta, size)
        self._avg_size = max(16, total // len(entries))

    def _flush(self, batch, next_seq, meta, size, on_done=None):
        """Queue one call for ``batch`` (entries ``[id, counts, bytes, index
        member, time score, fields]``, records with their ``r`` value after the
        fields), then the stream's next sequence number: the append script for
        small records, plain XADDs and the account script for large ones."""
        records = sum(1 for entry in batch if len(entry) == 7)
        if records and size >= LARGE_RECORD_BYTES * records:
            xadds = []
            account = [self.stream, meta, next_seq]
            for entry in batch:
                fields = entry[5] if len(entry) == 6 else [*entry[5][:-1], "r", entry[6]]
                xadds.append((entry[0], dict(zip(fields[::2], fields[1::2]))))
                account += entry[:5]
            call = ("xadd", self.keys, (xadds, account))
        else:
            values = [entry.pop() for entry in batch if len(entry) == 7]
            call = ("script", self.keys, [self.stream, meta, next_seq, _packb(batch) if batch else b"", *values])
        self.mirror._sender.put(call, size, on_done)

    def _finish(self):
        """The local stream ended and everything is sent: write the final metadata."""
        others = [f for f in self.mirror._followers.values()
                  if f is not self and f.session_id == self.session_id and not f.finished]
        try:
            meta = self._meta_blob(self._session(), final=not others)
        except errors.SessionNotFound:
            meta = b""
        key = (self.session_id, self.stream)
        self._flush([], self.next_seq, meta, 0, on_done=lambda: self.mirror._confirmed(key))
        self.finished = self.final_sent = True


class _Sender:
    """Runs the mirror's calls in order, in a thread of its own.

    :meth:`put` blocks while the calls queued or running hold more than
    ``limit`` bytes (one call may be alone over it).  A failed call (Redis
    down) drops every queued call and is raised by the next :meth:`put` or
    :meth:`drain`; the mirror then reconnects (:meth:`reset`), asks Redis
    where each stream ends and sends again from there.
    """

    def __init__(self, stats, limit):
        self.stats = stats
        self.limit = limit
        self._client = None
        self._queue = deque()
        self._inflight = 0
        self._busy = False
        self._error = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="streamlog-mirror-sender", daemon=True)
        self._thread.start()

    def reset(self, client):
        """Use ``client`` (just connected) from now on; load the scripts."""
        append = client.register_script(layout.APPEND_SCRIPT)
        reconcile = client.register_script(layout.RECONCILE_SCRIPT)
        account_sha = client.script_load(layout.ACCOUNT_SCRIPT)
        with self._cond:
            self._client, self._append, self._reconcile, self._account_sha = client, append, reconcile, account_sha
            self._error = None

    def call_now(self, keys, args):
        """Run the append script in the calling thread (the queue must be drained)."""
        return self._append(keys=keys, args=args)

    def reconcile(self, keys, stream):
        """Account for entries a killed mirror added but did not account for
        (see layout.RECONCILE_SCRIPT); in the calling thread, queue drained."""
        return self._reconcile(keys=keys[:2], args=[stream])

    def put(self, call, size, on_done=None):
        """Queue ``call``: ``("script", keys, args)`` or ``("xadd", keys, (entries, account args))``."""
        with self._cond:
            while self._error is None and self._inflight and self._inflight + size > self.limit:
                self._cond.wait()
            self._raise_error()
            self._queue.append((call, size, on_done))
            self._inflight += size
            self.stats["max_inflight_bytes_seen"] = max(self.stats["max_inflight_bytes_seen"], self._inflight)
            self._cond.notify_all()

    def drain(self):
        """Wait until every queued call ran; raise the error of a failed one."""
        with self._cond:
            while self._error is None and (self._queue or self._busy):
                self._cond.wait()
            self._raise_error()

    def _raise_error(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _execute(self, client, call):
        """Run one call; return (entries added, duplicates refused)."""
        kind, keys, payload = call
        if kind == "script":
            added, dups = self._append(keys=keys, args=payload, client=client)
            return added, dups
        entries, account = payload
        pipe = client.pipeline(transaction=False)
        for entry_id, fields in entries:
            pipe.xadd(keys[1], fields, id=entry_id)
        pipe.execute_command("EVALSHA", self._account_sha, len(keys), *keys, *account)
        results = pipe.execute(raise_on_error=False)
        dups = 0
        for result in results:
            if isinstance(result, Exception):
                if "equal or smaller" not in str(result):
                    raise result
                dups += 1
        return len(entries) - dups, dups

    def _run(self):
        stats = self.stats
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                call, size, on_done = self._queue.popleft()
                self._busy = True
                client = self._client
            try:
                added, dups = self._execute(client, call)
            except Exception as exc:  # raised in the mirror's thread by put() or drain()
                with self._cond:
                    self._error = exc
                    self._queue.clear()
                    self._inflight = 0
                    self._busy = False
                    self._cond.notify_all()
                continue
            stats["sent"] += added
            stats["duplicates"] += dups
            stats["largest_call_bytes"] = max(stats["largest_call_bytes"], size)
            if on_done is not None:
                on_done()
            with self._cond:
                self._inflight -= size
                self._busy = False
                self._cond.notify_all()


class SessionMirror:
    """The mirror of one session a recording starts (``StreamBuffer(mirror=URL)``):
    a ``streamlog mirror --session ID --exit-when-done`` child process at
    niceness 10 (``mode="process"``, the default: it costs the recorder
    least, see docs/benchmarks.md) or a thread of this process
    (``mode="thread"``)."""

    GIVE_UP_S = 60.0
    NICENESS = 10

    def __init__(self, log, session_id, url, mode="process"):
        if mode not in ("process", "thread"):
            raise ValueError(f"mirror_in must be 'process' or 'thread', not {mode!r}")
        self.mode = mode
        if mode == "thread":
            self._mirror = Mirror(log, url, session_ids={session_id}, exit_when_done=True,
                                  give_up_s=self.GIVE_UP_S)
            self._worker = threading.Thread(target=self._mirror.run, name=f"streamlog-mirror-{session_id}",
                                            daemon=True)
            self._worker.start()
        else:
            args = [sys.executable, "-m", "streamlog", "mirror", os.fspath(log.path), url, "--session",
                    str(session_id), "--exit-when-done", "--give-up", str(self.GIVE_UP_S)]
            self._worker = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
            with contextlib.suppress(OSError):  # the recording comes first when CPUs are scarce
                os.setpriority(os.PRIO_PROCESS, self._worker.pid, self.NICENESS)

    def close(self, wait_s, keep_running=True):
        """End this recording's hold on the mirror.  A thread is given up to
        ``wait_s`` s to finish, then stopped (the log keeps what it did not
        send, for a later ``streamlog mirror``); a process runs on by itself
        (it exits once the session is mirrored, or GIVE_UP_S after Redis
        became unreachable) unless not ``keep_running`` (a temporary log
        about to be deleted): then it gets ``wait_s`` s and is terminated.
        Returns True if the mirror had finished."""
        if self.mode == "thread":
            self._worker.join(wait_s)
            done = not self._worker.is_alive()
            if not done:
                self._mirror.stop()
                self._worker.join()
            return done
        if keep_running:
            return self._worker.poll() is not None
        try:
            self._worker.wait(wait_s)
            return True
        except subprocess.TimeoutExpired:
            self._worker.terminate()
            self._worker.wait()
            return False
