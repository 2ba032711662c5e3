"""Is an AMQP broker answering? Probes that speak the AMQP handshake, and free loopback ports."""

from __future__ import annotations

import socket
import time
import urllib.parse
from collections.abc import Callable

LOOPBACK = "127.0.0.1"
AMQP_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
DEFAULT_LOCAL_PORT = 5673
LOCAL_PORT_ENV = "SPECTASK_LOCAL_BROKER_PORT"
_FRAME_METHOD = 1


_CTL_DIST_PORTS = range(35672, 35683)


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct ports the OS says are free now (bind to port 0, all held at once).

    Racy by nature, fine on loopback. Ports rabbitmqctl may grab for itself are avoided.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind((host, 0))
            port: int = s.getsockname()[1]
            if port not in _CTL_DIST_PORTS:
                ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def free_port(host: str = LOOPBACK) -> int:
    """One port that is free now; see `free_ports`."""
    return free_ports(1, host)[0]


def amqp_port_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """One probe: does an AMQP 0-9-1 broker answer on host:port within `timeout` seconds?

    Sends the protocol header and checks that the reply is a METHOD frame on channel 0 (the
    broker's connection.start). A plain TCP connect is not enough: the port opens while the node
    is still booting on some setups, and an unrelated service may hold the port. Never raises.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(AMQP_PROTOCOL_HEADER)
            head = b""
            while len(head) < 3:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                s.settimeout(left)
                chunk = s.recv(3 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    return head[0] == _FRAME_METHOD and head[1:3] == b"\x00\x00"


def wait_amqp_ready(
    host: str,
    port: int,
    timeout: float,
    *,
    interval: float = 0.2,
    alive: Callable[[], bool] | None = None,
) -> bool:
    """Poll `amqp_port_ready` until it succeeds or `timeout` seconds pass.

    `alive`, when given, is checked between probes so a process that died early ends the wait at
    once instead of at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if amqp_port_ready(host, port, timeout=max(0.05, min(1.0, left))):
            return True
        if alive is not None and not alive():
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def amqp_url_reachable(url: str) -> bool:
    """Does an AMQP URL answer? The AMQP handshake for amqp://; for amqps:// a TCP connect only.

    TLS is not set up here (it needs the user's CA and client certificates); for amqps the
    client library reports any TLS problem with its own, better, message.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    tls = parts.scheme == "amqps"
    try:
        port = parts.port or (5671 if tls else 5672)
    except ValueError:
        return False
    if not tls:
        return amqp_port_ready(host, port, timeout=3.0)
    try:
        with socket.create_connection((host, port), timeout=3.0):
            return True
    except OSError:
        return False
