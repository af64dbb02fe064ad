"""Audio sources: a PyAudio input stream and a WAV file, recorded buffer by buffer.

Both sources produce records of one layout, a plain tuple::

    (t_us, samples, frames, status)

* ``t_us`` -- int, microseconds since the epoch of the buffer's first
  sample; it is the record's key.
* ``samples`` -- a numpy array of shape ``(frames, channels)`` and the
  session's dtype (see :data:`SAMPLE_FORMATS`), or ``None`` in a *gap
  record*: frames the device captured but that never reached the source
  (an input overflow).
* ``frames`` -- the number of frames in the buffer, or lost in the gap.
* ``status`` -- the PortAudio status flags of the callback that delivered
  the buffer (``0`` from a WAV file); a gap record carries the flags of the
  buffer that reported the overflow (``paInputOverflow`` = 2 is set).

Timeline: frame ``p`` of a session (counted from its first frame, lost
frames included) is stamped ``AudioTimeline(origin_us, rate).time_us(p)``,
so consecutive records are contiguous to the microsecond and a gap shows in
the keys as well as in its gap record.  Keys follow the audio clock, never
corrected against the host clock, so they never decrease; the PyAudio source
measures the drift of the audio clock against the host clock and stores it
in ``info`` when it closes.
"""

import collections
import math
import numbers
import os
import sys
import tempfile
import threading
import time
import wave
from typing import NamedTuple

import numpy as np

from streamlog.errors import AudioDeviceError, AudioFormatError
from streamlog.source import ReadBatch, SourceReader

PA_INPUT_OVERFLOW = 2  # PortAudio's paInputOverflow status flag
MAX_PYAUDIO_BATCH = 256  # buffers handed over by one PyAudioSourceReader.read(), so a stop is never far off
MAX_WAV_BATCH_FRAMES = 1 << 16  # frames handed over by one WavFileSourceReader.read() at full speed


class SampleFormat(NamedTuple):
    """How one sample is stored: ``width`` bytes as delivered by PortAudio and
    kept in WAV files, ``dtype`` in the recorded numpy arrays."""

    name: str
    width: int
    dtype: str
    portaudio_name: str  # the pyaudio constant, e.g. "paInt16"

    def from_bytes(self, data, channels):
        """The samples in interleaved little-endian ``data`` as an array of
        shape ``(frames, channels)``; 24-bit samples become sign-extended int32."""
        if self.width == 3:
            packed = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            values = packed[:, 0] | (packed[:, 1] << 8) | (packed[:, 2] << 16)
            samples = (values << 8) >> 8
        else:
            samples = np.frombuffer(data, dtype=np.dtype(self.dtype).newbyteorder("<")).astype(self.dtype, copy=False)
        return samples.reshape(-1, channels)

    def to_bytes(self, samples):
        """Interleaved little-endian bytes of ``samples`` (the inverse of :meth:`from_bytes`)."""
        little = np.ascontiguousarray(samples, dtype=np.dtype(self.dtype).newbyteorder("<"))
        if self.width == 3:
            return little.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
        return little.tobytes()


SAMPLE_FORMATS = {
    f.name: f
    for f in (
        SampleFormat("uint8", 1, "uint8", "paUInt8"),   # unsigned, 128 is silence (WAV's 8-bit format)
        SampleFormat("int8", 1, "int8", "paInt8"),
        SampleFormat("int16", 2, "int16", "paInt16"),
        SampleFormat("int24", 3, "int32", "paInt24"),   # packed 3-byte samples, int32 in arrays
        SampleFormat("int32", 4, "int32", "paInt32"),
        SampleFormat("float32", 4, "float32", "paFloat32"),
    )
}
DEFAULT_FORMAT_OF_WIDTH = {1: "uint8", 2: "int16", 3: "int24", 4: "int32"}


def resolve_sample_format(width, name=None):
    """The :class:`SampleFormat` for ``width`` bytes per sample, or the one
    called ``name`` (which must have that width); raises AudioFormatError."""
    if name is None:
        if width not in DEFAULT_FORMAT_OF_WIDTH:
            raise AudioFormatError(f"sample width must be 1, 2, 3 or 4 bytes, got {width!r}")
        return SAMPLE_FORMATS[DEFAULT_FORMAT_OF_WIDTH[width]]
    if name not in SAMPLE_FORMATS:
        raise AudioFormatError(f"unknown sample format {name!r}; known: {', '.join(SAMPLE_FORMATS)}")
    fmt = SAMPLE_FORMATS[name]
    if width is not None and width != fmt.width:
        raise AudioFormatError(f"sample format {name!r} is {fmt.width} byte(s) wide, not width={width!r}")
    return fmt


class AudioTimeline:
    """Frame positions <-> microsecond timestamps of one recording.

    Frame ``p`` is at ``origin_us + p * 1e6 / rate`` microseconds, rounded to
    the nearest integer by :meth:`time_us`; :meth:`position` inverts that
    exactly for rates up to 1 MHz.
    """

    def __init__(self, origin_us, rate):
        self.origin_us = int(origin_us)
        self.rate = int(rate)

    def time_us(self, position):
        """The timestamp (int µs) of frame ``position``."""
        return self.origin_us + (2 * position * 1_000_000 + self.rate) // (2 * self.rate)

    def position(self, t_us):
        """The frame stamped ``t_us`` (the nearest frame for other times)."""
        return (2 * (t_us - self.origin_us) * self.rate + 1_000_000) // 2_000_000

    def first_position_at_or_after(self, t_us):
        """The first frame whose timestamp :meth:`time_us` is >= ``t_us``, so a
        record's key gives that record's first frame (the frame's exact time
        may lie up to half a microsecond before its timestamp)."""
        return -(-(2 * (t_us - self.origin_us) - 1) * self.rate // 2_000_000)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise AudioFormatError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def import_pyaudio():
    """The ``pyaudio`` module, or AudioDeviceError saying how to install it."""
    try:
        import pyaudio
    except ImportError as exc:
        raise AudioDeviceError(
            "PyAudio is not installed: pip install 'streamlog[audio]' "
            "(it builds against PortAudio: apt-get install portaudio19-dev)") from exc
    return pyaudio


def open_portaudio(pyaudio, noise=None):
    """``pyaudio.PyAudio()`` with what the C libraries beneath it (ALSA, JACK)
    print to file descriptor 2 while they probe devices captured: written to
    the text stream ``noise`` if given, else dropped.  Python's own stderr is
    untouched before and after."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            audio = pyaudio.PyAudio()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if noise is not None:
            captured.seek(0)
            noise.write(captured.read().decode(errors="replace"))
    return audio


def input_devices(noise=None):
    """A list of ``{"index", "name", "max_input_channels", "default_sample_rate",
    "default": bool}`` for every PortAudio device with input channels.  What
    PortAudio's libraries print while probing goes to the text stream
    ``noise``, or nowhere (see :func:`open_portaudio`)."""
    pyaudio = import_pyaudio()
    audio = open_portaudio(pyaudio, noise)
    try:
        try:
            default_index = audio.get_default_input_device_info()["index"]
        except OSError:
            default_index = None
        devices = []
        for index in range(audio.get_device_count()):
            dev = audio.get_device_info_by_index(index)
            if dev["maxInputChannels"] > 0:
                devices.append({
                    "index": index,
                    "name": dev["name"],
                    "max_input_channels": dev["maxInputChannels"],
                    "default_sample_rate": dev["defaultSampleRate"],
                    "default": index == default_index,
                })
        return devices
    finally:
        audio.terminate()


class PyAudioSourceReader(SourceReader):
    """One record per buffer of a PyAudio input stream (layout: module docstring).

    * ``rate`` (Hz), ``channels``, ``frames_per_buffer``: the stream format.
    * ``width``: bytes per sample; 1 -> uint8 (PortAudio's ``paUInt8``, the
      WAV convention), 2 -> int16, 3 -> packed 24-bit delivered as
      sign-extended int32, 4 -> int32.  ``sample_format`` picks another
      format of that width by name ("int8", "float32"); see SAMPLE_FORMATS.
    * ``input_device_index``: a PortAudio device index; None is the default
      input device.
    * ``max_frames``: end the session (StopIteration) after exactly this many
      frames; None records until stopped.

    The constructor checks the format against the device and raises
    AudioDeviceError when there is no input device or the device does not
    support it (AudioFormatError for invalid arguments).

    PortAudio hands each buffer to a callback that only appends it to an
    unbounded queue; :meth:`read` turns everything queued into records, so
    the source never drops a buffer itself, even from a device faster than
    real time.  A buffer flagged ``paInputOverflow`` is preceded by a gap
    record for the frames lost before it, counted from the jump of the
    device's ADC timestamps (zero frames when the jump is not measurable),
    and the timeline skips them.  Timestamps are anchored to the host clock
    at the first buffer and extrapolated from the frame count.
    """

    def __init__(self, rate=44100, width=2, channels=1, frames_per_buffer=1024, input_device_index=None, *,
                 sample_format=None, max_frames=None):
        self.rate = _check_positive_int("rate", rate)
        self.channels = _check_positive_int("channels", channels)
        self.frames_per_buffer = _check_positive_int("frames_per_buffer", frames_per_buffer)
        self.max_frames = None if max_frames is None else _check_positive_int("max_frames", max_frames)
        self.format = resolve_sample_format(width, sample_format)
        self.sleep_time_on_read_none_s = min(0.01, self.frames_per_buffer / self.rate / 2)
        self.drain_on_stop = True  # keep the buffers already captured when the StreamBuffer stops
        self.device_index, self.device_name = self._checked_device(input_device_index)
        self._audio = None
        self._stream = None
        self._finish_requested = False
        self._reset_counters()

    def _reset_counters(self):
        self._pending = collections.deque()  # (in_data, frame_count, time_info, status), unbounded
        self._complete = threading.Event()
        self._delivered = 0        # frames handed to the callback
        self._position = 0         # timeline position of the next frame (lost frames included)
        self._timeline = None
        self._anchor_wall_s = None
        self._first_capture_s = None
        self._last_capture_s = None
        self._last_frames = 0
        self._overflows = 0
        self._frames_lost = 0
        self._drift_s = None
        self._drift_span_s = 0.0  # audio time over which the drift was measured

    def _checked_device(self, index):
        pyaudio = import_pyaudio()
        audio = open_portaudio(pyaudio)
        try:
            if index is None:
                try:
                    dev = audio.get_default_input_device_info()
                except OSError as exc:
                    raise AudioDeviceError("no input device: PortAudio reports no default input device") from exc
            else:
                if isinstance(index, bool) or not isinstance(index, numbers.Integral) \
                        or not 0 <= index < audio.get_device_count():
                    raise AudioDeviceError(
                        f"no audio device with index {index!r} ({audio.get_device_count()} device(s) present)")
                dev = audio.get_device_info_by_index(int(index))
                if dev["maxInputChannels"] < 1:
                    raise AudioDeviceError(f"audio device {index} ({dev['name']!r}) has no input channels")
            try:
                audio.is_format_supported(self.rate, input_device=dev["index"], input_channels=self.channels,
                                          input_format=getattr(pyaudio, self.format.portaudio_name))
            except ValueError as exc:
                reason = exc.args[0] if exc.args else str(exc)
                raise AudioDeviceError(
                    f"input device {dev['index']} ({dev['name']!r}) does not support {self.rate} Hz, "
                    f"{self.channels} channel(s), {self.format.name} samples: {reason}") from exc
            return dev["index"], dev["name"]
        finally:
            audio.terminate()

    def open(self):
        """Open and start the input stream (raises AudioDeviceError if PortAudio refuses)."""
        pyaudio = import_pyaudio()
        self._reset_counters()
        self._pa_continue, self._pa_complete = pyaudio.paContinue, pyaudio.paComplete
        self._audio = open_portaudio(pyaudio)
        try:
            self._stream = self._audio.open(
                rate=self.rate, channels=self.channels, format=getattr(pyaudio, self.format.portaudio_name),
                input=True, input_device_index=self.device_index, frames_per_buffer=self.frames_per_buffer,
                stream_callback=self._on_input, start=False)
            self._stream.start_stream()
        except (OSError, ValueError) as exc:
            self.close()
            raise AudioDeviceError(
                f"could not open input device {self.device_index} ({self.device_name!r}): {exc}") from exc

    def _on_input(self, in_data, frame_count, time_info, status):
        """PortAudio's callback (its own thread): queue the buffer, nothing more."""
        if self._first_capture_s is None:
            self._anchor_wall_s = time.time() - _capture_delay_s(time_info)
            self._first_capture_s = _capture_time_s(time_info)
        self._pending.append((in_data, frame_count, time_info, status))
        self._delivered += frame_count
        if self._finish_requested or (self.max_frames is not None and self._delivered >= self.max_frames):
            self._complete.set()
            return None, self._pa_complete
        return None, self._pa_continue

    def finish(self):
        """End the stream after the buffer being captured (callable from any
        thread): :meth:`read` still hands over everything captured, then ends
        the session with StopIteration.  Stopping the StreamBuffer instead
        discards the buffers captured but not yet read."""
        self._finish_requested = True

    def read(self):
        """Return a ReadBatch of the queued buffers' records (at most
        MAX_PYAUDIO_BATCH buffers), ``None`` when nothing is queued,
        StopIteration once the stream completed (``max_frames`` or
        :meth:`finish`) and everything was read; raises AudioDeviceError if
        the stream stopped on its own."""
        if not self._pending:
            if self._complete.is_set():
                raise StopIteration
            if not self._stream.is_active():
                # The stream stops after the callback that completed it queued its buffer.
                if self._pending or self._complete.is_set():
                    return None
                if self._finish_requested:
                    raise StopIteration
                raise AudioDeviceError(f"input stream of device {self.device_index} ({self.device_name!r}) stopped")
            return None
        batch = ReadBatch()
        while self._pending and len(batch) < MAX_PYAUDIO_BATCH:
            batch.extend(self._records_of(*self._pending.popleft()))
        return batch

    def _records_of(self, in_data, frame_count, time_info, status):
        """The gap record (if any) and the buffer record for one callback."""
        if self._timeline is None:
            self._timeline = AudioTimeline(round(self._anchor_wall_s * 1_000_000), self.rate)
        records = []
        capture_s = _capture_time_s(time_info)
        if status & PA_INPUT_OVERFLOW:
            self._overflows += 1
            lost = 0
            if self._last_capture_s is not None:
                expected_s = self._last_capture_s + self._last_frames / self.rate
                lost = max(0, round((capture_s - expected_s) * self.rate))
            records.append((self._timeline.time_us(self._position), None, lost, status))
            self._position += lost
            self._frames_lost += lost
        if self.max_frames is not None:
            frame_count = min(frame_count, self.max_frames - (self._position - self._frames_lost))
            if frame_count <= 0:
                return records
        samples = self.format.from_bytes(in_data[:frame_count * self.channels * self.format.width], self.channels)
        records.append((self._timeline.time_us(self._position), samples, frame_count, status))
        self._drift_span_s = self._position / self.rate
        self._drift_s = (capture_s - self._first_capture_s) - self._drift_span_s
        self._position += frame_count
        self._last_capture_s = capture_s
        self._last_frames = frame_count
        return records

    def close(self):
        """Stop and close the stream and release PortAudio."""
        try:
            if self._stream is not None:
                if not self._stream.is_stopped():
                    self._stream.stop_stream()
                self._stream.close()
        finally:
            self._stream = None
            if self._audio is not None:
                self._audio.terminate()
                self._audio = None

    def key(self, data):
        return data[0]

    @property
    def info(self):
        """The format, the device, ``"key_kind": "timestamp_us"``, and once
        recording: frames recorded and lost, input overflows, and
        ``clock_drift_s`` (how far the audio clock fell behind the host's
        monotonic clock over the session; negative when it ran ahead) with
        ``clock_drift_ppm``."""
        info = {
            "source": "pyaudio",
            "rate": self.rate,
            "width": self.format.width,
            "channels": self.channels,
            "dtype": self.format.dtype,
            "sample_format": self.format.name,
            "frames_per_buffer": self.frames_per_buffer,
            "device_index": self.device_index,
            "device_name": self.device_name,
            "key_kind": "timestamp_us",
            "record_layout": "(t_us, samples, frames, status)",
        }
        if self._timeline is not None:
            info.update(origin_us=self._timeline.origin_us, frames_recorded=self._position - self._frames_lost,
                        frames_lost=self._frames_lost, input_overflows=self._overflows, clock_drift_s=self._drift_s,
                        clock_drift_ppm=self._drift_s / self._drift_span_s * 1e6 if self._drift_span_s else None)
        return info


def _capture_time_s(time_info):
    """PortAudio's time of the buffer's first sample (its ADC time), or the
    host's monotonic clock where the host API reports none."""
    return time_info.get("input_buffer_adc_time") or time.monotonic()


def _capture_delay_s(time_info):
    """How long before the callback the buffer's first sample was captured."""
    adc, now = time_info.get("input_buffer_adc_time"), time_info.get("current_time")
    return max(0.0, now - adc) if adc and now else 0.0


class WavFileSourceReader(SourceReader):
    """The frames of a PCM WAV file as audio records (layout: module docstring).

    ``start_time`` (epoch seconds) stamps the first frame; None takes the
    file's modification time minus its duration (when a recorder wrote its
    last frame).  With ``realtime=False`` buffers come as fast as the recorder
    takes them; with ``realtime=True`` each buffer is released when its last
    frame is due, ``(frames up to it) / rate`` seconds after :meth:`open`.
    The session ends (StopIteration) at the end of the file.  Raises
    FileNotFoundError for a missing file and AudioFormatError for one that is
    not a PCM WAV file.
    """

    def __init__(self, path, *, frames_per_buffer=1024, realtime=False, start_time=None):
        self.path = os.fspath(path)
        self.frames_per_buffer = _check_positive_int("frames_per_buffer", frames_per_buffer)
        self.realtime = bool(realtime)
        with self._open_wave() as wav:
            self.rate = wav.getframerate()
            self.channels = wav.getnchannels()
            self.format = resolve_sample_format(wav.getsampwidth())
            self.nframes = wav.getnframes()
        if start_time is None:
            start_time = os.path.getmtime(self.path) - self.nframes / self.rate
        elif isinstance(start_time, bool) or not isinstance(start_time, numbers.Real) or not math.isfinite(start_time):
            raise AudioFormatError(f"start_time must be epoch seconds (a finite number), got {start_time!r}")
        self.start_time = float(start_time)
        self.timeline = AudioTimeline(round(self.start_time * 1_000_000), self.rate)
        self.sleep_time_on_read_none_s = min(0.01, self.frames_per_buffer / self.rate / 2)
        self.drain_on_stop = True  # keep the buffers already captured when the StreamBuffer stops
        self._wav = None
        self._position = 0
        self._opened_at = None

    def _open_wave(self):
        try:
            return wave.open(self.path, "rb")
        except (wave.Error, EOFError) as exc:
            raise AudioFormatError(f"{self.path}: not a PCM WAV file this code can read ({exc})") from exc

    def open(self):
        self._wav = self._open_wave()
        self._position = 0
        self._opened_at = time.monotonic()

    def read(self):
        """The next buffer (paced: sleeps until it is due), or at full speed a
        ReadBatch of buffers; StopIteration at the end of the file."""
        if self._position >= self.nframes:
            raise StopIteration
        if self.realtime:
            frames = min(self.frames_per_buffer, self.nframes - self._position)
            due = self._opened_at + (self._position + frames) / self.rate
            wait_s = due - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
            return self._next_record(frames)
        batch = ReadBatch()
        while self._position < self.nframes and len(batch) * self.frames_per_buffer < MAX_WAV_BATCH_FRAMES:
            batch.append(self._next_record(min(self.frames_per_buffer, self.nframes - self._position)))
        return batch

    def _next_record(self, frames):
        data = self._wav.readframes(frames)
        got = len(data) // (self.channels * self.format.width)
        if got < frames:
            raise AudioFormatError(f"{self.path}: file ends after {self._position + got} frames, "
                                   f"its header says {self.nframes}")
        record = (self.timeline.time_us(self._position), self.format.from_bytes(data, self.channels), frames, 0)
        self._position += frames
        return record

    def close(self):
        if self._wav is not None:
            self._wav.close()
            self._wav = None

    def key(self, data):
        return data[0]

    @property
    def info(self):
        return {
            "source": "wav",
            "path": os.path.abspath(self.path),
            "rate": self.rate,
            "width": self.format.width,
            "channels": self.channels,
            "dtype": self.format.dtype,
            "sample_format": self.format.name,
            "frames_per_buffer": self.frames_per_buffer,
            "frames": self.nframes,
            "start_time": self.start_time,
            "origin_us": self.timeline.origin_us,
            "key_kind": "timestamp_us",
            "record_layout": "(t_us, samples, frames, status)",
        }
