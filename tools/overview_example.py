#!/usr/bin/env python
"""Record a small lab session in real time and draw its overview: the
picture in docs/overview.png (``python tools/overview_example.py docs/overview.png``).

The session (about 30 s): audio from a WAV file played in real time (tone
bursts on a noise floor, 16 kHz mono), event markers at the bursts, a
"climate" stream of dict records once every 0.2 s with a pause in the
middle, and a "log" stream of text lines.
"""

import os
import sys
import tempfile
import threading
import time
import wave

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import streamlog  # noqa: E402
from streamlog import SourceReader, StreamBuffer  # noqa: E402
from streamlog.sources.audio import WavFileSourceReader  # noqa: E402
from streamlog.sources.markers import markers_beside  # noqa: E402

RATE = 16_000
SECONDS = 30
BURSTS = [(4.0, 1000), (11.0, 440), (18.5, 2000), (25.0, 660)]  # (start s, Hz), each 2 s long


def write_wav(path):
    t = np.arange(SECONDS * RATE) / RATE
    signal = np.random.default_rng(7).normal(0, 600, len(t))
    for start, hz in BURSTS:
        inside = (t >= start) & (t < start + 2)
        ramp = np.clip(np.minimum(t - start, start + 2 - t) * 20, 0, 1)
        signal += np.where(inside, 12_000 * ramp * np.sin(2 * np.pi * hz * t), 0)
    with wave.open(path, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(np.clip(signal, -32768, 32767).astype("<i2").tobytes())


class Climate(SourceReader):
    """A record every 0.2 s, none from 14 s to 17 s (the sensor paused)."""

    def __init__(self, stop):
        self.stop = stop

    def open(self):
        self.t0 = time.monotonic()
        self.n = 0

    def read(self):
        if self.stop.is_set():
            raise StopIteration
        due = self.t0 + self.n * 0.2
        if time.monotonic() < due:
            return None
        self.n += 1
        if 14 <= due - self.t0 < 17:
            return None
        phase = (due - self.t0) / SECONDS
        return {"n": self.n, "temp_c": 21 + 1.5 * phase + 0.05 * np.sin(self.n), "air": {"rh": 45 - 5 * phase}}

    def close(self):
        pass

    def key(self, data):
        return data["n"]

    sleep_time_on_read_none_s = 0.02


class LogLines(SourceReader):
    def __init__(self, lines):
        self.lines = lines

    def open(self):
        self.t0 = time.monotonic()
        self.i = 0

    def read(self):
        if self.i >= len(self.lines):
            raise StopIteration
        at, text = self.lines[self.i]
        if time.monotonic() < self.t0 + at:
            return None
        self.i += 1
        return (self.i, text)

    def close(self):
        pass

    def key(self, data):
        return data[0]


def main(out):
    with tempfile.TemporaryDirectory() as scratch:
        wav_path = os.path.join(scratch, "take.wav")
        write_wav(wav_path)
        log_path = os.path.join(scratch, "lab.streamlog")
        stop = threading.Event()
        audio_source = WavFileSourceReader(wav_path, frames_per_buffer=1024, realtime=True, start_time=time.time())
        lines = [(1.0, "calibration done"), (3.5, "block 1"), (10.5, "block 2"), (18.0, "block 3"),
                 (24.5, "block 4"), (29.0, "saving")]
        with StreamBuffer(audio_source, log=log_path, labels={"subject": "S01", "task": "tones"}) as audio:
            with StreamBuffer(Climate(stop), log=audio.log, session=audio.session, stream="climate"), \
                    StreamBuffer(LogLines(lines), log=audio.log, session=audio.session, stream="log"), \
                    markers_beside(audio) as markers:
                started = audio_source.start_time
                for start, hz in BURSTS:
                    markers.mark(f"tone {hz} Hz", t=started + start)
                audio.wait(SECONDS + 30)
                stop.set()
        session = streamlog.Log(log_path, readonly=True).session(-1)
        session.plot(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "overview.png")
