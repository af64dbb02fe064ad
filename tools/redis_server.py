"""A private ``redis-server`` (or a 3-master Redis Cluster) on 127.0.0.1 for
tests and benchmarks: started on a free port, killed or stopped by its pid,
restarted on the same port and directory (with ``appendonly`` it comes back
with its data from the AOF).

    with RedisServer(tmp_dir, appendonly=True) as server:
        server.url          # redis://127.0.0.1:PORT/0
        server.kill()       # SIGKILL by pid
        server.start()      # again, same port and directory

``RedisUnavailable`` says why a server could not be had (no binary, no redis-py,
it did not answer): tests turn it into a skip with that reason.
"""

import os
import random
import select
import shutil
import signal
import socket
import subprocess
import time


class RedisUnavailable(Exception):
    """redis-server or redis-py is missing, or the server did not come up."""


def free_port(bus=False):
    """A TCP port on 127.0.0.1 that was free a moment ago; with ``bus``, one
    below 55536 whose cluster bus port (+10000) was free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", random.randrange(20000, 55536) if bus else 0))
            port = s.getsockname()[1]
        if not bus:
            return port
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


def require_redis():
    """The ``redis-server`` executable; RedisUnavailable when it or redis-py is missing."""
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        raise RedisUnavailable(f"python package 'redis' not importable ({exc}); pip install 'streamlog[redis]'")
    exe = shutil.which("redis-server")
    if exe is None:
        raise RedisUnavailable("redis-server not on PATH; apt-get install -y redis-server")
    return exe


class RedisServer:
    """One ``redis-server --port P --bind 127.0.0.1 --save '' --dir WORKDIR``.

    ``appendonly``: keep an AOF (fsync every second; a killed process loses
    nothing it acknowledged, since the AOF is written before replies go out).
    ``cluster``: start as a cluster node (see :class:`RedisCluster`).
    :meth:`start` blocks until the server answers PING (RedisUnavailable after
    ``start_timeout_s``).
    """

    def __init__(self, workdir, *, appendonly=False, cluster=False, port=None, start_timeout_s=10.0):
        self.workdir = os.fspath(workdir)
        self.appendonly = appendonly
        self.cluster = cluster
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def start(self):
        """Start the server (again: same port and directory); return self."""
        exe = require_redis()
        os.makedirs(self.workdir, exist_ok=True)
        if self.port is None:
            self.port = free_port(bus=self.cluster)
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", self.workdir,
                "--loglevel", "warning", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf",
                     "--cluster-node-timeout", "2000"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self):
        import redis

        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stdout.read().decode(errors="replace").strip()
                raise RedisUnavailable(f"redis-server exited with code {self.proc.returncode}: {err[-300:]}")
            try:
                redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping()
                return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RedisUnavailable(f"redis-server did not answer on port {self.port} "
                                       f"within {self.start_timeout_s} s")
            select.select([], [], [], 0.01)

    def client(self, **kwargs):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def version(self):
        return self.client().info("server")["redis_version"]

    def kill(self, sig=signal.SIGKILL):
        """Send ``sig`` (default SIGKILL) to the server by its pid and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=10)

    def stop(self):
        """SIGTERM by pid, wait (SIGKILL after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


class RedisCluster:
    """Three masters on free 127.0.0.1 ports joined with
    ``redis-cli --cluster create ... --cluster-yes``; :meth:`start` returns
    once every node reports ``cluster_state:ok``."""

    def __init__(self, workdir, masters=3, start_timeout_s=20.0):
        self.workdir = os.fspath(workdir)
        self.start_timeout_s = start_timeout_s
        self.nodes = [RedisServer(os.path.join(self.workdir, f"node{i}"), cluster=True) for i in range(masters)]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return self.nodes[0].url

    def start(self):
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisUnavailable("redis-cli not on PATH; apt-get install -y redis-tools")
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            created = subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
                                      "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if created.returncode != 0:
                raise RedisUnavailable(f"redis-cli --cluster create failed: {created.stdout[-300:]}"
                                       f"{created.stderr[-300:]}")
            deadline = time.monotonic() + self.start_timeout_s
            while not all(n.client().cluster("info").get("cluster_state") == "ok" for n in self.nodes):
                if time.monotonic() > deadline:
                    raise RedisUnavailable("the cluster did not reach cluster_state:ok")
                select.select([], [], [], 0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for node in self.nodes:
            node.stop()
