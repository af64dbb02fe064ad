"""Helpers shared by the audio tests: test signals and recording a source to its end."""

import numpy as np

from streamlog import StreamBuffer
from streamlog.sources.audio import PA_INPUT_OVERFLOW, PyAudioSourceReader

DEADLINE_S = 30


def ramp(frames, channels, dtype="int16"):
    """Distinct consecutive sample values, wrapping within ``dtype``."""
    info = np.iinfo(dtype)
    span = int(info.max) - int(info.min) + 1
    values = np.arange(frames * channels, dtype=np.int64) % span + int(info.min)
    return values.astype(dtype).reshape(frames, channels)


def record(source, log):
    """Record ``source`` into ``log`` to its end (StopIteration); return the stored session."""
    with StreamBuffer(source, log=log) as buf:
        assert buf.wait(DEADLINE_S), "the recording did not end"
        session = buf.session
    return session.refresh()


class HeldUntil(PyAudioSourceReader):
    """Hands no buffer over until ``release`` is set (the device keeps
    capturing into the source's queue), so the session stays live."""

    def __init__(self, release, **kwargs):
        super().__init__(**kwargs)
        self.release = release

    def read(self):
        return super().read() if self.release.is_set() else None


class LosesOneBuffer(PyAudioSourceReader):
    """A real-time device model over the file device: the ADC clock advances
    with every captured frame; buffer ``lost`` never reaches the source and
    the next one is flagged paInputOverflow (see test_audio_source.py)."""

    def __init__(self, lost, **kwargs):
        super().__init__(**kwargs)
        self.lost = lost
        self.captured = 0

    def _on_input(self, in_data, frame_count, time_info, status):
        index = self.captured // self.frames_per_buffer
        adc = 1000.0 + self.captured / self.rate
        self.captured += frame_count
        time_info = {**time_info, "input_buffer_adc_time": adc, "current_time": adc}
        if index == self.lost:
            import pyaudio
            return None, pyaudio.paContinue
        if index == self.lost + 1:
            status |= PA_INPUT_OVERFLOW
        return super()._on_input(in_data, frame_count, time_info, status)
