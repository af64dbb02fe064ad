"""A picture of a session: one panel per stream on a shared wall-clock axis.

:func:`plot_session` draws, with matplotlib's headless Agg backend:

* numeric streams (numbers, tuples of numbers, arrays, blocks of samples,
  numeric fields of dict records) as lines, or as a min/max envelope per
  pixel column when there are more points than pixels, so that hours of
  samples draw in seconds (the records are read once, in bounded memory);
* audio as its waveform envelope, on the sample clock corrected for the
  measured drift;
* markers as labelled vertical lines across every panel;
* other records (text lines, ...) as ticks at their times;
* gaps shaded: missing audio frames, and pauses longer than ten times a
  stream's median record interval; the end of a crashed or failed session
  shaded and labelled;
* the record rate (records per second) in a strip under each panel;
* a title with the session's id, status, start, duration and info.

Needs matplotlib (``streamlog[plot]``).
"""

import datetime
import math
import numbers
import textwrap
import time

import numpy as np

from streamlog import frames
from streamlog.extras import require
from streamlog.sources.markers import MARKERS_STREAM

PIXEL_COLUMNS = 1400      # envelope bins across the time axis (the figure is about this wide)
GAP_FACTOR = 10           # a pause longer than this many median intervals is a gap
MAX_LINES = 8             # columns drawn per panel
MAX_MARKER_LABELS = 40    # markers beyond this are drawn without a label
MAX_EVENT_LABELS = 30     # a panel of non-numeric records shows their text when it has at most this many
_CHUNK_RECORDS = 512      # records gathered before they are binned at once
_GAP_COLOR = "#d62728"
_UNTITLED = ("signal", "path", "record_layout", "origin_us", "device_index", "key_kind", "start_time", "frames")  # left out of the title
_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.5}


class _Envelope:
    """Points binned into ``bins`` columns of ``[t0, t1)``: min, max per
    bin and column; the points themselves while there are few."""

    def __init__(self, t0, t1, bins, width):
        self.t0, self.t1, self.bins, self.width = t0, t1, bins, width
        self.mins = np.full((bins, width), np.inf)
        self.maxs = np.full((bins, width), -np.inf)
        self.points = []          # (times, values) chunks while they are few
        self.count = 0

    def add(self, times, values):
        inside = (times >= self.t0) & (times < self.t1)
        times, values = times[inside], values[inside]
        if not len(times):
            return
        self.count += len(times)
        if self.points is not None:
            self.points.append((times, values))
            if self.count > 2 * self.bins:
                self.points = None
        index = ((times - self.t0) * (self.bins / (self.t1 - self.t0))).astype(np.int64)
        np.clip(index, 0, self.bins - 1, out=index)
        order = np.argsort(index, kind="stable") if np.any(np.diff(index) < 0) else None
        if order is not None:
            index, values = index[order], values[order]
        starts = np.flatnonzero(np.r_[True, np.diff(index) != 0])
        where = index[starts]
        self.mins[where] = np.minimum(self.mins[where], np.minimum.reduceat(values, starts, axis=0))
        self.maxs[where] = np.maximum(self.maxs[where], np.maximum.reduceat(values, starts, axis=0))


class _Panel:
    """What one stream contributes: an envelope (or None), tick times, the
    record times (for the rate strip and gaps), column names and gaps."""

    def __init__(self, stream, kind):
        self.stream, self.kind = stream, kind
        self.envelope = None
        self.columns = []
        self.record_times = []
        self.ticks = []
        self.gaps = []            # (t0, t1) seconds
        self.labels = []          # markers: (t, label); non-numeric records: (t, text), the first few
        self.clock = None         # see _block_clock


def plot_session(session, path=None, *, streams=None, start=None, stop=None, width_px=1400, dpi=100,
                 title=None):
    """Draw an overview of ``session`` and return the matplotlib Figure;
    write it as PNG to ``path`` if given.

    ``streams``: names to draw (default: all, markers as lines over the
    others); ``start``/``stop``: epoch seconds to zoom to (default: the whole
    session).  Raises MissingExtra without matplotlib, SessionNotFound for
    a stream the session lacks.
    """
    ticker = require("matplotlib.ticker", "plot")
    from matplotlib.figure import Figure  # drawn without pyplot: no GUI backend, PNG through Agg

    names = [frames.stream_name(session, s) for s in (streams or session.streams)]
    t0, t1 = _span(session, names, start, stop)
    bins = max(100, min(PIXEL_COLUMNS, width_px))
    panels = [_read_panel(session, name, t0, t1, bins) for name in names]
    markers = [p for p in panels if p.kind == "markers"]
    shown = [p for p in panels if p.kind != "markers"] or markers
    rows = []
    for p in shown:
        rows += [1.2 if p.kind == "events" else 3.0, 0.7]
    figure = Figure(figsize=(width_px / dpi, 1.3 + sum(rows) * 0.75), dpi=dpi, layout="constrained")
    grid = figure.add_gridspec(len(rows), 1, height_ratios=rows)
    axes = []
    labels = [item for p in markers for item in p.labels]
    for i, panel in enumerate(shown):
        ax = figure.add_subplot(grid[2 * i], sharex=axes[0] if axes else None)
        rate_ax = figure.add_subplot(grid[2 * i + 1], sharex=ax)
        _draw_panel(ax, panel, session)
        _draw_rate(rate_ax, panel, t0 - session.start_time, t1 - session.start_time, bins)
        for lo, hi in panel.gaps:
            for a in (ax, rate_ax):
                a.axvspan(lo, max(hi, lo + (t1 - t0) / bins), color=_GAP_COLOR, alpha=0.25, linewidth=0)
        _draw_markers(ax, rate_ax, labels, top=(i == 0))
        ax.tick_params(labelbottom=False)
        rate_ax.tick_params(labelbottom=(i == len(shown) - 1))
        axes += [ax, rate_ax]
    _draw_end(axes, session, panels, t1)
    origin = session.start_time
    for ax in axes:
        ax.set_xlim(t0 - origin, t1 - origin)
        ax.set_axisbelow(True)
        ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
    axes[-1].xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _pos: _clock_label(x, t1 - t0)))
    axes[-1].set_xlabel(f"time since the session started ({_iso(origin)} UTC)")
    figure.suptitle(title or _title(session, _span(session, names, None, None), t0, t1, start, stop),
                    fontsize=11, ha="left", x=0.01)
    if path is not None:
        figure.savefig(path, format="png")
    return figure


def _span(session, names, start, stop):
    """Epoch seconds ``(t0, t1)`` the picture covers: ``start``/``stop``, by
    default the session's span widened to what its time-keyed streams hold
    (an audio clock may run past the host's stop time)."""
    lo = session.start_time
    hi = session.stop_time
    if hi is None:  # live: up to now; crashed before it could say when: up to its last record
        hi = time.time() if session.status == "live" else max(
            (t for t in map(lambda name: _last_arrival(session, name), names) if t is not None), default=lo)
    for name in names:
        first, last = _data_span(session, name)
        if first is not None:
            lo, hi = min(lo, first), max(hi, last)
    if session.status in ("crashed", "failed"):
        hi += (hi - lo) * 0.05  # room to show where the records end
    t0 = lo if start is None else float(start)
    t1 = hi if stop is None else float(stop)
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0:
        if start is not None or stop is not None:
            raise ValueError(f"plot needs start < stop, got start={start!r}, stop={stop!r}")
        t1 = t0 + 1.0
    return t0, t1


def _last_arrival(session, stream):
    """Epoch seconds at which the newest record of ``stream`` arrived, or None."""
    last_key = session.stream_info(stream)["last_key"]
    if last_key is None:
        return None
    newest = None
    for entry in session.ientries(start=last_key, stream=stream):
        newest = entry.arrival_us / 1e6
    return newest


def _data_span(session, stream):
    """Wall-clock epoch seconds of the first and last data of a time-keyed
    stream or a stream of numbered blocks (to the end of its last block or
    audio buffer), or (None, None)."""
    clock = _block_clock(session, stream, frames.sample_rate(session, stream))
    if clock is not None:
        anchor, block = clock
        span = session.stream_info(stream)
        rate = frames.sample_rate(session, stream)
        return anchor + span["first_key"] * block / rate, anchor + (span["last_key"] + 1) * block / rate
    if not frames.is_time_keyed(session, stream):
        return None, None
    try:
        first, last = session.head(stream=stream), session.tail(stream=stream)
    except LookupError:
        return None, None
    if frames.is_audio(session, stream):
        from streamlog.audio import AudioSession

        audio = AudioSession(session, stream)
        end = last[0] + round(last[2] * 1e6 / audio.rate)
        return audio.wall_time_us(first[0]) / 1e6, audio.wall_time_us(end) / 1e6
    return first[0] / 1e6, last[0] / 1e6


def _entries(session, stream, t0, t1, clock, rate):
    """The entries of ``stream`` that can fall in ``[t0, t1]`` (epoch seconds)."""
    if clock is not None:
        anchor, block = clock
        first = max(0, math.floor((t0 - anchor) * rate / block) - 1)
        return session.ientries(first, math.ceil((t1 - anchor) * rate / block), stream=stream)
    if frames.is_audio(session, stream):
        from streamlog.audio import AudioSession

        audio = AudioSession(session, stream)
        lo = audio.audio_time_us(round(t0 * 1e6)) - round(audio.frames_per_buffer * 1e6 / audio.rate) - 1
        return session.ientries(lo, audio.audio_time_us(round(t1 * 1e6)) + 1, stream=stream)
    if frames.is_time_keyed(session, stream):
        return session.ientries(math.floor(t0 * 1e6), math.ceil(t1 * 1e6), stream=stream)
    return session.ientries(since=t0, until=t1, stream=stream)


def _read_panel(session, stream, t0, t1, bins):
    origin = session.start_time
    kind = "markers" if stream == MARKERS_STREAM else ("audio" if frames.is_audio(session, stream) else None)
    panel = _Panel(stream, kind)
    get = frames.value_getter(session, stream, None)
    rate = frames.sample_rate(session, stream)
    panel.clock = _block_clock(session, stream, rate)
    chunk = []
    for entry in _entries(session, stream, t0, t1, panel.clock, rate):
        chunk.append(entry)
        if len(chunk) >= _CHUNK_RECORDS:
            _add_chunk(session, panel, chunk, get, rate, t0, t1, bins, origin)
            chunk = []
    if chunk:
        _add_chunk(session, panel, chunk, get, rate, t0, t1, bins, origin)
    panel.record_times = np.concatenate(panel.record_times) if panel.record_times else np.empty(0)
    panel.ticks = np.concatenate(panel.ticks) if panel.ticks else np.empty(0)
    if panel.kind == "audio":
        from streamlog.audio import AudioSession

        audio = AudioSession(session, stream)
        for gap in audio.gaps(t0, t1):
            lo = audio.wall_time_us(gap.t_us) / 1e6 - origin
            panel.gaps.append((lo, lo + gap.frames / audio.rate))
    elif panel.kind == "numeric":
        panel.gaps = _pauses(panel.record_times)
    return panel


def _block_clock(session, stream, rate):
    """For a stream of numbered blocks of samples (``key_kind`` "index" and
    ``block`` in the info, as SynthSource records): ``(anchor_s, samples per
    block)`` such that block ``k`` starts at ``anchor_s + k * block / rate``;
    the anchor puts the first block's end at its arrival (a block is read
    once its last sample is due; ``realtime`` False in the info: no clock).  None for other streams: their records are
    placed at their wall-clock times."""
    info = session.info or {}
    block = info.get("block")
    if (rate is None or info.get("key_kind") != "index" or not isinstance(block, int) or block < 1
            or info.get("realtime") is False):  # blocks made faster than real time have no wall-clock times
        return None
    for key, arrival, _, _ in session.ientries(stream=stream):
        return arrival / 1e6 - (key + 1) * block / rate, block
    return None


def _add_chunk(session, panel, chunk, get, rate, t0, t1, bins, origin):
    if panel.kind == "audio":  # gap records hold no samples; the gaps are shaded from AudioSession.gaps
        chunk = [entry for entry in chunk if entry.record[1] is not None]
        if not chunk:
            return
    keys = [entry.key for entry in chunk]
    if panel.clock is not None:
        anchor, block = panel.clock
        wall = anchor + np.asarray(keys, dtype=np.float64) * (block / rate) - origin
    else:
        wall = frames.wall_times_us(session, panel.stream, keys, [entry.arrival_us for entry in chunk]) / 1e6 - origin
    if panel.kind == "markers":
        panel.labels += [(t, get(k, r)) for t, (k, _, r, _) in zip(wall, chunk)]
        panel.record_times.append(wall)
        return
    panel.record_times.append(wall)
    values = [get(entry.key, entry.record) for entry in chunk]
    if not panel.columns:
        kind, panel.columns = _kind_of(values[0], keys[0])
        panel.kind = panel.kind or kind
    if panel.kind == "events":
        panel.ticks.append(wall)
        room = MAX_EVENT_LABELS - len(panel.labels)
        panel.labels += [(t, _short(v if isinstance(v, str) else repr(v), 28)) for t, v in zip(wall[:room], values)]
        return
    arrivals = panel.clock is None and not frames.is_time_keyed(session, panel.stream)
    times, data = _points(panel, values, wall, rate, ends_at=arrivals)
    if data is None:
        panel.ticks.append(wall)
        return
    if panel.envelope is None:
        panel.envelope = _Envelope(t0 - origin, t1 - origin, bins, data.shape[1])
    if data.shape[1] == panel.envelope.width:
        panel.envelope.add(times, data)


def _kind_of(value, key):
    """``(kind, column names)`` for the first value of a stream (a dict
    field holding the record's key, a counter, is not drawn)."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        width = 1 if value.ndim <= 1 else int(np.prod(value.shape[1:]))
        return "numeric", [f"ch {c}" for c in range(min(width, MAX_LINES))]
    if _is_number(value):
        return "numeric", ["value"]
    if isinstance(value, (tuple, list)) and value and all(_is_number(v) for v in value):
        return "numeric", [str(c) for c in range(min(len(value), MAX_LINES))]
    if isinstance(value, dict):
        fields = [name for name, cell in frames.flatten(value).items()
                  if _is_number(cell) and not (_is_number(key) and cell == key)][:MAX_LINES]
        if fields:
            return "numeric", fields
    return "events", []


def _is_number(value):
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))


def _points(panel, values, wall, rate, ends_at=False):
    """``(times, values 2-D float)`` of a chunk, or (None, None) if it does
    not fit the panel.  A block of samples starts at its record's time, or,
    with ``ends_at`` (the time is the block's arrival), ends there: a block
    is read once its last sample is in."""
    columns = panel.columns
    first = values[0]
    try:
        if isinstance(first, np.ndarray) and first.ndim >= 1 and rate is not None:
            lengths = np.array([len(v) for v in values])
            data = np.concatenate([v.reshape(len(v), -1)[:, :len(columns)] for v in values]).astype(np.float64)
            starts = np.repeat(wall - lengths / rate if ends_at else wall, lengths)
            within = np.arange(len(data)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            return starts + within / rate, data
        if isinstance(first, dict):
            cells = [frames.flatten(v) for v in values]
            data = np.array([[c.get(name, np.nan) for name in columns] for c in cells], dtype=np.float64)
            return wall, data
        data = np.asarray(values, dtype=np.float64).reshape(len(values), -1)[:, :len(columns)]
        return wall, data
    except (ValueError, TypeError):
        return None, None


def _pauses(times):
    """Intervals between records longer than GAP_FACTOR median intervals."""
    if len(times) < 3:
        return []
    steps = np.diff(times)
    typical = np.median(steps)
    if typical <= 0:
        positive = steps[steps > 0]
        typical = np.median(positive) if len(positive) else 0
    if typical <= 0:
        return []
    where = np.flatnonzero(steps > GAP_FACTOR * typical)
    return [(times[i], times[i + 1]) for i in where]


def _draw_panel(ax, panel, session):
    ax.set_ylabel(panel.stream, rotation=0, ha="right", va="center", fontsize=10, fontweight="bold")
    envelope = panel.envelope
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]
    if envelope is not None and envelope.count:
        targets = _value_axes(ax, envelope, panel.columns, colors)
        if envelope.points is not None:
            times = np.concatenate([t for t, _ in envelope.points])
            data = np.concatenate([v for _, v in envelope.points])
            for lo, _ in reversed(panel.gaps):   # no line drawn across a gap
                at = np.searchsorted(times, lo, side="right")
                times, data = np.insert(times, at, np.nan), np.insert(data, at, np.nan, axis=0)
            for c, name in enumerate(panel.columns[:envelope.width]):
                targets[c].plot(times, data[:, c], color=colors[c % len(colors)], linewidth=0.9, label=name)
        else:
            centers = envelope.t0 + (np.arange(envelope.bins) + 0.5) * (envelope.t1 - envelope.t0) / envelope.bins
            for c, name in enumerate(panel.columns[:envelope.width]):
                lo, hi = envelope.mins[:, c], envelope.maxs[:, c]
                filled = np.isfinite(lo)
                lo, hi = np.where(filled, lo, np.nan), np.where(filled, hi, np.nan)
                alpha = 0.9 if envelope.width == 1 else 0.55
                targets[c].fill_between(centers, lo, hi, color=colors[c % len(colors)], alpha=alpha, linewidth=0.6,
                                        edgecolor=colors[c % len(colors)], step="mid", label=name)
        if len(panel.columns) > 1:
            handles = [h for a in dict.fromkeys(targets) for h in a.get_legend_handles_labels()[0]]
            targets[-1].legend(handles=handles, loc="upper right", fontsize=8, ncols=min(len(handles), 8),
                               framealpha=0.8)
        what = "waveform envelope" if panel.kind == "audio" else (
            "min/max envelope" if envelope.points is None else "values")
        ax.text(0.005, 0.03, f"{what}, {envelope.count:,} points", transform=ax.transAxes, fontsize=8,
                va="bottom", color="#444444", bbox=_LABEL_BOX)
    elif len(panel.ticks):
        ax.eventplot([panel.ticks], colors="#444444", linewidths=0.6, lineoffsets=0.5, linelengths=0.8)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        if len(panel.ticks) <= MAX_EVENT_LABELS:  # few events: each with its text
            for t, text in panel.labels:
                ax.text(t, 0.62, f" {text}", fontsize=7.5, color="#333333", va="center", ha="left", clip_on=True)
        ax.text(0.005, 0.06, f"{_records(len(panel.ticks))} (not numeric): one tick each", transform=ax.transAxes,
                fontsize=8, va="bottom", color="#444444", bbox=_LABEL_BOX)
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no records in this span", transform=ax.transAxes, ha="center", va="center",
                color="#888888")


def _value_axes(ax, envelope, columns, colors):
    """The axes to draw each column on: all on ``ax``, except that of two
    columns whose value ranges do not overlap (a temperature and a humidity)
    the second gets a y axis of its own on the right."""
    width = min(len(columns), envelope.width)
    if width != 2:
        return [ax] * width
    lo, hi = np.nanmin(np.where(np.isfinite(envelope.mins), envelope.mins, np.nan), axis=0), \
        np.nanmax(np.where(np.isfinite(envelope.maxs), envelope.maxs, np.nan), axis=0)
    if not np.all(np.isfinite(lo) & np.isfinite(hi)) or (lo[0] <= hi[1] and lo[1] <= hi[0]):
        return [ax, ax]
    right = ax.twinx()
    for a, c in ((ax, 0), (right, 1)):
        a.tick_params(axis="y", colors=colors[c], labelsize=8)
    return [ax, right]


def _draw_rate(ax, panel, lo, hi, bins):
    """Records per second of ``panel`` over ``[lo, hi]`` (seconds since the session started)."""
    times = panel.record_times
    span = hi - lo
    count = int(np.clip(len(times) / 4, 10, min(200, bins // 4)))
    edges = np.linspace(lo, hi, count + 1)
    rate = np.histogram(times, bins=edges)[0] / (span / count)
    ax.stairs(rate, edges, color="#555555", linewidth=0.8, fill=True, alpha=0.35)
    ax.set_ylim(0, max(1.0, rate.max() * 1.25))
    ax.set_ylabel("rec/s", rotation=0, ha="right", va="center", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    shown = int(np.count_nonzero((times >= lo) & (times <= hi)))
    ax.text(0.005, 0.92, f"{panel.stream}: {_records(shown)}, {shown / span:,.1f}/s",
            transform=ax.transAxes, fontsize=7, va="top", color="#333333")


def _draw_markers(ax, rate_ax, labels, top):
    for i, (t, label) in enumerate(labels):
        for a in (ax, rate_ax):
            a.axvline(t, color="#9467bd", linewidth=1.0, alpha=0.85, linestyle="--")
        if top and i < MAX_MARKER_LABELS:
            ax.text(t, 1.0, f" {_short(label, 24)}", transform=ax.get_xaxis_transform(),
                    rotation=0 if len(labels) <= 8 else 60, fontsize=8, color="#5b2c83", va="bottom",
                    ha="left", clip_on=False)


def _draw_end(axes, session, panels, t1):
    status = session.status
    if status not in ("crashed", "failed"):
        return
    origin = session.start_time
    last = max((p.record_times[-1] for p in panels if len(p.record_times)), default=None)
    end = t1 - origin
    if last is None or last >= end:
        last = end - (end - axes[0].get_xlim()[0]) * 0.01
    text = "crashed: records end here" if status == "crashed" else f"failed: {_short(session.error, 60)}"
    for ax in axes:
        ax.axvspan(last, end + (end - last), color=_GAP_COLOR, alpha=0.15, hatch="//", linewidth=0)
        ax.axvline(last, color=_GAP_COLOR, linewidth=1.2)
    axes[0].text(last, 0.5, f"{text} ", transform=axes[0].get_xaxis_transform(), ha="right", va="center",
                 color=_GAP_COLOR, fontsize=9, fontweight="bold", bbox=_LABEL_BOX)


def _records(n):
    return f"{n:,} record" + ("" if n == 1 else "s")


def _title(session, whole, t0, t1, start, stop):
    duration = whole[1] - whole[0]
    head = (f"session {session.id} · {session.status} · started {_iso(session.start_time)} UTC · "
            f"{_duration(duration)} · streams: {', '.join(session.streams)}")
    if start is not None or stop is not None:
        head += (f" · showing {_clock_label(t0 - session.start_time, t1 - t0)} to "
                 f"{_clock_label(t1 - session.start_time, t1 - t0)}")
    described = [*(session.labels or {}).items(), *(session.info or {}).items()]  # the user's labels first
    info = ", ".join(f"{k}={_short(v, 30)}" for k, v in described
                     if not isinstance(v, (dict, list)) and len(repr(v)) <= 40 and k not in _UNTITLED)
    return head + ("\n" + textwrap.fill(info, 160, max_lines=2, placeholder=" …") if info else "")


def _iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds):
    return _clock_label(seconds, span=seconds)


def _clock_label(seconds, span):
    """``seconds`` since the start as ``12.5 s`` (spans under a minute),
    ``m:ss`` (under an hour) or ``h:mm:ss``: one form along an axis."""
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if span < 60:
        return f"{sign}{seconds:.4g} s"
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{h}:{m:02d}:{s:02d}" if span >= 3600 else f"{sign}{m}:{s:02d}"


def _short(value, limit):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"
