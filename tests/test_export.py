"""Exports (streamlog.export and ``streamlog export``): where they may write and
how, through the library and the CLI in real subprocesses."""

import csv
import io
import json
import os
import stat
import subprocess
import sys
import threading
import wave

import numpy as np
import pytest

import streamlog
from streamlog import StreamBuffer, errors
from streamlog.export import (FORMATS, CsvWriter, ExportFormat, Selection, export, format_for, register_format,
                              write_records)

from helpers import REPO, Replay, write_wav


def record(path, records, **source_options):
    """Record ``records`` into the log at ``path`` as one session, to its end."""
    with StreamBuffer(Replay(records, **source_options), log=str(path)) as buf:
        assert buf.wait(30)
        return buf.session.id


def array_records(n, width=4):
    return [(i, np.arange(width, dtype=np.float32) + i) for i in range(n)]


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "rec.streamlog"
    record(path, array_records(20))
    return path


def cli(*args, stdout=subprocess.PIPE, timeout=60):
    """Run ``python -m streamlog ARGS`` with this worktree's package; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "streamlog", *map(str, args)], stdout=stdout,
                          stderr=subprocess.PIPE, env=env, timeout=timeout)


def assert_error(result, *fragments):
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr and stderr.count("\n") == 1 and stderr.startswith("Error: "), stderr
    for fragment in fragments:
        assert fragment in stderr


def log_reads_back(path, n=20):
    with streamlog.Log(path, readonly=True) as opened:
        assert opened.verify() == []
        assert [r[0] for r in opened.session(-1).irange()] == list(range(n))


def export_into_fifo(fifo, log, *options):
    """Make the FIFO ``fifo`` and run ``streamlog export LOG -o FIFO OPTIONS`` while a
    thread reads it; returns (CompletedProcess, the bytes read)."""
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    try:
        result = cli("export", log, "-o", fifo, *options)
    finally:
        if reader.is_alive():  # the export failed before opening the FIFO: release the reader
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(30)
    return result, received[0]


# -- standard output -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "npy"])
def test_dash_streams_the_export_to_stdout(log, tmp_path, fmt):
    result = cli("export", log, "-o", "-", "-f", fmt, "--start", 3, "--stop", 5)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "-").exists() and not os.path.exists("-")
    expected = [np.arange(4, dtype=np.float32) + i for i in (3, 4, 5)]
    if fmt == "npy":
        np.testing.assert_array_equal(np.load(io.BytesIO(result.stdout)), np.stack(expected))
    elif fmt == "jsonl":
        assert [json.loads(line) for line in result.stdout.decode().splitlines()] == \
            [[i, a.tolist()] for i, a in zip((3, 4, 5), expected)]
    else:
        lines = result.stdout.decode().splitlines()
        assert lines[0] == "value0,value1[0],value1[1],value1[2],value1[3]" and lines[1] == "3,3.0,4.0,5.0,6.0"
        assert len(lines) == 4
    assert "Wrote 3 record(s) of session 1 to - (" in result.stderr.decode()


def test_dash_without_a_format_is_a_usage_error(log):
    result = cli("export", log, "-o", "-")
    assert result.returncode == 2 and "--format" in result.stderr.decode()


# -- targets that are not regular files ------------------------------------------


def test_a_fifo_target_is_written_into_never_replaced(log, tmp_path):
    fifo = tmp_path / "out.jsonl"
    result, received = export_into_fifo(fifo, log, "--force")
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [json.loads(line)[0] for line in received.decode().splitlines()] == list(range(20))
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl", "rec.streamlog"]


def test_a_character_device_is_written_into_without_force(log):
    result = cli("export", log, "-o", "/dev/null", "-f", "csv")
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_dev_stdout_is_written_through_never_replaced(log):
    before = os.lstat("/dev/stdout")
    result = cli("export", log, "-o", "/dev/stdout", "-f", "jsonl", "--force")  # stdout is a pipe here
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)[0] for line in result.stdout.decode().splitlines()] == list(range(20))
    after = os.lstat("/dev/stdout")
    assert stat.S_ISLNK(after.st_mode) and (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


# -- symbolic links ---------------------------------------------------------------


def test_a_link_to_a_regular_file_is_followed_and_stays_a_link(log, tmp_path):
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    assert_error(cli("export", log, "-o", link), f"{link} exists", "--force")
    assert real.read_text() == "old\n"
    result = cli("export", log, "-o", link, "--force")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert [json.loads(line)[0] for line in real.read_text().splitlines()] == list(range(20))
    assert sorted(os.listdir(tmp_path)) == ["link.jsonl", "real.jsonl", "rec.streamlog"]


def test_a_dangling_link_is_refused(log, tmp_path):
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "nowhere.jsonl")
    assert_error(cli("export", log, "-o", link, "--force"), f"{link} is a symbolic link", "does not exist")
    assert link.is_symlink() and not (tmp_path / "nowhere.jsonl").exists()


# -- logs are never written into ----------------------------------------------------


def test_a_path_inside_the_exported_log_is_refused_and_the_log_kept(log):
    for target in (log / "data.mdb", log / "lock.mdb", log / "new.jsonl", log / "writers" / "x.jsonl"):
        assert_error(cli("export", log, "-o", target, "-f", "jsonl", "--force"), "inside the log",
                     str(log))
    log_reads_back(log)
    assert sorted(os.listdir(log)) == ["data.mdb", "lock.mdb", "writers"]


def test_a_path_inside_another_log_or_through_a_link_into_one_is_refused(log, tmp_path):
    other = tmp_path / "other.streamlog"
    record(other, array_records(20))
    assert_error(cli("export", log, "-o", other / "data.mdb", "-f", "jsonl", "--force"), "inside the log",
                 str(other))
    link = tmp_path / "innocent.jsonl"
    link.symlink_to(other / "data.mdb")
    assert_error(cli("export", log, "-o", link, "--force"), "inside the log", str(other))
    log_reads_back(other)


def test_the_input_itself_is_refused(log):
    assert_error(cli("export", log, "-o", log, "-f", "jsonl", "--force"), "is the log being exported")
    with streamlog.Log(log, readonly=True) as opened, pytest.raises(errors.ExportTargetError,
                                                                   match="the log being exported"):
        export(opened.session(-1), log, "jsonl", force=True)
    log_reads_back(log)


# -- the library ---------------------------------------------------------------


def test_library_export_to_a_binary_stream_and_to_a_path(log, tmp_path):
    with streamlog.Log(log, readonly=True) as opened:
        session = opened.session(-1)
        out = io.BytesIO(b"kept:")
        out.seek(0, io.SEEK_END)
        result = export(session, out, "npy", start=10)
        assert (result.count, result.unit, result.format, result.path) == (10, "record", "npy", None)
        data = out.getvalue()
        assert data.startswith(b"kept:")
        assert np.load(io.BytesIO(data[5:])).shape == (10, 4)
        result = export(session, tmp_path / "x.csv")
        assert (result.count, result.format, result.path) == (20, "csv", str(tmp_path / "x.csv"))
        with pytest.raises(errors.ExportTargetError, match="exists"):
            export(session, tmp_path / "x.csv")
        with pytest.raises(errors.ExportError, match="cannot tell the format"):
            export(session, tmp_path / "x.txt")
        with pytest.raises(errors.ExportError, match="allow_gaps"):
            export(session, tmp_path / "y.jsonl", allow_gaps=True)
        with pytest.raises(errors.ExportTargetError, match="is a directory"):
            export(session, tmp_path, "jsonl", force=True)
        with pytest.raises(errors.ExportTargetError, match="does not exist"):
            export(session, tmp_path / "missing" / "x.jsonl")
        assert not (tmp_path / "missing").exists()


def test_the_format_registry_takes_new_formats_by_name_and_suffix(log, tmp_path):
    def write_lengths(records, out, *, seekable, progress):
        count = 0
        for count, (key, array) in enumerate(records, 1):
            out.write(f"{key}:{len(array)}\n".encode())
            progress(1)
        return count

    lengths = ExportFormat("lengths", (".len",), write_lengths, description="key:length lines")
    register_format(lengths)
    try:
        assert format_for(path="a.LEN") is lengths and format_for("lengths") is lengths
        with pytest.raises(ValueError, match="already"):
            register_format(ExportFormat("other", (".len",), write_lengths))
        with streamlog.Log(log, readonly=True) as opened:
            seen = []
            result = export(opened.session(-1), tmp_path / "x.len", stop=2, progress=seen.append)
        assert (tmp_path / "x.len").read_text() == "0:4\n1:4\n2:4\n" and result.count == 3 and seen == [1, 1, 1]
    finally:
        del FORMATS["lengths"]


def test_a_selection_reads_again_from_the_start(log):
    with streamlog.Log(log, readonly=True) as opened:
        selection = Selection(opened.session(-1), start=18)
        assert [r[0] for r in selection] == [18, 19] and [r[0] for r in selection] == [18, 19]


# -- csv ------------------------------------------------------------------------


CHANGING_FIELDS = [
    {"t": 1, "a": 1},
    {"t": 2, "a": 2, "b": 3},
    {"t": 3, "b": 4},
    {"t": 4, "nested": {"x": 1, "y": [1, 2]}, "a": None},
    {"t": 5, "array": np.arange(3, dtype=np.int16), "c": "text, with a comma"},
    {"t": 6},
]


def expected_csv_rows():
    """What csv.DictReader must read back: every field of every record under its own name."""
    fields = ["t", "a", "b", "nested", "array[0]", "array[1]", "array[2]", "c"]  # an array: a column per element
    cells = [{"t": "1", "a": "1"}, {"t": "2", "a": "2", "b": "3"}, {"t": "3", "b": "4"},
             {"t": "4", "nested": '{"x": 1, "y": [1, 2]}'},
             {"t": "5", "array[0]": "0", "array[1]": "1", "array[2]": "2", "c": "text, with a comma"}, {"t": "6"}]
    return fields, [{name: row.get(name, "") for name in fields} for row in cells]


@pytest.mark.parametrize("command", ["range", "export", "head", "tail"])
def test_csv_has_every_field_in_its_header_and_never_shifts_values(tmp_path, command):
    path = tmp_path / "fields.streamlog"
    record(path, CHANGING_FIELDS, key=lambda r: r["t"])
    args = {"range": ["range", path, "-f", "csv"], "export": ["export", path, "-o", "-", "-f", "csv"],
            "head": ["head", path, "-f", "csv"], "tail": ["tail", path, "-f", "csv"]}[command]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    reader = csv.DictReader(io.StringIO(result.stdout.decode(), newline=""))
    fields, rows = expected_csv_rows()
    assert reader.fieldnames == fields
    assert list(reader) == rows
    assert json.loads(rows[3]["nested"]) == {"x": 1, "y": [1, 2]}


def test_csv_of_a_range_holds_the_fields_of_that_range_only(tmp_path):
    path = tmp_path / "fields.streamlog"
    record(path, CHANGING_FIELDS, key=lambda r: r["t"])
    result = cli("range", path, 2, 3, "-f", "csv")
    assert result.stdout.decode().splitlines() == ["t,a,b", "2,2,3", "3,,4"]


def test_a_csv_writer_with_a_fixed_header_refuses_a_new_field_by_name():
    out = io.StringIO()
    writer = CsvWriter(out)
    assert writer.write_batch(CHANGING_FIELDS[:2]) == 2
    with pytest.raises(errors.ExportError, match=r"record 3 has a field 'nested' outside the CSV header \(t, a, b\)"):
        writer.write_batch([{"t": 3}, CHANGING_FIELDS[3]])
    assert out.getvalue().splitlines() == ["t,a,b", "1,1,", "2,2,3", "3,,"]


def test_csv_of_tuples_and_plain_values_mixed():
    out = io.BytesIO()
    assert write_records([(1, "a"), (2, "b", 3.5), "plain"], "csv", out) == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode(), newline="")))
    assert rows == [{"value0": "1", "value1": "a", "value2": "", "value": ""},
                    {"value0": "2", "value1": "b", "value2": "3.5", "value": ""},
                    {"value0": "", "value1": "", "value2": "", "value": "plain"}]


# -- strict JSON ------------------------------------------------------------------


def strict_json(line):
    """``json.loads`` that refuses NaN, Infinity and -Infinity (not JSON, RFC 8259)."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(line, parse_constant=refuse)


NON_FINITE = [
    (1, float("nan")),
    (2, {"gain": float("inf"), "list": [float("-inf"), 1.5]}),
    (3, np.array([np.nan, 2.0, np.inf], dtype=np.float32)),
    (4, np.float64("nan")),
]
NON_FINITE_JSON = [[1, None], [2, {"gain": None, "list": [None, 1.5]}], [3, [None, 2.0, None]], [4, None]]


@pytest.mark.parametrize("command", ["range", "head", "tail", "follow", "export"])
def test_jsonl_is_strict_json_nan_and_infinities_are_null(tmp_path, command):
    path = tmp_path / "nan.streamlog"
    record(path, NON_FINITE)
    args = {"range": ["range", path], "head": ["head", path], "tail": ["tail", path],
            "follow": ["follow", path, "--from-start"], "export": ["export", path, "-o", "-"]}[command]
    result = cli(*args, "-f", "jsonl")
    assert result.returncode == 0, result.stderr
    assert [strict_json(line) for line in result.stdout.decode().splitlines()] == NON_FINITE_JSON


def test_sessions_and_info_json_are_strict_json(tmp_path):
    path = tmp_path / "nan.streamlog"
    with StreamBuffer(Replay(NON_FINITE), log=str(path), labels={"offset": float("nan"), "max": float("inf")}) as buf:
        assert buf.wait(30)
    for args in (["sessions", path, "--json"], ["info", path, "--json"]):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        document = strict_json(result.stdout.decode())
        summary = document[0] if isinstance(document, list) else document
        assert summary["labels"] == {"offset": None, "max": None}


# -- a reader that closes the pipe early ------------------------------------------------


@pytest.fixture(scope="module")
def big_log(tmp_path_factory):
    """A log whose jsonl output (about 2 MB) is far larger than a pipe's buffer."""
    path = tmp_path_factory.mktemp("pipes") / "big.streamlog"
    record(path, array_records(3000, width=64))
    return path


@pytest.mark.parametrize("args", [
    ["range", "{log}", "-f", "jsonl"], ["range", "{log}", "-f", "csv"], ["range", "{log}"],
    ["head", "{log}", "-n", "3000", "-f", "jsonl"], ["tail", "{log}", "-n", "3000"],
    ["follow", "{log}", "--from-start", "-f", "jsonl"], ["export", "{log}", "-o", "-", "-f", "jsonl"],
    ["export", "{log}", "-o", "-", "-f", "npy"], ["export", "{log}", "-o", "/dev/stdout", "-f", "csv"],
], ids=lambda args: "-".join(a for a in args if a != "{log}"))
def test_a_closed_pipe_ends_output_quietly_with_status_0(big_log, args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "streamlog", *(a.format(log=big_log) for a in args)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.read(100)
    proc.stdout.close()  # the reader goes away with most of the output unread
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, stderr
    assert len(first) == 100 and stderr == ""


def test_a_pipeline_with_head_succeeds_under_pipefail(big_log):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = f"set -o pipefail; {sys.executable} -m streamlog range {big_log} 5 2999 -f jsonl | head -1"
    result = subprocess.run(["bash", "-c", command], capture_output=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0] == 5 and result.stderr == b""


# -- wav ------------------------------------------------------------------------


def test_wav_streams_to_stdout_and_into_a_fifo_with_the_right_header(tmp_path):
    from streamlog.sources.audio import WavFileSourceReader

    source = write_wav(tmp_path / "source.wav", frames=3000)
    with wave.open(str(source)) as w:
        samples = w.readframes(3000)
    log = tmp_path / "audio.streamlog"
    with StreamBuffer(WavFileSourceReader(source, frames_per_buffer=256, start_time=1_700_000_000.0),
                      log=str(log)) as buf:
        assert buf.wait(30)
    result = cli("export", log, "-o", "-", "-f", "wav")
    assert result.returncode == 0, result.stderr
    assert "Wrote 3000 frame(s)" in result.stderr.decode()
    with wave.open(io.BytesIO(result.stdout)) as w:  # the header's sizes were right from the start
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 8000, 3000)
        assert w.readframes(3000) == samples
    assert result.stdout == source.read_bytes()

    fifo = tmp_path / "take.wav"
    result, received = export_into_fifo(fifo, log, "--start", 1_700_000_000_000_000 + 125_000)
    assert result.returncode == 0, result.stderr
    with wave.open(io.BytesIO(received)) as w:
        assert w.getnframes() == 2000 and w.readframes(2000) == samples[1000 * 4:]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
