"""SIGTERM ends every long-running command within SPECTASK_SHUTDOWN_TIMEOUT, whatever the
broker is doing, and the broker going away and coming back is one line each (issue 9, items 9
and 12).

Real processes against a throwaway RabbitMQ node of this module's own, which the tests stop
and start: connected, broker down (reconnecting), never connected (a port that accepts and
never answers), and stuck in a handler that cannot be interrupted. The bound every test holds
a process to is the shutdown timeout plus the grace for closing (`CLOSE_GRACE_SECONDS`), plus
a second for the process to be reaped.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiormq
import pytest

from spectask.devbroker import LocalNode
from spectask.runtime import declare_errors
from spectask.runtime.shutdown import CLOSE_GRACE_SECONDS
from tests.brokers import require_rabbitmq_installed, throwaway_node
from tests.process_support import WAIT, Command
from tests.slow_app import MARKER_VARIABLE, RELEASE_VARIABLE

SHUTDOWN_TIMEOUT = 2.0
BOUND = SHUTDOWN_TIMEOUT + CLOSE_GRACE_SECONDS + 2.0
LOST = "lost the connection to RabbitMQ"
RECONNECTED = re.compile(r"reconnected to RabbitMQ at \S+ after (\d+\.\d)s")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    require_rabbitmq_installed()
    yield from throwaway_node("spectask-shutdown")


@pytest.fixture
def up(node: LocalNode) -> LocalNode:
    """The module's node, started again if an earlier test left it stopped, with every queue
    of it running again: right after a restart the `spectask.cancellations` stream can still
    be down, and a worker started then stops at once, rightly ("no node runs it"; CI saw it
    on a loaded machine)."""
    node.start(timeout=120)
    deadline = time.monotonic() + WAIT
    while True:
        listed = node.ctl("list_queues", "--quiet", "--no-table-headers", "name", "state")
        states = [line.split()[-1] for line in listed.stdout.splitlines() if line.strip()]
        if all(state == "running" for state in states):
            return node
        assert time.monotonic() < deadline, f"queues not running after a restart: {listed.stdout}"
        time.sleep(0.5)


def started(tmp_path: Path, name: str, *args: str, **env: str) -> Command:
    """A command with this module's shutdown timeout and a store of the test's own."""
    return Command(
        tmp_path,
        name,
        *args,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "SPECTASK_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
            "STORE_URL": f"sqlite:///{tmp_path / 'tasks.db'}",
            **env,
        },
    )


@pytest.fixture
def commands() -> Iterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        command.close()


# A Python repr in a line, `ConnectionResetError(104, '...')`: library text, not a cause.
EXCEPTION_REPR = re.compile(r"\b\w+(?:Error|Exception)\(")
# Longer than any broker stop: `produce --wait` is still waiting for its status reply when
# the connection goes, however slow the machine (the default, 15 s, could run out first).
STATUS_TIMEOUT = "600"


def no_library_noise(out: str) -> None:
    assert "Traceback" not in out, out
    assert "aiormq" not in out and "aio_pika" not in out, out
    assert not EXCEPTION_REPR.search(out), out


def test_sigterm_stops_a_worker_and_a_collector_while_the_broker_is_down(
    up: LocalNode, tmp_path: Path, commands: list[Command]
) -> None:
    """The 63.8 s (and 14 min under `timeout 40`) of issue 9 item 9: cancelling the consumers
    over a reconnecting connection waited forever."""
    worker = started(tmp_path, "worker", "worker", "w1", AMQP_URL=up.url)
    collector = started(tmp_path, "collector", "collect", AMQP_URL=up.url)
    commands += [worker, collector]
    worker.wait_for("consuming")
    collector.wait_for("consuming")
    up.stop()
    for command in (worker, collector):
        command.wait_for(LOST)
    for command, last_line in ((worker, "worker w1: 0 processed"), (collector, "total")):
        code, seconds = command.signal_and_time()
        out = command.output()
        assert seconds < BOUND, f"took {seconds:.1f}s:\n{out}"
        assert code == 0, out
        assert last_line in out, out
        assert out.count(LOST) == 1, out
        no_library_noise(out)


def test_a_lost_broker_is_one_line_and_its_return_another(
    up: LocalNode, tmp_path: Path, commands: list[Command]
) -> None:
    """Before: raw aiormq tracebacks, three lines every 5 s while down, nothing once back."""
    worker = started(tmp_path, "worker", "worker", "w1", AMQP_URL=up.url)
    commands.append(worker)
    worker.wait_for("consuming")
    up.stop()
    worker.wait_for(LOST)
    up.start(timeout=120)
    out = worker.wait_for(RECONNECTED)
    match = RECONNECTED.search(out)
    assert match is not None
    down_for = float(match.group(1))
    # Down for longer than aio-pika's 5 s between attempts: several attempts failed in between,
    # and none of them printed a line.
    assert down_for > 5.0, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len([line for line in lines if LOST in line]) == 1, out
    assert len([line for line in lines if RECONNECTED.search(line)]) == 1, out
    lost_line = next(line for line in lines if LOST in line)
    assert " WARNING " in lost_line and "reconnecting" in lost_line and "shutdown" in lost_line
    no_library_noise(out)
    code, seconds = worker.signal_and_time()
    assert code == 0 and seconds < BOUND, worker.output()


class SilentListener:
    """A port that accepts TCP connections and never says a word: a connect that hangs."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        self.port: int = self.socket.getsockname()[1]
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            self._held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        for conn in self._held:
            conn.close()
        self.socket.close()


@pytest.mark.parametrize("args", [("worker", "w1"), ("collect",)], ids=["worker", "collector"])
def test_sigterm_while_never_connected(
    args: tuple[str, ...], tmp_path: Path, commands: list[Command]
) -> None:
    """A broker that accepts but never answers held the process for SPECTASK_CONNECT_TIMEOUT."""
    listener = SilentListener()
    try:
        command = started(
            tmp_path,
            args[0],
            *args,
            AMQP_URL=f"amqp://guest:guest@127.0.0.1:{listener.port}/",
            SPECTASK_CONNECT_TIMEOUT="120",
        )
        commands.append(command)
        assert listener.accepted.wait(WAIT), command.output()
        code, seconds = command.signal_and_time()
    finally:
        listener.close()
    out = command.output()
    assert seconds < BOUND, f"took {seconds:.1f}s:\n{out}"
    assert code == 0, out
    assert "SIGTERM" in out and "stopped before it connected to RabbitMQ" in out, out
    no_library_noise(out)


def stuck_worker(
    node: LocalNode, tmp_path: Path, commands: list[Command], **env: str
) -> tuple[Command, Path]:
    """A worker of the slow app in its handler (a thread), and the handler's marker file."""
    marker = tmp_path / "handler-started"
    env = {
        "AMQP_URL": node.url,
        "SPECTASK_ISOLATION": "thread",
        MARKER_VARIABLE: str(marker),
        "SPECTASK_APP": "tests.slow_app:app",
        **env,
    }
    worker = started(tmp_path, "worker", "worker", "w1", "--types", "data_analysis", **env)
    commands.append(worker)
    worker.wait_for("consuming")
    produce = started(
        tmp_path, "produce", "produce", "--task", "data_analysis.statistics",
        "--params", '{"values": [1, 2, 3]}', **env,
    )  # fmt: skip
    commands.append(produce)
    assert produce.process.wait(timeout=WAIT) == 0, produce.output()
    wait_until(marker.exists, worker)
    return worker, marker


def wait_until(condition: Callable[[], bool], command: Command) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, command.output()
        time.sleep(0.05)


def test_sigterm_stops_a_worker_stuck_in_a_handler_with_the_broker_down(
    up: LocalNode, tmp_path: Path, commands: list[Command]
) -> None:
    """A handler thread that never returns cannot be interrupted: the deadline ends the process."""
    worker, _ = stuck_worker(up, tmp_path, commands)
    up.stop()
    worker.wait_for(LOST)
    code, seconds = worker.signal_and_time()
    out = worker.output()
    assert seconds < BOUND, f"took {seconds:.1f}s:\n{out}"
    assert code != 0, out  # it did not finish its work: not a clean exit
    assert "worker w1: not stopped" in out and "exiting now" in out, out


def test_sigterm_stops_a_worker_publishing_to_a_broker_that_is_gone(
    up: LocalNode, tmp_path: Path, commands: list[Command]
) -> None:
    """The handler returns after the broker went away: its outcome's publish has nowhere to go,
    and the stop must not wait for a confirm that never comes."""
    release = tmp_path / "release"
    worker, _ = stuck_worker(up, tmp_path, commands, **{RELEASE_VARIABLE: str(release)})
    up.stop()
    worker.wait_for(LOST)
    release.write_text("go")
    returned = tmp_path / "release.returned"
    wait_until(returned.exists, worker)  # the handler returned: now its outcome is published
    code, seconds = worker.signal_and_time()
    out = worker.output()
    assert seconds < BOUND, f"took {seconds:.1f}s:\n{out}"
    assert code == 0, out
    assert "worker w1: " in out.splitlines()[-1], out
    no_library_noise(out)


@pytest.mark.parametrize(
    ("args", "signum"),
    [
        (
            (
                "produce",
                "--task",
                "data_analysis.statistics",
                "--params",
                '{"values": [1]}',
                "--wait",
            ),
            signal.SIGTERM,
        ),
        (("status", "some-task", "--timeout", "120"), signal.SIGINT),
    ],
    ids=["produce-wait", "status"],
)
def test_short_lived_commands_stop_within_the_timeout_while_the_broker_is_down(
    up: LocalNode,
    args: tuple[str, ...],
    signum: int,
    tmp_path: Path,
    commands: list[Command],
) -> None:
    """No collector answers, the broker goes away mid-wait: a signal still ends the command."""
    command = started(
        tmp_path, args[0], *args, AMQP_URL=up.url, SPECTASK_CONNECT_TIMEOUT="120",
        SPECTASK_STATUS_TIMEOUT=STATUS_TIMEOUT,
    )  # fmt: skip
    commands.append(command)
    if args[0] == "produce":
        command.wait_for("all confirmed by the broker")
    else:
        deadline = time.monotonic() + WAIT
        while not _connected(up, "spectask-status"):
            assert time.monotonic() < deadline, command.output()
            time.sleep(0.2)
    # The signal comes as soon as the connection is lost, while the status call in flight
    # still waits (no collector answers; its timeout, STATUS_TIMEOUT or --timeout, outlasts
    # any stop, so the command cannot give up by itself first on a slow machine).
    stopping = threading.Thread(target=up.stop)
    stopping.start()
    try:
        command.wait_for(LOST)
        code, seconds = command.signal_and_time(signum)
    finally:
        stopping.join()
    out = command.output()
    no_library_noise(out)
    assert seconds < BOUND, f"took {seconds:.1f}s:\n{out}"
    assert code == 128 + signum, out
    assert f"spectask {args[0]}: {signal.Signals(signum).name}, stopping" in out, out


def _connected(node: LocalNode, connection_name: str) -> bool:
    """Is a client of this connection name connected to `node`?"""
    out = subprocess.run(
        [
            "/usr/lib/rabbitmq/bin/rabbitmqctl",
            "-n",
            node.nodename,
            "list_connections",
            "client_properties",
        ],
        env=node.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    return connection_name in out


def test_a_broker_killed_during_produce_wait_is_one_line(
    up: LocalNode, tmp_path: Path, commands: list[Command]
) -> None:
    """kill -9, not a clean stop: the socket is reset, no CONNECTION_FORCED comes first. The
    loss was one line holding `ConnectionResetError(104, 'Connection reset by peer')`.

    Its own name prefix: a kill -9 right after the first declare can leave that run's streams
    `down` for good (see HOME_NODE_DOWN), which must not break the module's later tests."""
    command = started(
        tmp_path, "produce", "produce", "--task", "data_analysis.statistics",
        "--params", '{"values": [1]}', "--wait", AMQP_URL=up.url,
        SPECTASK_STATUS_TIMEOUT=STATUS_TIMEOUT, SPECTASK_NAME_PREFIX=f"k9{os.getpid()}.",
    )  # fmt: skip
    commands.append(command)
    command.wait_for("all confirmed by the broker")
    up.kill()
    out = command.wait_for(LOST)
    code, seconds = command.signal_and_time()
    out = command.output()
    no_library_noise(out)
    assert out.count(LOST) == 1 and "Connection reset by peer" in out, out
    assert seconds < BOUND, f"took {seconds:.1f}s:\n{out}"
    assert code == 128 + signal.SIGTERM, out
    assert "spectask produce: SIGTERM, stopping" in out, out


DOWN_QUEUE = "no node runs it"
# What RabbitMQ 3.10.8 answered here to every declare of a stream left `down` by a kill -9
# right after its vhost's first declare (`produce --wait`, then the node killed). The kill
# landed in that window in about half the rounds on this machine: too uncertain for CI, so
# the mapping is tested on the broker's own words, and the fix was run by hand (below).
HOME_NODE_DOWN = (
    "NOT_FOUND - home node 'spectask-dfexp@localhost' of durable queue "
    "'spectask.cancellations' in vhost 'v0' is down or inaccessible"
)


def test_a_queue_no_node_runs_is_one_line_with_its_fix() -> None:
    """Before: an aiormq ChannelNotFoundEntity traceback from every later command. The fix
    it names was checked on such a queue: `rabbitmqctl delete_queue` and AMQP queue.delete
    both said "not found"; the eval dropped the record and the next `produce` exited 0."""
    exc = aiormq.exceptions.ChannelNotFoundEntity(HOME_NODE_DOWN)
    error = declare_errors.unavailable("spectask.cancellations", exc)
    assert error is not None
    first, hint = str(error).split("\n")
    assert DOWN_QUEUE in first and "spectask-dfexp@localhost" in first, first
    assert "rabbitmqctl list_queues -p v0 name state" in hint, hint
    expression = declare_errors.forget_expression("v0", "spectask.cancellations")
    assert f"rabbitmqctl eval '{expression}'" in hint, hint
    assert '<<"v0">>, queue, <<"spectask.cancellations">>' in expression
    other = aiormq.exceptions.ChannelNotFoundEntity("NOT_FOUND - no queue 'x' in vhost '/'")
    assert declare_errors.unavailable("x", other) is None  # any other NOT_FOUND: as it was
