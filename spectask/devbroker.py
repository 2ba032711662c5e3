"""A RabbitMQ node this project owns: start it, stop it, kill it, restart it.

Why this exists: tests that kill or restart the broker must never touch a broker somebody else
relies on, and a fresh checkout must get a broker without hand-holding (`make broker`). Both need
the same thing: a node whose data, logs, pid file, Erlang cookie, epmd and ports all live in one
directory we own and listen on loopback only. The recipe (environment variables, the `/usr/lib`
scripts instead of the `/usr/sbin` wrappers, a private epmd) is the one measured in
`/work/shared/rabbitmq-notes.md`.

`python -m spectask.devbroker ensure` implements the `make broker` policy; see `ensure`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from spectask.errors import BrokerUnavailableError

__all__ = [
    "AMQP_PROTOCOL_HEADER",
    "LocalNode",
    "NodeError",
    "amqp_port_ready",
    "amqp_url_reachable",
    "find_rabbitmq_script",
    "free_port",
    "free_ports",
    "main",
    "wait_amqp_ready",
]

LOOPBACK = "127.0.0.1"
AMQP_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
DEFAULT_LOCAL_PORT = 5673
LOCAL_PORT_ENV = "SPECTASK_LOCAL_BROKER_PORT"
COMPOSE_FILE = "docker-compose.yml"
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
_LIB_BIN = Path("/usr/lib/rabbitmq/bin")
_FRAME_METHOD = 1


class NodeError(BrokerUnavailableError):
    """A project-owned RabbitMQ node could not be started or stopped as asked."""


# rabbitmqctl's own distribution listener takes a port from this range (rabbitmq-env defaults).
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


def find_rabbitmq_script(name: str) -> Path | None:
    """Locate a RabbitMQ script (`rabbitmq-server`, `rabbitmqctl`), preferring the real one.

    Debian's `/usr/lib/rabbitmq/bin` comes first (see `_LIB_BIN`); elsewhere (Homebrew, generic
    Unix tarball) the script on PATH is the real one.
    """
    candidate = _LIB_BIN / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def _pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (a zombie has already stopped serving)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        # The state field follows the parenthesised command name.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not readable)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


class LocalNode:
    """A RabbitMQ node isolated in `base_dir`, reachable only on 127.0.0.1.

    Everything the node writes (mnesia data, logs, pid file, cookie in a private HOME, generated
    config) is under `base_dir`, and it registers with its own epmd on `epmd_port`, so it can
    coexist with a system broker and with other `LocalNode`s. Data survives `stop`/`kill`/
    `restart`: durable queues and persistent messages come back. Call `close()` when done for good
    (stops the node and its private epmd).

    Ports default to free ones. `state.json` in `base_dir` remembers the node name and ports so a
    later process (`LocalNode.at`) can find a node started earlier.
    """

    def __init__(
        self,
        base_dir: Path | str,
        *,
        name: str = "spectask",
        amqp_port: int | None = None,
        dist_port: int | None = None,
        epmd_port: int | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.name = name
        spare = iter(free_ports(3))
        self.amqp_port = amqp_port or next(spare)
        self.dist_port = dist_port or next(spare)
        self.epmd_port = epmd_port or next(spare)
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def at(cls, base_dir: Path | str, *, amqp_port: int | None = None) -> LocalNode:
        """The node recorded in `base_dir/state.json`, or a new one with free ports.

        The name, dist and epmd ports are taken from the record so that a running node is found
        again; `amqp_port` overrides the recorded AMQP port (it applies at the next start).
        """
        base = Path(base_dir).resolve()
        try:
            state = json.loads((base / "state.json").read_text())
            return cls(
                base,
                name=str(state["name"]),
                amqp_port=amqp_port or int(state["amqp_port"]),
                dist_port=int(state["dist_port"]),
                epmd_port=int(state["epmd_port"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return cls(base, amqp_port=amqp_port)

    # -- layout -------------------------------------------------------------------------------

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{LOOPBACK}:{self.amqp_port}/"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "node.pid"

    @property
    def log_dir(self) -> Path:
        return self.base_dir / "log"

    @property
    def log_file(self) -> Path:
        """The node's own log (RabbitMQ names it after the node)."""
        return self.log_dir / f"{self.nodename}.log"

    @property
    def console_file(self) -> Path:
        """stdout/stderr of `rabbitmq-server`: early boot failures only show up here."""
        return self.log_dir / "console.log"

    @property
    def _home(self) -> Path:
        return self.base_dir / "home"

    def prepare(self) -> None:
        """Create the directory layout and files; idempotent, keeps the cookie and the data."""
        for d in (self.base_dir, self.log_dir, self._home, self.base_dir / "mnesia"):
            d.mkdir(parents=True, exist_ok=True)
        cookie = self._home / ".erlang.cookie"
        if not cookie.exists():
            value = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
            fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w") as f:
                f.write(value)
        (self.base_dir / "enabled_plugins").write_text("[].\n")
        (self.base_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {LOOPBACK}:{self.amqp_port}\n"
        )
        (self.base_dir / "rabbitmq-env.conf").write_text("")
        state = {
            "name": self.name,
            "amqp_port": self.amqp_port,
            "dist_port": self.dist_port,
            "epmd_port": self.epmd_port,
        }
        (self.base_dir / "state.json").write_text(json.dumps(state, indent=2) + "\n")

    def env(self) -> dict[str, str]:
        """The environment for `rabbitmq-server` and `rabbitmqctl` aimed at this node.

        Inherited RABBITMQ_* and ERL_* variables are dropped: a stray NODENAME or ERL_FLAGS
        would silently point the node (or the CLI) at the shared broker.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        env.update(
            HOME=str(self._home),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS=LOOPBACK,
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=LOOPBACK,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base_dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base_dir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.base_dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base_dir / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base_dir / "rabbitmq-env.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=loopback_dist,
            # rabbitmqctl starts its own distribution listener (35672+): keep it on loopback too.
            RABBITMQ_CTL_ERL_ARGS=loopback_dist,
        )
        return env

    # -- state --------------------------------------------------------------------------------

    def beam_pid(self) -> int | None:
        """The Erlang VM's pid from the pid file (the `rabbitmq-server` script is its parent)."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        """True if the pid file names a live process; a stale pid file reads as not running."""
        pid = self.beam_pid()
        if pid is None or not _pid_alive(pid):
            return False
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.parent.exists():
            # Guard against pid reuse after a reboot: the VM's command line names our HOME.
            with contextlib.suppress(OSError):
                return str(self._home).encode() in cmdline.read_bytes()
        return True

    def is_ready(self, timeout: float = 1.0) -> bool:
        """True if the node answers the AMQP handshake now."""
        return amqp_port_ready(LOOPBACK, self.amqp_port, timeout)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """Start the node and return once it answers AMQP; no-op if it already does.

        Raises `NodeError` with the tail of the node's logs if it dies or is not ready within
        `timeout` seconds (the half-started node is killed), or if another process already
        answers on `amqp_port`.
        """
        if self.is_running():
            if wait_amqp_ready(LOOPBACK, self.amqp_port, timeout, alive=self.is_running):
                return
            raise self._error(f"is running but did not answer AMQP within {timeout:.0f}s")
        if amqp_port_ready(LOOPBACK, self.amqp_port, timeout=1.0):
            raise NodeError(
                f"cannot start {self.nodename}: something else already answers AMQP on "
                f"{LOOPBACK}:{self.amqp_port}"
            )
        server = find_rabbitmq_script("rabbitmq-server")
        if server is None:
            raise NodeError("rabbitmq-server is not installed (looked in /usr/lib/rabbitmq/bin)")
        self.prepare()
        self.pid_file.unlink(missing_ok=True)  # stale after a kill -9 or a reboot
        self._reap(0)
        with open(self.console_file, "ab") as console:
            # A new session: ^C in our terminal must not reach the node, and no inherited fd
            # may stay open (else `$(python -m spectask.devbroker ensure)` would never return).
            self._proc = subprocess.Popen(
                [str(server)],
                env=self.env(),
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self._proc
        if wait_amqp_ready(LOOPBACK, self.amqp_port, timeout, alive=lambda: proc.poll() is None):
            return
        died = proc.poll() is not None
        self.kill()
        reason = "exited during boot" if died else f"was not ready within {timeout:.0f}s"
        raise self._error(reason)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop cleanly with `rabbitmqctl stop`; kill -9 if that has not worked by `timeout`."""
        deadline = time.monotonic() + timeout
        pid = self.beam_pid()
        if pid is not None and self.is_running():
            ctl = find_rabbitmq_script("rabbitmqctl")
            if ctl is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    subprocess.run(
                        [str(ctl), "-n", self.nodename, "stop", str(self.pid_file)],
                        env=self.env(),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        timeout=max(1.0, deadline - time.monotonic()),
                        check=False,
                    )
            if not self._wait_gone(pid, deadline - time.monotonic()):
                self.kill()
        self.pid_file.unlink(missing_ok=True)
        self._reap(max(1.0, deadline - time.monotonic()))

    def kill(self) -> None:
        """kill -9 the VM, as a crash would; the pid file is left behind, stale, like a crash."""
        pid = self.beam_pid()
        if pid is not None and self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10.0):
                raise NodeError(f"{self.nodename} (pid {pid}) survived SIGKILL for 10s")
        self._reap(5.0)

    def restart(self, timeout: float = 120.0, *, hard: bool = False) -> None:
        """Stop (or kill -9 if `hard`) and start again on the same data and ports."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop the node for good and the private epmd with it."""
        self.stop()
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                [epmd, "-port", str(self.epmd_port), "-kill"],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )

    def __enter__(self) -> LocalNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalNode({self.nodename!r}, url={self.url!r}, base_dir='{self.base_dir}')"

    # -- helpers ------------------------------------------------------------------------------

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _reap(self, timeout: float) -> None:
        """Collect our `rabbitmq-server` child once it exits, so no zombie is left behind."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)

    def _error(self, what: str) -> NodeError:
        return NodeError(
            f"RabbitMQ node {self.nodename} (AMQP port {self.amqp_port}) {what}.\n"
            f"--- tail of {self.log_file} ---\n{_tail(self.log_file, 30)}\n"
            f"--- tail of {self.console_file} ---\n{_tail(self.console_file, 15)}"
        )


# -- the `make broker` policy -------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


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
            if amqp_url_reachable(url):
                _say(f"using AMQP_URL ({_redact(url)})")
                return url
            raise NodeError(
                f"AMQP_URL is set to {_redact(url)} but no AMQP broker answers there.\n"
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
        if not compose.exists():
            compose.write_text(COMPOSE_TEXT)
        _say(f"starting RabbitMQ with docker compose ({compose})")
        if not _run(["docker", "compose", "-f", str(compose), "up", "-d", "rabbitmq"], 600):
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


def _local_port() -> int:
    raw = os.environ.get(LOCAL_PORT_ENV, "").strip()
    try:
        return int(raw) if raw else DEFAULT_LOCAL_PORT
    except ValueError:
        raise NodeError(f"{LOCAL_PORT_ENV}={raw!r} is not a port number") from None


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: `ensure` (URL on the last stdout line), `status`, `stop`.

    Exit codes: 0 success (for `status`: the project-local node is running), 1 failure.
    """
    parser = argparse.ArgumentParser(prog="python -m spectask.devbroker", description=__doc__)
    parser.add_argument(
        "command", choices=["ensure", "status", "stop"], help="what to do with the broker"
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
    args = parser.parse_args(argv)
    base: Path = args.dir or _repo_root() / ".rabbitmq"
    try:
        port: int = args.port or _local_port()
        if args.command == "ensure":
            url = ensure(base, port, local_only=args.local, timeout=args.timeout)
            print(url, flush=True)
            return 0
        if not (base / "state.json").exists():
            _say(f"no project-local node in {base}")
            return 1 if args.command == "status" else 0
        node = LocalNode.at(base)
        running = node.is_running()
        if args.command == "status":
            state = "running" if running else "not running"
            ready = " (answering AMQP)" if running and node.is_ready() else ""
            print(f"project-local node {node.nodename}: {state}{ready} {node.url}")
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
