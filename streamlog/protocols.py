"""stream2py's ``protocols`` module: the :class:`Source` protocol a StreamBuffer reads."""

from streamlog.source import Source

__all__ = ["Source"]
