"""stream2py's ``util.Timer``."""

from time import perf_counter

from streamlog import errors

__all__ = ["Timer"]


def _unchanged(seconds):
    return seconds


class Timer:
    """Seconds elapsed since :meth:`start`, passed through ``egress``.

    A context manager (``with Timer() as t: ... t.elapsed()``), reusable;
    measured with ``time.perf_counter`` (monotonic), so ``start_time`` is a
    reference point, not a wall-clock time.
    """

    def __init__(self, egress=_unchanged):
        self.egress = egress
        self.start_time = None

    def start(self):
        """Start (or restart) the timer; return it."""
        self.start_time = perf_counter()
        return self

    def stop(self, *exc):
        """Stop the timer; :meth:`elapsed` raises until it is started again."""
        self.start_time = None

    def elapsed(self):
        """``egress(seconds since start)``; ConfigurationError (a ValueError,
        as in stream2py) if the timer is not running."""
        if self.start_time is None:
            raise errors.ConfigurationError("The timer is not running, so nothing has elapsed: call start() first, "
                                            "or use it as a context manager ('with Timer() as timer:')")
        return self.egress(perf_counter() - self.start_time)

    __enter__ = start
    __exit__ = stop
