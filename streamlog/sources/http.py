"""``HTTPResponseReader``: the body of an HTTP response, chunk by chunk (stdlib only)."""

import time
import urllib.request

from streamlog.source import SourceReader

__all__ = ["HTTPResponseReader"]


class HTTPResponseReader(SourceReader):
    """Records ``(epoch seconds, chunk)`` for each ``response.read(*response_read_args)``
    of the response to one request, keyed by the time; the stream ends with the body.

    ``response_read_args``: e.g. ``(1024,)`` for 1 KiB chunks (default: the
    whole body in one record).  A chunk is ``bytes``, or ``str`` when
    ``encoding`` is given or ``response_format="str"`` (UTF-8 unless
    ``encoding`` says otherwise).  ``info`` holds the url, the bytes read so
    far and the constructor's options.
    """

    def __init__(self, url, *, method="GET", headers=None, body="", response_format="bytes",
                 response_read_args=(), encoding=""):
        if response_format not in ("bytes", "str"):
            raise ValueError(f"response_format must be 'bytes' or 'str', not {response_format!r}")
        headers = dict(headers or {})
        self._init_kwargs = dict(method=method, headers=headers, body=body, response_format=response_format,
                                 encoding=encoding)
        self._url = url
        if isinstance(body, str):
            body = body.encode()
        self._request_args = dict(url=url, data=None if method.upper() == "GET" or not body else body,
                                  headers=headers, method=method.upper())
        self._encoding = encoding or ("utf-8" if response_format == "str" else "")
        if response_read_args is None:
            response_read_args = ()
        self.response_read_args = response_read_args if isinstance(response_read_args, tuple) else (
            response_read_args,)
        self._response = None
        self._n_bytes_read = 0

    @property
    def info(self):
        return {"url": self._url, "n_bytes_read": self._n_bytes_read, "init_kwargs": self._init_kwargs}

    def key(self, data):
        return data[0]

    def open(self):
        self._n_bytes_read = 0
        self._response = urllib.request.urlopen(urllib.request.Request(**self._request_args))

    def read(self):
        chunk = self._response.read(*self.response_read_args)
        if not chunk:
            raise StopIteration
        self._n_bytes_read += len(chunk)
        return time.time(), chunk.decode(self._encoding) if self._encoding else chunk

    def close(self):
        if self._response is not None:
            self._response.close()
            self._response = None
