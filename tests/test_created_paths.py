"""One rule for the paths streamlog creates: only the last component of a
path given to it (the log directory, demo's --dir, an export's file), never
the directories above it (a mistyped parent is an error, not a new tree)."""

import os
import subprocess
import sys

import pytest

import streamlog
from streamlog import StreamBuffer, errors

from helpers import REPO, Counter


def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "streamlog", *map(str, args)], capture_output=True, env=env,
                          cwd=cwd, timeout=120)


def assert_one_line_error(result, *fragments):
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.startswith("Error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in stderr


def test_demo_creates_its_dir_but_not_missing_parents(tmp_path):
    missing = tmp_path / "missing"
    assert_one_line_error(cli("demo", "--dir", missing / "d", "--seconds", "0.2"), str(missing), "does not exist")
    assert not missing.exists()
    result = cli("demo", "--dir", tmp_path / "d", "--seconds", "0.2")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d" / "demo.streamlog" / "data.mdb").is_file()


def test_record_creates_the_log_directory_but_not_missing_parents(tmp_path):
    missing = tmp_path / "missing"
    assert_one_line_error(cli("record", "synth", missing / "deeper" / "x.streamlog", "--count", 3, "--fast"),
                          str(missing / "deeper"), "does not exist")
    assert not missing.exists()
    result = cli("record", "synth", tmp_path / "x.streamlog", "--count", 3, "--fast")
    assert result.returncode == 0, result.stderr
    assert len(streamlog.Log(tmp_path / "x.streamlog", readonly=True).sessions()) == 1


def test_export_creates_the_file_but_not_missing_directories(tmp_path):
    assert cli("record", "synth", tmp_path / "x.streamlog", "--count", 3, "--fast").returncode == 0
    missing = tmp_path / "missing"
    assert_one_line_error(cli("export", tmp_path / "x.streamlog", "-o", missing / "out.jsonl"),
                          str(missing), "does not exist")
    assert not missing.exists()
    result = cli("export", tmp_path / "x.streamlog", "-o", tmp_path / "out.jsonl")
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3


def test_the_library_follows_the_same_rule(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(errors.LogNotFound, match="does not exist"):
        streamlog.Log(missing / "x.streamlog")
    with pytest.raises(errors.LogNotFound, match="does not exist"):
        StreamBuffer(Counter(3), log=str(missing / "x.streamlog")).start()
    assert not missing.exists()
