"""stream2py programs, as their users write them, run on streamlog after
changing only the imports.

Each program is run twice, against ``stream2py`` (where it is installed) and
against ``streamlog``, through the ``lib`` fixture: a program's first lines
take its names from ``lib`` exactly as it would import them from one package
or the other, and nothing else in it differs.  The few tests of deliberate
differences say what each package does.
"""

import functools
import http.server
import itertools
import queue
import re
import textwrap
import threading
import time
import warnings
from importlib import import_module
from types import SimpleNamespace

import numpy as np
import pytest

import helpers
import streamlog
from streamlog import errors

DEADLINE_S = 30
MODULES = ["protocols", "buffer_reader", "stream_buffer", "source_reader", "stream_source", "util", "exceptions",
           "simply", "sources"]


@pytest.fixture(params=["stream2py", "streamlog"])
def lib(request):
    """The package under test and its modules, by stream2py's module paths."""
    name = request.param
    if name == "stream2py":
        pytest.importorskip("stream2py", reason="stream2py is not installed (pip install -e '.[bench]')")
    return SimpleNamespace(name=name, top=import_module(name), **{m: import_module(f"{name}.{m}") for m in MODULES})


wait_until = functools.partial(helpers.wait_until, timeout=DEADLINE_S)


def poll(read, count):
    """Call ``read()`` until it has returned ``count`` values other than None."""
    got = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < count:
        item = read()
        if item is None:
            assert time.monotonic() < deadline, f"only {len(got)} of {count} items came"
            time.sleep(0.001)
        else:
            got.append(item)
    return got


def counter_source(base):
    """stream2py's example source on ``base``: "s0", "s1", ... up to ``stop``
    (exclusive), then None (no data) for ever; keyed by the number."""

    class SimpleCounterString(base):
        sleep_time_on_read_none_s = 0.001

        def __init__(self, start, stop):
            self.start = start
            self.stop = stop
            self.range_iterator = None
            self.open_count = 0
            self.exhausted = threading.Event()

        def open(self):
            self.open_count += 1
            self.range_iterator = iter(range(self.start, self.stop))

        def read(self):
            value = next(self.range_iterator, None)
            if value is None:
                self.exhausted.set()
                return None
            return f"s{value}"

        def close(self):
            self.range_iterator = None

        @property
        def info(self):
            return dict(start=self.start, stop=self.stop, open_count=self.open_count)

        def key(self, data):
            return int(data[1:])

    return SimpleCounterString


# -- programs that run the same on both ------------------------------------------------------------------------------


def test_wait_on_len_source_buffer_then_read_query_and_stop(lib):
    SourceReader = lib.source_reader.SourceReader
    StreamBuffer = lib.stream_buffer.StreamBuffer
    BufferReader = lib.buffer_reader.BufferReader

    source_reader = counter_source(SourceReader)(start=0, stop=60)
    stream_buffer = StreamBuffer(source_reader=source_reader, maxlen=100)
    assert stream_buffer.source_buffer is None and stream_buffer.source_reader_info is None
    assert not stream_buffer.is_running
    stream_buffer.start()
    try:
        wait_until(lambda: len(stream_buffer.source_buffer) >= 60, "60 items are in the buffer")
        assert stream_buffer.is_running
        assert stream_buffer.source_reader_info == {"start": 0, "stop": 60, "open_count": 1}
        reader = stream_buffer.mk_reader()
        assert isinstance(reader, BufferReader) and not reader.is_stopped
        assert reader.source_reader_info == {"start": 0, "stop": 60, "open_count": 1}
        assert reader.last_item is None and reader.last_key is None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # stream2py deprecates next(...)
            assert reader.next() == "s0"
            assert (reader.next(peek=True), reader.last_item) == ("s1", "s0")
            assert (reader.next(), reader.last_item) == ("s1", "s1")
        assert reader.range(start=5, stop=10) == ["s5", "s6", "s7", "s8", "s9", "s10"]
        assert reader.last_item == "s10"
        assert (reader.range(start=5, stop=10, step=3), reader.last_item) == (["s5", "s8"], "s8")
        assert reader.range(start=10, stop=15, peek=True) == [f"s{i}" for i in range(10, 16)]
        assert (reader.last_item, reader.last_key) == ("s8", 8)
        assert reader.range(start=0, stop=9, only_new_items=True) == ["s9"]
        assert (reader.head(), reader.last_item, reader.last_key) == ("s0", "s0", 0)
        assert (reader.tail(), reader.last_item, reader.last_key) == ("s59", "s59", 59)
        assert len(stream_buffer.source_buffer) == 60
    finally:
        stream_buffer.stop()
    assert reader.is_stopped and not stream_buffer.is_running


def test_context_managed_source_and_the_buffer_it_makes(lib):
    SourceReader = lib.source_reader.SourceReader

    source_reader = counter_source(SourceReader)(start=0, stop=10)
    with source_reader:
        assert source_reader.info == {"start": 0, "stop": 10, "open_count": 1}
        assert [source_reader.read(), source_reader.read()] == ["s0", "s1"]
    assert source_reader.range_iterator is None  # closed

    with source_reader.stream_buffer(20) as stream_buffer:
        wait_until(lambda: len(stream_buffer.source_buffer) == 10, "10 items are in the buffer")
        assert stream_buffer.source_reader_info["open_count"] == 2
        assert stream_buffer.mk_reader().read(n=10) == [f"s{i}" for i in range(10)]


def test_quick_source_reader_subclass(lib):
    QuickSourceReader = lib.source_reader.QuickSourceReader
    StreamBuffer = lib.top.StreamBuffer

    class Tens(QuickSourceReader):
        def read(self):
            if self.read_idx >= 30:
                return None
            self.read_idx += 1
            return self.read_idx * 10

    with Tens() as source:  # a source is a context manager; iterating it reads it
        assert list(itertools.islice(source, 3)) == [10, 20, 30]
    assert source.closed

    with StreamBuffer(Tens(), maxlen=100) as stream_buffer:
        wait_until(lambda: len(stream_buffer.source_buffer) == 30, "30 items are in the buffer")
        info = stream_buffer.source_reader_info
        assert isinstance(info["open_time"], int) and info["open_time"] > 0 and "Tens" in info["open_instance"]
        reader = stream_buffer.mk_reader()
        assert reader.read(n=3) == [10, 20, 30] and reader.last_key == 30
        assert reader.range(95, 155, start_le=True) == list(range(90, 151, 10))
        assert reader.range(95, 155, stop_ge=True) == list(range(100, 161, 10))
        assert reader.range(95, 155, start_le=True, stop_ge=True, peek=True) == list(range(90, 161, 10))
        with pytest.raises(ValueError):  # no key >= 10_000 (yet)
            reader.range(95, 10_000, stop_ge=True)
        assert reader.range(95, 10_000, stop_ge=True, ignore_no_item_found=True) is None


def chunk_source(base, *, joinable=True):
    """Audio-like items: 10 chunks ``(first sample index, bytes of 10 samples)``
    (sample i has value i), keyed by the first index; with ``joinable`` the
    source slices and joins them."""

    class Chunks(base):
        sleep_time_on_read_none_s = 0.001

        def open(self):
            self.i = 0

        def read(self):
            if self.i >= 100:
                return None
            chunk = (self.i, bytes(range(self.i, self.i + 10)))
            self.i += 10
            return chunk

        def close(self):
            pass

        def key(self, data):
            return data[0]

    class JoinableChunks(Chunks):
        def slice_item(self, item, start=None, stop=None):
            first, samples = item
            lo = 0 if start is None else max(0, start - first)
            hi = len(samples) if stop is None else max(0, min(len(samples), stop - first + 1))
            return first + lo, samples[lo:hi]

        def join_items(self, items):
            return items[0][0], b"".join(samples for _, samples in items)

    return JoinableChunks() if joinable else Chunks()


def test_range_join_over_chunked_items(lib):
    SourceReader = lib.source_reader.SourceReader
    StreamBuffer = lib.stream_buffer.StreamBuffer

    with StreamBuffer(chunk_source(SourceReader), maxlen=100) as stream_buffer:
        wait_until(lambda: len(stream_buffer.source_buffer) == 10, "10 chunks are in the buffer")
        reader = stream_buffer.mk_reader()
        assert reader.range(15, 34, join=True) == (15, bytes(range(15, 35)))
        assert reader.last_key == 30  # the cursor is on the last chunk, not the trimmed item
        assert reader.range(42, 47, join=True) == (42, bytes(range(42, 48)))  # one chunk, sliced twice
        assert reader.range(0, 64, join=True, only_new_items=True) == (50, bytes(range(50, 65)))
        assert reader.range(0, 100, join=True, peek=True) == (0, bytes(range(100)))
        with pytest.raises(ValueError):
            reader.range(15, 34, step=2, join=True)

    with StreamBuffer(chunk_source(SourceReader, joinable=False), maxlen=100) as stream_buffer:
        wait_until(lambda: len(stream_buffer.source_buffer) == 10, "10 chunks are in the buffer")
        reader = stream_buffer.mk_reader()
        with pytest.raises(NotImplementedError):
            reader.range(15, 34, join=True)
        assert reader.last_item is None  # nothing was read


def queue_source(base, items):
    """Reads what is put in ``items``; None while it is empty."""

    class Queued(base):
        sleep_time_on_read_none_s = 0.001

        def open(self):
            pass

        def read(self):
            try:
                return items.get_nowait()
            except queue.Empty:
                return None

        def close(self):
            pass

        def key(self, data):
            return data[0]

    return Queued()


def test_non_blocking_drain_loop_with_ignore_no_item_found(lib):
    SourceReader = lib.source_reader.SourceReader
    StreamBuffer = lib.stream_buffer.StreamBuffer

    items = queue.Queue()
    with StreamBuffer(queue_source(SourceReader, items), maxlen=100) as stream_buffer:
        reader = stream_buffer.mk_reader(blocking=False, ignore_no_item_found=True)
        assert reader.read() is None and next(reader) is None  # nothing yet, and no waiting
        for i in range(50):
            items.put((i, f"line {i}"))
        assert poll(reader.read, 50) == [(i, f"line {i}") for i in range(50)]
        assert reader.read() is None
        for i in range(50, 55):
            items.put((i, f"line {i}"))
        wait_until(lambda: len(stream_buffer.source_buffer) == 55, "55 items are in the buffer")
    assert list(reader) == [(i, f"line {i}") for i in range(50, 55)]  # what was left, then the end
    assert reader.read() is None and reader.is_stopped


def test_restart_a_stopped_buffer_and_attach_a_reader(lib):
    SourceReader = lib.source_reader.SourceReader
    StreamBuffer = lib.stream_buffer.StreamBuffer

    stream_buffer = StreamBuffer(counter_source(SourceReader)(start=0, stop=5), maxlen=10)
    with stream_buffer:
        wait_until(lambda: len(stream_buffer.source_buffer) == 5, "5 items are in the buffer")
        first = stream_buffer.mk_reader()
        assert first.is_same_buffer(stream_buffer.mk_reader())
        assert first.read(n=3) == ["s0", "s1", "s2"]
        assert stream_buffer.source_reader_info["open_count"] == 1
    assert not stream_buffer.is_running and first.is_stopped

    with stream_buffer:
        wait_until(lambda: len(stream_buffer.source_buffer) == 5, "5 items are in the restarted buffer")
        assert stream_buffer.source_reader_info["open_count"] == 2
        second = stream_buffer.mk_reader()
        assert not second.is_same_buffer(first)
        assert second.read(n=5) == [f"s{i}" for i in range(5)]
        stream_buffer.attach_reader(first)  # reads on after the key it last read
        assert first.read(n=2) == ["s3", "s4"]
        assert first.is_same_buffer(second)


def test_buffer_reader_class_of_the_source(lib):
    SourceReader = lib.source_reader.SourceReader
    StreamBuffer = lib.stream_buffer.StreamBuffer
    BufferReader = lib.buffer_reader.BufferReader

    class TextReader(BufferReader):
        def text(self, start, stop):
            return " ".join(self.range(start, stop))

    class Counted(counter_source(SourceReader)):
        buffer_reader_class = TextReader

    with StreamBuffer(Counted(start=0, stop=10), maxlen=20) as stream_buffer:
        wait_until(lambda: len(stream_buffer.source_buffer) == 10, "10 items are in the buffer")
        reader = stream_buffer.mk_reader()
        assert isinstance(reader, TextReader) and reader.text(2, 4) == "s2 s3 s4"
        assert reader.last_key == 4


def test_stream_source_opens_with_its_first_reader_and_closes_with_its_last(lib):
    StreamSource = lib.stream_source.StreamSource

    class Counter(StreamSource):
        def __init__(self, *, start=0, stop=1):
            StreamSource.__init__(self)
            self.start, self.stop = start, stop
            self.open_count = 0
            self.closes = 0

        def open(self):
            self.open_count += 1
            self.range_iterator = iter(range(self.start, self.stop))

        def read(self):
            value = next(self.range_iterator, None)
            return None if value is None else f"s{value}"

        def close(self):
            self.closes += 1

        @property
        def info(self):
            return dict(start=self.start, stop=self.stop, open_count=self.open_count)

        def key(self, data):
            return int(data[1:])

    source = Counter(start=0, stop=10)
    with source.open_reader(ignore_no_item_found=True) as reader:
        assert poll(reader.read, 3) == ["s0", "s1", "s2"]
        assert reader.source_reader_info["open_count"] == 1
    assert source.closes == 1
    reader2 = source.open_reader(ignore_no_item_found=True)
    assert poll(reader2.read, 1) == ["s0"]
    reader2.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # stream2py's reader thread
def test_simply_mk_stream_buffer_without_auto_drop(lib):  # ends by dying of the StopIteration of read_stream

    mk_stream_buffer = lib.simply.mk_stream_buffer

    counter = iter(range(10))
    closed = []
    with mk_stream_buffer(read_stream=lambda open_inst: next(counter), open_stream=lambda: "the handle",
                          close_stream=closed.append, auto_drop=False, maxlen=2,
                          sleep_time_on_read_none_seconds=0.001) as count_stream_buffer:
        count_reader = count_stream_buffer.mk_reader()
        assert count_reader.source_reader_info["open_instance"] == "the handle"
        got = []
        for i in count_reader:
            got.append(i)
            assert len(count_stream_buffer.source_buffer) <= 2
            count_stream_buffer.drop()
    assert got == [(i, i) for i in range(10)]
    assert closed == ["the handle"]


def test_exceptions_by_stream2py_names(lib):
    SourceReader = lib.source_reader.SourceReader
    StreamBuffer = lib.stream_buffer.StreamBuffer
    exceptions = lib.exceptions

    stream_buffer = StreamBuffer(queue_source(SourceReader, queue.Queue()), maxlen=10)
    with pytest.raises(exceptions.StreamNotStartedError):
        stream_buffer.mk_reader()
    with pytest.raises(exceptions.Stream2PyError):
        stream_buffer.mk_reader()
    with stream_buffer:
        reader = stream_buffer.mk_reader()
        with pytest.raises(IndexError):  # an empty buffer
            reader.head()
        with pytest.raises(IndexError):
            reader.tail()
        assert reader.tail(ignore_no_item_found=True) is None


def test_timer(lib):
    Timer = lib.util.Timer

    with Timer(lambda seconds: int(seconds // 3600)) as timer:
        assert timer.elapsed() == 0
    with pytest.raises(ValueError, match="not running"):
        timer.elapsed()
    timer = Timer().start()
    assert timer.elapsed() >= 0
    timer.stop()


def test_next_n_strict_n_and_tail_of_new_items(lib):
    SourceReader = lib.source_reader.SourceReader
    StreamBuffer = lib.stream_buffer.StreamBuffer

    with StreamBuffer(counter_source(SourceReader)(start=0, stop=10), maxlen=20) as stream_buffer:
        wait_until(lambda: len(stream_buffer.source_buffer) == 10, "10 items are in the buffer")
        reader = stream_buffer.mk_reader()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert reader.next(3) == ["s0", "s1", "s2"]
            assert reader.next() == "s3"
        with pytest.raises(ValueError):
            reader.read(n=100, strict_n=True)
        assert reader.last_key == 3
        assert reader.read(n=100) == [f"s{i}" for i in range(4, 10)]
        assert reader.tail(only_new_items=True, ignore_no_item_found=True) is None
        assert reader.tail(peek=True) == "s9"


def test_any_object_with_the_source_protocol_is_a_source(lib):
    StreamBuffer = lib.stream_buffer.StreamBuffer
    Source = lib.protocols.Source

    class Duck:  # no base class: stream2py checks the protocol only
        sleep_time_on_read_none_s = 0.001
        info = {"kind": "duck"}

        def open(self):
            self.n = 0

        def read(self):
            self.n += 1
            return self.n if self.n <= 5 else None

        def close(self):
            pass

        def key(self, data):
            return data

    assert isinstance(Duck(), Source)
    with StreamBuffer(Duck(), maxlen=10) as stream_buffer:
        wait_until(lambda: len(stream_buffer.source_buffer) == 5, "5 items are in the buffer")
        assert stream_buffer.mk_reader().range(2, 4) == [2, 3, 4]
        assert stream_buffer.source_reader_info == {"kind": "duck"}


def test_a_small_maxlen_loses_nothing_on_streamlog_and_all_but_the_window_on_stream2py(lib):
    """The one intended disagreement: stream2py drops what leaves its window."""
    SourceReader = lib.source_reader.SourceReader
    StreamBuffer = lib.stream_buffer.StreamBuffer

    source_reader = counter_source(SourceReader)(start=0, stop=20_000)
    with StreamBuffer(source_reader=source_reader, maxlen=100) as stream_buffer:
        reader = stream_buffer.mk_reader()
        assert source_reader.exhausted.wait(DEADLINE_S)  # a consumer slower than the source
        wait_until(lambda: len(stream_buffer.source_buffer) == 100, "the window is full")
        got = reader.read(n=20_000)
    kept = 20_000 if lib.name == "streamlog" else 100
    assert got == [f"s{i}" for i in range(20_000 - kept, 20_000)]


# -- stream2py's own README examples, verbatim but for the imports ----------------------------------------------------


def stream2py_readme_blocks():
    """The code blocks (after ``::``) of stream2py's README (its package docstring), dedented."""
    stream2py = pytest.importorskip("stream2py", reason="stream2py is not installed (pip install -e '.[bench]')")
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", stream2py.__doc__)
    return [textwrap.indent(textwrap.dedent(block), "").replace("from stream2py", "from streamlog")
            for block in blocks]


def run_readme(code, namespace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "stream2py-README", "exec"), namespace)  # noqa: S102 - the README's own code
    return namespace


def test_stream2py_readme_line_reader(tmp_path, monkeypatch):
    blocks = stream2py_readme_blocks()
    line_reader = next(i for i, b in enumerate(blocks) if "class LineSourceReader" in b)
    code = "".join(blocks[line_reader:line_reader + 3])  # the reader, the buffer, the reads ("Continued")
    assert "from streamlog import SourceReader" in code and "line_1_10 = buffer_reader.range" in code
    lines = [f"line {i}\n" for i in range(200)]
    (tmp_path / "hamlet.txt").write_text("".join(lines))
    ns = run_readme(code, {"StreamBuffer": streamlog.StreamBuffer}, tmp_path, monkeypatch)
    assert ns["line_1"] == (0, lines[0]) and ns["line_2"] == (1, lines[1])
    assert ns["line_1_10"][0] == (1, lines[1]) and all(i + 1 == k for i, (k, _) in enumerate(ns["line_1_10"]))


def test_stream2py_readme_mk_stream_buffer(tmp_path, monkeypatch, capsys):
    code = next(b for b in stream2py_readme_blocks() if "mk_stream_buffer(" in b)
    assert "from streamlog import mk_stream_buffer" in code
    lines = [f"line {i}\n" for i in range(100)]
    (tmp_path / "hamlet.txt").write_text("".join(lines))
    run_readme(code, {}, tmp_path, monkeypatch)
    assert capsys.readouterr().out == f"{[(i, lines[i]) for i in range(40, 51)]}\n"


def test_stream2py_readme_audio_reader(tmp_path, monkeypatch, alsa_file_input):
    code = next(b for b in stream2py_readme_blocks() if "PyAudioSourceReader(" in b)
    assert "from streamlog.sources.audio import PyAudioSourceReader" in code
    buffers = int(44100 / 1024 * 5)
    signal = (np.arange((buffers + 20) * 1024) % 30_000).astype(np.int16).reshape(-1, 1)
    alsa_file_input(signal)
    seen = []
    run_readme(code, {"StreamBuffer": streamlog.StreamBuffer, "long_calculations": seen.append}, tmp_path,
               monkeypatch)
    assert len(seen) == buffers
    assert np.array_equal(np.concatenate([samples for _, samples, _, _ in seen]), signal[:buffers * 1024])


# -- what streamlog adds, and the deliberate differences ----------------------------------------------------------


def test_session_info_is_what_open_left_in_the_source_info(tmp_path):
    class Device(streamlog.SourceReader):
        rate = None

        def open(self):
            self.rate = 48_000  # a device's real rate, known once it is open

        def read(self):
            return None

        def close(self):
            pass

        def key(self, data):
            return data

        @property
        def info(self):
            return {"rate": self.rate}

    path = tmp_path / "rec.streamlog"
    with streamlog.StreamBuffer(Device(), log=path, labels={"subject": "S01"}) as buf:
        assert buf.source_reader_info == {"rate": 48_000}  # the labels are kept apart
        assert buf.mk_reader().source_reader_info == {"rate": 48_000}
        with streamlog.Log(path, readonly=True) as log:  # stored while the session is live
            session = log.session(-1)
            assert session.status == "live" and session.info == {"rate": 48_000}
            assert session.labels == {"subject": "S01"}


def test_errors_name_the_difference_and_the_switch(tmp_path):
    items = queue.Queue()
    with streamlog.StreamBuffer(queue_source(streamlog.SourceReader, items), maxlen=10) as buf:
        reader = buf.mk_reader()  # blocking by default
        with pytest.raises(errors.NoItemFound, match=r"ignore_no_item_found=True returns None") as empty:
            reader.read(timeout=0.01)
        assert isinstance(empty.value, (streamlog.exceptions.NoDataAvailableError, IndexError, ValueError))
        assert reader.read(timeout=0.01, ignore_no_item_found=True) is None
        polling = buf.mk_reader(blocking=False)
        assert polling.next() is None and polling.read(ignore_no_item_found=True) is None
        with pytest.raises(errors.ConfigurationError, match="auto_drop must be False"):
            buf.drop()
        with pytest.raises(TypeError, match="subclass of streamlog.BufferReader"):
            buf.mk_reader(buffer_reader_class=dict)
        items.put((1, "a"))
        assert reader.read(timeout=DEADLINE_S) == (1, "a")
        with pytest.raises(errors.NotEnoughItems, match=r"only 1 record\(s\).*strict_n=True"):
            polling.read(n=3, strict_n=True)
    with pytest.raises(streamlog.exceptions.StreamAlreadyStoppedError, match="log=PATH"):
        buf.mk_reader()  # close() removed the temporary log


def test_mk_reader_takes_a_buffer_reader_class(tmp_path):
    class Texts(streamlog.BufferReader):
        def texts(self):
            return [text for _, text in self.range()]

    items = queue.Queue()
    for i in range(3):
        items.put((i, f"t{i}"))
    with streamlog.StreamBuffer(queue_source(streamlog.SourceReader, items)) as buf:
        reader = buf.mk_reader(buffer_reader_class=Texts)
        assert poll(lambda: reader.read(ignore_no_item_found=True, timeout=DEADLINE_S), 3)
        assert reader.texts() == ["t0", "t1", "t2"]


def test_join_needs_the_source_so_a_stored_session_refuses_it(tmp_path):
    path = tmp_path / "rec.streamlog"
    with streamlog.StreamBuffer(chunk_source(streamlog.SourceReader), log=path) as buf:
        wait_until(lambda: len(buf.source_buffer) == 10, "10 chunks are in the buffer")
    with streamlog.Log(path) as log:
        stored = log.session(-1).reader()
        assert stored.range(10, 19) == [(10, bytes(range(10, 20)))]
        with pytest.raises(errors.JoinNotSupported, match="stored session has no source reader"):
            stored.range(15, 34, join=True)


class _Body(http.server.BaseHTTPRequestHandler):
    body = bytes(range(256)) * 40

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_http_response_reader_records_the_body_in_chunks_and_ends():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Body)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        source = streamlog.sources.HTTPResponseReader(url, response_read_args=(1000,))
        with streamlog.StreamBuffer(source) as buf:
            assert buf.wait(DEADLINE_S)  # the end of the body ends the session
            chunks = buf.mk_reader().range()
        assert b"".join(chunk for _, chunk in chunks) == _Body.body and len(chunks) == 11
        assert buf.session.status == "closed" and buf.session.info["n_bytes_read"] == len(_Body.body)
    finally:
        server.shutdown()
        server.server_close()
