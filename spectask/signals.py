"""Turning SIGTERM/SIGINT into a graceful stop, and a second signal into an immediate exit."""

from __future__ import annotations

import asyncio
import os
import signal
import sys


def stop_on_signals(stop: asyncio.Event, who: str = "spectask") -> None:
    """First SIGTERM/SIGINT sets `stop` (drain and exit); a second one exits at once.

    `who` names the process in what it prints ("worker w1", "collector"): a terminal running
    several of them otherwise shows the same line four times with no way to tell them apart.
    """
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            print(f"{who}: second {name}, exiting now", file=sys.stderr)
            os._exit(128 + signum)
        print(f"{who}: {name}, finishing in-flight work (again to force)", file=sys.stderr)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
