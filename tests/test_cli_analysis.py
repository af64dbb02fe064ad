"""``streamlog export`` to Parquet/Arrow/Feather (and npy of audio) and ``streamlog plot``,
through CliRunner and a subprocess, read back with pandas and pyarrow."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import streamlog
from streamlog.cli import main
from streamlog.sources.audio import PyAudioSourceReader
from streamlog.sources.synth import SynthSource, synth_block
from audio_helpers import ramp, record

pd = pytest.importorskip("pandas")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")
pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def synth_log(tmp_path):
    path = tmp_path / "synth.streamlog"
    with streamlog.Log(path) as log:
        record(SynthSource(rate_hz=1000, channels=2, block=100, count=25, realtime=False), log)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".feather"])
def test_export_to_arrow_formats_reads_back(synth_log, tmp_path, suffix):
    out = tmp_path / f"take{suffix}"
    result = invoke("export", synth_log, "-o", out)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out) if suffix == ".parquet" else pa.ipc.open_file(out).read_all()
    assert table.column("key").to_pylist() == list(range(25))
    meta = json.loads(table.schema.metadata[b"streamlog"])
    assert meta["info"]["source"] == "synth" and meta["stream"] == "main"
    first = np.asarray(table.column("value")[0].as_py(), np.float32).reshape(100, 2)
    assert np.array_equal(first, synth_block(0, rate_hz=1000, channels=2, block=100, seed=0))
    if suffix == ".parquet":
        assert pd.read_parquet(out)["key"].tolist() == list(range(25))


def test_export_of_a_key_range_to_parquet_from_a_subprocess(synth_log, tmp_path):
    out = tmp_path / "part.parquet"
    done = subprocess.run([sys.executable, "-m", "streamlog", "export", str(synth_log), "-o", str(out),
                           "--start", "5", "--stop", "9"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert pd.read_parquet(out)["key"].tolist() == [5, 6, 7, 8, 9]


def test_npy_export_of_an_audio_session_joins_its_samples(alsa_file_input, tmp_path):
    frames = 256 * 20
    signal = ramp(frames, 2)
    alsa_file_input(signal)
    path = tmp_path / "audio.streamlog"
    with streamlog.Log(path) as log:
        record(PyAudioSourceReader(rate=8000, channels=2, frames_per_buffer=256, max_frames=frames), log)
    result = invoke("export", path, "-o", tmp_path / "take.npy")
    assert result.exit_code == 0, result.output
    assert "Wrote 20 record(s)" in result.stderr
    got = np.load(tmp_path / "take.npy")
    assert got.shape == (frames, 2) and np.array_equal(got, signal)


def test_plot_writes_a_png_and_zooms(synth_log, tmp_path):
    out = tmp_path / "overview.png"
    result = invoke("plot", synth_log, "-o", out)
    assert result.exit_code == 0, result.output
    assert imread(out).shape[1] == 1400
    again = invoke("plot", synth_log, "-o", out)
    assert again.exit_code == 1 and "exists" in again.output
    zoom = subprocess.run([sys.executable, "-m", "streamlog", "plot", str(synth_log), "-o", str(out), "--force",
                           "--start", "0.5", "--stop", "1.5", "--width", "800"], capture_output=True, text=True,
                          timeout=120)
    assert zoom.returncode == 0, zoom.stderr
    assert imread(out).shape[1] == 800


def test_plot_refuses_a_reversed_zoom_and_a_missing_stream(synth_log, tmp_path):
    reversed_ = invoke("plot", synth_log, "-o", tmp_path / "x.png", "--start", "2", "--stop", "1")
    assert reversed_.exit_code == 2 and "must be after" in reversed_.output
    missing = invoke("plot", synth_log, "-o", tmp_path / "x.png", "--stream", "eeg")
    assert missing.exit_code == 1 and "no stream 'eeg'" in missing.output
    assert not (tmp_path / "x.png").exists()
