"""Shared pytest fixtures.

Audio: these machines have no sound card.  ALSA's user-space ``file``
plugin plays a raw PCM file back as a capture device, so PyAudio records
real buffers through PortAudio.  ALSA reads ``ALSA_CONFIG_PATH`` again
whenever it changes, so each test can point it at its own configuration
before it creates a PyAudio object.
"""

import numpy as np
import pytest

import streamlog

# Capture from a raw PCM file, play back into nothing.
FILE_INPUT_ASOUNDRC = """\
pcm.!default {{
    type asym
    playback.pcm {{ type null }}
    capture.pcm "testin"
}}
pcm.testin {{
    type file
    slave.pcm {{ type null }}
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
ctl.!default {{ type hw card 0 }}
"""

# Playback only: PortAudio lists a device without input channels.
NO_INPUT_ASOUNDRC = """\
pcm.!default {
    type asym
    playback.pcm { type null }
}
ctl.!default { type hw card 0 }
"""


@pytest.fixture
def alsa_file_input(tmp_path, monkeypatch):
    """Return ``play(samples, width=None)``: make PortAudio's default input
    device deliver ``samples`` (array of shape (frames, channels)) from the
    start of every stream opened afterwards in this test.

    The samples are written raw, interleaved and little-endian; ``width=3``
    writes int32 samples as packed 24-bit.  Streams must not read past
    ``len(samples)`` frames: beyond the end the device repeats stale data.
    """
    pytest.importorskip("pyaudio", reason="PyAudio is not installed (pip install pyaudio; needs portaudio19-dev)")

    def play(samples, width=None):
        samples = np.ascontiguousarray(samples)
        little = samples.astype(samples.dtype.newbyteorder("<"))
        data = little.view(np.uint8).reshape(-1, 4)[:, :3].tobytes() if width == 3 else little.tobytes()
        infile = tmp_path / "alsa-input.raw"
        infile.write_bytes(data)
        config = tmp_path / "file-input.asoundrc"
        config.write_text(FILE_INPUT_ASOUNDRC.format(infile=infile))
        monkeypatch.setenv("ALSA_CONFIG_PATH", str(config))
        return infile

    return play


@pytest.fixture
def alsa_without_input(tmp_path, monkeypatch):
    """Make ALSA (and so PortAudio) offer no input device in this test."""
    pytest.importorskip("pyaudio", reason="PyAudio is not installed (pip install pyaudio; needs portaudio19-dev)")
    config = tmp_path / "no-input.asoundrc"
    config.write_text(NO_INPUT_ASOUNDRC)
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(config))


@pytest.fixture
def lab_log(tmp_path):
    """A fresh log for one test, closed after it."""
    with streamlog.Log(tmp_path / "lab.log") as log:
        yield log


@pytest.fixture
def processes():
    """Child processes a test starts (append them); any still running at the
    end of the test are killed and reaped."""
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(30)
