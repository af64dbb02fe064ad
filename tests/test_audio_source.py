"""The audio sources, recorded for real: PyAudio through ALSA's file capture
device (see conftest.py), WAV files, and markers from several threads."""

import threading
import wave

import numpy as np
import pytest

from streamlog import Log, StreamBuffer, errors
from streamlog.sources.audio import (
    PA_INPUT_OVERFLOW, AudioDeviceError, AudioFormatError, PyAudioSourceReader, WavFileSourceReader,
    input_devices, resolve_sample_format,
)
from audio_helpers import DEADLINE_S, HeldUntil, ramp, record
from streamlog.sources.markers import MarkerSource, markers_beside

RATE = 8000
def audio_records(session):
    return session.range()


# -- PyAudio ----------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
def test_pyaudio_records_every_buffer_contiguously(alsa_file_input, lab_log, channels):
    fpb, buffers = 256, 40
    signal = ramp(fpb * buffers, channels)
    alsa_file_input(signal)
    session = record(PyAudioSourceReader(rate=RATE, channels=channels, frames_per_buffer=fpb,
                                         max_frames=fpb * buffers - 100), lab_log)
    recs = audio_records(session)
    assert len(recs) == buffers
    assert all(len(r) == 4 for r in recs)
    t_first = recs[0][0]
    position = 0
    for t_us, samples, frames, status in recs:
        assert t_us == t_first + round(position * 1_000_000 / RATE)
        assert samples.dtype == np.int16 and samples.shape == (frames, channels)
        assert status == 0
        position += frames
    assert position == fpb * buffers - 100
    assert np.array_equal(np.concatenate([r[1] for r in recs]), signal[:position])
    info = session.info
    assert info["key_kind"] == "timestamp_us"
    assert (info["rate"], info["channels"], info["width"], info["dtype"]) == (RATE, channels, 2, "int16")
    assert info["frames_per_buffer"] == fpb and info["device_name"] == "default"
    assert info["frames_recorded"] == position and info["frames_lost"] == 0 and info["input_overflows"] == 0
    assert isinstance(info["clock_drift_s"], float)  # the file device runs far ahead of the host clock


@pytest.mark.parametrize("sample_format, width, dtype", [
    ("uint8", 1, "uint8"), ("int8", 1, "int8"), ("int24", 3, "int32"), ("int32", 4, "int32"),
])
def test_pyaudio_sample_formats(alsa_file_input, lab_log, sample_format, width, dtype):
    fpb, buffers, channels = 128, 6, 2
    signal = ramp(fpb * buffers, channels, "int32" if sample_format == "int24" else dtype)
    if sample_format == "int24":
        signal = ((signal.astype(np.int64) * 7919) % (1 << 24) - (1 << 23)).astype(np.int32)
    alsa_file_input(signal, width=width)
    source = PyAudioSourceReader(rate=RATE, width=width, channels=channels, frames_per_buffer=fpb,
                                 sample_format=sample_format, max_frames=fpb * buffers)
    recs = audio_records(record(source, lab_log))
    got = np.concatenate([r[1] for r in recs])
    assert got.dtype == np.dtype(dtype)
    assert np.array_equal(got, signal)


def test_float32_samples(alsa_file_input, lab_log):
    signal = np.linspace(-1, 1, 512 * 2, dtype=np.float32).reshape(512, 2)
    alsa_file_input(signal)
    source = PyAudioSourceReader(rate=RATE, width=4, channels=2, frames_per_buffer=128, sample_format="float32",
                                 max_frames=512)
    got = np.concatenate([r[1] for r in audio_records(record(source, lab_log))])
    assert got.dtype == np.float32 and np.array_equal(got, signal)


class DeviceThatOverflows(PyAudioSourceReader):
    """Models a real-time input device on top of the file device.

    Its ADC clock advances by every frame captured at ``rate * clock_speed``
    frames per second.  Buffer ``lost`` is captured but never reaches the
    source (the callback could not run in time), and PortAudio flags the next
    buffer ``paInputOverflow``, as its ALSA host API does after an overrun.
    ``lost=None`` only raises the flag on buffer ``flagged``.
    """

    def __init__(self, *, lost=None, flagged=None, clock_speed=1.0, **kwargs):
        super().__init__(**kwargs)
        self.lost, self.flagged, self.clock_speed = lost, flagged, clock_speed
        self.captured = 0

    def _on_input(self, in_data, frame_count, time_info, status):
        index = self.captured // self.frames_per_buffer
        adc = 1000.0 + self.captured / (self.rate * self.clock_speed)
        self.captured += frame_count
        time_info = {**time_info, "input_buffer_adc_time": adc, "current_time": adc}
        if index == self.lost:
            import pyaudio
            return None, pyaudio.paContinue
        if self.lost is not None and index == self.lost + 1 or index == self.flagged:
            status |= PA_INPUT_OVERFLOW
        return super()._on_input(in_data, frame_count, time_info, status)


def test_overflow_leaves_gap_record_of_lost_frames(alsa_file_input, lab_log):
    fpb, buffers, lost = 200, 12, 5
    signal = ramp(fpb * (buffers + 1), 1)
    alsa_file_input(signal)
    source = DeviceThatOverflows(lost=lost, rate=RATE, channels=1, frames_per_buffer=fpb, max_frames=fpb * buffers)
    session = record(source, lab_log)
    recs = audio_records(session)
    assert len(recs) == buffers + 1
    gap = recs[lost]
    assert gap[1] is None and gap[2] == fpb and gap[3] & PA_INPUT_OVERFLOW
    after = recs[lost + 1]
    assert after[3] & PA_INPUT_OVERFLOW
    t_first = recs[0][0]
    assert gap[0] == t_first + round(lost * fpb * 1_000_000 / RATE)
    assert after[0] == t_first + round((lost + 1) * fpb * 1_000_000 / RATE)  # the timeline is not shifted
    assert np.array_equal(after[1], signal[(lost + 1) * fpb:(lost + 2) * fpb])
    info = session.info
    assert (info["frames_lost"], info["input_overflows"], info["frames_recorded"]) == (fpb, 1, fpb * buffers)


def test_overflow_of_unmeasurable_length_is_still_recorded(alsa_file_input, lab_log):
    fpb = 200
    alsa_file_input(ramp(fpb * 6, 1))
    source = DeviceThatOverflows(flagged=3, rate=RATE, channels=1, frames_per_buffer=fpb, max_frames=fpb * 6)
    recs = audio_records(record(source, lab_log))
    gaps = [r for r in recs if r[1] is None]
    assert [(g[2], bool(g[3] & PA_INPUT_OVERFLOW)) for g in gaps] == [(0, True)]
    assert recs.index(gaps[0]) == 3


def test_clock_drift_against_the_device_clock_is_recorded(alsa_file_input, lab_log):
    fpb = 400
    alsa_file_input(ramp(fpb * 20, 1))
    source = DeviceThatOverflows(clock_speed=1 + 250e-6, rate=RATE, channels=1, frames_per_buffer=fpb,
                                 max_frames=fpb * 20)
    info = record(source, lab_log).info
    assert info["clock_drift_ppm"] == pytest.approx(-250, rel=1e-3)   # the audio clock ran ahead of the host's
    assert info["clock_drift_s"] == pytest.approx(-250e-6 * fpb * 19 / RATE, rel=1e-3)


def test_no_input_device_is_a_clear_error(alsa_without_input):
    with pytest.raises(AudioDeviceError, match="no input device"):
        PyAudioSourceReader()
    assert input_devices() == []


def test_bad_device_index_is_a_clear_error(alsa_file_input):
    alsa_file_input(ramp(16, 1))
    with pytest.raises(AudioDeviceError, match="no audio device with index 99"):
        PyAudioSourceReader(input_device_index=99)


@pytest.mark.parametrize("rate", [100, 1_000_000])
def test_unsupported_rate_is_a_clear_error(alsa_file_input, rate):
    alsa_file_input(ramp(16, 1))
    with pytest.raises(AudioDeviceError, match=f"does not support {rate} Hz.*[Ii]nvalid sample rate"):
        PyAudioSourceReader(rate=rate)


def test_unsupported_channel_count_is_a_clear_error(alsa_file_input):
    alsa_file_input(ramp(16, 1))
    with pytest.raises(AudioDeviceError, match="1000 channel"):
        PyAudioSourceReader(channels=1000)


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 5}, "sample width must be 1, 2, 3 or 4"),
    ({"width": 2, "sample_format": "float32"}, "4 byte"),
    ({"width": 2, "sample_format": "int12"}, "unknown sample format"),
    ({"rate": 0}, "rate must be an integer >= 1"),
    ({"frames_per_buffer": 2.5}, "frames_per_buffer must be an integer"),
])
def test_invalid_format_arguments(alsa_file_input, kwargs, message):
    alsa_file_input(ramp(16, 1))
    with pytest.raises(AudioFormatError, match=message):
        PyAudioSourceReader(**kwargs)


def test_input_devices_lists_the_file_device(alsa_file_input):
    alsa_file_input(ramp(16, 1))
    devices = input_devices()
    assert {d["name"] for d in devices} == {"testin", "default"}
    assert [d["name"] for d in devices if d["default"]] == ["default"]


def test_finish_records_everything_captured_then_ends(alsa_file_input, lab_log):
    fpb = 100
    signal = ramp(fpb * 50, 1)
    alsa_file_input(signal)
    source = PyAudioSourceReader(rate=RATE, frames_per_buffer=fpb, max_frames=fpb * 50)
    with StreamBuffer(source, log=lab_log) as buf:
        buf.mk_reader().read(timeout=DEADLINE_S)
        source.finish()
        assert buf.wait(DEADLINE_S)
        session = buf.session
    recs = audio_records(session.refresh())
    assert session.status == "closed"
    got = np.concatenate([r[1] for r in recs])
    assert np.array_equal(got, signal[:len(got)])


# -- WAV files --------------------------------------------------------------------


def write_wav(path, samples, width, rate=RATE):
    fmt = resolve_sample_format(width)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(samples.shape[1])
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(fmt.to_bytes(samples))


@pytest.mark.parametrize("width, dtype", [(1, "uint8"), (2, "int16"), (3, "int32"), (4, "int32")])
def test_wav_file_source_reads_every_frame(tmp_path, width, dtype, lab_log):
    signal = ramp(1000, 2, dtype)
    if width == 3:
        signal = (signal % (1 << 23)).astype(np.int32) - (1 << 22)
    write_wav(tmp_path / "in.wav", signal, width)
    source = WavFileSourceReader(tmp_path / "in.wav", frames_per_buffer=128, start_time=1_700_000_000.0)
    session = record(source, lab_log)
    recs = audio_records(session)
    assert [r[2] for r in recs] == [128] * 7 + [104]
    assert [r[0] for r in recs] == [1_700_000_000_000_000 + round(i * 128 * 1_000_000 / RATE) for i in range(8)]
    got = np.concatenate([r[1] for r in recs])
    assert got.dtype == np.dtype(dtype) and np.array_equal(got, signal)
    assert session.info["key_kind"] == "timestamp_us" and session.info["width"] == width


def test_wav_file_source_in_real_time(tmp_path, lab_log):
    signal = ramp(RATE // 10, 1)
    write_wav(tmp_path / "in.wav", signal, 2)
    source = WavFileSourceReader(tmp_path / "in.wav", frames_per_buffer=200, realtime=True)
    recs = audio_records(record(source, lab_log))
    assert np.array_equal(np.concatenate([r[1] for r in recs]), signal)


def test_wav_start_time_defaults_to_file_time_minus_duration(tmp_path):
    import os
    write_wav(tmp_path / "in.wav", ramp(RATE * 2, 1), 2)
    os.utime(tmp_path / "in.wav", (1_700_000_010, 1_700_000_010))
    assert WavFileSourceReader(tmp_path / "in.wav").start_time == 1_700_000_008.0


def test_wav_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        WavFileSourceReader(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio\n")
    with pytest.raises(AudioFormatError, match="not a PCM WAV file"):
        WavFileSourceReader(tmp_path / "text.wav")
    write_wav(tmp_path / "in.wav", ramp(10, 1), 2)
    with pytest.raises(AudioFormatError, match="start_time"):
        WavFileSourceReader(tmp_path / "in.wav", start_time="now")


# -- markers --------------------------------------------------------------------


def test_markers_from_several_threads_all_arrive_in_key_order(lab_log):
    source = MarkerSource()
    with StreamBuffer(source, log=lab_log) as buf:
        threads = [threading.Thread(target=lambda n=n: [source.mark(f"t{n}-{i}") for i in range(200)])
                   for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        source.end()
        assert buf.wait(DEADLINE_S)
        session = buf.session
    recs = session.refresh().range()
    assert len(recs) == 800
    keys = [r[0] for r in recs]
    assert keys == sorted(keys)
    for n in range(4):
        assert [r[1] for r in recs if r[1].startswith(f"t{n}-")] == [f"t{n}-{i}" for i in range(200)]


def test_marker_order_and_end_errors():
    source = MarkerSource()
    assert source.mark("a", t=100.0) == 100_000_000
    assert source.mark("same time", t=100.0) == 100_000_000
    with pytest.raises(errors.KeyOrderError, match="earlier than the previous marker"):
        source.mark("b", t=99.0)
    with pytest.raises(errors.InvalidKey, match="epoch seconds"):
        source.mark("c", t=float("nan"))
    assert source.mark("now") >= 100_000_000
    source.end()
    with pytest.raises(errors.StreamlogError, match="after the marker stream ended"):
        source.mark("late")
    assert [label for _, label in source.read()] == ["a", "same time", "now"]
    with pytest.raises(StopIteration):
        source.read()


def test_markers_beside_audio_share_the_session(alsa_file_input, lab_log):
    alsa_file_input(ramp(1000, 1))
    release = threading.Event()
    source = HeldUntil(release, rate=RATE, frames_per_buffer=100, max_frames=1000)
    with StreamBuffer(source, log=lab_log) as audio:
        with markers_beside(audio) as markers:
            markers.mark("stimulus", t=1_700_000_000.5)
            markers.mark("response", t=1_700_000_001.25)
        release.set()
        assert audio.wait(DEADLINE_S)
        session = audio.session
    session.refresh()
    assert sorted(session.streams) == ["main", "markers"]
    assert session.range(stream="markers") == [(1_700_000_000_500_000, "stimulus"),
                                               (1_700_000_001_250_000, "response")]
    assert sum(r[2] for r in session.range()) == 1000


# -- CLI --------------------------------------------------------------------------


def test_cli_record_audio_records_exact_frames(alsa_file_input, tmp_path):
    from click.testing import CliRunner

    from streamlog.audio import AudioSession
    from streamlog.cli import main

    signal = ramp(5000, 2)
    alsa_file_input(signal)
    log_path = tmp_path / "lab.log"
    result = CliRunner().invoke(main, ["record", "audio", str(log_path), "--rate", str(RATE), "--channels", "2",
                                       "--frames-per-buffer", "256", "--frames", "5000", "--info", "subject=S1"])
    assert result.exit_code == 0, result.output
    assert "closed" in result.stdout and "5000 frames" in result.stdout
    with Log(log_path, readonly=True) as log:
        session = log.session(-1)
        assert session.labels == {"subject": "S1"} and session.info["channels"] == 2
        assert np.array_equal(AudioSession(session).to_numpy(), signal)


def test_cli_info_labels_cannot_change_how_the_audio_is_decoded(alsa_file_input, tmp_path):
    # --info channels=2 on a mono input used to overwrite the source's own info: the export then
    # wrote a 2-channel WAV of half the frames; rate=8000 broke it and source=mine renamed the source
    import json
    import subprocess
    import sys

    signal = ramp(3000, 1)
    infile = alsa_file_input(signal)
    log_path, wav_path = tmp_path / "take.streamlog", tmp_path / "take.wav"
    streamlog_cli = [sys.executable, "-m", "streamlog"]
    recorded = subprocess.run([*streamlog_cli, "record", "audio", log_path, "--rate", "16000", "--channels", "1",
                               "--frames-per-buffer", "250", "--frames", "3000", "--info", "channels=2",
                               "--info", "rate=8000", "--info", "source=mine", "--info", "subject=S01"],
                              capture_output=True, text=True, timeout=DEADLINE_S)
    assert recorded.returncode == 0, recorded.stderr
    exported = subprocess.run([*streamlog_cli, "export", log_path, "-o", wav_path], capture_output=True, text=True,
                              timeout=DEADLINE_S)
    assert exported.returncode == 0, exported.stderr
    assert "Wrote 3000 frame(s)" in exported.stdout + exported.stderr
    with wave.open(str(wav_path), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getnframes()) == (1, 16000, 3000)
        assert wav.readframes(3000) == infile.read_bytes()
    [summary] = json.loads(subprocess.run([*streamlog_cli, "sessions", log_path, "--json"], capture_output=True,
                                          text=True, timeout=DEADLINE_S, check=True).stdout)
    assert summary["source"].startswith("pyaudio") and summary["info"]["channels"] == 1
    assert summary["labels"] == {"channels": "2", "rate": "8000", "source": "mine", "subject": "S01"}
    shown = subprocess.run([*streamlog_cli, "info", log_path], capture_output=True, text=True, timeout=DEADLINE_S,
                           check=True).stdout
    assert shown.split("labels:\n")[1].splitlines()[:2] == ['  channels: "2"', '  rate: "8000"']


def test_cli_record_audio_with_markers_from_stdin(alsa_file_input, tmp_path):
    from click.testing import CliRunner

    from streamlog.cli import main

    alsa_file_input(ramp(RATE * 60, 1))  # far more than is read before stdin ends the recording
    log_path = tmp_path / "lab.log"
    result = CliRunner().invoke(main, ["record", "audio", str(log_path), "--rate", str(RATE), "--frames-per-buffer",
                                       "64", "--markers", "--durability", "off"],
                                input="stimulus on\nresponse\n\nlast one")
    assert result.exit_code == 0, result.output
    assert "4 marker(s)" in result.stdout
    with Log(log_path, readonly=True) as log:
        session = log.session(-1)
        assert session.status == "closed"
        markers = session.range(stream="markers")
        assert [label for _, label in markers] == ["stimulus on", "response", "", "last one"]
        assert session.count > 0


def test_cli_record_audio_without_device_is_one_line_error(alsa_without_input, tmp_path):
    from click.testing import CliRunner

    from streamlog.cli import main

    result = CliRunner().invoke(main, ["record", "audio", str(tmp_path / "lab.log")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["Error: no input device: PortAudio reports no default input device"]


def test_cli_devices_lists_input_devices(alsa_file_input):
    from click.testing import CliRunner

    from streamlog.cli.audio import devices

    alsa_file_input(ramp(16, 1))
    result = CliRunner().invoke(devices)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith("*   1  default  (128 ch, ")


def test_cli_devices_prints_only_the_answer_unless_verbose():
    """PortAudio's ALSA/JACK probing writes to fd 2 from C; `devices` keeps it off the terminal
    unless --verbose (on a machine where it prints nothing there is nothing to hide)."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "streamlog", "devices"]
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=60)
    verbose = subprocess.run(command + ["--verbose"], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr
    assert quiet.stdout == verbose.stdout
    answer = quiet.stdout.splitlines() or ["no audio input devices"]
    assert quiet.stderr.splitlines() in ([], ["no audio input devices"]), quiet.stderr
    noise = [line for line in verbose.stderr.splitlines() if line not in answer]
    if not noise:
        pytest.skip("PortAudio printed nothing on this machine: no noise to hide")
    assert not any(line in quiet.stderr for line in noise)
