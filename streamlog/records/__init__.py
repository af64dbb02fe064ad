"""The on-disk layout of a log, every byte of it.

Nothing outside this package builds or parses an LMDB key or value of the
record and time-index databases; the rest of the package handles record
keys as opaque, ordered bytes.  :mod:`~streamlog.records.common` is what
both versions share (format record, database names, record keys, time index,
continuation entries, chunk plan); :mod:`~streamlog.records.v1` reads
format 1 (one entry per record), :mod:`~streamlog.records.v2` reads and
writes format 2 (checksummed blocks).  :func:`layout` gives the module of a
version; both offer ``scan``, ``scan_columns``, ``scan_blocks``, ``scan_reverse``,
``last_arrival_us``, ``key_span`` and ``key_order_problems`` with the same
meaning, and format 2 also ``encode_commit``, ``append_commit`` and
``delete_oldest``.
"""

from streamlog.records import v1, v2
from streamlog.records.common import (FORMAT_NAME, FORMAT_VERSION, READABLE_VERSIONS, after_session,
                                      check_format_record, format_record, is_stream_db_name, key_before,
                                      key_bounds, key_of, record_key, record_keys, records_db_name, same_key_bounds,
                                      seq_of, session_of, session_prefix, stream_of_db_name, time_db_name,
                                      time_index_start)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "READABLE_VERSIONS", "after_session", "check_format_record",
           "format_record", "is_stream_db_name", "key_before", "key_bounds", "key_of", "layout", "record_key",
           "record_keys", "records_db_name", "same_key_bounds", "seq_of", "session_of", "session_prefix",
           "stream_of_db_name", "time_db_name", "time_index_start", "v1", "v2"]

_LAYOUTS = {v1.VERSION: v1, v2.VERSION: v2}


def layout(version):
    """The module that reads (and for the current version writes) format ``version``."""
    return _LAYOUTS[version]
