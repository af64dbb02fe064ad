"""Ready-made sources: each module holds one :class:`~streamlog.SourceReader`.

* :mod:`streamlog.sources.lines` -- ``LineSource``: the lines of a text file
  or stream, optionally following a growing file like ``tail -f``.
* :mod:`streamlog.sources.command` -- ``CommandSource``: the stdout/stderr
  lines of a subprocess, timestamped, with its exit status.
* :mod:`streamlog.sources.synth` -- ``SynthSource``: a deterministic
  multi-channel test signal (seeded sines plus noise), no hardware needed.
* :mod:`streamlog.sources.audio` -- microphone input (needs the ``audio``
  extra); :mod:`streamlog.sources.markers` -- event markers beside it.
* :mod:`streamlog.sources.http` -- ``HTTPResponseReader``: the body of an
  HTTP response, chunk by chunk (stream2py's one ready source).

The modules are not imported here, so importing one never pulls in the
optional dependencies of another; ``http`` (standard library only) is, as
``stream2py.sources`` imports it.
"""

from streamlog.sources import http
from streamlog.sources.http import HTTPResponseReader

__all__ = ["HTTPResponseReader", "http"]
