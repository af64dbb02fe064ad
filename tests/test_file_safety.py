"""Security of the files: modes of a new log, no path followed that the user did
not give, nothing read from a log evaluated."""

import ast
import json
import os
import pathlib
import stat

import pytest
from click.testing import CliRunner

import streamlog
from streamlog import StreamBuffer, errors
from streamlog.cli import main
from streamlog.sources.audio import WavFileSourceReader
from streamlog.store import DATA_FILE, DIR_MODE, FILE_MODE, LMDB_LOCK_FILE, WRITERS_DIR

from helpers import REPO, Counter, run_python, write_wav

PACKAGE = pathlib.Path(REPO) / "streamlog"

MAKE_LOG = """
import json, os, stat, sys
os.umask(int(sys.argv[2], 8))
import streamlog

class Numbers(streamlog.SourceReader):
    def open(self): self.i = 0
    def read(self):
        self.i += 1
        if self.i > 3: raise StopIteration
        return (self.i, "x")
    def close(self): pass
    def key(self, data): return data[0]

os.mkdir(os.path.join(sys.argv[1], "new"))  # streamlog creates only the last component of a path
path = os.path.join(sys.argv[1], "new", "rec.streamlog")
with streamlog.StreamBuffer(Numbers(), log=path) as buf:  # records, so writers/ exists
    [lock] = os.listdir(os.path.join(path, "writers"))  # this process's writer lock, while it records
    lock_mode = stat.S_IMODE(os.stat(os.path.join(path, "writers", lock)).st_mode)
    buf.wait(30)
from click.testing import CliRunner
from streamlog.cli import main
exported = CliRunner().invoke(main, ["export", path, "-o", os.path.join(sys.argv[1], "new", "out.jsonl")])
assert exported.exit_code == 0, exported.output
made = ["new/rec.streamlog", "new/out.jsonl"] + [
    f"new/rec.streamlog/{name}" for name in ("data.mdb", "lock.mdb", "writers")]
modes = {name: stat.S_IMODE(os.stat(os.path.join(sys.argv[1], name)).st_mode) for name in made}
print(json.dumps({**modes, "writer lock": lock_mode}))
"""


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_a_new_log_respects_the_umask_and_is_never_world_writable(tmp_path, umask):
    modes = json.loads(run_python(MAKE_LOG, tmp_path, oct(umask)).stdout)
    directories = ["new/rec.streamlog", "new/rec.streamlog/writers"]
    assert modes == {name: (DIR_MODE if name in directories else FILE_MODE) & ~umask for name in modes}
    assert len(modes) == 6
    assert not any(mode & stat.S_IWOTH for mode in modes.values())


def record(path, n=10, **kwargs):
    with StreamBuffer(Counter(n), log=str(path), **kwargs) as buf:
        assert buf.wait(30)
    return buf.session


def victim_file(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    return victim


@pytest.mark.parametrize("target_exists", [True, False])
def test_export_never_writes_through_a_link_planted_at_its_partial_file(tmp_path, target_exists):
    log = tmp_path / "rec.streamlog"
    record(log)
    victim = victim_file(tmp_path) if target_exists else tmp_path / "not-there.txt"
    out = tmp_path / "out.jsonl"
    planted = tmp_path / f".out.jsonl.partial-{os.getpid()}"  # CliRunner runs the CLI in this process
    planted.symlink_to(victim)
    result = CliRunner().invoke(main, ["export", str(log), "-o", str(out)])
    assert result.exit_code == 1
    assert f"Error: {planted} already exists" in result.output and "remove it" in result.output
    assert not out.exists() and planted.is_symlink()
    assert victim.read_text() == "precious\n" if target_exists else not victim.exists()
    planted.unlink()
    assert CliRunner().invoke(main, ["export", str(log), "-o", str(out)]).exit_code == 0
    assert len(out.read_text().splitlines()) == 10


def test_wav_export_never_writes_through_a_link_planted_at_its_partial_file(tmp_path):
    log = tmp_path / "rec.streamlog"
    with StreamBuffer(WavFileSourceReader(write_wav(tmp_path / "take.wav")), log=str(log)) as buf:
        assert buf.wait(30)
    victim = victim_file(tmp_path)
    out = tmp_path / "out.wav"
    planted = tmp_path / f".out.wav.partial-{os.getpid()}"  # one temporary-file rule for every format
    planted.symlink_to(victim)
    result = CliRunner().invoke(main, ["export", str(log), "-o", str(out)])
    assert result.exit_code == 1 and f"Error: {planted} already exists" in result.output
    assert victim.read_text() == "precious\n" and not out.exists() and planted.is_symlink()


@pytest.mark.parametrize("name", [DATA_FILE, LMDB_LOCK_FILE, WRITERS_DIR])
def test_a_file_of_a_log_replaced_by_a_link_is_refused_and_its_target_untouched(tmp_path, name):
    log = tmp_path / "rec.streamlog"
    record(log)
    victim = victim_file(tmp_path)
    planted = log / name
    planted.rmdir() if planted.is_dir() else planted.unlink()
    planted.symlink_to(victim)
    with pytest.raises(errors.NotALog, match=f"{planted} is a symbolic link"):
        record(log)
    for command in (["sessions", str(log)], ["prune", str(log), "--keep-sessions", "1"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1 and f"Error: {planted} is a symbolic link" in result.output
    assert victim.read_text() == "precious\n"


AUDITED_CLI = """
import json, sys
log, out, stored_path = sys.argv[1:4]
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event in ("open", "os.listdir") else None)
from click.testing import CliRunner
from streamlog.cli import main

commands = [["sessions", log], ["sessions", log, "--json"], ["info", log], ["info", log, "--json"],
            ["head", log], ["tail", log], ["range", log], ["export", log, "-o", out], ["doctor", log],
            ["prune", log, "--keep-sessions", "5"]]
codes = [CliRunner().invoke(main, args).exit_code for args in commands]
print(json.dumps({"codes": codes, "opened": opened}))
"""


def test_no_path_stored_in_a_log_is_ever_opened_by_the_cli(tmp_path):
    """The sessions' info holds paths (a WAV source's file, and ones put there
    on purpose); every CLI command runs under an audit hook that records each
    file the process opens: none of those paths is among them."""
    log = tmp_path / "rec.streamlog"
    source_file = write_wav(tmp_path / "source.wav")
    planted = tmp_path / "planted.txt"
    planted.write_text("x")
    with StreamBuffer(WavFileSourceReader(source_file), log=str(log),
                      labels={"file": str(planted), "config": str(planted)}) as buf:
        assert buf.wait(30)
    assert str(source_file) in json.dumps(streamlog.Log(log, readonly=True).session(-1).info)
    out = tmp_path / "out.wav"
    report = json.loads(run_python(AUDITED_CLI, log, out, source_file).stdout)
    assert set(report["codes"]) == {0}
    assert any(path.startswith(str(tmp_path / ".out.wav.partial-")) for path in report["opened"])  # it sees opens
    assert not [path for path in report["opened"] if path in (str(source_file), str(planted))]


FORBIDDEN_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "__import__"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def evaluation_hazards(tree):
    """Places in a module's syntax tree that could turn data into code."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"from {node.module} import")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{func.id}()")
            elif isinstance(func, ast.Attribute):
                owner = func.value.id if isinstance(func.value, ast.Name) else None
                if owner == "yaml" and func.attr in UNSAFE_YAML:
                    found.append(f"yaml.{func.attr}()")
                if owner in FORBIDDEN_MODULES:
                    found.append(f"{owner}.{func.attr}()")
            for keyword in node.keywords:
                if keyword.arg == "allow_pickle" and not (
                        isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                    found.append("allow_pickle=...")
    return found


def test_the_hazard_finder_finds_each_hazard():
    code = """
import pickle
from marshal import loads
import yaml, numpy as np
eval("1"); exec("x = 1"); yaml.load(s); yaml.safe_load(s); np.load(f, allow_pickle=True); np.load(f)
pickle.loads(b"")
"""
    assert evaluation_hazards(ast.parse(code)) == [
        "import pickle", "from marshal import", "eval()", "exec()", "yaml.load()", "allow_pickle=...",
        "pickle.loads()"]


def test_nothing_read_from_a_log_is_evaluated():
    """No module of the package can turn what it reads into code."""
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    hazards = {str(p.relative_to(PACKAGE)): evaluation_hazards(ast.parse(p.read_text(), str(p))) for p in sources}
    assert {name: found for name, found in hazards.items() if found} == {}
