"""TLS against a throwaway node with a CA made at test time (issue 11, Security).

The node's TLS listener verifies clients (`ssl_options.verify = verify_peer`,
`fail_if_no_peer_cert = true`) and its certificate names only `localhost`. The client gives
its CA, certificate and key in AMQP_URL's query (`cafile`, `certfile`, `keyfile`: README, TLS).
Every refusal is one line with its fix, from the `spectask` command as a user runs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from spectask.devbroker.node import LocalNode
from spectask.errors import ConfigError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from tests.brokers import unique_name
from tests.cli_support import ROOT, spectask
from tests.secure_support import LOOPBACK, TlsNode, make_pki, tls_node

pytestmark = pytest.mark.timeout(240)
SECRET = "tls-secret-pw"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsNode]:
    yield from tls_node(tmp_path_factory.mktemp("tls"))


def client_files(node: TlsNode) -> str:
    return f"certfile={node.pki.client_cert}&keyfile={node.pki.client_key}"


def trusted(node: TlsNode, host: str = "localhost") -> str:
    return node.tls_url(host, f"cafile={node.pki.ca}&{client_files(node)}")


def refusal(url: str) -> str:
    """Run `spectask topology apply` against `url`: it must fail with exactly one line."""
    env = {**os.environ, "AMQP_URL": url, "SPECTASK_CONNECT_TIMEOUT": "20"}
    done = spectask(env, "topology", "apply")
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert SECRET not in done.stderr
    return lines[0]


async def test_a_verified_client_connects_declares_and_round_trips(node: TlsNode) -> None:
    broker = await Broker.connect(RuntimeConfig(amqp_url=trusted(node)))
    async with broker:
        channel = await broker.channel()
        queue = await channel.declare_queue(unique_name("tls"), auto_delete=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"over tls"), routing_key=queue.name
        )
        message = await queue.get(timeout=10, fail=True)
        assert message is not None and message.body == b"over tls"
        await message.ack()


def test_the_topology_command_works_over_tls(node: TlsNode) -> None:
    env = {**os.environ, "AMQP_URL": trusted(node)}
    applied = spectask(env, "topology", "apply")
    assert applied.returncode == 0, applied
    checked = spectask(env, "topology", "check")
    assert checked.returncode == 0, checked  # passive source: no management plugin here
    assert "source: passive" in checked.stdout


def test_without_the_ca_there_is_no_connection(node: TlsNode) -> None:
    url = node.tls_url(query=client_files(node)).replace("guest:guest", f"guest:{SECRET}")
    line = refusal(url)
    assert "its TLS certificate is not trusted" in line
    assert "cafile=" in line  # the fix


def test_a_host_name_the_certificate_does_not_name_is_refused(node: TlsNode) -> None:
    line = refusal(trusted(node, host=LOOPBACK))
    assert f"not valid for '{LOOPBACK}'" in line
    assert "host name the server certificate names" in line


def test_a_client_without_a_certificate_is_refused(node: TlsNode) -> None:
    line = refusal(node.tls_url(query=f"cafile={node.pki.ca}"))
    assert "refused this client's TLS certificate" in line
    assert "certfile=" in line


def test_a_client_certificate_from_another_ca_is_refused(node: TlsNode, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", name="not-the-server-ca")
    url = node.tls_url(
        query=f"cafile={node.pki.ca}&certfile={other.client_cert}&keyfile={other.client_key}"
    )
    line = refusal(url)
    assert "refused this client's TLS certificate" in line


def test_plain_amqp_to_the_tls_port_hints_at_amqps(node: TlsNode) -> None:
    env = {**os.environ, "AMQP_URL": f"amqp://guest:{SECRET}@localhost:{node.tls_port}/"}
    done = spectask(env, "topology", "apply")
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr and SECRET not in done.stderr
    assert done.stderr.startswith("error: cannot reach RabbitMQ"), done.stderr
    assert "if that port is a TLS listener (5671), write amqps://" in done.stderr


def test_tls_to_the_plain_port_says_so(node: TlsNode) -> None:
    url = f"amqps://guest:{SECRET}@localhost:{node.amqp_port}/?cafile={node.pki.ca}"
    line = refusal(url)
    assert "does not speak TLS on that port" in line


def test_a_missing_tls_file_is_refused_before_connecting(node: TlsNode) -> None:
    line = refusal(node.tls_url(query="cafile=/nonexistent/ca.pem"))
    assert "cafile '/nonexistent/ca.pem' is not a readable file" in line


async def test_tls_files_on_a_plain_url_are_refused(node: TlsNode) -> None:
    with pytest.raises(ConfigError, match="scheme is amqp://"):
        await Broker.connect(
            RuntimeConfig(amqp_url=f"amqp://guest:guest@localhost:1/?cafile={node.pki.ca}")
        )


def test_broker_status_never_prints_the_password(tmp_path: Path) -> None:
    LocalNode(tmp_path / "node").prepare()  # its state file, as `make broker` leaves it
    done = spectask({**os.environ}, "broker", "status", "--dir", str(tmp_path / "node"))
    assert done.returncode == 1, done  # not running, and it says so
    assert "not running amqp://guest:***@127.0.0.1:" in done.stdout, done.stdout
    assert "guest:guest" not in done.stdout + done.stderr


def test_make_broker_shows_your_url_without_its_password(node: TlsNode) -> None:
    """`make broker` runs `ensure --redact`; the targets capture the URL from plain `ensure`."""
    url = trusted(node)
    env = {**os.environ, "AMQP_URL": url}
    shown = spectask(env, "broker", "ensure", "--redact")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == url.replace("guest:guest@", "guest:***@")
    assert "guest:guest" not in shown.stdout + shown.stderr
    captured = spectask(env, "broker", "ensure")
    assert captured.stdout.strip() == url
    makefile = (ROOT / "Makefile").read_text()
    assert (
        "spectask.devbroker ensure --redact" in makefile.split("\nbroker:", 1)[1].split("\n\n")[0]
    )
