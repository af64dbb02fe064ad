"""Stored audio recordings as numpy arrays and WAV files, at sample precision.

An :class:`AudioSession` reads a session recorded by
:class:`~streamlog.sources.audio.PyAudioSourceReader` or
:class:`~streamlog.sources.audio.WavFileSourceReader` (records
``(t_us, samples, frames, status)``, see :mod:`streamlog.sources.audio`)::

    audio = AudioSession(log.session(-1))
    x = audio.to_numpy(t0, t0 + 2.5)          # 2.5 s of samples, shape (frames, channels)
    for t_us, label, samples, offset in audio.around_markers(window=(-0.5, 1.0)):
        ...
    write_wav(audio, sys.stdout.buffer)       # or streamlog.export.export_wav(audio, "take.wav")

Times are epoch seconds (int or float); a time span ``[start, stop)``
holds the frames whose timestamp (``origin + position / rate`` rounded to
the nearest microsecond, as in the records' keys) is at or after ``start``
and before ``stop``, so a record's key as ``start`` gives that record's
first frame; None is the recording's first frame or the end of its last.
Frames missing from the recording (overflow gaps, records lost to a crash
or pruned) are never papered over: reading across them raises
AudioGapError unless ``allow_gaps=True``, which fills them with silence and
lists them as :class:`Gap` entries.
"""

import math
import numbers
import wave
from typing import NamedTuple

import numpy as np

from streamlog import errors
from streamlog.errors import AudioFormatError, AudioGapError
from streamlog.sources.audio import AudioTimeline, resolve_sample_format
from streamlog.sources.markers import MARKERS_STREAM

SILENCE_CHUNK_FRAMES = 1 << 16  # frames of silence written at once for a gap in a WAV export
# A sound card's crystal is off by tens, at most a few hundred ppm; a measured
# "drift" beyond this is a device not paced in real time (ALSA's file plugin
# delivers a file as fast as it is read) or a failed measurement, and is ignored.
MAX_CLOCK_DRIFT_PPM = 1000


class Gap(NamedTuple):
    """Frames missing from a recording: ``frames`` of them from time ``t_us``
    on, at index ``offset`` of the returned samples or written file.  An
    input overflow whose length could not be measured is a gap of 0 frames."""

    t_us: int
    frames: int
    offset: int


class AudioClip(NamedTuple):
    """Samples of a time span: ``samples[i]`` is at ``t_us + i * 1e6 / rate``
    µs; ``gaps`` lists the spans filled with silence."""

    samples: np.ndarray
    t_us: int
    rate: int
    gaps: list


class MarkerClip(NamedTuple):
    """A marker with the samples around it; ``samples[offset]`` is the first
    frame at or after the marker (``offset`` is outside ``samples`` when the
    marker is outside the recording)."""

    t_us: int
    label: object
    samples: np.ndarray
    offset: int


def _time_us(name, t):
    """Epoch seconds -> int µs (None stays None); raises InvalidKey."""
    if t is None:
        return None
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t):
        raise errors.InvalidKey(f"{name} must be epoch seconds (int or float) or None, got {t!r}")
    return round(t * 1_000_000)


class AudioSession:
    """Sample-exact reads of the audio stream ``stream`` of a stored ``session``.

    Raises AudioFormatError if the stream is not an audio recording (its
    session info lacks ``rate``/``channels``/``dtype`` or its keys are not
    ``timestamp_us``), SessionNotFound if it has no such stream.
    """

    def __init__(self, session, stream="main", *, markers_stream=MARKERS_STREAM):
        self.session = session
        self.stream = stream
        self.markers_stream = markers_stream
        session.stream_info(stream)  # SessionNotFound for a missing stream
        info = session.info or {}
        missing = [k for k in ("rate", "channels", "width") if k not in info]
        if missing or info.get("key_kind") != "timestamp_us":
            raise AudioFormatError(
                f"session {session.id} stream {stream!r} is not an audio recording: its info "
                + (f"lacks {', '.join(missing)}" if missing else f"has key_kind {info.get('key_kind')!r}"))
        self.rate = int(info["rate"])
        self.channels = int(info["channels"])
        self.format = resolve_sample_format(int(info["width"]), info.get("sample_format"))
        self.dtype = np.dtype(self.format.dtype)
        self.frames_per_buffer = int(info.get("frames_per_buffer") or 1)
        self._origin_us = info.get("origin_us")
        drift = info.get("clock_drift_ppm")
        plausible = isinstance(drift, (int, float)) and math.isfinite(drift) and abs(drift) <= MAX_CLOCK_DRIFT_PPM
        self.clock_drift_ppm = float(drift) if plausible else 0.0

    def _clock_origin_us(self):
        if self._origin_us is not None:
            return int(self._origin_us)
        try:
            return self.session.head(stream=self.stream)[0]
        except errors.NoItemFound:
            return 0

    def wall_time_us(self, t_us):
        """The host (wall-clock) time of audio-clock time ``t_us`` (an int or
        an int array of keys): the sample clock corrected for the drift the
        source measured (``clock_drift_ppm``, positive when the audio clock
        ran slow), linearly from the first frame.  Without a measured drift,
        or with one beyond ``MAX_CLOCK_DRIFT_PPM`` (not a clock's drift), the
        audio clock is taken as exact (:attr:`clock_drift_ppm` is then 0)."""
        origin = self._clock_origin_us()
        scale = 1 + self.clock_drift_ppm * 1e-6
        if isinstance(t_us, np.ndarray):
            return origin + np.rint((t_us - origin) * scale).astype(np.int64)
        return origin + round((t_us - origin) * scale)

    def audio_time_us(self, wall_us):
        """The audio-clock time of host time ``wall_us`` (the inverse of :meth:`wall_time_us`)."""
        origin = self._clock_origin_us()
        return origin + round((wall_us - origin) / (1 + self.clock_drift_ppm * 1e-6))

    @property
    def silence(self):
        """The sample value of silence: 128 for unsigned 8-bit, else 0."""
        return 128 if self.format.name == "uint8" else 0

    def _timeline_and_end(self):
        """The session's timeline and the position just after its last frame
        (None, 0 for a session without records)."""
        try:
            last = self.session.tail(stream=self.stream)
        except errors.NoItemFound:
            return None, 0
        origin = self._clock_origin_us()
        timeline = AudioTimeline(origin, self.rate)
        return timeline, timeline.position(last[0]) + last[2]

    def _span(self, start_us, stop_us):
        """(timeline, first position, end position) of ``[start_us, stop_us)``, clamped to the recording."""
        timeline, end = self._timeline_and_end()
        if timeline is None:
            return None, 0, 0
        lo = 0 if start_us is None else min(max(timeline.first_position_at_or_after(start_us), 0), end)
        hi = end if stop_us is None else min(max(timeline.first_position_at_or_after(stop_us), lo), end)
        return timeline, lo, hi

    def frame_count(self, start=None, stop=None):
        """How many frames (gaps included) the span ``[start, stop)`` holds."""
        _, lo, hi = self._span(_time_us("start", start), _time_us("stop", stop))
        return hi - lo

    def _pieces(self, timeline, lo, hi):
        """Yield ``(offset, samples, gap)`` in order covering positions
        ``[lo, hi)``: ``samples`` a view of recorded frames, or None with
        ``gap`` a :class:`Gap` (``offset`` is relative to ``lo``).  Reads
        the records lazily, in bounded memory."""
        if timeline is None:
            return
        expected = lo
        first_key = timeline.time_us(max(0, lo - self.frames_per_buffer + 1))
        last_key = timeline.time_us(hi)
        for t_us, samples, frames, _status in self.session.irange(first_key, last_key, stream=self.stream):
            p = timeline.position(t_us)
            if samples is None and frames == 0:
                if lo <= p < hi:
                    yield p - lo, None, Gap(t_us, 0, p - lo)
                continue
            if p >= hi:
                break
            end = p + frames
            if end <= expected:
                continue
            if p > expected:
                yield expected - lo, None, Gap(timeline.time_us(expected), p - expected, expected - lo)
            elif p < expected and expected > lo:
                raise AudioFormatError(
                    f"session {self.session.id} stream {self.stream!r}: the record at {t_us} µs overlaps the "
                    f"frames before it; it was not recorded by streamlog's audio sources")
            a, b = max(p, expected), min(end, hi)
            if samples is None:
                yield a - lo, None, Gap(timeline.time_us(a), b - a, a - lo)
            else:
                yield a - lo, samples[a - p:b - p], None
            expected = b
        if expected < hi:
            yield expected - lo, None, Gap(timeline.time_us(expected), hi - expected, expected - lo)

    def _clip_us(self, start_us, stop_us):
        timeline, lo, hi = self._span(start_us, stop_us)
        samples = np.full((hi - lo, self.channels), self.silence, dtype=self.dtype)
        gaps = []
        for offset, piece, gap in self._pieces(timeline, lo, hi):
            if gap is None:
                samples[offset:offset + len(piece)] = piece
            else:
                gaps.append(gap)
        t_us = timeline.time_us(lo) if timeline is not None else start_us
        return AudioClip(samples, t_us, self.rate, gaps), timeline, lo

    def clip(self, start=None, stop=None):
        """An :class:`AudioClip` of ``[start, stop)``; gaps are filled with
        silence and listed, never raised."""
        return self._clip_us(_time_us("start", start), _time_us("stop", stop))[0]

    def to_numpy(self, start=None, stop=None, *, allow_gaps=False):
        """The samples of ``[start, stop)`` as one contiguous array of shape
        ``(frames, channels)`` and the recording's dtype (24-bit samples as
        int32).  Raises AudioGapError if frames are missing in the span,
        unless ``allow_gaps`` (then they are silence; :meth:`gaps` lists them)."""
        clip = self.clip(start, stop)
        _raise_for_gaps(clip.gaps, allow_gaps, f"session {self.session.id} [{start}, {stop})")
        return clip.samples

    def iter_samples(self, start=None, stop=None, *, allow_gaps=False):
        """Yield the samples of ``[start, stop)`` in order as arrays of shape
        ``(n, channels)`` (what :meth:`to_numpy` joins), in bounded memory.
        Raises AudioGapError at the first missing frame unless
        ``allow_gaps`` (silence in its place, at most SILENCE_CHUNK_FRAMES
        frames an array)."""
        timeline, lo, hi = self._span(_time_us("start", start), _time_us("stop", stop))
        for _, piece, gap in self._pieces(timeline, lo, hi):
            if gap is None:
                yield piece
                continue
            _raise_for_gaps([gap], allow_gaps, f"session {self.session.id} [{start}, {stop})")
            for n in _chunks(gap.frames, SILENCE_CHUNK_FRAMES):
                yield np.full((n, self.channels), self.silence, self.dtype)

    def gaps(self, start=None, stop=None):
        """The :class:`Gap` list of ``[start, stop)``."""
        timeline, lo, hi = self._span(_time_us("start", start), _time_us("stop", stop))
        return [gap for _, _, gap in self._pieces(timeline, lo, hi) if gap is not None]

    def markers(self, start=None, stop=None):
        """The ``(t_us, label)`` markers with ``start <= t <= stop`` (epoch seconds, inclusive)."""
        return self.session.range(_time_us("start", start), _time_us("stop", stop), stream=self.markers_stream)

    def around_markers(self, window=(-0.5, 1.0), *, start=None, stop=None, allow_gaps=False):
        """Yield a :class:`MarkerClip` for each marker of the markers stream
        with ``start <= t <= stop``: the samples of ``[t + window[0], t +
        window[1])`` seconds, cut short where the recording begins or ends.
        Marker times are host-clock times; they are mapped onto the audio
        clock with :meth:`audio_time_us` (the measured drift), so a marker
        lands on the frame captured at its time.  Raises AudioGapError at a
        window with missing frames unless ``allow_gaps``."""
        before, after = window
        if not (isinstance(before, numbers.Real) and isinstance(after, numbers.Real) and before < after):
            raise ValueError(f"window must be (seconds before, seconds after) with before < after, got {window!r}")
        before_us, after_us = round(before * 1_000_000), round(after * 1_000_000)
        for t_us, label in self.session.irange(_time_us("start", start), _time_us("stop", stop),
                                               stream=self.markers_stream):
            audio_t_us = self.audio_time_us(t_us)
            clip, timeline, lo = self._clip_us(audio_t_us + before_us, audio_t_us + after_us)
            _raise_for_gaps(clip.gaps, allow_gaps, f"marker {label!r} at {t_us} µs")
            offset = timeline.first_position_at_or_after(audio_t_us) - lo if timeline is not None else 0
            yield MarkerClip(t_us, label, clip.samples, offset)


def _raise_for_gaps(gaps, allow_gaps, where):
    if gaps and not allow_gaps:
        listed = ", ".join(f"{g.frames} frame(s) at {g.t_us} µs" for g in gaps[:5])
        more = f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""
        raise AudioGapError(gaps, f"{where}: {len(gaps)} gap(s) in the recording: {listed}{more}; "
                                  "pass allow_gaps=True to get silence in their place")


def write_wav(audio, file, start=None, stop=None, *, progress=None, allow_gaps=False):
    """Write the audio of ``[start, stop)`` of the AudioSession ``audio`` as
    a PCM WAV file into the binary file object ``file``, from its position
    on; returns ``(frames, gaps)``.

    Records are streamed in bounded memory, and the frame count is known
    before the first byte, so ``file`` need not be seekable (a pipe works).
    The file holds exactly the recorded sample bytes (int8 recordings are
    written as WAV's unsigned 8-bit, sample + 128).  ``progress(n)`` is
    called after each write with the number of frames just written.  Raises
    AudioGapError at the first missing frame unless ``allow_gaps`` (silence
    in their place, listed in ``gaps``), and AudioFormatError for float32
    recordings (the stdlib ``wave`` module writes integer PCM only).  Where
    the bytes go (a temporary file renamed when complete, ...) is the
    caller's: :func:`streamlog.export.export_wav` writes files.
    """
    if audio.format.name == "float32":
        raise AudioFormatError("float32 audio cannot be written as WAV by the stdlib wave module (integer PCM only)")
    to_bytes = _wav_bytes_writer(audio)
    timeline, lo, hi = audio._span(_time_us("start", start), _time_us("stop", stop))
    gaps = []
    written = 0
    with wave.open(file, "wb") as wav:
        wav.setnchannels(audio.channels)
        wav.setsampwidth(audio.format.width)
        wav.setframerate(audio.rate)
        wav.setnframes(hi - lo)  # the header is right from the start: no seeking back
        for _, piece, gap in audio._pieces(timeline, lo, hi):
            if gap is not None:
                _raise_for_gaps([gap], allow_gaps, f"WAV export of session {audio.session.id}")
                gaps.append(gap)
                for n in _chunks(gap.frames, SILENCE_CHUNK_FRAMES):
                    _write(wav, to_bytes(np.full((n, audio.channels), audio.silence, audio.dtype)), n, progress)
                written += gap.frames
            else:
                _write(wav, to_bytes(piece), len(piece), progress)
                written += len(piece)
    return written, gaps


def _wav_bytes_writer(audio):
    if audio.format.name == "int8":
        return lambda samples: (samples.astype(np.int8).view(np.uint8) ^ 0x80).tobytes()
    return audio.format.to_bytes


def _chunks(total, size):
    while total > 0:
        yield min(total, size)
        total -= size


def _write(wav, data, frames, progress):
    wav.writeframesraw(data)
    if progress is not None:
        progress(frames)
