"""Beyond one machine: mirror a log's sessions to Redis Streams
(:class:`Mirror`) and read them from anywhere with the reader API
(:class:`RemoteLog`).  Needs the ``redis`` extra (``pip install 'streamlog[redis]'``);
the layout in Redis is described in :mod:`streamlog.remote.layout`.
"""

from streamlog.remote.layout import is_remote_url
from streamlog.remote.log import RemoteLog, RemoteSession, open_log
from streamlog.remote.mirror import Mirror
from streamlog.remote.reader import RemoteReader

__all__ = ["Mirror", "RemoteLog", "RemoteReader", "RemoteSession", "is_remote_url", "open_log"]
