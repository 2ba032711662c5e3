"""Turning SIGTERM/SIGINT into a graceful stop that ends within SPECTASK_SHUTDOWN_TIMEOUT.

The first signal sets `stop` (drain and exit); a second one exits at once. The first signal
also arms a deadline: if the process is still here `timeout` + `CLOSE_GRACE_SECONDS` later,
whatever it is waiting on (a broker that went away, a thread running a handler that cannot be
interrupted, a connect that hangs), it says so in one line and exits. The delivery loop bounds
each of its own steps (see `spectask.runtime.consumer`), so the deadline is a backstop that a
well-behaved stop never reaches; it is what makes "SIGTERM stops the process within its
shutdown timeout" hold in every state, including ones nobody foresaw. Unfinished deliveries
are safe to abandon: the broker requeues whatever a closed connection left unacked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from typing import Any

from spectask.runtime.shutdown import CLOSE_GRACE_SECONDS

FORCED_EXIT_CODE = 1


def stop_on_signals(
    stop: asyncio.Event, who: str = "spectask", *, timeout: float | None = None
) -> None:
    """First SIGTERM/SIGINT sets `stop` (drain and exit); a second one exits at once.

    `who` names the process in what it prints ("worker w1", "collector"): a terminal running
    several of them otherwise shows the same line four times with no way to tell them apart.
    `timeout` is the shutdown timeout: past it (plus the grace for closing) the process exits
    whatever it is waiting on. None: no deadline (for callers that bound the stop themselves).
    """
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            print(f"{who}: second {name}, exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        print(f"{who}: {name}, finishing in-flight work (again to force)", file=sys.stderr)
        stop.set()
        if timeout is not None:
            arm_deadline(who, name, timeout)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def cancel_on_signals(task: asyncio.Future[Any], who: str, *, timeout: float) -> list[int]:
    """For short-lived commands (produce, status): SIGTERM/SIGINT cancel `task`, bounded.

    Cancelling runs the command's own clean-up (a submit writes the ids the broker confirmed);
    the deadline bounds that clean-up like a service's stop. A second signal exits at once.
    Returns the list the numbers of the signals received go to, so the caller can tell a
    cancel it asked for.
    """
    loop = asyncio.get_running_loop()
    signalled: list[int] = []

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if signalled:
            print(f"{who}: second {name}, exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        signalled.append(signum)
        print(f"{who}: {name}, stopping", file=sys.stderr)
        task.cancel()
        arm_deadline(who, name, timeout)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return signalled


def arm_deadline(who: str, signal_name: str, timeout: float) -> threading.Timer:
    """Exit the process `timeout` + CLOSE_GRACE_SECONDS from now, saying why, if still alive.

    A daemon thread, not an event-loop timer: the loop may be what is stuck (a blocking call),
    or already gone while the interpreter waits at exit for a handler's thread.
    """
    limit = timeout + CLOSE_GRACE_SECONDS

    def give_up() -> None:
        print(
            f"{who}: not stopped {limit:g}s after {signal_name} (SPECTASK_SHUTDOWN_TIMEOUT="
            f"{timeout:g} + {CLOSE_GRACE_SECONDS:g}s to close); exiting now, the broker "
            "requeues whatever was unfinished",
            file=sys.stderr,
            flush=True,
        )
        os._exit(FORCED_EXIT_CODE)

    timer = threading.Timer(limit, give_up)
    timer.daemon = True
    timer.start()
    return timer
