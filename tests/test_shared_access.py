"""Readers without write access, and logs shared with a group, as other users.

The tests run as root (CI and this machine do); the reading or recording
children become user ``nobody`` (uid/gid 65534), with or without the
supplementary group ``staff`` (gid 50), after importing streamlog as root
(the interpreter lives under /root, where nobody may not read).  Logs live
in a directory made for the test under /tmp with mode 0755 (``tmp_path``'s
parents are root's alone), removed afterwards; nothing system-wide is made.
"""

import grp
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

import pytest

import streamlog
from streamlog import errors
from helpers import assert_one_clear_line, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534
STAFF = 50  # an existing group nobody is not in

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="running children as user nobody needs root")

# argv: uid gid groups(comma-separated or -) action args...; imports as root, then drops to uid/gid/groups
AS_USER = r"""
import os, sys, hashlib, json, time
import click._textwrap, numpy, numpy.random, msgpack, csv, io, signal, difflib, shutil, tempfile, datetime, zlib, struct, socket
import selectors, secrets, textwrap, gettext, locale, fractions, decimal
import streamlog, streamlog.reader, streamlog.follow, streamlog.export, streamlog.remote, streamlog.describe
import streamlog.cli, streamlog.cli.query, streamlog.cli.admin, streamlog.cli.record, streamlog.sources.synth
import streamlog.store
try:
    import lmdb._envid  # imported lazily by py-lmdb 3
except ImportError:
    pass
from streamlog import errors
from streamlog.cli import main

uid, gid, groups, what, *args = sys.argv[1:]
os.setgroups([int(g) for g in groups.split(",")] if groups != "-" else [])
os.setgid(int(gid))
os.setuid(int(uid))

def fail(exc):
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    sys.exit(1)

if args[-1:] == ["barrier"]:          # say "ready", then start on the next line of stdin
    args.pop()
    print("ready", flush=True)
    sys.stdin.readline()

if what == "read":                    # every session and record, as JSON
    try:
        with streamlog.Log(args[0]) as log:
            print(json.dumps({"lock_free": log.lock_free,
                              "sessions": [[s.id, s.status, [repr(r) for r in s.irange()]] for s in log.sessions()],
                              "problems": log.verify(), "writer_pids": log.stats()["writer_pids"]}))
    except errors.StreamlogError as exc:
        fail(exc)
elif what == "hold":                  # open, hash data.mdb, say so, wait for a line on stdin, hash again
    try:
        log = streamlog.Log(args[0], create=False)
    except errors.StreamlogError as exc:
        fail(exc)
    digest = lambda: hashlib.sha256(open(os.path.join(args[0], "data.mdb"), "rb").read()).hexdigest()
    before = digest()
    count = sum(s.count for s in log.sessions())
    print(f"open {log.lock_free} {count}", flush=True)
    sys.stdin.readline()
    print(f"closed {'unchanged' if digest() == before else 'CHANGED'}", flush=True)
    log.close()
elif what == "write":                 # a writer: one session of N records; args: path, N, wait_s
    streamlog.store.WAIT_FOR_LOCK_FREE_READERS_S = float(args[2])
    from streamlog.sources.synth import SynthSource
    try:
        with streamlog.StreamBuffer(SynthSource(channels=1, block=4, count=int(args[1]), realtime=False),
                                    log=args[0]) as buffer:
            buffer.wait()
        print(f"recorded {buffer.session.id}", flush=True)
    except errors.StreamlogError as exc:
        fail(exc)
else:                                 # the CLI
    main([what, *args], prog_name="streamlog")
"""


def as_user(what, *args, uid=NOBODY, gid=NOBODY, groups=(), **run_options):
    """Run AS_USER as ``uid``/``gid`` with supplementary ``groups``; the CompletedProcess."""
    return subprocess.run(_as_user_argv(what, args, uid, gid, groups), capture_output=True, text=True,
                          timeout=120, env=_env(), **run_options)


def start_as_user(what, *args, uid=NOBODY, gid=NOBODY, groups=()):
    """The same, started (a Popen with pipes, text mode)."""
    return subprocess.Popen(_as_user_argv(what, args, uid, gid, groups), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _as_user_argv(what, args, uid, gid, groups):
    return [sys.executable, "-c", AS_USER, str(uid), str(gid), ",".join(map(str, groups)) or "-", what,
            *map(str, args)]


def _env():
    return {**os.environ, "PYTHONPATH": ROOT}


def streamlog_cli(*args, **run_options):
    """The CLI as root, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "streamlog", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=_env(), **run_options)


@pytest.fixture
def public_dir():
    """A directory under /tmp that everyone may search (mode 0755), removed afterwards."""
    directory = tempfile.mkdtemp(prefix="streamlog-shared-")
    try:
        os.chmod(directory, 0o755)
        yield directory
    finally:
        shutil.rmtree(directory)


def record(path, count=40):
    from streamlog.sources.synth import SynthSource

    with streamlog.StreamBuffer(SynthSource(channels=1, block=4, count=count, realtime=False), log=path) as buffer:
        buffer.wait()
    return buffer.session.id


def registered_writers(path):
    """The writer lock files of the log under their final names (the writers registered)."""
    try:
        return [name for name in os.listdir(os.path.join(path, "writers")) if name.endswith(".lock")]
    except FileNotFoundError:
        return []


def read_as_root(path):
    with streamlog.Log(path, readonly=True, create=False) as log:
        return [[s.id, s.status, [repr(r) for r in s.irange()]] for s in log.sessions()]


def snapshot(path):
    """Every name under the log with its mode, owner and contents' digest."""
    import hashlib

    seen = {}
    for directory, names, files in os.walk(path):
        for name in names + files:
            full = os.path.join(directory, name)
            st = os.lstat(full)
            digest = hashlib.sha256(open(full, "rb").read()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            seen[os.path.relpath(full, path)] = (st.st_mode, st.st_uid, st.st_gid, digest)
    return seen


# -- a log that nobody writes: read without write access ------------------------


def test_a_closed_log_reads_without_write_access_to_anything(public_dir):
    path = os.path.join(public_dir, "rec.streamlog")
    record(path)
    record(path, count=12)
    expected = json.loads(json.dumps(read_as_root(path)))
    before = snapshot(path)
    assert os.stat(os.path.join(path, "lock.mdb")).st_mode & 0o022 == 0  # nobody may write it

    result = as_user("read", path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["lock_free"] is True
    assert seen["sessions"] == expected and seen["problems"] == [] and seen["writer_pids"] == []

    sessions = as_user("sessions", path, "--json")
    assert sessions.returncode == 0, sessions.stderr
    assert [(s["id"], s["status"], s["records"]) for s in json.loads(sessions.stdout)] == [(1, "closed", 40),
                                                                                       (2, "closed", 12)]
    info = as_user("info", path, "-s", "1", "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["records"] == 40, info.stderr
    ranged = as_user("range", path, "-s", "1", "--keys", "--format", "jsonl")
    assert [json.loads(line)["key"] for line in ranged.stdout.splitlines()] == list(range(40)), ranged.stderr
    exported = as_user("export", path, "-s", "2", "-o", "-", "--format", "jsonl")
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 12, exported.stderr
    followed = as_user("follow", path, "--from-start", "--keys", "--format", "jsonl")
    assert followed.returncode == 0, followed.stderr  # the session is closed: its records, then the end
    assert [json.loads(line)["key"] for line in followed.stdout.splitlines()] == list(range(12))

    waiting = as_user("follow", path, "--wait", "--all")  # no recording can start while it reads
    assert_one_clear_line(waiting, "Error:", "cannot wait", "lock.mdb", "--group")

    marked = as_user("mark", path, "stimulus")  # writing: refused, naming what is missing
    assert_one_clear_line(marked, "Error:", "user nobody (uid 65534) may not write the directory", "--group")

    assert snapshot(path) == before  # nothing was made, changed or removed in the log


def test_a_live_log_without_write_access_to_lock_mdb_names_what_is_missing(public_dir):
    path = os.path.join(public_dir, "rec.streamlog")
    recorder = subprocess.Popen([sys.executable, "-m", "streamlog", "record", "synth", path, "--rate", "100"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        wait_until(lambda: registered_writers(path), "the recorder to register")
        library = as_user("read", path)
        line = assert_one_clear_line(library, "LiveLogAccessDenied", "user nobody (uid 65534)",
                              f"may not write {path}/lock.mdb", "owner root, group root, mode 0644",
                              f"writer pid(s) {recorder.pid}", "--group GROUP")
        assert "setgid" in line
        for command in (("sessions", path), ("tail", path, "-n", "1")):
            assert_one_clear_line(as_user(*command), "Error:", "may not write", "lock.mdb", str(recorder.pid))
    finally:
        recorder.send_signal(signal.SIGINT)
        out, err = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, err
    assert json.loads(as_user("read", path).stdout)["sessions"][0][1] == "closed"  # once it ended: readable


def test_a_writer_waits_for_a_reader_without_the_lock_then_refuses(public_dir):
    path = os.path.join(public_dir, "rec.streamlog")
    record(path)
    reader = start_as_user("hold", path)
    try:
        assert reader.stdout.readline().split() == ["open", "True", "40"]
        refused = as_user("write", path, 40, 0.3, uid=0, gid=0)
        line = assert_one_clear_line(refused, "ReadersWithoutLock", f"pid {reader.pid} (user nobody)", "lock.mdb",
                              "--group GROUP")
        assert "kept it open for 0.3s" in line
        assert [s[0] for s in read_as_root(path)] == [1]  # nothing was written
        assert os.listdir(os.path.join(path, "writers")) == []  # and no registration was left behind

        waiting = subprocess.Popen(_as_user_argv("write", (path, 40, 120), 0, 0, ()), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=_env())
        # it registered, so it waits for the reader (a later reader would see it alive)
        wait_until(lambda: registered_writers(path), "the writer to register")
        late = as_user("read", path)
        assert_one_clear_line(late, "LiveLogAccessDenied", f"writer pid(s) {waiting.pid}")
        reader.stdin.write("done\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "closed unchanged"  # the writer never wrote under it
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0 and out.strip() == "recorded 2", err
    finally:
        reader.kill()
        reader.wait()
    assert [len(s[2]) for s in read_as_root(path)] == [40, 40]


def test_readers_without_the_lock_and_starting_writers_never_overlap(public_dir):
    """Each trial starts a lock-free reader and a writer at once (both wait
    at a barrier, then go); the reader keeps the log open until the writer
    has ended.  They never overlap: the reader refuses (it saw the writer
    alive), or the writer refuses (it saw the reader's lock), or the writer
    ended before the reader opened; a reader that read saw data.mdb
    unchanged while it had the log open."""
    path = os.path.join(public_dir, "rec.streamlog")
    record(path, count=8)
    outcomes = []
    stored = 8
    for trial in range(10):
        reader = start_as_user("hold", path, "barrier")
        writer = start_as_user("write", path, 8, 0.5, "barrier", uid=0, gid=0)
        assert reader.stdout.readline() == "ready\n" and writer.stdout.readline() == "ready\n"
        for child in (reader, writer) if trial % 2 else (writer, reader):  # go: at once, in turns first
            child.stdin.write("go\n")
            child.stdin.flush()
        w_out, w_err = writer.communicate(timeout=60)
        r_out, r_err = reader.communicate("done\n", timeout=60)  # a refused reader has ended already
        wrote, read = writer.returncode == 0, reader.returncode == 0
        assert wrote or read, (trial, w_err, r_err)
        if read:
            opened, closed = r_out.splitlines()
            assert closed == "closed unchanged", (trial, r_out)
            if wrote:  # then the writer ended before the reader opened: it saw the writer's records
                assert opened == f"open True {stored + 8}", (trial, r_out, w_out)
                outcome = "writer, then reader"
            else:
                assert opened == f"open True {stored}" and "ReadersWithoutLock" in w_err, (trial, r_out, w_err)
                outcome = "reader; the writer refused"
        else:
            assert "LiveLogAccessDenied" in r_err, (trial, r_err)
            outcome = "writer; the reader refused"
        stored += 8 if wrote else 0
        outcomes.append(outcome)
    sessions = read_as_root(path)
    assert sum(len(s[2]) for s in sessions) == stored and all(s[1] == "closed" for s in sessions)
    print("outcomes:", outcomes)


# -- a log shared with a group -------------------------------------------------------


def assert_shared_with(path, gid):
    """Every file and directory of the log: group ``gid``, group-writable, never world-writable; directories setgid."""
    for directory, names, files in os.walk(path):
        for full in [directory] + [os.path.join(directory, name) for name in names + files]:
            st = os.lstat(full)
            assert st.st_gid == gid, (full, st.st_gid)
            assert st.st_mode & 0o060 == 0o060 and not st.st_mode & 0o002, (full, oct(st.st_mode))
            if stat.S_ISDIR(st.st_mode):
                assert st.st_mode & (stat.S_ISGID | 0o070) == stat.S_ISGID | 0o070, (full, oct(st.st_mode))


def test_record_group_lets_a_member_follow_the_live_log_and_record_into_it(public_dir):
    path = os.path.join(public_dir, "lab.streamlog")
    recorder = subprocess.Popen([sys.executable, "-m", "streamlog", "record", "synth", path, "--rate", "200",
                                 "--block", "4", "--group", "staff"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        wait_until(lambda: registered_writers(path), "the recorder to start")
        follower = start_as_user("follow", path, "--keys", "--format", "jsonl", groups=[STAFF])
        first = follower.stdout.readline()  # the member follows the live session
        assert first, follower.stderr.read()
        joined = as_user("record", "synth", path, "--join", "--stream", "member", "--rate", "1000", "--block", "4",
                         "--duration", "0.2", groups=[STAFF])
        assert joined.returncode == 0, joined.stderr
        assert "stream 'member' closed" in joined.stdout
        assert_shared_with(path, STAFF)
    finally:
        recorder.send_signal(signal.SIGINT)
        out, err = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, err
    f_out, f_err = follower.communicate(timeout=60)
    assert follower.returncode == 0, f_err
    keys = [json.loads(line)["key"] for line in (first + f_out).splitlines()]
    with streamlog.Log(path, readonly=True) as log:
        session = log.session(1)
        assert session.status == "closed" and set(session.streams) == {"main", "member"}
        stored = [key for key, _ in session.irange()]
    assert keys and keys == stored[-len(keys):]  # from where it began, every record in order, none twice
    assert_shared_with(path, STAFF)


def test_a_setgid_directory_makes_every_file_of_a_log_group_writable(public_dir):
    shared = os.path.join(public_dir, "lab")
    os.mkdir(shared)
    os.chown(shared, -1, STAFF)
    os.chmod(shared, 0o2775)
    path = os.path.join(shared, "rec.streamlog")
    previous = os.umask(0o022)
    try:
        record(path)
        with streamlog.Log(path) as log:
            log.session(1).reader(name="spectro").read(3)  # a cursor store, in data.mdb
            listener = log.store.listener()  # notify/ and a listener's file
            assert listener.available
            assert_shared_with(path, STAFF)
            listener.close()
    finally:
        os.umask(previous)
    os.umask(0)
    try:
        record(path)  # umask 0: still never world-writable
    finally:
        os.umask(previous)
    assert_shared_with(path, STAFF)


def test_log_group_shares_an_existing_log(public_dir):
    path = os.path.join(public_dir, "rec.streamlog")
    record(path)
    with streamlog.Log(path, group=grp.getgrgid(STAFF).gr_name):
        pass
    assert_shared_with(path, STAFF)
    result = as_user("read", path, groups=[STAFF])
    assert result.returncode == 0 and json.loads(result.stdout)["lock_free"] is False, result.stderr


def test_a_bad_group_is_one_clear_error(public_dir):
    path = os.path.join(public_dir, "rec.streamlog")
    with pytest.raises(errors.ConfigurationError, match="no group named 'no-such-group-h15'"):
        streamlog.Log(path, group="no-such-group-h15")
    assert not os.path.exists(path)  # refused before anything was made
    result = streamlog_cli("record", "synth", path, "--duration", "0.1", "--group", "no-such-group-h15")
    assert_one_clear_line(result, "Error:", "no group named 'no-such-group-h15'")
    record(path)
    outsider = as_user("record", "synth", path, "--duration", "0.1", "--group", str(STAFF))  # not root, not the owner
    assert_one_clear_line(outsider, "Error:", f"cannot share log {path}", "user nobody may not give", "owner root")
