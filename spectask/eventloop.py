"""The event loop spectask's commands run on: uvloop where it is installed, else asyncio.

uvloop runs the same aio-pika worker at about a quarter less CPU per task (measured for
issue 13), so it is the default; `SPECTASK_EVENT_LOOP=asyncio` opts out, for example to
debug with asyncio's own tooling. Library users who run their own loop are not affected:
this module is only what `spectask ...` and the mains call instead of `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from spectask.errors import SpectaskError
from spectask.runtime.config import RuntimeConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(choice: LoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `asyncio.Runner`; None means asyncio's default loop."""
    if choice == "asyncio" or (choice == "auto" and not uvloop_installed()):
        return None
    if not uvloop_installed():
        raise SpectaskError(
            "SPECTASK_EVENT_LOOP=uvloop, but uvloop is not installed "
            "(pip install uvloop, or SPECTASK_EVENT_LOOP=auto)"
        )
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(choice: LoopChoice | None = None) -> str:
    """`uvloop` or `asyncio`: what `run` will use, for logs and the benchmark's header."""
    factory = loop_factory(choice or RuntimeConfig().event_loop)
    return "asyncio" if factory is None else "uvloop"


def run(main: Coroutine[Any, Any, T], choice: LoopChoice | None = None) -> T:
    """`asyncio.run(main)` on the configured loop (SPECTASK_EVENT_LOOP, default auto)."""
    try:
        factory = loop_factory(choice or RuntimeConfig().event_loop)
    except BaseException:
        main.close()  # never awaited: close it so Python does not warn about it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_announced(main))


async def _announced(main: Coroutine[Any, Any, T]) -> T:
    """Say which loop runs (with -v): `event loop: uvloop` or `event loop: asyncio`."""
    log.debug("event loop: %s", type(asyncio.get_running_loop()).__module__.partition(".")[0])
    return await main
