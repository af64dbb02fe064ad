"""Redis servers for tests: each test starts its own on a free 127.0.0.1 port
(``tools/redis_server.py``) and stops it by pid; skipped, saying why, where
``redis-server`` or redis-py is missing.

    from redis_helpers import redis_server, redis_aof_server  # noqa: F401  (pytest fixtures)
"""

import pytest

from helpers import load_tool

redis_tool = load_tool("redis_server")


def _started(server):
    try:
        return server.start()
    except redis_tool.RedisUnavailable as exc:
        pytest.skip(f"no Redis for this test: {exc}")


@pytest.fixture
def redis_server(tmp_path):
    """A running redis-server without persistence; ``.url``, ``.client()``, ``.kill()``."""
    server = _started(redis_tool.RedisServer(tmp_path / "redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_aof_server(tmp_path):
    """A running redis-server with an AOF: ``.kill()`` then ``.start()`` brings its data back."""
    server = _started(redis_tool.RedisServer(tmp_path / "redis-aof", appendonly=True))
    yield server
    server.stop()


@pytest.fixture
def redis_cluster(tmp_path):
    """Three cluster masters on loopback ports; ``.url`` names the first node."""
    cluster = redis_tool.RedisCluster(tmp_path / "cluster")
    try:
        cluster.start()
    except redis_tool.RedisUnavailable as exc:
        pytest.skip(f"no Redis Cluster for this test: {exc}")
    yield cluster
    cluster.stop()
