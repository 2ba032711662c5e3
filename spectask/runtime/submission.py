"""Streaming a batch of tasks through a window of unconfirmed publishes.

A batch may be larger than memory (a generator over a file or a query), so nothing here holds
more than `window` messages: the next message is pulled from the iterable only when a confirm
frees a slot, and each confirmed task id is handed back at once instead of being collected.
The first publish that fails (a nack, a mandatory publish returned unroutable, a lost
connection, a confirm timeout) stops the pulling; the publishes still in flight are waited
for, their confirmed ids are still handed back, and then `SubmitError` names exactly the ids
the broker did not confirm. Items not yet pulled were never published: an iterator is left
right after the last message it gave.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field

from spectask.errors import SubmitError
from spectask.runtime.publisher import OutgoingMessage, Publisher

DEFAULT_WINDOW = 256
"""Unconfirmed publishes in flight: enough to keep a confirm channel busy, small in memory."""


def check_window(window: int) -> int:
    """A window of at least one publish, else a one-line error the caller can fix."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a whole number of publishes >= 1, got {window!r}")
    return window


@dataclass
class _Outcomes:
    """What one stream has seen: confirmed ids not yet handed back, and the failures."""

    ready: deque[str] = field(default_factory=deque)
    unconfirmed: dict[str, str] = field(default_factory=dict)
    confirmed_count: int = 0
    input_error: BaseException | None = None

    def settle(
        self, done: Iterable[asyncio.Task[None]], ids: dict[asyncio.Task[None], str]
    ) -> None:
        for task in done:
            message_id = ids.pop(task)
            error = task.exception()
            if error is None:
                self.ready.append(message_id)
                self.confirmed_count += 1
            else:
                self.unconfirmed[message_id] = str(error)

    @property
    def failed(self) -> bool:
        return bool(self.unconfirmed) or self.input_error is not None


async def stream_publish(
    publisher: Publisher,
    messages: Iterable[OutgoingMessage],
    *,
    window: int = DEFAULT_WINDOW,
) -> AsyncGenerator[str, None]:
    """Publish `messages` with at most `window` confirms pending; yield each confirmed id.

    Ids come in the order the broker confirms them. On a failure: every confirmed id is
    yielded first, then `SubmitError` is raised with the unconfirmed ids (`confirmed` is
    empty: the ids were all yielded). A caller that stops iterating early cancels the
    publishes still pending.
    """
    check_window(window)
    pending: dict[asyncio.Task[None], str] = {}
    outcomes = _Outcomes()
    source = iter(messages)
    try:
        while not outcomes.failed:
            if len(pending) >= window:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                outcomes.settle(done, pending)
            else:
                try:
                    message = next(source, None)
                except Exception as exc:  # the caller's generator failed building a message
                    outcomes.input_error = exc
                    break
                if message is None:
                    break
                task = asyncio.create_task(publisher.publish(message))
                pending[task] = message.message_id
            while outcomes.ready:
                yield outcomes.ready.popleft()
        if pending:
            done, _ = await asyncio.wait(pending)
            outcomes.settle(done, pending)
        while outcomes.ready:
            yield outcomes.ready.popleft()
    finally:
        # Stopped early (the caller broke out, was cancelled, or Ctrl-C): nothing may keep
        # publishing after the stream is gone, and no task may end unretrieved.
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    if outcomes.failed:
        raise SubmitError.from_outcomes(
            confirmed=[],
            confirmed_count=outcomes.confirmed_count,
            unconfirmed=outcomes.unconfirmed,
            input_error=outcomes.input_error,
        ) from outcomes.input_error


async def collect_publish(
    publisher: Publisher,
    messages: Iterable[OutgoingMessage],
    *,
    window: int = DEFAULT_WINDOW,
    on_confirmed: Callable[[int], None] | None = None,
    confirmed: list[str] | None = None,
) -> list[str]:
    """`stream_publish`, collected: every confirmed id in a list (for batches that fit memory).

    `confirmed`, if given, gets each id the moment it is confirmed, so a caller interrupted
    half-way still knows which tasks the broker has. The `SubmitError` of a failure carries
    every confirmed id of this call as well as the unconfirmed ones.
    """
    ids: list[str] = []
    try:
        async for message_id in stream_publish(publisher, messages, window=window):
            ids.append(message_id)
            if confirmed is not None:
                confirmed.append(message_id)
            if on_confirmed is not None:
                on_confirmed(1)
    except SubmitError as exc:
        raise exc.with_confirmed(ids) from exc.__cause__
    return ids
