"""A RabbitMQ node this project owns: start it, stop it, kill it, restart it.

Why this exists: tests that kill or restart the broker must never touch a broker somebody else
relies on, and a fresh checkout must get a broker without hand-holding (`make broker`). Both need
the same thing: a node whose data, logs, pid file, Erlang cookie, epmd and ports all live in one
directory we own and listen on loopback only. The recipe (environment variables, the `/usr/lib`
scripts instead of the `/usr/sbin` wrappers, a private epmd) is the one measured in
`/work/shared/rabbitmq-notes.md`.

"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import time
from pathlib import Path
from types import TracebackType

from spectask.devbroker.probe import (
    LOOPBACK,
    amqp_port_ready,
    free_ports,
    wait_amqp_ready,
)
from spectask.errors import BrokerUnavailableError

_LIB_BIN = Path("/usr/lib/rabbitmq/bin")


class NodeError(BrokerUnavailableError):
    """A project-owned RabbitMQ node could not be started or stopped as asked."""


# rabbitmqctl's own distribution listener takes a port from this range (rabbitmq-env defaults).


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
        cookie: str | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.name = name
        # Cluster members must share one Erlang cookie (and one epmd): `LocalCluster` sets both.
        self.cookie = cookie
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
        if self.cookie is not None and cookie.exists() and cookie.read_text() != self.cookie:
            cookie.unlink()
        if not cookie.exists():
            value = self.cookie or "".join(
                secrets.choice(string.ascii_uppercase) for _ in range(20)
            )
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

    def ctl(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run `rabbitmqctl -n NODE ARGS...` against this node; raise `NodeError` if it fails.

        Each call boots a small Erlang VM (~1 s): fine for cluster formation and tests, not for
        hot paths (see the notes on readiness).
        """
        ctl = find_rabbitmq_script("rabbitmqctl")
        if ctl is None:
            raise NodeError("rabbitmqctl is not installed (looked in /usr/lib/rabbitmq/bin)")
        try:
            done = subprocess.run(
                [str(ctl), "-n", self.nodename, *args],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise NodeError(f"rabbitmqctl {' '.join(args)} on {self.nodename} hung") from None
        if done.returncode != 0:
            output = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
            raise NodeError(
                f"rabbitmqctl {' '.join(args)} on {self.nodename} failed: {' / '.join(output)}"
            )
        return done

    def close(self) -> None:
        """Stop the node for good and the private epmd with it."""
        self.stop()
        self.stop_epmd()

    def stop_epmd(self) -> None:
        """Stop the epmd on `epmd_port` (cluster members share one: stop it after the last)."""
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
