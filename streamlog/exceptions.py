"""stream2py's exception names, bound to streamlog's classes (see :mod:`streamlog.errors`).

``except StreamNotStartedError:`` and the others catch what streamlog raises
in those cases; :class:`~streamlog.errors.NoItemFound` (an empty read, range,
head or tail) is a ``NoDataAvailableError``.
"""

from streamlog.errors import (BufferOverflowError, ConfigurationError, InvalidDataError, NoDataAvailableError,
                              StreamAlreadyStoppedError, StreamBufferError, StreamlogError, StreamNotStartedError)

Stream2PyError = StreamlogError
BufferError = StreamBufferError  # stream2py's name (it shadows the builtin there too)

__all__ = ["BufferError", "BufferOverflowError", "ConfigurationError", "InvalidDataError", "NoDataAvailableError",
           "Stream2PyError", "StreamAlreadyStoppedError", "StreamNotStartedError"]
