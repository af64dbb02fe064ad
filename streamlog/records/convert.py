"""Format 1 to format 2, one stream of one session at a time (for ``streamlog upgrade``).

Records keep their keys, sequence numbers, arrival times and encodings; the
blocks they land in are cut as a commit's are (about
:data:`~streamlog.records.v2.BLOCK_BYTES` each, never across a gap in the
sequence numbers).  The time index has the
same layout in both formats and is copied as it is.
"""

from streamlog.records import v1, v2
from streamlog.records.common import SEQ, SESSION_ID, after_session, seq_of, session_prefix

_CHUNK = 10_000


def v1_records(store, db, session_id):
    """Lists of ``(encoded key, seq, arrival_us, encoded record)`` of the
    records of ``session_id`` in the format-1 database ``db``, in key order,
    each list read in its own short read transaction of ``store``."""
    prefix, end = session_prefix(session_id), after_session(session_id)
    after = None
    while True:
        with store.read() as txn:
            batch = v1.scan(txn, db, prefix, end, limit=_CHUNK, after=after, decode=False, with_time=True)
        batch = [entry for entry in batch if entry[0] < end]
        if not batch:
            return
        yield [(key[SESSION_ID.size:-SEQ.size], seq_of(key), arrival, payload) for key, arrival, payload in batch]
        after = batch[-1][0]


def v2_entries(session_id, records, page_size):
    """The format-2 entries (key order) of ``records`` (a list from
    :func:`v1_records`)."""
    prefix = session_prefix(session_id)
    out = []
    start = 0
    for i in range(1, len(records) + 1):
        if i == len(records) or records[i][1] != records[i - 1][1] + 1:
            run = records[start:i]
            out += v2.encode_commit(prefix, run[0][1], [r[0] for r in run], [r[3] for r in run],
                                    [r[2] for r in run], page_size)
            start = i
    return out


def put_v2_entries(txn, db, entries):
    """Append ``entries`` (from :func:`v2_entries`, above all in ``db``) inside write transaction ``txn``."""
    txn.cursor(db).putmulti(entries, append=True)


def copy_time_index(src_store, src_db, txn, db):
    """Copy every entry of time-index database ``src_db`` into ``db`` inside write transaction ``txn``."""
    with src_store.read() as src:
        txn.cursor(db).putmulti(list(src.cursor(src_db)), append=True)
