"""One exception root for everything spectask raises on purpose.

Every message says what went wrong and, where it can, how to fix it, so a user can act on
the error without reading our source.
"""

from __future__ import annotations


class SpectaskError(Exception):
    """Root of all spectask errors."""


class ConfigError(SpectaskError):
    """The configuration (environment, command line) is invalid."""


class BrokerUnavailableError(SpectaskError):
    """No RabbitMQ broker could be reached."""


class PublishError(SpectaskError):
    """A publish was not confirmed by the broker: the message may not have been stored."""


class UnroutableError(PublishError):
    """The broker returned a mandatory publish: no queue is bound for its routing key."""

    def __init__(self, exchange: str, routing_key: str) -> None:
        super().__init__(
            f"message to exchange {exchange!r} with routing key {routing_key!r} matched no queue; "
            "check that the spec binds a queue for this key and that the topology was declared"
        )
        self.exchange = exchange
        self.routing_key = routing_key


class SubmitError(PublishError):
    """A batch submit stopped: which ids the broker confirmed, and which it did not.

    `unconfirmed` maps each id published but not confirmed (nacked, returned unroutable, or
    in flight when the connection dropped) to its reason: those may or may not be stored.
    `confirmed` holds the confirmed ids the caller was not already given (`submit_many`: all
    of them; a stream yields them before raising, so there it is empty); `confirmed_count`
    counts them all. Items the batch had not pulled yet were never published.
    """

    def __init__(
        self,
        message: str,
        *,
        confirmed: list[str],
        confirmed_count: int,
        unconfirmed: dict[str, str],
    ) -> None:
        super().__init__(message)
        self.confirmed = confirmed
        self.confirmed_count = confirmed_count
        self.unconfirmed = unconfirmed

    @classmethod
    def from_outcomes(
        cls,
        *,
        confirmed: list[str],
        confirmed_count: int,
        unconfirmed: dict[str, str],
        input_error: BaseException | None,
    ) -> SubmitError:
        if unconfirmed:
            first_id, first = next(iter(unconfirmed.items()))
            why = (
                f"{len(unconfirmed)} published task(s) were not confirmed, first {first_id}: "
                f"{first}"
            )
        else:
            why = f"the batch's iterable failed: {type(input_error).__name__}: {input_error}"
        return cls(
            f"batch submit stopped after {confirmed_count} confirmed task(s); {why}; no further "
            "item was published (the ids are in .confirmed and .unconfirmed)",
            confirmed=confirmed,
            confirmed_count=confirmed_count,
            unconfirmed=unconfirmed,
        )

    def with_confirmed(self, confirmed: list[str]) -> SubmitError:
        """The same failure, carrying the confirmed ids a collecting caller gathered."""
        return SubmitError(
            str(self),
            confirmed=confirmed,
            confirmed_count=self.confirmed_count,
            unconfirmed=self.unconfirmed,
        )


class MissingHandlerError(SpectaskError):
    """A worker was started with receive operations that have no handler."""


class TaskValidationError(SpectaskError):
    """A task payload does not satisfy its message schema (raised before publishing)."""


class PermanentTaskError(SpectaskError):
    """The task's input is bad (or refused for good): retrying it would fail the same way.

    Raise it from a handler to send the task straight to the dead-letter queue; any other
    exception is treated as transient and retried under the task type's policy.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TaskCancelledError(SpectaskError):
    """The task was cancelled (`spectask cancel`): raised by `TaskContext.raise_if_cancelled`
    and `TaskContext.progress` once a cancellation reached the worker.

    A handler may catch it to clean up, then re-raise; the task ends CANCELLED, is not retried
    and not dead-lettered.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RpcTimeoutError(SpectaskError):
    """A request/reply call got no reply within its timeout."""


class StoppedBeforeConnectingError(SpectaskError):
    """SIGTERM/SIGINT arrived while the process was still connecting: it stops, as asked.

    Not a failure of the user's: the command line prints it as a plain line and exits 0.
    """
