"""Wall-clock and multi-session queries from the shell: --since/--until on any session, -s lists,
--where, --fields, --step, --limit, and the library behind them (streamlog.query), on real logs."""

import csv
import io
import json
import queue
import time

import numpy as np
import pytest
from click.testing import CliRunner

from streamlog import Log, ReadBatch, StreamBuffer
from streamlog.cli import main
from streamlog.errors import QueryError, SessionNotFound
from streamlog.export import Labelled, write_records
from streamlog.query import Where, pick_fields, rows, select_sessions
from streamlog.timespec import format_time, parse_time

from helpers import Gate


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def jsonl(result):
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def usage_error(result, fragment):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error:") and fragment in lines[-1], result.stderr
    assert "Traceback" not in result.output


class DictGate(Gate):
    def key(self, data):
        return data["t"]


class TwoBatches:
    """A log whose session 1 holds counter keys 0..9 committed before ``middle`` (epoch
    seconds) and 10..19 after it; session 2 holds dict records; session 3 text lines."""

    def __init__(self, path):
        self.path = str(path)
        items = queue.Queue()
        with StreamBuffer(Gate(items), log=self.path, commit_interval_s=0.001) as buf:
            items.put(ReadBatch((i, f"early {i}") for i in range(10)))
            deadline = time.monotonic() + 30
            while buf.committed < 10:
                assert time.monotonic() < deadline, "the first batch was never committed"
                time.sleep(0.001)
            self.middle = time.time()
            while time.time() <= self.middle + 0.001:  # the clock moves on before the second batch arrives
                pass
            items.put(ReadBatch((i, f"late {i}") for i in range(10, 20)))
            items.put(StopIteration)
            buf.wait(30)
        items = queue.Queue()
        dicts = [{"t": i, "channel": "stderr" if i % 3 == 0 else "stdout", "rate": 1000 * i, "meta": {"n": i}}
                 for i in range(12)]
        with StreamBuffer(DictGate(items), log=self.path) as buf:
            items.put(ReadBatch(dicts))
            items.put(StopIteration)
            buf.wait(30)
        with StreamBuffer(Gate(items), log=self.path) as buf:
            items.put(ReadBatch((i, f"line {i}") for i in range(3)))
            items.put(StopIteration)
            buf.wait(30)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return TwoBatches(tmp_path_factory.mktemp("queries") / "q.streamlog")


def records(result):
    return [r[1] if isinstance(r, list) else r for r in jsonl(result)]


def test_since_and_until_answer_from_arrival_times_on_a_counter_keyed_session(two):
    middle = repr(two.middle)
    late = records(run("range", two.path, "-s", "1", "--since", middle, "-f", "jsonl"))
    assert late == [f"late {i}" for i in range(10, 20)]
    early = records(run("range", two.path, "-s", "1", "--until", middle, "-f", "jsonl"))
    assert early == [f"early {i}" for i in range(10)]
    iso = format_time(two.middle, utc=True)
    assert records(run("range", two.path, "-s", "1", "--since", iso, "-f", "jsonl")) == late
    assert records(run("range", two.path, "-s", "1", "--utc", "--since", iso[:-1], "-f", "jsonl")) == late
    assert records(run("range", two.path, "-s", "1", "--since", "@" + middle, "5", "12", "-f", "jsonl")) == \
        ["late 10", "late 11", "late 12"]


def test_relative_times(two):
    assert len(records(run("range", two.path, "-s", "1", "--since", "-1h", "-f", "jsonl"))) == 20
    assert records(run("range", two.path, "-s", "1", "--since", "+1h", "-f", "jsonl")) == []
    assert records(run("range", two.path, "-s", "1", "--until", "-1h", "-f", "jsonl")) == []
    assert len(records(run("range", two.path, "-s", "1", "--until", "now", "-f", "jsonl"))) == 20


def test_a_key_that_is_a_time_on_a_counter_session_is_a_usage_error_with_a_hint(two):
    usage_error(run("range", two.path, "-s", "1", "2026-12-01T18:52:00"), "not a key of type int")
    usage_error(run("range", two.path, "-s", "1", "2026-12-01T18:52:00"), "select by arrival time with since/until")


@pytest.mark.parametrize("args, fragment", [
    (["9", "3"], "runs backwards: start 9 is after stop 3"),
    (["--since", "-1m", "--until", "-2h"], "--since is after --until"),
    (["--since", "10m"], "for 10m ago write -10m"),
    (["--since", "yesterday"], "'yesterday' is not a time"),
    (["-s", "3-1"], "runs backwards; write 1-3"),
    (["-s", "1,x"], "is not a list of sessions"),
    (["--where", "novalue"], "is not a condition"),
    (["--limit", "0"], "--limit"),
    (["--step", "0"], "--step"),
    (["--fields", ","], "--fields"),
])
def test_bad_queries_are_usage_errors(two, args, fragment):
    usage_error(run("range", two.path, "-s", "1", *args), fragment)


def test_limit_and_step(two):
    assert [r[0] for r in jsonl(run("range", two.path, "-s", "1", "--limit", "3", "-f", "jsonl"))] == [0, 1, 2]
    assert [r[0] for r in jsonl(run("range", two.path, "-s", "1", "--step", "5", "-f", "jsonl"))] == [0, 5, 10, 15]
    assert [r[0] for r in jsonl(run("range", two.path, "-s", "1", "--step", "5", "--limit", "2", "-f", "jsonl"))] \
        == [0, 5]


def test_several_sessions_in_one_query(two):
    assert len(jsonl(run("range", two.path, "-s", "all", "-f", "jsonl"))) == 20 + 12 + 3
    assert len(jsonl(run("range", two.path, "-s", "1,3", "-f", "jsonl"))) == 23
    assert len(jsonl(run("range", two.path, "-s", "2-3", "-f", "jsonl"))) == 15
    assert len(jsonl(run("range", two.path, "-s", "1-99", "-f", "jsonl"))) == 35  # spans skip ids not held
    assert jsonl(run("range", two.path, "-s", "-1", "-f", "jsonl")) == [[i, f"line {i}"] for i in range(3)]
    result = run("range", two.path, "-s", "7")
    assert result.exit_code == 1 and "has no session 7" in result.stderr


def test_where_on_dict_records(two):
    def ts(*conditions):
        args = [a for c in conditions for a in ("--where", c)]
        return [r["t"] for r in records(run("range", two.path, "-s", "2", *args, "-f", "jsonl"))]

    assert ts("channel=stderr") == [0, 3, 6, 9]
    assert ts("channel!=stdout") == [0, 3, 6, 9]
    assert ts("t>8") == [9, 10, 11]
    assert ts("t>=8", "t<10") == [8, 9]
    assert ts("rate<=2000") == [0, 1, 2]
    assert ts("meta.n=4") == [4]
    assert ts("missing=1") == []
    assert ts("t>abc") == []  # a number and text do not compare: no match, no error
    assert ts("channel>stdiz") == [1, 2, 4, 5, 7, 8, 10, 11]  # text compares as text


def test_where_on_tuple_items_and_every_session(two):
    result = run("range", two.path, "-s", "all", "--where", "1=line 2", "-f", "jsonl")
    assert jsonl(result) == [{"session": 3, "record": [2, "line 2"]}]


def test_fields(two):
    got = records(run("range", two.path, "-s", "2", "--fields", "t,meta.n,nope", "--limit", "2", "-f", "jsonl"))
    assert got == [{"t": 0, "meta.n": 0, "nope": None}, {"t": 1, "meta.n": 1, "nope": None}]
    assert jsonl(run("range", two.path, "-s", "3", "--fields", "1", "-f", "jsonl")) == [["line 0"], ["line 1"],
                                                                                       ["line 2"]]


# -- the library ---------------------------------------------------------------

def test_select_sessions(two):
    with Log(two.path, readonly=True) as log:
        assert [s.id for s in select_sessions(log)] == [3]
        assert [s.id for s in select_sessions(log, "all")] == [1, 2, 3]
        assert [s.id for s in select_sessions(log, "3, 1")] == [1, 3]
        assert [s.id for s in select_sessions(log, "-2")] == [2]
        with pytest.raises(SessionNotFound):
            select_sessions(log, "4")
        with pytest.raises(QueryError):
            select_sessions(log, "2-1")


def test_rows_carry_session_key_and_arrival_time(two):
    with Log(two.path, readonly=True) as log:
        found = list(rows(select_sessions(log, "1"), since=two.middle, limit=2))
    assert [(r.session, r.key, r.record) for r in found] == [(1, 10, (10, "late 10")), (1, 11, (11, "late 11"))]
    assert all(r.time > two.middle and isinstance(r.arrival_us, int) for r in found)


def test_where_and_pick_fields_directly():
    assert Where("a=3")({"a": 3}) and Where("a=3")({"a": "3"}) and not Where("a=3")({"a": 4})
    assert Where("a<1.5")({"a": 1}) and not Where("a<1.5")({"b": 1}) and not Where("a<1")("text record")
    assert Where('a="x"')({"a": "x"}) and Where("0=0x")((b"0x", 1))
    assert pick_fields({"a": 1, "b": 2}, ["b"]) == {"b": 2} and pick_fields((1, 2, 3), ["2", "0"]) == (3, 1)
    assert pick_fields("text", ["a"]) == "text"
    with pytest.raises(QueryError):
        Where("=3")


# -- keys and times beside the records ---------------------------------------------


def test_keys_and_times_in_text_csv_and_jsonl(two):
    text = run("range", two.path, "-s", "1", "10", "11", "--keys", "--times", "--utc").stdout.splitlines()
    assert [line.split("\t")[0] for line in text] == ["10", "11"]
    assert all(line.split("\t")[1].endswith("Z") and line.split("\t")[2].startswith("(1") for line in text)
    arrival = parse_time(text[0].split("\t")[1])
    assert arrival > two.middle  # the arrival time printed is the record's own
    rows = list(csv.DictReader(io.StringIO(run("range", two.path, "-s", "1", "--limit", "2", "-k", "-t", "-f",
                                               "csv").stdout)))
    assert list(rows[0]) == ["key", "time", "value0", "value1"]
    assert [r["key"] for r in rows] == ["0", "1"] and parse_time(rows[0]["time"]) < two.middle
    lines = jsonl(run("range", two.path, "-s", "1", "--limit", "1", "-k", "-t", "-f", "jsonl"))
    assert list(lines[0]) == ["key", "time", "record"] and lines[0]["record"] == [0, "early 0"]
    assert jsonl(run("range", two.path, "-s", "1", "--limit", "1", "-f", "jsonl")) == [[0, "early 0"]]  # unchanged


def test_several_sessions_get_a_session_column(two):
    lines = jsonl(run("range", two.path, "-s", "1,3", "--where", "0<1", "-f", "jsonl"))
    assert lines == [{"session": 1, "record": [0, "early 0"]}, {"session": 3, "record": [0, "line 0"]}]
    text = run("range", two.path, "-s", "all", "--limit", "1", "-k").stdout
    assert text == "1\t0\t(0, 'early 0')\n"


def test_a_record_field_named_like_a_label_keeps_its_own_column(two):
    rows = list(csv.DictReader(io.StringIO(run("range", two.path, "-s", "2", "--limit", "1", "-k", "-t",
                                               "-f", "csv").stdout)))
    assert rows[0]["key"] == "0" and rows[0]["t"] == "0"
    assert list(rows[0]) == ["key", "time", "t", "channel", "rate", "meta"]
    with_time_field = list(csv.DictReader(io.StringIO(run("range", two.path, "-s", "2", "--limit", "1", "-t",
                                                          "--fields", "t,channel", "-f", "csv").stdout)))
    assert list(with_time_field[0]) == ["time", "t", "channel"]


def test_head_and_tail_with_keys_and_times(two):
    head = run("head", two.path, "-s", "1", "-n", "2", "-k", "-t").stdout.splitlines()
    tail = run("tail", two.path, "-s", "1", "-n", "2", "-k", "-t").stdout.splitlines()
    assert [line.split("\t")[0] for line in head] == ["0", "1"]
    assert [line.split("\t")[0] for line in tail] == ["18", "19"]
    assert parse_time(head[0].split("\t")[1]) < two.middle < parse_time(tail[0].split("\t")[1])
    assert run("tail", two.path, "-s", "1", "-n", "50", "-k").stdout.count("\n") == 20


class TimeKeyedGate(Gate):
    """A Gate whose info says its keys are times (µs since the epoch)."""

    info = {"key_kind": "timestamp_us"}


def test_time_keys_print_as_iso_beside_the_record(tmp_path):
    path = str(tmp_path / "t.streamlog")
    items = queue.Queue()
    with StreamBuffer(TimeKeyedGate(items), log=path) as buf:
        items.put(ReadBatch([(1_796_151_120_000_000, "a"), (1_796_151_120_500_000, "b")]))
        items.put(StopIteration)
        buf.wait(30)
    lines = jsonl(run("range", path, "--keys", "--utc", "-f", "jsonl"))
    assert [line["key"] for line in lines] == ["2026-12-01T18:52:00.000000Z", "2026-12-01T18:52:00.500000Z"]
    back = run("range", path, lines[1]["key"], "-f", "jsonl")  # a printed key reads back as the same key
    assert [r[1] for r in jsonl(back)] == ["b"]


def test_export_with_since_keys_and_times(two, tmp_path):
    out = tmp_path / "late.csv"
    result = run("export", two.path, "-s", "1", "-o", out, "--since", repr(two.middle), "-k", "-t")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["key"] for r in rows] == [str(i) for i in range(10, 20)] and all(r["time"] for r in rows)
    assert "Wrote 10 record(s)" in result.stderr
    usage_error(run("export", two.path, "-s", "1", "-o", tmp_path / "x.npy", "--since", "-1h"),
                "apply to jsonl and csv exports, not npy")


def test_csv_spreads_fixed_shape_arrays_over_indexed_columns(tmp_path):
    path = str(tmp_path / "a.streamlog")
    items = queue.Queue()
    with StreamBuffer(Gate(items), log=path) as buf:
        items.put(ReadBatch([(i, np.arange(6, dtype=np.int16).reshape(2, 3) + i) for i in range(3)]))
        items.put(StopIteration)
        buf.wait(30)
    rows = list(csv.DictReader(io.StringIO(run("range", path, "-f", "csv").stdout)))
    assert list(rows[0]) == ["value0"] + [f"value1[{i}][{j}]" for i in range(2) for j in range(3)]
    assert [int(rows[2][f"value1[1][{j}]"]) for j in range(3)] == [5, 6, 7]


def test_labels_and_record_fields_of_one_name_stay_apart():
    out = io.BytesIO()
    write_records([Labelled({"key": 1, "time": "T"}, {"key": 9, "a": 2})], "csv", out)
    assert out.getvalue().decode().splitlines() == ["key,time,record.key,a", "1,T,9,2"]
    out = io.BytesIO()
    write_records([Labelled({"key": 1}, {"key": 9})], "jsonl", out)
    assert json.loads(out.getvalue()) == {"key": 1, "record": {"key": 9}}
