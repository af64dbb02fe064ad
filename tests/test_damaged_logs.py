"""Damaged and hostile log files, each read in a real subprocess (a crash
shows as a negative return code, a hang as a timeout): through the library
(``Log(path)`` and a full read of every session) and through the CLI
(``sessions``, ``doctor``, ``export``).  The answer must be exit status 1
and one line naming the problem -- never a traceback, a signal or a hang.

LMDB does not checksum its pages, so bytes damaged inside its B-trees can
crash the reading process inside LMDB; ``doctor`` checks in a child process
and reports such a crash as damage (see ``tools/fuzz_logs.py`` for how often
it happens)."""

import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

import pytest

from helpers import REPO, assert_one_clear_line, load_tool

TIMEOUT = 60
fuzz_logs = load_tool("fuzz_logs")  # the log every case damages, and the script reading it all
PAGE = fuzz_logs.PAGE
READ_ALL = fuzz_logs.READ_ALL


@pytest.fixture(scope="module")
def healthy_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("damaged") / "base.streamlog"
    fuzz_logs.make_log(str(path))
    return path


def run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("STREAMLOG_TRACEBACK", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=TIMEOUT, env=env, **kwargs)


def read_everything(path):
    return run(["-c", READ_ALL, str(path)])


CLI_COMMANDS = """
import sys
from streamlog.cli import main
for command in sys.argv[1:]:
    print("== command", flush=True)
    print("== command", file=sys.stderr, flush=True)
    try:
        main(command.split("\\t"), prog_name="streamlog")
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    print(f"== exit {code}", file=sys.stderr, flush=True)
"""


class Outcome:
    """How one command ended (``returncode`` < 0: a signal) and what it printed."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(*commands):
    """Run each command (a tuple of arguments) through ``streamlog.cli.main``
    in one fresh interpreter; an Outcome for each.  If the interpreter dies
    by a signal, every command gets that as its outcome."""
    result = run(["-c", CLI_COMMANDS, *("\t".join(map(str, command)) for command in commands)])
    if result.returncode:
        return [Outcome(result.returncode, result.stdout, result.stderr)] * len(commands)
    outcomes = []
    for out, err in zip(result.stdout.split("== command\n")[1:], result.stderr.split("== command\n")[1:]):
        text, _, code = err.rpartition("== exit ")
        outcomes.append(Outcome(int(code), out, text))
    assert len(outcomes) == len(commands), result
    return outcomes


# -- the damage -------------------------------------------------------------------


def truncate_to(size):
    def damage(log):
        data = log / "data.mdb"
        with open(data, "r+b") as f:
            f.truncate(size(os.path.getsize(data)))
    return damage


def overwrite(offsets, seed, length=PAGE):
    """Random bytes (seeded) over ``length`` bytes at each of ``offsets(file size)``."""
    def damage(log):
        rng = random.Random(seed)
        data = log / "data.mdb"
        with open(data, "r+b") as f:
            for offset in offsets(os.path.getsize(data)):
                f.seek(offset)
                f.write(rng.randbytes(length))
    return damage


def replace_data_file(make):
    def damage(log):
        (log / "data.mdb").unlink()
        make(log / "data.mdb")
    return damage


def rename_in_data_file(old, new):
    """Replace every ``old`` in data.mdb by ``new`` (as long): LMDB sees nothing wrong."""
    def damage(log):
        data = log / "data.mdb"
        data.write_bytes(data.read_bytes().replace(old, new))
    return damage


def garbage_lock_file(log):
    (log / "lock.mdb").write_bytes(random.Random(7).randbytes(PAGE))


def no_lock_file(log):
    (log / "lock.mdb").unlink()


DAMAGED = {
    # name: (damage, words the error line must hold)
    "data.mdb empty": (truncate_to(lambda size: 0), ["damaged", "0 bytes"]),
    "data.mdb of 5 bytes": (truncate_to(lambda size: 5), ["damaged", "5 bytes"]),
    "data.mdb cut in half": (truncate_to(lambda size: size // 2 // PAGE * PAGE), ["damaged", "truncated"]),
    "data.mdb without its last page": (truncate_to(lambda size: size - PAGE), ["damaged", "truncated"]),
    "data.mdb cut inside a page": (truncate_to(lambda size: size - 100), ["damaged", "truncated"]),
    "both meta pages overwritten": (overwrite(lambda size: [0, PAGE], seed=1), ["not an LMDB file"]),
    "a session's status field renamed": (rename_in_data_file(b"\xa6status", b"\xa6stbtus"),
                                         ["damaged", "session entry", "stbtus"]),
    "a session's status value changed": (rename_in_data_file(b"\xa6closed", b"\xa6clozed"),
                                         ["damaged", "metadata of session", "clozed"]),
    "data.mdb is a directory": (replace_data_file(os.mkdir), ["damaged", "not a regular file"]),
    "data.mdb is a link to /dev/zero": (replace_data_file(lambda p: os.symlink("/dev/zero", p)),
                                        ["data.mdb"]),  # refused as a link, or as no regular file
}

SURVIVABLE = {
    # damage after which the log may still read completely
    "lock.mdb missing": no_lock_file,
    "lock.mdb of garbage": garbage_lock_file,
    "meta page 0 overwritten": overwrite(lambda size: [0], seed=2),
    "meta page 1 overwritten": overwrite(lambda size: [PAGE], seed=3),
}


@pytest.fixture
def damaged_copy(healthy_log, tmp_path):
    def make(damage):
        copy = tmp_path / "copy.streamlog"
        shutil.copytree(healthy_log, copy, symlinks=True)
        damage(copy)
        return copy
    return make


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_damaged_log_is_one_clear_error_in_the_library_and_the_cli(damaged_copy, tmp_path, name):
    damage, words = DAMAGED[name]
    log = damaged_copy(damage)
    result = read_everything(log)
    assert_one_clear_line(result, *words)
    assert result.stderr.startswith(("NotALog: ", "CorruptRecord: ")), result.stderr  # CorruptRecord is a NotALog
    for outcome in cli(("sessions", log), ("doctor", log), ("export", log, "-o", tmp_path / "out.jsonl")):
        assert_one_clear_line(outcome, "Error:", *words)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("name", list(SURVIVABLE))
def test_lock_and_meta_page_damage_reads_everything_or_is_one_clear_error(damaged_copy, name):
    log = damaged_copy(SURVIVABLE[name])
    library = read_everything(log)
    for result in (library, *cli(("doctor", log))):
        assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
        if result.returncode:
            assert_one_clear_line(result)
    if name.startswith("lock.mdb"):  # LMDB rebuilds its lock file: nothing is lost
        assert library.stdout.strip() == "read; 0 problem(s)"


@pytest.mark.parametrize("seed", range(4))
def test_random_damage_never_ends_doctor_with_a_signal_a_traceback_or_a_hang(damaged_copy, seed):
    """Random pages (the meta pages, the last page, any other) overwritten:
    the library either reads, raises a streamlog error, or -- inside LMDB,
    which does not checksum pages -- may crash; doctor always answers."""
    rng = random.Random(seed)

    def pages(size):
        return sorted(rng.sample([0, PAGE, size - PAGE, *range(2 * PAGE, size - PAGE, PAGE)], 3))

    log = damaged_copy(overwrite(pages, seed=seed, length=rng.choice([8, 64, PAGE])))
    library = read_everything(log)
    assert "Traceback" not in library.stderr, library.stderr
    assert library.returncode in (0, 1) or library.returncode < 0, library.stderr
    [doctor] = cli(("doctor", log))
    assert doctor.returncode in (0, 1) and "Traceback" not in doctor.stderr, doctor.stderr
    if doctor.returncode and not doctor.stdout:
        assert_one_clear_line(doctor, "Error:")


def oversize_first_overflow_value(log, size=16 << 20):
    """Make the first value stored in overflow pages claim ``size`` bytes,
    far past the end of the file, in its leaf node (LMDB trusts it)."""
    with open(log / "data.mdb", "r+b") as f:
        data = bytearray(f.read())
        for page in range(2 * PAGE, len(data), PAGE):
            flags, lower = struct.unpack_from("<HH", data, page + 10)
            if flags != 0x02:  # P_LEAF, nothing else
                continue
            for i in range((lower - 16) // 2):
                node = page + struct.unpack_from("<H", data, page + 16 + 2 * i)[0]
                if struct.unpack_from("<H", data, node + 4)[0] & 0x01:  # F_BIGDATA
                    struct.pack_into("<HH", data, node, size & 0xFFFF, size >> 16)
                    f.seek(0)
                    f.write(data)
                    return
    raise LookupError("no value in overflow pages")


def test_doctor_survives_a_crash_inside_lmdb(damaged_copy):
    log = damaged_copy(oversize_first_overflow_value)
    library = read_everything(log)
    assert library.returncode < 0, "LMDB read past the end of the file without crashing; revisit this test"
    [doctor] = cli(("doctor", log))
    assert_one_clear_line(doctor, "Error: reading log", "crashed (SIG", "the file is damaged")


# -- permissions: as root they are ignored, so the reading child becomes nobody -------

AS_NOBODY = """
import os, sys
import click._textwrap, streamlog, streamlog.reader, streamlog.cli, streamlog.cli.query, streamlog.cli.admin
try:
    import lmdb._envid  # imported lazily by py-lmdb 3, from where nobody may not read
except ImportError:
    pass
from streamlog import errors
from streamlog.cli import main
os.setgid(65534)
os.setuid(65534)
what, path = sys.argv[1:]
if what == "library":
    try:
        with streamlog.Log(path) as log:
            for session in log.sessions():
                list(session.irange())
    except errors.StreamlogError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
elif what == "probe":
    print(os.getuid(), len(os.listdir(path)))
else:
    main([what, path], prog_name="streamlog")
"""


def as_nobody(what, path):
    """Run AS_NOBODY: streamlog is imported as root (the interpreter may live
    where nobody cannot read, e.g. under /root), then the process becomes nobody."""
    return run(["-c", AS_NOBODY, what, str(path)])


@pytest.fixture
def world_visible(healthy_log, tmp_path_factory):
    """A copy of the log in a directory everyone may search (``tmp_path`` is root's alone)."""
    if os.geteuid() != 0:
        pytest.skip("dropping to user nobody needs root")
    outer = tempfile.mkdtemp(prefix="streamlog-perm-")
    try:
        os.chmod(outer, 0o755)
        log = os.path.join(outer, "rec.streamlog")
        shutil.copytree(healthy_log, log)
        probe = as_nobody("probe", log)
        if probe.returncode or not probe.stdout.startswith("65534 "):
            pytest.skip(f"cannot run streamlog as nobody here: {probe.stderr.strip()[-200:]}")
        yield log
    finally:
        shutil.rmtree(outer)


# (a log whose lock.mdb nobody may write is read without it while no process writes it, and is
# LiveLogAccessDenied while one does: tests/test_shared_access.py)
@pytest.mark.parametrize("locked, mode, where", [
    ("", 0o700, "on the directory"),
    ("data.mdb", 0o600, "on data.mdb"),
], ids=["directory", "data.mdb"])
def test_a_log_without_permission_is_one_clear_error(world_visible, locked, mode, where):
    os.chmod(os.path.join(world_visible, locked), mode)
    assert_one_clear_line(as_nobody("library", world_visible), "LogAccessDenied", "permission denied", where)
    for command in ("sessions", "doctor"):
        assert_one_clear_line(as_nobody(command, world_visible), "Error:", "permission denied", where)
