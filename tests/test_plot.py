"""Pictures of sessions: rendered PNGs of an audio session with markers and
a gap (through the ALSA file device) and of a multi-stream session, checked
for their size, one panel per stream, and ink in every panel."""

import threading

import numpy as np
import pytest

import streamlog
from streamlog import ReadBatch, SourceReader, StreamBuffer
from streamlog.sources.markers import markers_beside
from streamlog.sources.synth import SynthSource
from audio_helpers import DEADLINE_S, LosesOneBuffer

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402


def ink(png, figure, ax):
    """The fraction of pixels inside ``ax`` (its frame excluded) that are not white."""
    image = imread(png)[:, :, :3]
    height = image.shape[0]
    box = ax.get_window_extent()
    x0, x1 = int(box.x0) + 3, int(box.x1) - 3
    y0, y1 = height - int(box.y1) + 3, height - int(box.y0) - 3
    inside = image[y0:y1, x0:x1]
    return float(np.mean(np.any(inside < 0.95, axis=2)))


def panels(figure):
    """The (values, rate strip) axes pairs of a figure, top to bottom (a
    second y axis, made after the panel it shares, is left out)."""
    by_place = {}
    for ax in figure.axes:
        by_place.setdefault(tuple(np.round(ax.get_position().bounds, 4)), ax)
    axes = sorted(by_place.values(), key=lambda a: -a.get_position().y0)
    return list(zip(axes[0::2], axes[1::2]))


class HeldLosingAudio(LosesOneBuffer):
    """LosesOneBuffer that hands nothing over until ``release`` is set."""

    def __init__(self, release, lost, **kwargs):
        super().__init__(lost, **kwargs)
        self.release = release

    def read(self):
        return super().read() if self.release.is_set() else None


def test_picture_of_an_audio_session_with_markers_and_a_gap(alsa_file_input, lab_log, tmp_path):
    rate, fpb, buffers = 8000, 500, 40
    n = np.arange(fpb * (buffers + 1))
    alsa_file_input((12_000 * np.sin(2 * np.pi * 440 * n / rate) * (1 + n / len(n))).astype(np.int16).reshape(-1, 1))
    release = threading.Event()
    source = HeldLosingAudio(release, 12, rate=rate, channels=1, frames_per_buffer=fpb, max_frames=fpb * buffers)
    with StreamBuffer(source, log=lab_log) as audio:
        with markers_beside(audio) as markers:
            release.set()
            first = audio.mk_reader().read(timeout=DEADLINE_S)[0]
            for label, at in (("tone on", 0.4), ("tone off", 1.6)):
                markers.mark(label, t=first / 1e6 + at)
        assert audio.wait(DEADLINE_S)
        session = audio.session.refresh()
    png = tmp_path / "audio.png"
    figure = session.plot(png)
    assert imread(png).shape[:2] == (int(figure.get_figheight() * figure.dpi), 1400)
    (values, rate_strip), = panels(figure)
    assert values.get_ylabel() == "main"
    assert ink(png, figure, values) > 0.05 and ink(png, figure, rate_strip) > 0.02
    texts = [t.get_text() for t in values.texts]
    assert " tone on" in texts and " tone off" in texts
    assert any("waveform envelope" in t or "values" in t for t in texts)
    gap_start = (first + round(12 * fpb * 1e6 / rate)) / 1e6 - session.start_time
    spans = [p for p in values.patches if p.get_facecolor()[0] > 0.8 and p.get_facecolor()[1] < 0.3]
    assert any(abs(p.get_x() - gap_start) < 1e-3 for p in spans)          # the lost buffer, shaded
    assert figure._suptitle.get_text().startswith(f"session {session.id} · closed · started ")


class Climate(SourceReader):
    """60 dict records ``{"n", "temp", "air": {"rh"}}``."""

    def open(self):
        self.n = 0

    def read(self):
        if self.n >= 60:
            raise StopIteration
        self.n += 1
        return {"n": self.n, "temp": 20 + np.sin(self.n / 5), "air": {"rh": 40 + self.n % 7}}

    def close(self):
        pass

    def key(self, data):
        return data["n"]


class Lines(SourceReader):
    def open(self):
        self.n = 0

    def read(self):
        if self.n >= 25:
            raise StopIteration
        self.n += 1
        return ReadBatch([f"line {self.n}"])

    def close(self):
        pass

    def key(self, data):
        return int(data.split()[1])


class HeldSynth(SynthSource):
    """SynthSource that hands nothing over until ``release`` is set."""

    def __init__(self, release, **kwargs):
        super().__init__(**kwargs)
        self.release = release

    def read(self):
        return super().read() if self.release.is_set() else None


def test_picture_of_a_multi_stream_session_has_a_panel_with_ink_per_stream(lab_log, tmp_path):
    release = threading.Event()
    with StreamBuffer(HeldSynth(release, rate_hz=4000, channels=2, block=100, count=40),
                      log=lab_log, labels={"subject": "S01"}) as synth:
        for source, name in ((Climate(), "climate"), (Lines(), "log")):
            with StreamBuffer(source, log=lab_log, session=synth.session, stream=name) as other:
                assert other.wait(DEADLINE_S)
        with markers_beside(synth) as markers:
            markers.mark("stimulus")
        release.set()
        assert synth.wait(DEADLINE_S)
        session = synth.session.refresh()
    png = tmp_path / "multi.png"
    figure = session.plot(png)
    rows = panels(figure)
    assert [ax.get_ylabel() for ax, _ in rows] == ["main", "climate", "log"]
    for ax, strip in rows:
        assert ink(png, figure, ax) > 0.01, ax.get_ylabel()
        assert ink(png, figure, strip) > 0.01, ax.get_ylabel()
    assert "min/max envelope, 4,000 points" in [t.get_text() for t in rows[0][0].texts]
    climate = [ax for ax in figure.axes if ax.get_position().bounds == rows[1][0].get_position().bounds]
    assert [ln.get_label() for ax in climate for ln in ax.lines if ln.get_label()[0] != "_"] == ["temp", "air.rh"]
    assert len(climate) == 2  # 20..21 degrees and 40..46 %: each on a y axis of its own
    assert "subject=S01" in figure._suptitle.get_text()
    zoomed = session.plot(tmp_path / "zoom.png", start=session.start_time, stop=session.start_time + 0.001,
                          streams=["main"])
    assert "showing" in zoomed._suptitle.get_text()


def test_a_failed_session_is_shaded_from_its_last_record(lab_log, tmp_path):
    class Fails(Climate):
        def read(self):
            if self.n == 20:
                raise OSError("sensor unplugged")
            return super().read()

    with StreamBuffer(Fails(), log=lab_log) as buf:
        buf.wait(DEADLINE_S)
        session = buf.session
    session.refresh()
    figure = session.plot(tmp_path / "failed.png")
    (values, _), = panels(figure)
    assert any(t.get_text().startswith("failed: read() failed: OSError: sensor unplugged") for t in values.texts)


KILLED_AFTER_RECORDING = """
import os, signal, sys
import streamlog
from streamlog.sources.synth import SynthSource

with streamlog.StreamBuffer(SynthSource(rate_hz=1000, channels=1, block=50, count=None, realtime=False),
                            log=sys.argv[1]) as buf:
    while buf.committed < 200:
        buf.wait(0.01)
    os.kill(os.getpid(), signal.SIGKILL)   # a crash: the session stays live on disk
"""


def test_a_crashed_session_is_shaded_from_its_last_record(tmp_path):
    from helpers import run_python

    path = tmp_path / "crashed.log"
    assert run_python(KILLED_AFTER_RECORDING, path, check=False, timeout=DEADLINE_S).returncode == -9
    with streamlog.Log(path, readonly=True) as log:
        session = log.session(-1)
        assert session.status == "crashed" and session.count >= 200
        figure = session.plot(tmp_path / "crashed.png")
    (values, _), = panels(figure)
    assert "crashed: records end here " in [t.get_text() for t in values.texts]
    assert ink(tmp_path / "crashed.png", figure, values) > 0.02
