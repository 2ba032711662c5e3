"""The `make broker` policy: find a broker, or start or install one, and print its URL.

`python -m spectask.devbroker ensure` prints the URL to use on its last stdout line; see `ensure`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import aio_pika

from spectask.devbroker.cluster import cluster_command
from spectask.devbroker.node import LocalNode, NodeError, find_rabbitmq_script
from spectask.devbroker.probe import amqp_port_ready, amqp_url_reachable, wait_amqp_ready
from spectask.errors import BrokerUnavailableError, ConfigError
from spectask.runtime import connect_errors
from spectask.runtime.broker import redact_url
from spectask.runtime.failover import split_urls

DEFAULT_LOCAL_PORT = 5673
LOGIN_TIMEOUT = 10.0
LOCAL_PORT_ENV = "SPECTASK_LOCAL_BROKER_PORT"
# its own file and project, not the repo's docker-compose.yml (the whole system, which needs
# credentials from .env and publishes no guest port on localhost)
COMPOSE_FILE = ".rabbitmq/docker-compose.dev-broker.yml"
COMPOSE_PROJECT = "spectask-dev-broker"
COMPOSE_TEXT = """\
# Used by `make broker` (python -m spectask.devbroker ensure) only when no RabbitMQ is reachable,
# none is installed, and a working Docker engine exists.
services:
  rabbitmq:
    image: rabbitmq:3.13-management
    ports:
      - "127.0.0.1:5672:5672"
      - "127.0.0.1:15672:15672"
"""
# The Debian/Ubuntu package puts the real scripts here; the /usr/sbin wrappers switch to the
# shared rabbitmq user, home and cookie, which is exactly what an isolated node must avoid.


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _repo_root() -> Path:
    """The nearest ancestor of the working directory that holds pyproject.toml or .git."""
    cwd = Path.cwd().resolve()
    for d in (cwd, *cwd.parents):
        if (d / "pyproject.toml").exists() or (d / ".git").exists():
            return d
    return cwd


def _run(cmd: Sequence[str], timeout: float) -> bool:
    """Run a command, its output going to our stderr; True if it exited 0 in time."""
    try:
        return (
            subprocess.run(
                list(cmd), stdout=sys.stderr, stdin=subprocess.DEVNULL, timeout=timeout
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    """Serialise concurrent `make broker` runs on the same directory."""
    import fcntl  # Unix only, like the rest of the local-node path; keeps the import portable

    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ensure_local(base: Path, port: int, timeout: float) -> str:
    with _locked(base):
        node = LocalNode.at(base, amqp_port=port)
        if node.is_running() and not node.is_ready():
            _say(f"project-local node {node.nodename} is running on another port; restarting it")
            node.stop()
        verb = "reusing" if node.is_running() else "starting"
        _say(f"{verb} project-local RabbitMQ node {node.nodename} (data in {base})")
        t0 = time.monotonic()
        node.start(timeout)
        if verb == "starting":
            elapsed = time.monotonic() - t0
            _say(f"ready in {elapsed:.1f}s; stop it with `python -m spectask.devbroker stop`")
        return node.url


def _install_hint() -> str:
    if shutil.which("apt-get"):
        cmd = "sudo apt-get install -y rabbitmq-server"
    elif shutil.which("dnf"):
        cmd = "sudo dnf install -y rabbitmq-server"
    elif shutil.which("brew"):
        cmd = "brew install rabbitmq"
    elif shutil.which("pacman"):
        cmd = "sudo pacman -S --noconfirm rabbitmq"
    else:
        cmd = "see https://www.rabbitmq.com/download.html"
    return (
        "no RabbitMQ broker found and none could be started.\n"
        f"  install one:  {cmd}\n"
        "  then run `make broker` again, or point the project at an existing broker:\n"
        "  export AMQP_URL=amqp://USER:PASSWORD@HOST:5672/"
    )


def ensure(base: Path, local_port: int, *, local_only: bool = False, timeout: float = 120.0) -> str:
    """Find or start a broker and return its AMQP URL (the `make broker` policy).

    In order: (1) `AMQP_URL` if set; (2) a broker already answering on localhost:5672; (3) a
    project-local node in `base` (started if needed, reused if running, restarted if its pid
    file is stale); (4) `docker compose up -d rabbitmq` if a Docker engine answers; (5) as root
    on Debian/Ubuntu, install Debian's rabbitmq-server, then (3); (6) fail with an install hint.

    An `AMQP_URL` that is set but unreachable is an error, not a reason to fall back: the user
    named a broker on purpose, and silently testing against a different one would hide the
    mistake (and could run tests against the wrong data). `local_only` skips (1) and (2).

    Raises `NodeError` with a message meant for the user.
    """
    if not local_only:
        url = os.environ.get("AMQP_URL", "").strip()
        if url:
            # Several URLs (a cluster's nodes): one answering is enough, as for the runtime.
            reachable = [part for part in split_urls(url) if amqp_url_reachable(part)]
            if reachable:
                refused = login_error(reachable[0])
                if refused is not None:
                    raise NodeError(str(refused))
                _say(f"using AMQP_URL ({redact_url(url)})")
                return url
            raise NodeError(
                f"AMQP_URL is set to {redact_url(url)} but no AMQP broker answers there.\n"
                "  start that broker, fix AMQP_URL, or unset it to let `make broker` find or "
                "start one"
            )
        if amqp_port_ready("localhost", 5672, timeout=3.0):
            _say("using the RabbitMQ broker answering on localhost:5672")
            return "amqp://guest:guest@localhost:5672/"
    if find_rabbitmq_script("rabbitmq-server") is not None:
        return _ensure_local(base, local_port, timeout)
    if not local_only and shutil.which("docker") and _run(["docker", "info"], 30):
        compose = _repo_root() / COMPOSE_FILE
        compose.parent.mkdir(parents=True, exist_ok=True)
        compose.write_text(COMPOSE_TEXT)
        _say(f"starting RabbitMQ with docker compose ({compose})")
        up = ["docker", "compose", "-p", COMPOSE_PROJECT, "-f", str(compose), "up", "-d"]
        if not _run([*up, "rabbitmq"], 600):
            raise NodeError("`docker compose up -d rabbitmq` failed (see the output above)")
        if not wait_amqp_ready("localhost", 5672, timeout):
            raise NodeError(f"the docker rabbitmq container did not answer within {timeout:.0f}s")
        return "amqp://guest:guest@localhost:5672/"
    debian_root = (
        Path("/etc/debian_version").exists() and os.geteuid() == 0 and shutil.which("apt-get")
    )
    if debian_root:
        _say("installing Debian's rabbitmq-server (apt-get update && apt-get install)")
        os.environ["DEBIAN_FRONTEND"] = "noninteractive"
        ok = _run(["apt-get", "update"], 600) and _run(
            ["apt-get", "install", "-y", "rabbitmq-server"], 1200
        )
        if not ok or find_rabbitmq_script("rabbitmq-server") is None:
            raise NodeError("apt-get install rabbitmq-server failed (see the output above)")
        return _ensure_local(base, local_port, timeout)
    raise NodeError(_install_hint())


def login_error(url: str) -> BrokerUnavailableError | None:
    """Log in as `url` says, as every spectask process will: the error it would meet, if any.

    Answering the AMQP handshake is not enough: a wrong password or a missing virtual host
    passed the probe, `make broker` printed the URL, and every command then failed with it.
    The message is the runtime's own (`spectask.runtime.connect_errors`).
    """
    shown = redact_url(url)

    async def attempt() -> None:
        connection = await aio_pika.connect(url, timeout=LOGIN_TIMEOUT)
        await connection.close()

    try:
        connect_errors.check_url(url, shown)
        asyncio.run(attempt())
    except ConfigError as exc:
        return BrokerUnavailableError(str(exc))
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
        return connect_errors.explain(exc, url, shown)
    return None


def _local_port() -> int:
    raw = os.environ.get(LOCAL_PORT_ENV, "").strip()
    try:
        return int(raw) if raw else DEFAULT_LOCAL_PORT
    except ValueError:
        raise NodeError(f"{LOCAL_PORT_ENV}={raw!r} is not a port number") from None


CLUSTER_COMMANDS = ("cluster", "cluster-stop", "cluster-status")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: `ensure` (URL on the last stdout line), `status`, `stop`.

    Exit codes: 0 success (for `status`: the project-local node is running), 1 failure.
    """
    parser = argparse.ArgumentParser(prog="python -m spectask.devbroker", description=__doc__)
    parser.add_argument(
        "command",
        choices=["ensure", "status", "stop", *CLUSTER_COMMANDS],
        help="what to do with the broker (cluster*: the local 3-node cluster in <dir>/cluster)",
    )
    parser.add_argument(
        "--dir", type=Path, help="project-local node directory (default: <repo>/.rabbitmq)"
    )
    parser.add_argument(
        "--port", type=int, help=f"project-local AMQP port (default: ${LOCAL_PORT_ENV} or 5673)"
    )
    parser.add_argument(
        "--local", action="store_true", help="ensure: skip AMQP_URL and localhost:5672"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="start deadline, seconds")
    parser.add_argument(
        "--redact",
        action="store_true",
        help="ensure: print AMQP_URL (yours) without its password (`make broker`); targets that "
        "capture the URL use it as is",
    )
    args = parser.parse_args(argv)
    base: Path = args.dir or _repo_root() / ".rabbitmq"
    try:
        if args.command in CLUSTER_COMMANDS:
            return cluster_command(args.command, base / "cluster", args.timeout)
        port: int = args.port or _local_port()
        if args.command == "ensure":
            url = ensure(base, port, local_only=args.local, timeout=args.timeout)
            yours = url == os.environ.get("AMQP_URL", "").strip()
            print(redact_url(url) if args.redact and yours else url, flush=True)
            return 0
        if not (base / "state.json").exists():
            _say(f"no project-local node in {base}")
            return 1 if args.command == "status" else 0
        node = LocalNode.at(base)
        running = node.is_running()
        if args.command == "status":
            state = "running" if running else "not running"
            ready = " (answering AMQP)" if running and node.is_ready() else ""
            print(f"project-local node {node.nodename}: {state}{ready} {redact_url(node.url)}")
            return 0 if running else 1
        with _locked(base):
            node.close()
        _say(f"project-local node {node.nodename} stopped" if running else "nothing to stop")
        return 0
    except NodeError as e:
        _say(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
