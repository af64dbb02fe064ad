"""stream2py's ``source_reader`` module: :class:`~streamlog.source.SourceReader`
and :class:`~streamlog.source.QuickSourceReader`."""

from streamlog.source import QuickSourceReader, SourceReader

__all__ = ["QuickSourceReader", "SourceReader"]
