"""The audio commands of the ``streamlog`` CLI.

* ``record audio`` (:func:`record_audio`, added under ``streamlog record``)
  -- record a PortAudio input device, optionally with markers typed on stdin;
* ``devices`` (:func:`devices`) -- list the input devices and their indexes.
"""

import sys
import threading

import click

from streamlog import StreamBuffer, errors
from streamlog.cli.recording import Recording, recording_command
from streamlog.sources.audio import SAMPLE_FORMATS, PyAudioSourceReader, input_devices
from streamlog.sources.markers import MARKERS_STREAM, MarkerSource

FINISH_TIMEOUT_S = 5.0  # how long a stop waits for the buffers already captured to be recorded


@recording_command(
    "audio", "Record an audio input device, with markers typed on stdin.",
    "Record an audio input device into LOG: one record (t_us, samples, frames, status) per buffer, "
    "keyed by the time of its first sample, until Ctrl-C, SIGTERM, --duration, --frames or (with "
    "--markers) the end of stdin.  A stop records every buffer already captured.",
    "streamlog record audio lab.log --rate 48000 --channels 2 --markers\n  streamlog export lab.log -o take.wav")
@click.option("--rate", type=click.IntRange(min=1), default=44100, show_default=True, help="Sample rate in Hz.")
@click.option("--channels", type=click.IntRange(min=1), default=1, show_default=True, help="Channels.")
@click.option("--width", type=click.IntRange(1, 4), default=2, show_default=True,
              help="Bytes per sample: 1 unsigned 8-bit, 2 int16, 3 packed 24-bit (stored as int32), 4 int32.")
@click.option("--sample-format", type=click.Choice(list(SAMPLE_FORMATS)), default=None,
              help="Another sample format of that width: int8 (--width 1) or float32 (--width 4).")
@click.option("--frames-per-buffer", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Frames per record.")
@click.option("--device", "device_index", type=click.IntRange(min=0), default=None, metavar="INDEX",
              help="Input device index (see `streamlog devices`).  [default: the default input device]")
@click.option("--frames", "max_frames", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after exactly N frames (by the audio clock).")
@click.option("--markers", is_flag=True,
              help=f"Record each line typed on stdin as a marker (label = the line) in stream "
                   f"'{MARKERS_STREAM}' of the session; the end of stdin (Ctrl-D) also ends the recording.")
def record_audio(rate, channels, width, sample_format, frames_per_buffer, device_index, max_frames, markers):
    """The PyAudio source, with the stdin markers beside it and a finish that
    records the buffers already captured."""
    source = PyAudioSourceReader(rate=rate, width=width, channels=channels, frames_per_buffer=frames_per_buffer,
                                 input_device_index=device_index, sample_format=sample_format,
                                 max_frames=max_frames)

    def finish(buffer):
        source.finish()
        buffer.wait(FINISH_TIMEOUT_S)

    typed = ", markers from stdin" if markers else ""
    return Recording(source, during=StdinMarkers if markers else None, finish=finish, summary=_audio_summary,
                     notice=f"{source.device_name!r} ({rate} Hz, {channels} ch{typed})")


class StdinMarkers:
    """Record each stdin line as a marker in the audio buffer's session;
    set ``stop`` at the end of stdin.  On exit the markers read so far are
    recorded and the marker stream ends."""

    def __init__(self, audio_buffer, stop):
        self.source = MarkerSource()
        self.buffer = StreamBuffer(self.source, log=audio_buffer.log, session=audio_buffer.session,
                                   stream=MARKERS_STREAM)
        self.stop = stop

    def __enter__(self):
        self.buffer.start()
        threading.Thread(target=self._read_lines, name="streamlog-stdin-markers", daemon=True).start()
        return self

    def _read_lines(self):
        try:
            for line in sys.stdin:
                self.source.mark(line.rstrip("\r\n"))
        except errors.StreamlogError:
            return  # the marker stream ended while a line was being typed
        self.stop.set()

    def __exit__(self, *exc):
        self.source.end()
        self.buffer.wait(FINISH_TIMEOUT_S)
        self.buffer.stop()
        return False


def _audio_summary(session):
    info = session.info or {}
    if "frames_recorded" not in info:
        return ""
    text = f", {info['frames_recorded']} frames"
    if info.get("input_overflows"):
        text += f", {info['input_overflows']} input overflow(s) losing {info['frames_lost']} frames"
    if MARKERS_STREAM in session.streams:
        text += f", {session.stream_info(MARKERS_STREAM)['count']} marker(s)"
    return text


@click.command(short_help="List the audio input devices.")
@click.option("--verbose", "-v", is_flag=True,
              help="Also show what ALSA and JACK print while PortAudio probes the devices (on stderr).")
def devices(verbose):
    """List the audio input devices PortAudio offers: index (for `record
    audio --device`), name, input channels and default sample rate; the
    default input device is starred.

    \b
    Example:
      streamlog devices
      streamlog record audio take.streamlog --device 2
    """
    found = input_devices(noise=sys.stderr if verbose else None)
    if not found:
        click.echo("no audio input devices", err=True)
        return
    for dev in found:
        star = "*" if dev["default"] else " "
        click.echo(f"{star} {dev['index']:>3}  {dev['name']}  "
                   f"({dev['max_input_channels']} ch, {dev['default_sample_rate']:g} Hz)")
