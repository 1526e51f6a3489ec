"""A throwaway local Redis Cluster of three masters, for the tests, the benchmarks and ``make cluster``.

Each node is a ``redis-server --cluster-enabled yes`` without persistence on a free port, with its files in a
temporary directory; ``redis-cli --cluster create`` joins them (no replicas). A node can be stopped and
started again on its port (it keeps its identity and slots from its nodes file, not its data), as a shard
restart in production. ``cluster-require-full-coverage no``: while one shard is away the others keep
answering for their own slots (the setting recsvc recommends, see docs/OPERATIONS.md).

``python -m testing.cluster`` starts one, prints the ``REDIS_URL`` to use, and stops it on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from testing.polling import poll, wait_until
from testing.processes import free_port, tls_server_options

# A failed node is declared failed after this (the default, 15 s, would make a restart test slow).
NODE_TIMEOUT_MS = 2000
# A node also listens on its port + 10000 (the cluster bus), so its port must be at most 55535.
BUS_PORT_OFFSET = 10_000


def free_node_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + BUS_PORT_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
            except OSError:
                continue
        return port


class RedisClusterNodes:
    """Three cluster-enabled redis-servers joined into one cluster; ``url`` is its ``redis+cluster://`` URL.

    With ``tls`` the nodes speak TLS only, to clients and to each other (a self-signed certificate), and
    ``url`` is ``rediss+cluster://...?ssl_ca_certs=<the certificate>``.
    """

    def __init__(self, masters: int = 3, tls: bool = False):
        self.ports = [free_node_port() for _ in range(masters)]
        self.dir = Path(tempfile.mkdtemp(prefix="recsvc-cluster-"))
        self.tls = tls
        nodes = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        self.url = f"rediss+cluster://{nodes}?ssl_ca_certs={self.dir}/cert.pem" if tls else f"redis+cluster://{nodes}"
        self._processes: dict[int, subprocess.Popen] = {}

    def _node(self, port: int) -> redis.Redis:
        """A client of the node on ``port`` alone."""
        if self.tls:
            return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(self.dir / "cert.pem"))
        return redis.Redis(port=port)

    def start(self) -> RedisClusterNodes:
        """Start every node, create the cluster, and wait until every node says it is ``ok``.

        If any of it fails, the nodes already started are stopped before the error propagates.
        """
        try:
            for port in self.ports:
                self.start_node(port)
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            tls = ["--tls", "--cacert", str(self.dir / "cert.pem")] if self.tls else []
            subprocess.run(
                ["redis-cli", *tls, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=60,
            )
            self.wait_ok()
        except BaseException:
            self.close()
            raise
        return self

    def start_node(self, port: int) -> None:
        """Start (or start again) the node on ``port``; it rejoins the cluster from its nodes file."""
        if self.tls:
            listening = ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes", *tls_server_options(self.dir)]
        else:
            listening = ["--port", str(port)]
        command = [
            "redis-server", *listening, "--bind", "127.0.0.1", "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-require-full-coverage", "no", "--save", "", "--appendonly", "no", "--dir", str(self.dir),
        ]  # fmt: skip
        with (self.dir / f"{port}.log").open("ab") as log:
            self._processes[port] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        node = self._node(port)
        try:
            if not poll(node.ping, 10):
                raise RuntimeError(f"cluster node on port {port} did not start:\n{self.log(port)}")
        finally:
            node.close()

    def stop_node(self, port: int) -> None:
        """Stop the node on ``port`` (SIGTERM, waited for); its data goes (no persistence), its identity stays."""
        process = self._processes.pop(port, None)
        if process is not None:
            process.terminate()
            process.wait(10)

    def restart_node(self, port: int) -> None:
        """Stop the node on ``port`` and start it again; returns once the whole cluster is ``ok``."""
        self.stop_node(port)
        self.start_node(port)
        self.wait_ok()

    def wait_ok(self, timeout: float = 30) -> None:
        """Wait until every node reports ``cluster_state:ok`` and knows every node."""

        def ok() -> bool:
            for port in self.ports:
                node = self._node(port)
                try:
                    info = node.cluster("info")
                    if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != len(self.ports):
                        return False
                finally:
                    node.close()
            return True

        wait_until(ok, timeout, "the Redis Cluster to be ok")

    def log(self, port: int) -> str:
        path = self.dir / f"{port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def flush(self) -> None:
        """Empty every node (each holds only its own slots' keys)."""
        for port in self.ports:
            node = self._node(port)
            try:
                node.flushall()
            finally:
                node.close()

    def close(self) -> None:
        """Stop every node and remove their files."""
        for port in list(self._processes):
            self.stop_node(port)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisClusterNodes:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()


def main() -> int:
    """Run a local cluster until Ctrl-C or SIGTERM, printing the REDIS_URL to use with it."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with RedisClusterNodes() as cluster:
        print(f"REDIS_URL={cluster.url}", flush=True)
        print("a local Redis Cluster of three masters is running; Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
