"""streamlog: record streams into a RAM ring mirrored to an LMDB append log."""

from streamlog import errors
from streamlog.source import ReadBatch, SourceReader

__version__ = "0.1.0"

__all__ = ["errors", "ReadBatch", "SourceReader", "__version__"]
