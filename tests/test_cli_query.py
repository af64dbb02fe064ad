"""The read-only CLI commands (sessions, info, head, tail, range, export) on
real logs recorded with StreamBuffer, through click's CliRunner."""

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
import wave

import numpy as np
import pytest
from click.testing import CliRunner

import streamlog
from streamlog import ReadBatch, SourceReader, StreamBuffer
from streamlog.cli import main

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamlog.__file__)))


class ListSource(SourceReader):
    """Replays ``records`` in batches, then ends the session."""

    def __init__(self, records, key=lambda record: record[0], info=None):
        self.records = list(records)
        self._key = key
        self._info = info or {}
        self._next = 0

    def open(self):
        pass

    def read(self):
        if self._next >= len(self.records):
            raise StopIteration
        batch = self.records[self._next:self._next + 500]
        self._next += len(batch)
        return ReadBatch(batch)

    def close(self):
        pass

    def key(self, data):
        return self._key(data)

    @property
    def info(self):
        return self._info


def record(path, records, **source_options):
    """Record ``records`` into the log at ``path`` as one session, to the end."""
    with StreamBuffer(ListSource(records, **source_options), log=str(path)) as buf:
        for _ in buf.mk_reader():
            pass
        return buf.session.id


def array_records(n, width=4):
    return [(i, np.arange(width, dtype=np.float32) + i) for i in range(n)]


class RecordedLog(str):
    """A log's path, with ``ids``: the ids of its sessions, oldest first."""

    ids = ()


@pytest.fixture
def log(tmp_path):
    """A log with two sessions of ``(i, float32[4])`` records: 10, then 25."""
    path = RecordedLog(tmp_path / "log")
    path.ids = (record(path, array_records(10), info={"source": "test", "path": "/dev/test"}),
                record(path, array_records(25), info={"source": "test"}))
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *fragments, exit_code=1):
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback, a clean exit
    assert "Traceback" not in result.output
    assert "Error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


# -- help and version --------------------------------------------------------


def test_version_and_help_with_examples():
    result = run("--version")
    assert result.exit_code == 0 and streamlog.__version__ in result.stdout
    result = run("--help")
    assert result.exit_code == 0 and "_STREAMLOG_COMPLETE=bash_source streamlog" in result.stdout
    # every command's example: tests/test_cli_help.py


# -- sessions and info ---------------------------------------------------------


def test_sessions_table(log):
    result = run("sessions", log)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "START"]
    assert len(lines) == 3
    first, second = lines[1].split(), lines[2].split()
    assert first[0] == str(log.ids[0]) and first[1] == "closed"
    assert "10" in first and "25" in second
    assert "0 .. 9" in lines[1] and "0 .. 24" in lines[2]
    assert "test /dev/test" in lines[1]


def test_sessions_json(log):
    result = run("sessions", log, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert [s["id"] for s in found] == list(log.ids)
    assert [s["records"] for s in found] == [10, 25]
    assert found[1]["status"] == "closed"
    assert (found[1]["first_key"], found[1]["last_key"]) == (0, 24)
    assert found[0]["info"] == {"source": "test", "path": "/dev/test"}
    assert list(found[0]["streams"]) == ["main"]
    assert found[0]["duration_s"] >= 0 and found[0]["start_time"] <= found[0]["stop_time"]


def test_one_session_shape_everywhere(log):
    """sessions --json, --nl and info --json give the same object for a session."""
    listed = json.loads(run("sessions", log, "--json").stdout)
    lines = [json.loads(line) for line in run("sessions", log, "--nl").stdout.splitlines()]
    shown = [json.loads(run("info", log, "-s", sid, "--json").stdout) for sid in log.ids]
    for same in (lines, shown, [json.loads(run("info", log, sid, "--format", "json").stdout) for sid in log.ids]):
        assert [{k: v for k, v in s.items() if k != "duration_s"} for s in same] == \
            [{k: v for k, v in s.items() if k != "duration_s"} for s in listed]
    assert listed[1]["streams"]["main"] == {"records": 25, "recorded": 25, "bytes": listed[1]["bytes"],
                                            "first_key": 0, "last_key": 24, "key_types": "int", "error": None}
    assert listed[1]["start"].startswith(dt.datetime.fromtimestamp(listed[1]["start_time"]).strftime("%Y-%m-%dT"))


def test_sessions_and_info_csv(log):
    rows = list(csv.DictReader(io.StringIO(run("sessions", log, "--csv").stdout)))
    assert [int(r["id"]) for r in rows] == list(log.ids)
    assert [int(r["records"]) for r in rows] == [10, 25] and rows[0]["streams"] == "main"
    assert json.loads(rows[0]["info"]) == {"source": "test", "path": "/dev/test"}
    [row] = csv.DictReader(io.StringIO(run("info", log, "-s", log.ids[0], "--csv").stdout))
    assert row == rows[0] | {"duration_s": row["duration_s"]}
    assert [r["id"] for r in csv.DictReader(io.StringIO(run("sessions", log, "-s", log.ids[1], "--csv").stdout))] \
        == [str(log.ids[1])]


def test_info_takes_the_session_as_an_option_or_an_argument(log):
    by_option = run("info", log, "-s", log.ids[0])
    assert by_option.exit_code == 0 and f"session     {log.ids[0]} (closed)" in by_option.stdout
    assert run("info", log, log.ids[0]).stdout == by_option.stdout
    both = run("info", log, log.ids[0], "-s", log.ids[1])
    assert both.exit_code == 2 and "two sessions given" in both.stderr


def test_keys_are_written_one_way(tmp_path):
    path = tmp_path / "bytes"
    record(path, [(bytes([i]), f"r{i}") for i in range(1, 4)])
    listed = json.loads(run("sessions", path, "--json").stdout)[0]
    assert (listed["first_key"], listed["last_key"]) == ("0x01", "0x03")
    assert "0x01 .. 0x03" in run("sessions", path).stdout
    assert "keys 0x01 .. 0x03" in run("info", path).stdout
    assert [json.loads(x)[1] for x in run("range", path, "0x02", "0x03", "-f", "jsonl").stdout.splitlines()] == \
        ["r2", "r3"]


def test_time_keys_are_iso_in_sessions_and_info(tmp_path):
    path = tmp_path / "times"
    base_us = 1_796_151_120_000_000
    record(path, [(base_us + i, "x") for i in range(3)], info={"key_kind": "timestamp_us"})
    listed = json.loads(run("sessions", path, "--json", "--utc").stdout)[0]
    assert (listed["first_key"], listed["last_key"]) == ("2026-12-01T18:52:00.000000Z",
                                                         "2026-12-01T18:52:00.000002Z")
    assert "2026-12-01T18:52:00.000000Z .. 2026-12-01T18:52:00.000002Z" in run("sessions", path, "--utc").stdout


def test_custom_sources_are_described_by_their_info(tmp_path):
    path = tmp_path / "custom"
    record(path, [(1, "x")], info={"kind": "counter", "n": 1})
    assert json.loads(run("sessions", path, "--json").stdout)[0]["source"] == "kind=counter n=1"


def test_info_text_and_json(log):
    result = run("info", log, log.ids[0])
    assert result.exit_code == 0, result.output
    assert f"session     {log.ids[0]} (closed)" in result.stdout
    assert "main: 10 records (10 recorded)" in result.stdout
    assert 'source: "test"' in result.stdout
    result = run("info", log, "--json")
    assert result.exit_code == 0, result.output
    detail = json.loads(result.stdout)
    assert detail["id"] == log.ids[1]
    assert detail["streams"]["main"]["records"] == 25
    assert detail["streams"]["main"]["key_types"] == "int"
    assert detail["error"] is None


def test_info_negative_session_after_double_dash(log):
    result = run("info", log, "--", "-2")
    assert result.exit_code == 0, result.output
    assert f"session     {log.ids[0]} (closed)" in result.stdout


# -- head, tail, range in three formats ----------------------------------------


def test_head_text(log):
    result = run("head", log, "-n", 3)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "(0, float32[4] [0., 1., 2., 3.])",
        "(1, float32[4] [1., 2., 3., 4.])",
        "(2, float32[4] [2., 3., 4., 5.])",
    ]


def test_tail_jsonl_of_chosen_session(log):
    result = run("tail", log, "-n", 2, "--session", log.ids[0], "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == [[8, [8.0, 9.0, 10.0, 11.0]], [9, [9.0, 10.0, 11.0, 12.0]]]


def test_range_csv_inclusive_bounds(log):
    result = run("range", log, 5, 7, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["value0", "value1[0]", "value1[1]", "value1[2]", "value1[3]"]  # arrays spread over columns
    assert [int(r[0]) for r in rows[1:]] == [5, 6, 7]
    assert [float(x) for x in rows[1][1:]] == [5.0, 6.0, 7.0, 8.0]


@pytest.mark.parametrize("fmt", ["text", "jsonl", "csv"])
def test_range_every_format_counts(log, fmt):
    result = run("range", log, 0, 24, "-f", fmt, "-s", "-1")
    assert result.exit_code == 0, result.output
    header = 1 if fmt == "csv" else 0
    assert len(result.stdout.splitlines()) == 25 + header


def test_empty_range_prints_nothing(log):
    result = run("range", log, 100, 200)
    assert result.exit_code == 0 and result.stdout == ""


def test_string_records_text_and_tuple_keys(tmp_path):
    path = tmp_path / "lines"
    lines = [((i // 3, i % 3 / 2), f"line {i}\tend") for i in range(9)]
    record(path, lines)
    result = run("range", path, "1,0.0", "2,0.5")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 5
    assert result.stdout.splitlines()[0] == "((1, 0.0), 'line 3\\tend')"
    result = run("range", path, "[1, 0.5]", "[1, 1.0]", "-f", "jsonl")
    assert [json.loads(x) for x in result.stdout.splitlines()] == [[[1, 0.5], "line 4\tend"],
                                                                [[1, 1.0], "line 5\tend"]]


def test_timestamp_keys_accept_iso_times(tmp_path):
    path = tmp_path / "times"
    base = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    base_us = int(base.timestamp()) * 1_000_000
    events = [(base_us + i * 1_000_000, f"event {i}") for i in range(10)]
    record(path, events, info={"key_kind": "timestamp_us"})
    result = run("range", path, "2024-05-01T12:00:03+00:00", "2024-05-01T12:00:05Z", "-f", "jsonl")
    assert result.exit_code == 0, result.output
    assert [json.loads(x)[1] for x in result.stdout.splitlines()] == ["event 3", "event 4", "event 5"]
    result = run("range", path, base_us + 8_000_000, base_us + 60_000_000, "-f", "jsonl")
    assert [json.loads(x)[1] for x in result.stdout.splitlines()] == ["event 8", "event 9"]
    result = run("range", path, "yesterday", "2024-05-01T12:00:05Z")
    assert_one_line_error(result, "'yesterday' is not a time", exit_code=2)


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [["sessions"], ["info"], ["head"], ["tail"], ["range", "0", "1"],
                                     ["export", "-o", "never.jsonl"]])
def test_missing_log(tmp_path, command):
    result = CliRunner().invoke(main, [command[0], str(tmp_path / "nope")] + command[1:])
    assert_one_line_error(result, "nope")


def test_plain_file_is_not_a_log(tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_text("hello\n")
    assert_one_line_error(run("sessions", plain), "notes.txt")


def test_foreign_directory_is_not_a_log(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    assert_one_line_error(run("head", foreign), "photos")
    assert not (foreign / "data.mdb").exists()


def test_session_that_does_not_exist(log):
    assert_one_line_error(run("head", log, "--session", 7), "no session 7")
    assert_one_line_error(run("info", log, 42), "no session 42")
    assert_one_line_error(run("tail", log, "--session", -5), "-5")


def test_stream_that_does_not_exist(log):
    assert_one_line_error(run("head", log, "--stream", "markers"), "markers")


def test_key_that_does_not_parse_is_a_usage_error(log):
    result = run("range", log, "abc", 5)
    assert_one_line_error(result, "'abc'", "int", exit_code=2)
    result = run("export", log, "-o", "x.jsonl", "--stop", "1.5")
    assert_one_line_error(result, "'1.5'", "int", exit_code=2)


# -- export ---------------------------------------------------------------------


def test_export_jsonl_and_csv_read_back(log, tmp_path):
    out = tmp_path / "all.jsonl"
    result = run("export", log, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"Wrote 25 record(s) of session {log.ids[1]}" in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r[0] for r in rows] == list(range(25))
    assert rows[3][1] == [3.0, 4.0, 5.0, 6.0]
    out = tmp_path / "part.csv"
    result = run("export", log, "-o", out, "--session", log.ids[0], "--start", 2, "--stop", 4)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(out.open(newline="")))
    assert rows[0] == ["value0", "value1[0]", "value1[1]", "value1[2]", "value1[3]"]
    assert [r[0] for r in rows[1:]] == ["2", "3", "4"]


def test_export_npy_equals_recorded_arrays(log, tmp_path):
    out = tmp_path / "arrays.npy"
    result = run("export", log, "-o", out)
    assert result.exit_code == 0, result.output
    expected = np.stack([array for _, array in array_records(25)])
    loaded = np.load(out)
    assert loaded.dtype == np.float32 and loaded.shape == (25, 4)
    np.testing.assert_array_equal(loaded, expected)
    out = tmp_path / "part.data"
    result = run("export", log, "-o", out, "--format", "npy", "--start", 20)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(out), expected[20:])


def test_export_npy_bare_array_records(tmp_path):
    path = tmp_path / "frames"
    frames = [np.full((2, 3), i, dtype=np.int16) for i in range(7)]
    record(path, frames, key=lambda frame: int(frame[0, 0]))
    out = tmp_path / "frames.npy"
    assert run("export", path, "-o", out).exit_code == 0
    np.testing.assert_array_equal(np.load(out), np.stack(frames))


def test_export_npy_mismatching_shapes_is_an_error_and_leaves_no_file(tmp_path):
    path = tmp_path / "mixed"
    record(path, [(0, np.zeros(4)), (1, np.zeros(4)), (2, np.zeros(5))])
    out = tmp_path / "mixed.npy"
    assert_one_line_error(run("export", path, "-o", out), "record 2", "(5,)", "(4,)")
    assert os.listdir(tmp_path) == ["mixed"]
    record(path, ["text"], key=len)
    assert_one_line_error(run("export", path, "-o", out), "record 0 is a str, not a numpy array")


def test_export_refuses_to_overwrite_without_force(log, tmp_path):
    out = tmp_path / "keep.jsonl"
    out.write_text("precious\n")
    assert_one_line_error(run("export", log, "-o", out), "exists", "--force")
    assert out.read_text() == "precious\n"
    assert run("export", log, "-o", out, "--force").exit_code == 0
    assert len(out.read_text().splitlines()) == 25


def test_export_unknown_suffix_is_a_usage_error(log, tmp_path):
    assert_one_line_error(run("export", log, "-o", tmp_path / "x.txt"), "--format", exit_code=2)


# -- pipes ------------------------------------------------------------------------


def test_range_into_a_reader_that_closes_early(tmp_path):
    path = tmp_path / "big"
    record(path, array_records(3000, width=64))
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlog", "range", str(path), "0", "3000", "--format", "jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=30)
    assert json.loads(first)[0] == 0
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert stderr == ""


def test_range_bounds_are_optional(log):
    result = run("range", log, 22, "-f", "jsonl")
    assert [json.loads(x)[0] for x in result.stdout.splitlines()] == [22, 23, 24]
    result = run("range", log, "-f", "jsonl", "-s", log.ids[0])
    assert [json.loads(x)[0] for x in result.stdout.splitlines()] == list(range(10))


def test_bash_completion_script():
    result = CliRunner().invoke(main, [], prog_name="streamlog", env={"_STREAMLOG_COMPLETE": "bash_source"})
    assert result.exit_code == 0
    assert "_streamlog_completion" in result.stdout


def test_export_wav_of_an_audio_session(tmp_path):
    from streamlog.sources.audio import WavFileSourceReader

    source_wav = tmp_path / "tone.wav"
    samples = (np.sin(np.arange(4000) / 7.0)[:, None] * [8000, -8000]).astype("<i2")
    with wave.open(str(source_wav), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.tobytes())
    path = tmp_path / "audio"
    start = 1_700_000_000.0
    with StreamBuffer(WavFileSourceReader(source_wav, frames_per_buffer=256, start_time=start), log=str(path)) as buf:
        for _ in buf.mk_reader():
            pass
    out = tmp_path / "out.wav"
    result = run("export", path, "-o", out)
    assert result.exit_code == 0, result.output
    assert "Wrote 4000 frame(s)" in result.stderr
    with wave.open(str(out), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        assert w.readframes(w.getnframes()) == samples.tobytes()
    # a quarter second from 0.125 s on, given as ISO times (stop exclusive)
    t0 = dt.datetime.fromtimestamp(start + 0.125, dt.timezone.utc).isoformat()
    t1 = dt.datetime.fromtimestamp(start + 0.375, dt.timezone.utc).isoformat()
    part = tmp_path / "part.wav"
    result = run("export", path, "-o", part, "--start", t0, "--stop", t1)
    assert result.exit_code == 0, result.output
    with wave.open(str(part), "rb") as w:
        assert w.readframes(w.getnframes()) == samples[1000:3000].tobytes()


def test_export_wav_of_a_session_that_is_not_audio(log, tmp_path):
    assert_one_line_error(run("export", log, "-o", tmp_path / "x.wav"), "not an audio recording")
    assert_one_line_error(run("export", log, "-o", tmp_path / "x.jsonl", "--allow-gaps"), "--allow-gaps",
                          exit_code=2)
