"""Turning SIGTERM/SIGINT into a graceful stop, and a second signal into an immediate exit."""

from __future__ import annotations

import asyncio
import os
import signal
import sys


def stop_on_signals(stop: asyncio.Event) -> None:
    """First SIGTERM/SIGINT sets `stop` (drain and exit); a second one exits at once."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            print(f"second {signal.Signals(signum).name}: exiting now", file=sys.stderr)
            os._exit(128 + signum)
        print(
            f"{signal.Signals(signum).name}: finishing in-flight work (again to force)",
            file=sys.stderr,
        )
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
