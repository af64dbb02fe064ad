"""The audio commands of the ``streamlog`` CLI.

* ``record audio`` (:func:`record_audio`, added under ``streamlog record``)
  -- record a PortAudio input device, optionally with markers typed on stdin;
* ``devices`` (:func:`devices`) -- list the input devices and their indexes.
"""

import contextlib
import os
import sys
import threading
import time

import click

from streamlog import StreamBuffer, errors
from streamlog.cli.common import log_argument
from streamlog.cli.record import (STOP_POLL_S, make_retention, parse_info, recording_options,
                                  stop_requested_on_signals, summary_line)
from streamlog.sources.audio import SAMPLE_FORMATS, PyAudioSourceReader, input_devices
from streamlog.sources.markers import MARKERS_STREAM, MarkerSource

FINISH_TIMEOUT_S = 5.0  # how long a stop waits for the buffers already captured to be recorded


@click.command("audio", short_help="Record an audio input device, with markers typed on stdin.")
@log_argument
@recording_options
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
def record_audio(log, duration, maxlen, max_bytes, max_age, max_sessions, durability, max_record_bytes, info_pairs,
                 quiet, rate, channels, width, sample_format, frames_per_buffer, device_index, max_frames, markers):
    """Record an audio input device into LOG: one record (t_us, samples,
    frames, status) per buffer, keyed by the time of its first sample, until
    Ctrl-C, SIGTERM, --duration, --frames or (with --markers) the end of
    stdin.  A stop records every buffer already captured.

    \b
    Example:
      streamlog record audio lab.log --rate 48000 --channels 2 --markers
      streamlog export lab.log -o take.wav
    """
    source = PyAudioSourceReader(rate=rate, width=width, channels=channels, frames_per_buffer=frames_per_buffer,
                                 input_device_index=device_index, sample_format=sample_format,
                                 max_frames=max_frames)
    buffer = StreamBuffer(source, log=os.fspath(log), maxlen=maxlen, durability=durability, info=parse_info(info_pairs),
                          retention=make_retention(max_bytes, max_age, max_sessions), max_record_bytes=max_record_bytes)
    with stop_requested_on_signals() as stop:
        buffer.start()
        try:
            try:
                with StdinMarkers(buffer, stop) if markers else contextlib.nullcontext():
                    if not quiet:
                        limit = f"for {duration:g}s or " if duration is not None else ""
                        typed = ", markers from stdin" if markers else ""
                        click.echo(f"recording {source.device_name!r} ({rate} Hz, {channels} ch{typed}) as session "
                                   f"{buffer.session.id} into {log} ({limit}until Ctrl-C)", err=True)
                    _wait_for_end(buffer, stop, duration)
                source.finish()
                buffer.wait(FINISH_TIMEOUT_S)
            finally:
                buffer.stop()
            session = buffer.session  # refreshed by stop(); read it before the log is closed
            if not quiet:
                click.echo(summary_line(session) + _audio_summary(session))
            failure = session.error if session.status == "failed" else None
        finally:
            buffer.close()
    if failure is not None:
        raise errors.SourceFailed(f"session {session.id} failed: {failure}")


def _wait_for_end(buffer, stop, duration):
    """Return on a stop request, after ``duration`` seconds or when the recording ended by itself."""
    deadline = None if duration is None else time.monotonic() + duration
    while not stop.is_set():
        wait_s = STOP_POLL_S if deadline is None else min(STOP_POLL_S, deadline - time.monotonic())
        if wait_s <= 0 or buffer.wait(wait_s):
            return


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
def devices():
    """List the audio input devices PortAudio offers: index (for `record
    audio --device`), name, input channels and default sample rate; the
    default input device is starred."""
    found = input_devices()
    if not found:
        click.echo("no audio input devices", err=True)
        return
    for dev in found:
        star = "*" if dev["default"] else " "
        click.echo(f"{star} {dev['index']:>3}  {dev['name']}  "
                   f"({dev['max_input_channels']} ch, {dev['default_sample_rate']:g} Hz)")
