"""A local 3-node RabbitMQ cluster of `LocalNode`s: `make cluster`, and the suite's cluster tests.

Why: failover (several broker URLs, quorum queues, a node killed mid-batch) can only be tried on
a real cluster, and a developer has one machine. Three isolated nodes on loopback form one: each
has its own name, ports, data and logs under `base_dir/<name>`, and they share what Erlang
distribution needs to find and trust each other: one Erlang cookie and one epmd port. Formation
is the documented one (`stop_app`, `join_cluster FIRST`, `start_app`), ~25 s on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import string
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from spectask.devbroker.node import LocalNode, NodeError
from spectask.devbroker.probe import free_ports
from spectask.runtime.broker import redact_url

CLUSTER_SIZE = 3
STATE_FILE = "cluster.json"


class LocalCluster:
    """`size` `LocalNode`s under `base_dir` that form one RabbitMQ cluster.

    `cluster.json` in `base_dir` records the names, ports and cookie, so a later process
    (`LocalCluster.at`, e.g. `make cluster-stop`) finds the cluster a former one started.
    """

    def __init__(self, base_dir: Path | str, *, size: int = CLUSTER_SIZE, prefix: str = "rabbit"):
        self.base_dir = Path(base_dir).resolve()
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        # Taken together, so no two members are handed the same free port.
        epmd_port, *ports = free_ports(1 + 2 * size)
        self.nodes = [
            LocalNode(
                self.base_dir / f"{prefix}-{i}",
                name=f"{prefix}-{i}",
                amqp_port=ports[2 * i - 2],
                dist_port=ports[2 * i - 1],
                epmd_port=epmd_port,
                cookie=cookie,
            )
            for i in range(1, size + 1)
        ]

    @classmethod
    def at(cls, base_dir: Path | str) -> LocalCluster:
        """The cluster recorded in `base_dir/cluster.json`, or a new one (free ports)."""
        base = Path(base_dir).resolve()
        cluster = cls(base)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            state = json.loads((base / STATE_FILE).read_text())
            cluster.nodes = [
                LocalNode(
                    base / str(node["name"]),
                    name=str(node["name"]),
                    amqp_port=int(node["amqp_port"]),
                    dist_port=int(node["dist_port"]),
                    epmd_port=int(state["epmd_port"]),
                    cookie=str(state["cookie"]),
                )
                for node in state["nodes"]
            ]
        return cluster

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: the form `AMQP_URL` takes for failover."""
        return ",".join(self.urls)

    def node_named(self, nodename: str) -> LocalNode:
        """The member whose Erlang node name (`rabbit-1@localhost`) is `nodename`."""
        for node in self.nodes:
            if node.nodename == nodename:
                return node
        raise KeyError(f"{nodename!r} is not a member of this cluster ({self.nodenames()})")

    def nodenames(self) -> list[str]:
        return [node.nodename for node in self.nodes]

    def running_members(self) -> list[str]:
        """The members the first running node counts as running (from `cluster_status`)."""
        for node in self.nodes:
            if node.is_running():
                done = node.ctl("cluster_status", "--formatter", "json")
                status = json.loads(done.stdout)
                return sorted(str(name) for name in status.get("running_nodes", []))
        return []

    def start(self, timeout: float = 180.0) -> None:
        """Start every node (in parallel) and join the others to the first; idempotent."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._save()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            for future in [pool.submit(node.start, timeout) for node in self.nodes]:
                future.result()
        if self.running_members() == sorted(self.nodenames()):
            return
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.nodename)
            node.ctl("start_app")
        members = self.running_members()
        if members != sorted(self.nodenames()):
            raise NodeError(f"the cluster did not form: running members are {members}")

    def stop(self) -> None:
        """Stop every node cleanly (data kept: `start` brings the same cluster back)."""
        for node in reversed(self.nodes):
            node.stop()

    def close(self) -> None:
        """Stop every node, then the shared epmd."""
        self.stop()
        self.nodes[0].stop_epmd()

    def _save(self) -> None:
        first = self.nodes[0]
        state = {
            "epmd_port": first.epmd_port,
            "cookie": first.cookie,
            "nodes": [
                {"name": n.name, "amqp_port": n.amqp_port, "dist_port": n.dist_port}
                for n in self.nodes
            ],
        }
        path = self.base_dir / STATE_FILE
        path.write_text(json.dumps(state, indent=2) + "\n")
        path.chmod(0o600)


def cluster_command(command: str, base: Path, timeout: float) -> int:
    """`make cluster` (start: print one URL per node, then the comma-separated AMQP_URL),
    `make cluster-stop` (stop), and status; 0 on success."""
    cluster = LocalCluster.at(base)
    if command == "cluster":
        cluster.start(timeout)
        for node in cluster.nodes:
            print(f"{node.nodename}: {node.url}")
        print(f"AMQP_URL={cluster.url}", flush=True)
        return 0
    if not (base / STATE_FILE).exists():
        print(f"no local cluster in {base}")
        return 0 if command == "cluster-stop" else 1
    if command == "cluster-stop":
        cluster.close()
        print("local cluster stopped (data kept; `make cluster` starts it again)")
        return 0
    members = cluster.running_members()
    for node in cluster.nodes:
        state = "running" if node.nodename in members else "not running"
        print(f"{node.nodename}: {state} {redact_url(node.url)}")
    return 0 if len(members) == len(cluster.nodes) else 1
