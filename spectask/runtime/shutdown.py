"""Bounded steps for stopping over a broker that may have gone away.

Over aio-pika's reconnecting connection, cancelling a consumer or closing a channel waits for
the connection to come back: with the broker down, a stop that awaits them never ends (a
worker under `timeout 40` hung for 14 minutes). Each such step gets `CLOSE_STEP_SECONDS`; a
step that does not finish in time is abandoned with a line in the log, which loses nothing:
the broker requeues every delivery a closed connection left unacked. `CLOSE_GRACE_SECONDS`,
on top of SPECTASK_SHUTDOWN_TIMEOUT, is what all closing steps together may take; the signal
handler's deadline (`spectask.signals`) enforces the sum.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import aiormq

log = logging.getLogger(__name__)

CLOSE_STEP_SECONDS = 1.0
CLOSE_GRACE_SECONDS = 5.0
# what a step over a lost connection may raise instead of hanging
CLOSED_ERRORS = (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError)


async def within(step: Awaitable[object], what: str, seconds: float = CLOSE_STEP_SECONDS) -> bool:
    """Await `step` for at most `seconds`; True if it finished, False (logged) if abandoned."""
    try:
        await asyncio.wait_for(step, timeout=max(0.0, seconds))
    except TimeoutError:
        log.warning(
            "stopping: gave up on %s after %.3gs (is the broker unreachable?)", what, seconds
        )
        return False
    except CLOSED_ERRORS as exc:
        log.debug("stopping: %s failed: %s", what, exc)
        return False
    return True
