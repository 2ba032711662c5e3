"""Throwaway nodes for the security tests: TLS with a CA made at test time, the management API
for creating vhosts, users and permissions, and running spectask commands as one of them.

No key or certificate is committed: `trustme` makes a fresh CA (and the server's and the
client's certificates) in the test's temp dir.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from spectask.devbroker.node import LocalNode
from tests.brokers import require_rabbitmq_installed, throwaway_node
from tests.dashboard_support import free_port

LOOPBACK = "127.0.0.1"
SERVER_NAME = "localhost"  # the server certificate names only this: 127.0.0.1 is a mismatch


class ConfiguredNode(LocalNode):
    """A LocalNode with extra plugins and rabbitmq.conf lines, set before it starts."""

    plugins: tuple[str, ...] = ()
    conf: str = ""

    def prepare(self) -> None:
        super().prepare()
        (self.base_dir / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        with (self.base_dir / "rabbitmq.conf").open("a") as conf:
            conf.write(self.conf)


@dataclass(frozen=True)
class Pki:
    """A CA and the files a server and a client need, all PEM in `folder`."""

    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(folder: Path, name: str = "spectask-test-ca") -> Pki:
    """A fresh CA with a server certificate for `SERVER_NAME` and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name=name)
    server = ca.issue_cert(SERVER_NAME)
    client = ca.issue_cert("spectask-client@example.org")
    pki = Pki(
        folder,
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
    )
    ca.cert_pem.write_to_path(str(pki.ca))
    server.cert_chain_pems[0].write_to_path(str(pki.server_cert))
    server.private_key_pem.write_to_path(str(pki.server_key))
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
    client.private_key_pem.write_to_path(str(pki.client_key))
    for key in (pki.server_key, pki.client_key):
        key.chmod(0o600)
    return pki


class TlsNode(ConfiguredNode):
    """A node with a TLS listener that verifies clients (client certificate required)."""

    tls_port = 0
    pki: Pki

    def tls_url(self, host: str = SERVER_NAME, query: str = "") -> str:
        return f"amqps://guest:guest@{host}:{self.tls_port}/" + (f"?{query}" if query else "")


def tls_node(base: Path) -> Iterator[TlsNode]:
    require_rabbitmq_installed()
    pki = make_pki(base / "pki")

    def make(folder: Path, name: str) -> TlsNode:
        node = TlsNode(folder, name=name)
        node.pki = pki
        node.tls_port = free_port()
        node.conf = (
            f"listeners.ssl.1 = {LOOPBACK}:{node.tls_port}\n"
            f"ssl_options.cacertfile = {pki.ca}\n"
            f"ssl_options.certfile = {pki.server_cert}\n"
            f"ssl_options.keyfile = {pki.server_key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
        )
        return node

    yield from throwaway_node("spectask-tls", make)


class ManagementNode(ConfiguredNode):
    """A node with the management API on its own port (users, vhosts, topology listings)."""

    http_port = 0

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@{LOOPBACK}:{self.http_port}"

    def api(self, method: str, path: str, body: object | None = None) -> object:
        """One management API call as guest (an administrator); the JSON answer or None."""
        token = base64.b64encode(b"guest:guest").decode()
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.http_port}/api/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def add_vhost(self, vhost: str) -> None:
        self.api("PUT", f"vhosts/{urllib.parse.quote(vhost, safe='')}")

    def add_user(self, vhost: str, user: str, configure: str, write: str, read: str) -> str:
        """Create `user` (password = name) with these permission regexes; its AMQP URL."""
        self.api("PUT", f"users/{user}", {"password": user, "tags": ""})
        self.api(
            "PUT",
            f"permissions/{urllib.parse.quote(vhost, safe='')}/{user}",
            {"configure": configure, "write": write, "read": read},
        )
        return f"amqp://{user}:{user}@{LOOPBACK}:{self.amqp_port}/{urllib.parse.quote(vhost)}"


def management_node(name: str) -> Iterator[ManagementNode]:
    require_rabbitmq_installed()

    def make(folder: Path, node_name: str) -> ManagementNode:
        node = ManagementNode(folder, name=node_name)
        node.http_port = free_port()
        node.plugins = ("rabbitmq_management",)
        node.conf = f"management.tcp.port = {node.http_port}\nmanagement.tcp.ip = {LOOPBACK}\n"
        return node

    yield from throwaway_node(name, make)
