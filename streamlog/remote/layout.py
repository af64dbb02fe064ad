"""The Redis layout of a mirrored log, and connecting to it.

Every key of one session carries the hash tag ``{RIG:SESSION}``, so a
session lives in one Redis Cluster slot (a script may touch all of its keys):

=============================  =====  ==============================================
key                            type   holds
=============================  =====  ==============================================
``sl:rigs``                    set    the rig names mirrored into this database
``sl:{RIG}:sessions``          zset   session ids of the rig (score = id)
``sl:{RIG}:retired``           zset   ids removed by remote retention (never mirrored again)
``sl:{RIG:S}:meta``            hash   ``meta``: the session's metadata (record codec);
                                      per stream ``count:NAME``, ``bytes:NAME``
                                      (records and encoded bytes held), ``next:NAME``
                                      (the local sequence number to mirror next) and
                                      ``top:NAME`` (the last entry id counted)
``sl:{RIG:S}:s:NAME``          stream one entry per record of stream NAME (see below)
``sl:{RIG:S}:k:NAME``          zset   sparse key index: members ``encode_key(key) + u64be(seq)``,
                                      all score 0 (lexicographic order = key order)
``sl:{RIG:S}:t:NAME``          zset   sparse time index: member ``seq``, score arrival µs
=============================  =====  ==============================================

Stream entries: the record with local sequence number ``seq`` has id
``seq-1`` and fields ``k`` (``encode_key(key)``, order-preserving bytes),
``t`` (arrival, µs since the epoch) and ``r`` (the record, encoded with
:mod:`streamlog.codec` exactly as in the log).  A record whose encoding is
larger than the mirror's part size is split over ids ``seq-1 .. seq-n``,
each with ``p = "i/n"`` and a piece of ``r`` (``k`` and ``t`` on every
part).  Records the local log pruned before they were mirrored leave one
*gap marker* at id ``first-1`` with field ``gap`` = how many are missing.
Ids are therefore strictly increasing and derived from the local log alone,
so a retried ``XADD`` of an entry Redis already holds is refused (the
exactly-once rule; see :data:`APPEND_SCRIPT` and :data:`ACCOUNT_SCRIPT`).
"""

import struct
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streamlog import errors

PREFIX = "sl"
RIGS = f"{PREFIX}:rigs"
SEQ = struct.Struct(">Q")
SCHEMES = ("redis://", "rediss://", "unix://")
_FORBIDDEN = set("{}: \t\r\n")


def is_remote_url(text):
    """True if ``text`` names a remote log (``redis://``, ``rediss://``, ``unix://``)."""
    return isinstance(text, str) and text.lower().startswith(SCHEMES)


def check_rig(name):
    """``name`` if it is a usable rig name, else ValueError."""
    if not isinstance(name, str) or not name or len(name) > 100 or _FORBIDDEN & set(name):
        raise ValueError(f"a rig name is 1-100 characters without braces, colons or spaces, not {name!r}")
    return name


def split_url(url):
    """``(url without name=, name or None)`` for ``redis://HOST:PORT/DB?name=RIG``."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [value for key, value in query if key == "name"]
    rest = urlencode([(key, value) for key, value in query if key != "name"])
    return urlunsplit(parts._replace(query=rest)), (names[-1] if names else None)


def redis_module():
    """redis-py, or RemoteError saying how to install it."""
    try:
        import redis
        import redis.cluster
    except ImportError as exc:
        raise errors.RemoteError(f"the redis client is not installed ({exc}); pip install 'streamlog[redis]'") from None
    return redis


def connect(url, *, socket_timeout=5.0):
    """A redis-py client for ``url``: a ``RedisCluster`` when the server is a
    cluster node, else ``Redis``.  Raises RemoteUnavailable when the server
    does not answer, RemoteError for a URL redis-py refuses."""
    redis = redis_module()
    RedisCluster = redis.cluster.RedisCluster

    try:
        client = redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
        enabled = client.info("cluster").get("cluster_enabled")
    except redis.exceptions.ConnectionError as exc:
        raise errors.RemoteUnavailable(f"cannot reach {display(url)}: {exc}") from exc
    except (ValueError, redis.exceptions.RedisError) as exc:
        raise errors.RemoteError(f"cannot use {display(url)}: {exc}") from exc
    if not enabled:
        return client
    client.close()
    try:
        return RedisCluster.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
    except redis.exceptions.RedisError as exc:
        raise errors.RemoteUnavailable(f"cannot reach the cluster at {display(url)}: {exc}") from exc


def display(url):
    """``url`` without a password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def sessions_key(rig):
    return f"{PREFIX}:{{{rig}}}:sessions"


def retired_key(rig):
    return f"{PREFIX}:{{{rig}}}:retired"


def session_keys(rig, session_id, stream):
    """``(meta, stream, key index, time index)`` keys of one stream of a session."""
    tag = f"{PREFIX}:{{{rig}:{session_id}}}"
    return f"{tag}:meta", f"{tag}:s:{stream}", f"{tag}:k:{stream}", f"{tag}:t:{stream}"


def meta_key(rig, session_id):
    return session_keys(rig, session_id, "")[0]


def session_key_pattern(rig, session_id):
    return f"{PREFIX}:{{{rig}:{session_id}}}:*"


def entry_id(seq, part=1):
    return f"{seq}-{part}"


def parse_id(entry_id):
    """``(seq, part)`` of a stream entry id."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    seq, _, part = entry_id.partition("-")
    return int(seq), int(part)


def index_member(encoded_key, seq):
    return encoded_key + SEQ.pack(seq)


def member_seq(member):
    return SEQ.unpack(member[-SEQ.size:])[0]


# The end of the append and account scripts: add what was counted (``count``,
# ``bytes``, ``last`` = the last id counted) to the stream's counters, and
# raise ``next:NAME`` to ARGV[3].
_COUNTED = """
if count ~= 0 then redis.call('HINCRBY', KEYS[1], 'count:' .. name, count) end
if bytes ~= 0 then redis.call('HINCRBY', KEYS[1], 'bytes:' .. name, bytes) end
if last then redis.call('HSET', KEYS[1], 'top:' .. name, last) end
local nxt = tonumber(ARGV[3])
local old = tonumber(redis.call('HGET', KEYS[1], 'next:' .. name) or '0')
if nxt > old then redis.call('HSET', KEYS[1], 'next:' .. name, nxt) end
"""

# One call per batch of one stream: append entries whose id is above the
# stream's top (a retried entry is refused by XADD and counted as a
# duplicate, not added twice), add the index members and counters of what
# was added, and set the metadata blob.  All keys share one hash tag.
#   KEYS: meta, stream, key index, time index
#   ARGV: stream name, meta blob ("" = keep), next seq, entries ("" = none):
#         a msgpack list of [id, counts (1 for the first part of a record),
#         bytes, key index member ("" = none), time score ("" = none),
#         [field, value, ...]], then the records' ``r`` values, one argument
#         each, in entry order (entries with an ``r`` field name it last and
#         without a value; large values are not copied through msgpack)
# Returns {added, duplicates}.
APPEND_SCRIPT = """
local name = ARGV[1]
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'meta', ARGV[2]) end
local added, dups, count, bytes, last = 0, 0, 0, 0, nil
if ARGV[4] ~= '' then
  local entries = cmsgpack.unpack(ARGV[4])
  local value = 5
  for _, e in ipairs(entries) do
    local fields = e[6]
    local ok
    if fields[#fields] == 'r' then
      ok = pcall(redis.call, 'XADD', KEYS[2], e[1], 'r', ARGV[value], unpack(fields, 1, #fields - 1))
      value = value + 1
    else
      ok = pcall(redis.call, 'XADD', KEYS[2], e[1], unpack(fields))
    end
    if ok then
      added = added + 1
      last = e[1]
      count = count + e[2]
      bytes = bytes + e[3]
      if e[4] ~= '' then redis.call('ZADD', KEYS[3], 0, e[4]) end
      if e[5] ~= '' then redis.call('ZADD', KEYS[4], e[5], string.match(e[1], '^%d+')) end
    else
      dups = dups + 1
    end
  end
end
""" + _COUNTED + """
return {added, dups}
"""

# Large records go as plain pipelined XADDs (a script argument costs Redis
# as much again as the XADD: it is copied into a Lua string), followed in the
# same pipeline by this script, which accounts for them.  XADD refuses ids at
# or below the stream's top, so the entries of a batch that were refused are
# a prefix of it: the script counts those above ``top:NAME``, the last id it
# (or APPEND_SCRIPT) accounted for.
#   KEYS: meta, stream, key index, time index
#   ARGV: stream name, meta blob ("" = keep), next seq, then per entry:
#         id, counts, bytes, key index member ("" = none), time score ("" = none)
# Returns the number of entries accounted for.
ACCOUNT_SCRIPT = """
local name = ARGV[1]
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'meta', ARGV[2]) end
local top = redis.call('HGET', KEYS[1], 'top:' .. name) or '0-0'
local ts, tp = string.match(top, '^(%d+)-(%d+)$')
ts, tp = tonumber(ts), tonumber(tp)
local count, bytes, last, n = 0, 0, nil, 0
for i = 4, #ARGV, 5 do
  local s, p = string.match(ARGV[i], '^(%d+)-(%d+)$')
  s, p = tonumber(s), tonumber(p)
  if s > ts or (s == ts and p > tp) then
    n = n + 1
    last = ARGV[i]
    count = count + tonumber(ARGV[i + 1])
    bytes = bytes + tonumber(ARGV[i + 2])
    if ARGV[i + 3] ~= '' then redis.call('ZADD', KEYS[3], 0, ARGV[i + 3]) end
    if ARGV[i + 4] ~= '' then redis.call('ZADD', KEYS[4], ARGV[i + 4], s) end
  end
end
""" + _COUNTED + """
return n
"""

# At every (re)connection, before the mirror asks where a stream ends: account
# for entries above ``top:NAME`` (XADDs of a mirror killed before its
# ACCOUNT_SCRIPT ran; at most the batches it had in flight).  Their index
# members are not added (the indexes are sparse: a search starts a little
# earlier).  KEYS: meta, stream; ARGV: stream name.  Returns records counted.
RECONCILE_SCRIPT = """
local name = ARGV[1]
local top = redis.call('HGET', KEYS[1], 'top:' .. name) or '0-0'
local entries = redis.call('XRANGE', KEYS[2], '(' .. top, '+')
local count, bytes, last = 0, 0, nil
for _, e in ipairs(entries) do
  local f, r, p = e[2], nil, nil
  for i = 1, #f, 2 do
    if f[i] == 'r' then r = f[i + 1] elseif f[i] == 'p' then p = f[i + 1] end
  end
  if r then
    bytes = bytes + #r
    if (not p) or string.sub(p, 1, 2) == '1/' then count = count + 1 end
  end
  last = e[1]
end
if count ~= 0 then redis.call('HINCRBY', KEYS[1], 'count:' .. name, count) end
if bytes ~= 0 then redis.call('HINCRBY', KEYS[1], 'bytes:' .. name, bytes) end
if last then redis.call('HSET', KEYS[1], 'top:' .. name, last) end
return count
"""
