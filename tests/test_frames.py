"""Stored sessions into numpy, pandas and Arrow/Parquet, and streams joined
by time, on real recordings: counters, synth blocks, dict records, audio
through the ALSA file device, and an audio clock running 100 ppm fast."""

import json
import sys
import threading

import numpy as np
import pytest

import streamlog
from streamlog import ReadBatch, SourceReader, StreamBuffer, errors
from streamlog.audio import AudioSession
from streamlog.frames import StreamArrays, write_arrow
from streamlog.sources.audio import AudioTimeline, PyAudioSourceReader
from streamlog.sources.markers import markers_beside
from streamlog.sources.synth import SynthSource, synth_block
from audio_helpers import DEADLINE_S, ramp, record

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


class Records(SourceReader):
    """Hands out ``records`` (in ReadBatches of ``batch``) keyed by ``key``."""

    def __init__(self, records, key=lambda r: r[0], batch=100):
        self.records = records
        self._key = key
        self.batch = batch

    def open(self):
        self.i = 0

    def read(self):
        if self.i >= len(self.records):
            raise StopIteration
        chunk = self.records[self.i:self.i + self.batch]
        self.i += len(chunk)
        return ReadBatch(chunk)

    def close(self):
        pass

    def key(self, data):
        return self._key(data)


def counters(n):
    return [(i, i * 0.25 - 3.0) for i in range(n)]


def dicts(n):
    return [{"n": i, "x": i / 8, "name": f"trial {i % 3}", "pos": {"x": i % 5, "y": {"z": -i}}} for i in range(n)]


def test_to_numpy_of_counter_records_gives_the_values_keys_and_arrival_times(lab_log):
    written = counters(5000)
    session = record(Records(written), lab_log)
    got = session.to_numpy()
    assert isinstance(got, StreamArrays)
    assert got.values.dtype == np.float64 and np.array_equal(got.values, [v for _, v in written])
    assert got.keys.dtype == np.int64 and np.array_equal(got.keys, np.arange(5000))
    assert np.array_equal(got.offsets, np.arange(5000))
    entries = list(session.ientries())
    assert [(e.key, e.record) for e in entries] == [(k, (k, v)) for k, v in written]
    assert np.array_equal(got.times_us, [e.arrival_us for e in entries])
    assert np.all(np.diff(got.times_us) >= 0)
    assert session.start_time * 1e6 - 1 <= got.times_us[0] and got.times_us[-1] <= session.stop_time * 1e6 + 1
    part = session.to_numpy(start=100, stop=199)
    assert np.array_equal(part.keys, np.arange(100, 200)) and np.array_equal(part.values, got.values[100:200])


def test_to_numpy_by_arrival_time_selects_the_records_that_arrived_then(lab_log):
    session = record(Records(counters(3000), batch=10), lab_log)
    everything = session.to_numpy()
    t0, t1 = everything.times_us[1000], everything.times_us[2000]
    part = session.to_numpy(start=t0 / 1e6, stop=t1 / 1e6, by="time")
    inside = (everything.times_us >= int(t0 / 1e6 * 1e6)) & (everything.times_us <= int(t1 / 1e6 * 1e6))
    assert len(part.keys) > 0 and np.array_equal(part.keys, everything.keys[inside])
    assert np.array_equal(part.values, everything.values[inside])


def test_to_numpy_of_a_synth_session_concatenates_its_blocks(lab_log):
    source = SynthSource(rate_hz=1000, channels=3, block=50, count=40, realtime=False)
    session = record(source, lab_log)
    got = session.to_numpy()
    expected = np.concatenate([synth_block(i, rate_hz=1000, channels=3, block=50, seed=0) for i in range(40)])
    assert got.values.dtype == np.float32 and got.values.flags.c_contiguous
    assert np.array_equal(got.values, expected)
    assert np.array_equal(got.offsets, np.arange(40) * 50) and np.array_equal(got.keys, np.arange(40))
    stacked = session.to_numpy(layout="stack")
    assert stacked.values.shape == (40, 50, 3) and np.array_equal(stacked.values.reshape(-1, 3), expected)


def test_to_numpy_names_the_first_record_that_does_not_fit(lab_log):
    blocks = [(i, np.full((10, 2), i, np.int16)) for i in range(20)]
    blocks[7] = (7, np.zeros((10, 3), np.int16))
    blocks[9] = (9, np.zeros((10, 2), np.float32))
    session = record(Records(blocks), lab_log)
    with pytest.raises(errors.RecordShapeError, match=r"key 7 does not fit: an array of shape \(10, 3\)"):
        session.to_numpy()
    mixed = record(Records([(0, 1.5), (1, 2.5), (2, "three"), (3, 4.0)]), streamlog.Log(lab_log.path))
    with pytest.raises(errors.RecordShapeError, match="key 2 is not numeric: it holds a str"):
        mixed.to_numpy()
    tuples = record(Records([(i, (i, 2 * i, 3 * i)) for i in range(5)]), streamlog.Log(lab_log.path))
    assert np.array_equal(tuples.to_numpy().values, [[i, 2 * i, 3 * i] for i in range(5)])


def test_to_pandas_spreads_dict_records_into_dotted_columns(lab_log):
    written = dicts(1000)
    session = record(Records(written, key=lambda r: r["n"]), lab_log)
    frame = session.to_pandas()
    assert list(frame.columns) == ["key", "time", "n", "x", "name", "pos.x", "pos.y.z"]
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert frame["key"].tolist() == list(range(1000))
    assert frame["x"].tolist() == [r["x"] for r in written]
    assert frame["name"].tolist() == [r["name"] for r in written]
    assert frame["pos.y.z"].tolist() == [r["pos"]["y"]["z"] for r in written]
    arrivals = [e.arrival_us for e in session.ientries()]
    assert (frame["time"].astype("int64") // 1000).tolist() == arrivals


def test_to_pandas_fills_missing_fields_with_none_and_keeps_arrays_whole(lab_log):
    written = [{"a": 1}, {"a": 2, "b": "x"}, {"b": "y"}]
    session = record(Records(written, key=lambda r: 0), lab_log)
    frame = session.to_pandas()
    assert frame["a"].tolist()[:2] == [1, 2] and pd.isna(frame["a"].tolist()[2])
    assert pd.isna(frame["b"][0]) and frame["b"].tolist()[1:] == ["x", "y"]
    synth = record(SynthSource(rate_hz=100, channels=2, block=10, count=5, realtime=False),
                   streamlog.Log(lab_log.path))
    cells = synth.to_pandas()["value"].tolist()
    assert all(np.array_equal(c, synth_block(i, rate_hz=100, channels=2, block=10, seed=0))
               for i, c in enumerate(cells))


def test_audio_through_the_alsa_file_device_into_numpy_and_pandas(alsa_file_input, lab_log):
    frames = 256 * 40
    signal = ramp(frames, 2)
    alsa_file_input(signal)
    session = record(PyAudioSourceReader(rate=8000, channels=2, frames_per_buffer=256, max_frames=frames), lab_log)
    got = session.to_numpy()
    assert np.array_equal(got.values, signal) and np.array_equal(got.values, AudioSession(session).to_numpy())
    assert np.array_equal(got.offsets, np.arange(40) * 256)
    timeline = AudioTimeline(session.info["origin_us"], 8000)
    assert got.keys.tolist() == [timeline.time_us(256 * i) for i in range(40)]
    frame = session.to_pandas()
    assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == "UTC"
    assert (frame.index.astype("int64") // 1000).tolist() == got.keys.tolist()
    assert list(frame.columns) == ["time", "value"]


def test_arrow_and_parquet_round_trip_with_row_groups_and_session_metadata(lab_log, tmp_path):
    written = dicts(2500)
    session = record(Records(written, key=lambda r: r["n"]), lab_log)
    session.log.close()
    session = streamlog.Log(lab_log.path, readonly=True).session(-1)
    table = session.to_arrow()
    assert table.num_rows == 2500 and table.column("pos.y.z").to_pylist() == [-i for i in range(2500)]
    assert table.schema.field("time").type == pa.timestamp("us", "UTC")
    with open(tmp_path / "take.parquet", "wb") as file:
        assert write_arrow(session, file, "parquet", batch_rows=1000) == 2500
    parquet = pq.ParquetFile(tmp_path / "take.parquet")
    assert parquet.num_row_groups == 3
    meta = json.loads(parquet.schema_arrow.metadata[b"streamlog"])
    assert meta["session"] == session.id and meta["status"] == "closed" and meta["key_types"] == "int"
    assert meta["streams"] == ["main"]
    back = pd.read_parquet(tmp_path / "take.parquet")
    assert back["n"].tolist() == list(range(2500)) and back["name"].tolist() == [r["name"] for r in written]
    assert back["time"].tolist() == session.to_pandas()["time"].tolist()
    for fmt in ("arrow", "feather"):
        with open(tmp_path / f"take.{fmt}", "wb") as file:
            write_arrow(session, file, fmt, batch_rows=700)
        assert pa.ipc.open_file(tmp_path / f"take.{fmt}").read_all().equals(table)
    assert pd.read_feather(tmp_path / "take.feather")["x"].tolist() == [r["x"] for r in written]


def test_arrow_export_of_array_records_keeps_their_samples_and_shape(lab_log, tmp_path):
    session = record(SynthSource(rate_hz=1000, channels=2, block=100, count=30, realtime=False), lab_log)
    with open(tmp_path / "synth.parquet", "wb") as file:
        write_arrow(session, file, "parquet", batch_rows=8)
    table = pq.read_table(tmp_path / "synth.parquet")
    shape = json.loads(table.schema.metadata[b"streamlog.arrays"])["value"]
    assert shape == {"shape": [100, 2], "dtype": "float32"}
    values = np.stack([np.asarray(v, np.float32).reshape(shape["shape"]) for v in table.column("value").to_pylist()])
    assert np.array_equal(values.reshape(-1, 2), session.to_numpy().values)


def test_a_later_record_of_another_type_is_named(lab_log, tmp_path):
    written = [{"v": i} for i in range(30)] + [{"v": "thirty"}]
    session = record(Records(written, key=lambda r: r["v"] if isinstance(r["v"], int) else 30), lab_log)
    with pytest.raises(errors.RecordShapeError, match="key 30.*column 'v' holds a str"):
        with open(tmp_path / "bad.parquet", "wb") as file:
            write_arrow(session, file, "parquet", batch_rows=10)


def test_a_missing_extra_is_named(lab_log, monkeypatch):
    session = record(Records(counters(10)), lab_log)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(errors.MissingExtra, match=r"to_pandas needs pandas.*pip install 'streamlog\[pandas\]'"):
        session.to_pandas()
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(errors.MissingExtra, match=r"streamlog\[arrow\]"):
        session.to_arrow()


RATE = 1000
FAST = 1 + 100e-6  # the audio clock runs 100 ppm fast: RATE * FAST frames per host second
ORIGIN_S = 1_800_000_000.0


class FastClockAudio(SourceReader):
    """Audio records ``(t_us, samples, frames, status)`` stamped on an audio
    clock that runs 100 ppm fast against the host clock; like the PyAudio
    source it measures that drift from the (simulated) host capture times
    and stores ``clock_drift_ppm`` in its info.  Sample ``p`` is ``p % 30000``,
    so a frame tells its own position.  Waits for ``release`` before its
    first buffer, so the markers stream can join first."""

    def __init__(self, frames, release, buffer=1000):
        self.frames, self.buffer, self.release = frames, buffer, release
        self.timeline = AudioTimeline(round(ORIGIN_S * 1e6), RATE)
        self.drift_ppm = None

    def open(self):
        self.position = 0

    def read(self):
        if not self.release.is_set():
            return None
        if self.position >= self.frames:
            raise StopIteration
        batch = ReadBatch()
        for _ in range(100):
            if self.position >= self.frames:
                break
            p = self.position
            samples = (np.arange(p, p + self.buffer) % 30000).astype(np.int16).reshape(-1, 1)
            batch.append((self.timeline.time_us(p), samples, self.buffer, 0))
            capture_s = p / (RATE * FAST)          # host seconds since the first frame
            self.drift_ppm = (capture_s - p / RATE) / (p / RATE) * 1e6 if p else None
            self.position += self.buffer
        return batch

    def close(self):
        pass

    def key(self, data):
        return data[0]

    @property
    def info(self):
        return {"source": "fast-clock", "rate": RATE, "channels": 1, "width": 2, "dtype": "int16",
                "frames_per_buffer": self.buffer, "origin_us": self.timeline.origin_us,
                "key_kind": "timestamp_us", "clock_drift_ppm": self.drift_ppm}


def host_time_of_frame(p):
    return ORIGIN_S + p / (RATE * FAST)


@pytest.fixture
def drifting_session(lab_log):
    """1,000 s of audio on a clock 100 ppm fast, with markers at the host
    times of frames 100_250.5, 500_020.5 and 999_050.5 (labels: the next frame)."""
    release = threading.Event()
    marked = [100_251, 500_021, 999_051]
    with StreamBuffer(FastClockAudio(1_000_000, release), log=lab_log) as audio:
        with markers_beside(audio) as markers:
            for p in marked:
                markers.mark(p, t=host_time_of_frame(p - 0.5))
        release.set()
        assert audio.wait(DEADLINE_S)
        session = audio.session
    return session.refresh(), marked


def test_markers_land_on_the_right_frame_of_a_drifting_audio_clock(drifting_session):
    session, marked = drifting_session
    audio = AudioSession(session)
    assert audio.clock_drift_ppm == pytest.approx(-99.99, abs=0.01)
    clips = list(audio.around_markers(window=(-0.01, 0.01)))
    assert [c.label for c in clips] == marked
    for clip in clips:
        assert clip.samples[clip.offset, 0] == clip.label % 30000   # the frame captured at the marker's time
    uncorrected = AudioTimeline(session.info["origin_us"], RATE).first_position_at_or_after(clips[-1].t_us)
    assert marked[-1] - uncorrected == 100                           # 100 ms off without the correction


def test_join_aligns_markers_with_the_drift_corrected_audio_clock(drifting_session):
    session, marked = drifting_session
    joined = session.join(["markers", "main"], direction="backward")
    assert joined["markers.value"].tolist() == marked
    buffer_of = [session.info["origin_us"] + (p - 1) // 1000 * 1000 * 1000 for p in marked]
    assert joined["main.key"].tolist() == buffer_of
    wall = AudioSession(session).wall_time_us(np.array(buffer_of))
    assert np.all(joined["time"].astype("int64") // 1000 >= wall)
    tight = session.join(["markers", "main"], tolerance=0.0005, direction="nearest")
    assert tight["main.key"].isna().all()   # no buffer starts within 0.5 ms of a marker


def test_join_of_streams_without_time_keys_uses_arrival_times(lab_log):
    release = threading.Event()

    class Ticks(Records):
        def read(self):
            if not release.is_set():
                return None
            return super().read()

    with StreamBuffer(Ticks(counters(200), batch=1), log=lab_log) as ticks:
        with markers_beside(ticks) as markers:
            first = markers.mark("before")
        release.set()
        assert ticks.wait(DEADLINE_S)
        session = ticks.session
    joined = session.refresh().join(["main", "markers"])
    arrivals = np.array([e.arrival_us for e in session.ientries()])
    assert (joined["time"].astype("int64") // 1000).tolist() == sorted(arrivals.tolist())
    assert joined["main.key"].tolist() == list(range(200))
    assert set(joined["markers.value"]) == {"before"} and int(joined["markers.key"][0]) == first
