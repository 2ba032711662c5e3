"""What a refused declaration means, in one line a person can act on.

RabbitMQ refuses to redeclare an exchange or queue that already exists with another type or
other arguments (PRECONDITION_FAILED, "inequivalent arg 'type' for exchange 'tasks' in vhost
'/': received 'topic' but current is 'direct'"), and refuses any declare to a user without
configure permission (ACCESS_REFUSED). aio-pika passes both on as a channel-closing exception
whose traceback names neither the fix nor, readably, the entity; here each becomes a
`ConfigError` naming the entity, what the spec wants, what the broker has and what to do.

A queue whose record exists but which no node runs (NOT_FOUND "home node ... is down or
inaccessible") happens when a cluster member is down, and also on a single node killed -9 right
after the queue was first declared: its record survived the crash, its stream or quorum state
did not, and it stays `down` for good. A broker-side failure (INTERNAL_ERROR) is another: both
become the cause and the fix instead of aiormq's traceback.
"""

from __future__ import annotations

import re

from spectask.errors import BrokerUnavailableError, ConfigError

APPLY_COMMAND = "spectask topology apply"
HOME_NODE = re.compile(r"home node '([^']+)' of durable queue '[^']+' in vhost '([^']*)'")
# RabbitMQ's wording (rabbit_misc:assert_args_equivalence / assert_field_equivalence)
_SHOWN = r"none|the value '[^']*'(?: of type '[^']*')?|'[^']*'"
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<field>[^']+)' for (?P<kind>exchange|queue) '(?P<name>[^']*)' "
    rf"in vhost '(?P<vhost>[^']*)': received (?P<received>{_SHOWN}) but current is "
    rf"(?P<current>{_SHOWN})"
)
_VALUE = re.compile(r"^(?:the value )?'(?P<value>[^']*)'(?: of type '[^']*')?$")


def _value(text: str) -> str:
    """`'direct'` / `the value '10' of type 'signedint'` / `none` -> `'direct'`, `10`, `none`."""
    match = _VALUE.match(text.strip())
    if match is None:
        return text.strip()
    value = match.group("value")
    return value if text.strip().startswith("the value") else repr(value)


def refused(kind: str, name: str, wanted: str, exc: BaseException) -> ConfigError:
    """The error for a PRECONDITION_FAILED on declaring `kind` (exchange/queue) `name`.

    `wanted` says what the spec asks for ("type 'topic'", "arguments {...}"); the broker's
    current value comes from its reply text when it gives one.
    """
    match = _INEQUIVALENT.search(str(exc))
    if match is not None:
        field = match.group("field")
        has = (
            f"the broker has {field} {_value(match.group('current'))}, "
            f"the spec wants {_value(match.group('received'))}"
        ) + (f" (spec: {wanted})" if kind == "queue" else "")
    else:
        reason = str(exc).strip() or type(exc).__name__
        has = f"the spec wants {wanted}, the broker refused it ({reason})"
    delete = (
        f"rabbitmqctl delete_queue {name}"
        if kind == "queue"
        else f"rabbitmqadmin delete exchange name={name}"
    )
    return ConfigError(
        f"RabbitMQ refused to declare {kind} {name!r}: it already exists with other settings: "
        f"{has}; "
        f"fix: if it is this application's, drain and delete it ({delete}) and run "
        f"`{APPLY_COMMAND}`; if another application owns it, give this one a virtual host "
        "of its own (AMQP_URL's path) or a name prefix (SPECTASK_NAME_PREFIX)"
    )


def not_allowed(kind: str, name: str, user: str, vhost: str) -> ConfigError:
    """The error for an ACCESS_REFUSED on declaring: the user lacks configure permission."""
    return ConfigError(
        f"user {user!r} may not declare {kind} {name!r} in virtual host {vhost!r} (no configure "
        f"permission); fix: have an operator run `{APPLY_COMMAND}` and start this process with "
        "SPECTASK_TOPOLOGY=check, which only checks that the topology exists"
    )


def missing(entities: list[str], vhost: str) -> ConfigError:
    """The error for SPECTASK_TOPOLOGY=check when the spec's exchanges or queues are absent."""
    more = f" and {len(entities) - 5} more" if len(entities) > 5 else ""
    shown = ", ".join(entities[:5]) + more
    return ConfigError(
        f"the spec's {shown} {'is' if len(entities) == 1 else 'are'} missing in virtual host "
        f"{vhost!r} (SPECTASK_TOPOLOGY=check declares nothing); fix: run `{APPLY_COMMAND}` as a "
        "user with configure permission"
    )


def failed(queue: str, exc: BaseException) -> BrokerUnavailableError:
    """INTERNAL_ERROR (541) on a declare: the broker's side failed, e.g. a quorum queue's
    without a majority of its nodes, which can neither answer nor refuse."""
    reason = exc.args[0] if exc.args else exc
    return BrokerUnavailableError(
        f"RabbitMQ failed declaring queue {queue!r} ({reason}): on a cluster, a quorum queue "
        "cannot work while a majority of its nodes is down"
        "\n  hint: `rabbitmqctl cluster_status` shows which nodes run; retry once they are back"
    )


def forget_expression(vhost: str, queue: str) -> str:
    """The Erlang a `rabbitmqctl eval` runs to drop the record of a queue no node runs.

    `rabbitmqctl delete_queue` and AMQP queue.delete both answer "not found" for such a
    queue on RabbitMQ 3.10, so its record must go by the internal call."""
    return (
        f'rabbit_amqqueue:internal_delete(rabbit_misc:r(<<"{vhost}">>, queue, <<"{queue}">>), '
        '<<"spectask">>).'
    )


def unavailable(queue: str, exc: BaseException) -> BrokerUnavailableError | None:
    """A NOT_FOUND declare of a queue no node runs; None for any other NOT_FOUND."""
    match = HOME_NODE.search(str(exc))
    if match is None:
        return None
    node, vhost = match.groups()
    vhost_flag = "" if vhost == "/" else f"-p {vhost} "
    return BrokerUnavailableError(
        f"RabbitMQ has queue {queue!r} (vhost {vhost!r}) but no node runs it: its home node "
        f"{node} is down, or the queue lost its state when that node crashed"
        f"\n  hint: start {node}; if it runs and `rabbitmqctl list_queues {vhost_flag}name "
        f"state` shows {queue} `down`, drop its record (what it held is lost) with "
        f"`rabbitmqctl eval '{forget_expression(vhost, queue)}'`, and the same for any other "
        "queue shown `down`: spectask declares them afresh"
    )
