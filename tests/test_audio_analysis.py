"""Stored recordings read back at sample precision: numpy, WAV export,
markers joined to audio, gaps, time-range queries, bytes on disk."""

import math
import threading
import wave
from fractions import Fraction

import numpy as np
import pytest

from streamlog import Log, StreamBuffer, errors
from streamlog.audio import AudioGapError, AudioSession, Gap
from streamlog.export import export_wav
from streamlog.sources.audio import (
    AudioFormatError, PyAudioSourceReader, WavFileSourceReader, resolve_sample_format,
)
from audio_helpers import DEADLINE_S, HeldUntil, LosesOneBuffer, ramp, record
from streamlog.sources.markers import markers_beside

RATE = 8000
def wav_frames(path):
    with wave.open(str(path), "rb") as wav:
        return wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.readframes(wav.getnframes())


def first_frame_at_or_after(t_us, origin_us):
    """Independent reference: the first frame p whose timestamp, origin + p / RATE seconds rounded to
    the nearest µs (halves up), is >= t (at 8 kHz every frame's time is a whole µs)."""
    p = 0 if t_us <= origin_us else (t_us - origin_us) * RATE // 1_000_000 - 1
    while math.floor(origin_us + Fraction(p * 1_000_000, RATE) + Fraction(1, 2)) < t_us:
        p += 1
    return p


@pytest.mark.parametrize("channels", [1, 2])
def test_pyaudio_recording_reads_back_and_exports_sample_for_sample(alsa_file_input, lab_log, tmp_path, channels):
    frames = 1024 * 30 + 500
    signal = ramp(frames, channels)
    infile = alsa_file_input(signal)
    session = record(PyAudioSourceReader(rate=RATE, channels=channels, frames_per_buffer=1024, max_frames=frames),
                     lab_log)
    audio = AudioSession(session)
    got = audio.to_numpy()
    assert got.dtype == np.int16 and got.shape == (frames, channels)
    assert np.array_equal(got, signal)
    progress = []
    result = export_wav(session, tmp_path / "take.wav", progress=progress.append)
    assert result.frames == frames and result.gaps == [] and sum(progress) == frames
    assert wav_frames(tmp_path / "take.wav") == (channels, 2, RATE, infile.read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir() if "take" in p.name) == ["take.wav"]  # no temporary left


@pytest.mark.parametrize("sample_format, width", [("uint8", 1), ("int8", 1), ("int24", 3), ("int32", 4)])
def test_wav_export_is_bit_exact_for_every_integer_width(alsa_file_input, lab_log, tmp_path, sample_format, width):
    fmt = resolve_sample_format(width, sample_format)
    signal = ramp(3000, 2, fmt.dtype)
    if width == 3:
        signal = ((signal.astype(np.int64) * 7919) % (1 << 24) - (1 << 23)).astype(np.int32)
    infile = alsa_file_input(signal, width=width)
    session = record(PyAudioSourceReader(rate=RATE, channels=2, width=width, sample_format=sample_format,
                                         frames_per_buffer=256, max_frames=3000), lab_log)
    assert np.array_equal(AudioSession(session).to_numpy(), signal)
    export_wav(session, tmp_path / "take.wav")
    expected = infile.read_bytes()
    if sample_format == "int8":  # WAV's 8-bit samples are unsigned: sample + 128
        expected = (np.frombuffer(expected, np.uint8) ^ 0x80).tobytes()
    assert wav_frames(tmp_path / "take.wav") == (2, width, RATE, expected)


def test_float32_recordings_are_refused_by_wav_export(alsa_file_input, lab_log, tmp_path):
    alsa_file_input(np.zeros((256, 1), np.float32))
    session = record(PyAudioSourceReader(rate=RATE, width=4, sample_format="float32", frames_per_buffer=128,
                                         max_frames=256), lab_log)
    with pytest.raises(AudioFormatError, match="float32"):
        export_wav(session, tmp_path / "take.wav")
    assert not (tmp_path / "take.wav").exists()


@pytest.fixture
def wav_session(tmp_path, lab_log):
    """A stereo int16 ramp of 10_000 frames recorded from a WAV file in
    100-frame buffers from t = 1_700_000_000.0 s: returns (session, signal)."""
    signal = ramp(10_000, 2)
    with wave.open(str(tmp_path / "in.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(signal.tobytes())
    session = record(WavFileSourceReader(tmp_path / "in.wav", frames_per_buffer=100, start_time=1_700_000_000.0),
                     lab_log)
    return session, signal


ORIGIN_US = 1_700_000_000_000_000


@pytest.mark.parametrize("start_us, stop_us", [
    (ORIGIN_US, ORIGIN_US + 1_000_000),               # whole buffers
    (ORIGIN_US + 12_345, ORIGIN_US + 987_654),        # both ends inside buffers, between samples
    (ORIGIN_US + 125, ORIGIN_US + 250),               # exactly on sample times: [start, stop)
    (ORIGIN_US + 400_000, ORIGIN_US + 400_100),       # inside one buffer
    (ORIGIN_US - 5_000_000, ORIGIN_US + 3_000),       # starts before the recording
    (ORIGIN_US + 1_249_000, ORIGIN_US + 9_000_000),   # ends after it
])
def test_to_numpy_trims_at_sample_precision(wav_session, start_us, stop_us):
    session, signal = wav_session
    audio = AudioSession(session)
    lo = min(max(first_frame_at_or_after(start_us, ORIGIN_US), 0), len(signal))
    hi = min(max(first_frame_at_or_after(stop_us, ORIGIN_US), lo), len(signal))
    got = audio.to_numpy(start_us / 1e6, stop_us / 1e6)
    assert got.flags.c_contiguous
    assert np.array_equal(got, signal[lo:hi])
    assert audio.frame_count(start_us / 1e6, stop_us / 1e6) == hi - lo
    clip = audio.clip(start_us / 1e6, stop_us / 1e6)
    assert clip.t_us == ORIGIN_US + round(lo * 1_000_000 / RATE) and clip.gaps == []


def test_a_start_equal_to_a_records_key_gives_that_records_first_frame(tmp_path, lab_log):
    # at 44.1 kHz a key is its first frame's time rounded to the microsecond, often up: the span
    # used to start at the first frame whose exact time is >= the key, one frame late
    rate, fpb = 44_100, 1024
    signal = ramp(fpb * 12, 1)
    with wave.open(str(tmp_path / "in.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(signal.tobytes())
    session = record(WavFileSourceReader(tmp_path / "in.wav", frames_per_buffer=fpb, start_time=1_700_000_000.0),
                     lab_log)
    audio = AudioSession(session)
    keys = [t_us for t_us, _, _, _ in session.range()]
    assert len(keys) == 12
    rounded_up = [k for i, k in enumerate(keys) if k - ORIGIN_US > Fraction(i * fpb * 1_000_000, rate)]
    assert rounded_up  # the case that went wrong is among them
    for i, (key, next_key) in enumerate(zip(keys, keys[1:])):
        assert np.array_equal(audio.to_numpy(start=key / 1e6, stop=next_key / 1e6), signal[i * fpb:(i + 1) * fpb])
        assert audio.clip(start=key / 1e6).t_us == key
    assert np.array_equal(audio.to_numpy(start=keys[-1] / 1e6), signal[-fpb:])


def test_wav_export_of_a_time_span(wav_session, tmp_path):
    session, signal = wav_session
    export_wav(session, tmp_path / "part.wav", start=1_700_000_000.1, stop=1_700_000_000.35)
    assert wav_frames(tmp_path / "part.wav")[3] == signal[800:2800].tobytes()


def test_time_range_queries_return_exactly_the_records_in_the_window(wav_session):
    session, _ = wav_session
    keys = [r[0] for r in session.range()]
    assert len(keys) == 100 and keys == sorted(keys)
    assert [r[0] for r in session.range(keys[10], keys[20])] == keys[10:21]            # inclusive bounds
    assert [r[0] for r in session.range(keys[10] + 1, keys[20] - 1)] == keys[11:20]
    assert [r[0] for r in session.irange(keys[95])] == keys[95:]
    assert [r[0] for r in session.range(None, keys[2])] == keys[:3]
    assert session.range(keys[99] + 1) == []


def test_markers_line_up_with_the_samples_they_were_written_at(alsa_file_input, lab_log):
    frames = 1000 * 20
    signal = ramp(frames, 1)
    alsa_file_input(signal)
    release = threading.Event()
    source = HeldUntil(release, rate=RATE, frames_per_buffer=1000, max_frames=frames)
    with StreamBuffer(source, log=lab_log) as audio_buf:
        with markers_beside(audio_buf) as markers:
            release.set()
            first_key = audio_buf.mk_reader().read(timeout=DEADLINE_S)[0]
            marked = {}
            for frame in (0, 1, 999, 1000, 4321, 12_000, 19_999):   # exact sample times, in µs
                t_us = first_key + round(frame * 1_000_000 / RATE)
                assert markers.mark(f"frame {frame}", t=t_us / 1e6) == t_us
                marked[f"frame {frame}"] = frame
            markers.mark("after the end", t=(first_key + 3_000_000) / 1e6)
        assert audio_buf.wait(DEADLINE_S)
        session = audio_buf.session
    audio = AudioSession(session.refresh())
    clips = list(audio.around_markers(window=(-0.01, 0.02)))
    assert [c.label for c in clips] == [*marked, "after the end"]
    for clip in clips[:-1]:
        frame = marked[clip.label]
        assert clip.samples[clip.offset, 0] == signal[frame, 0]
        lo, hi = max(frame - 80, 0), min(frame + 160, frames)
        assert np.array_equal(clip.samples, signal[lo:hi])
    assert len(clips[-1].samples) == 0
    assert [label for _, label in audio.markers()] == [c.label for c in clips]


def test_overflow_gap_is_reported_never_papered_over(alsa_file_input, lab_log, tmp_path):
    fpb, buffers, lost = 500, 10, 4
    signal = ramp(fpb * (buffers + 1), 2)
    alsa_file_input(signal)
    session = record(LosesOneBuffer(lost, rate=RATE, channels=2, frames_per_buffer=fpb, max_frames=fpb * buffers),
                     lab_log)
    audio = AudioSession(session)
    gap_t_us = session.head()[0] + round(lost * fpb * 1_000_000 / RATE)
    expected_gap = Gap(gap_t_us, fpb, lost * fpb)
    with pytest.raises(AudioGapError, match=f"1 gap.*{fpb} frame\\(s\\) at {gap_t_us}") as excinfo:
        audio.to_numpy()
    assert excinfo.value.gaps == [expected_gap]
    filled = audio.to_numpy(allow_gaps=True)
    expected = signal[:fpb * (buffers + 1)].copy()
    expected[lost * fpb:(lost + 1) * fpb] = 0
    assert np.array_equal(filled, expected)
    assert audio.gaps() == [expected_gap]
    t0 = session.head()[0] / 1e6
    assert audio.gaps(t0, t0 + lost * fpb / RATE) == []                     # the window before the gap
    assert np.array_equal(audio.to_numpy(t0, t0 + lost * fpb / RATE), signal[:lost * fpb])
    inside = audio.clip(t0 + (lost * fpb + 100) / RATE, t0 + (lost * fpb + 700) / RATE)
    assert inside.gaps == [Gap(gap_t_us + round(100 * 1_000_000 / RATE), 400, 0)]
    assert np.array_equal(inside.samples[400:], signal[(lost + 1) * fpb:(lost + 1) * fpb + 200])

    with pytest.raises(AudioGapError):
        export_wav(session, tmp_path / "take.wav")
    assert not [p for p in tmp_path.iterdir() if "take" in p.name]  # neither the file nor its temporary
    result = export_wav(session, tmp_path / "take.wav", allow_gaps=True)
    assert result.gaps == [expected_gap] and result.frames == len(expected)
    assert wav_frames(tmp_path / "take.wav")[3] == expected.tobytes()


def test_not_an_audio_session_is_a_clear_error(lab_log):
    from streamlog.sources.markers import MarkerSource
    source = MarkerSource()
    source.mark("x", t=1.0)
    source.end()
    session = record(source, lab_log)
    with pytest.raises(AudioFormatError, match="not an audio recording"):
        AudioSession(session)
    with pytest.raises(errors.SessionNotFound):
        AudioSession(session, stream="nope")


def test_bad_times_are_clear_errors(wav_session):
    audio = AudioSession(wav_session[0])
    with pytest.raises(errors.InvalidKey, match="start must be epoch seconds"):
        audio.to_numpy("yesterday")
    with pytest.raises(ValueError, match="window"):
        list(audio.around_markers(window=(1.0, -1.0)))


@pytest.mark.parametrize("channels", [1, 2])
def test_bytes_on_disk_per_byte_of_audio(tmp_path, channels):
    """1024-frame int16 buffers (2 KiB mono, 4 KiB stereo): the store should
    use under 1.15 bytes per byte of audio."""
    frames = 1024 * 2000
    signal = ramp(frames, channels)
    with wave.open(str(tmp_path / "in.wav"), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(44100)
        wav.writeframes(signal.tobytes())
    with Log(tmp_path / "lab.log", durability="off") as log:
        record(WavFileSourceReader(tmp_path / "in.wav", start_time=1_700_000_000.0), log)
        stats = log.stats()
    ratio = stats["bytes_used"] / signal.nbytes
    print(f"{channels} channel(s): {stats['bytes_used']} bytes used, {stats['bytes_on_disk']} on disk "
          f"for {signal.nbytes} audio bytes: {ratio:.4f} used, {stats['bytes_on_disk'] / signal.nbytes:.4f} file")
    assert ratio < 1.15
