"""Retry tiers, derived from the task policies and `x-spectask-retry` at a document root.

    x-spectask-retry:
      exchangePrefix: retry       # tier names: retry.<delay>ms (a fanout exchange and a queue)
      deadLetterExchange: tasks   # where a task goes back after its delay, with its own key
      jitterTiers: 3              # tiers per backoff step of a policy with jitter (default 3)

For every policy with maxAttempts > 1, the delay of each retried attempt (and, with jitter, the
spread of it: `spectask.runtime.retry` says how) becomes a tier; tiers are shared by all task
types, so policies with the same backoff add nothing. Each tier is a fanout exchange and a queue
with `x-message-ttl` and `x-dead-letter-exchange`; each policy lists the tiers it may use.
Checked here: the extension itself, that a policy that retries has tiers to retry in, that its
queue is bound to the exchange retried tasks come back through, and that tier names are free.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from spectask.codegen.channels import Channel
from spectask.codegen.diagnostics import Diagnostics
from spectask.codegen.extensions import RETRY
from spectask.codegen.fields import Rule, check_fields, is_int
from spectask.codegen.load import SpecSet
from spectask.codegen.nodes import Node
from spectask.runtime.retry import DEFAULT_JITTER_TIERS, tier_delays_ms, tier_topology, with_tiers
from spectask.runtime.topology import ExchangeSpec, QueueSpec, TaskPolicy

MAX_TIERS = 32
_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_EXAMPLE = "{exchangePrefix: retry, deadLetterExchange: tasks}"


def _prefix(value: Any) -> bool:
    return isinstance(value, str) and bool(_PREFIX.match(value)) and not value.startswith("amq.")


RULES = {
    "exchangePrefix": Rule(
        _prefix, "a name prefix of letters, digits and . _ - : (not amq.)", "retry"
    ),
    "deadLetterExchange": Rule(
        lambda v: isinstance(v, str) and v != "", "an exchange name", "tasks"
    ),
    "jitterTiers": Rule(lambda v: is_int(v) and 1 <= v <= 9, "an integer in 1..9", "3"),
}


@dataclass(frozen=True)
class RetrySettings:
    """A readable `x-spectask-retry`; `valid` is False when it has errors (already reported)."""

    node: Node
    valid: bool
    prefix: str = "retry"
    dead_letter_exchange: str = ""
    jitter_tiers: int = DEFAULT_JITTER_TIERS


@dataclass(frozen=True)
class Tiers:
    """The tier exchanges and queues to declare, and the policies with their tiers."""

    exchanges: tuple[ExchangeSpec, ...] = ()
    queues: tuple[QueueSpec, ...] = ()
    policies: Mapping[str, TaskPolicy] | None = None


def parse_retry(spec: SpecSet, d: Diagnostics) -> RetrySettings | None:
    """`x-spectask-retry`, from the one document that has it; None if none has."""
    found = [doc.root.child(RETRY) for doc in spec.documents.values()]
    nodes = sorted((n for n in found if n is not None), key=lambda n: n.file)
    for extra in nodes[1:]:
        d.error(extra, f"{RETRY} is also defined in {nodes[0].file}", "define it once")
    if not nodes:
        return None
    node = nodes[0]
    before = len(d.errors)
    values = check_fields(node, RULES, d)
    if isinstance(node.value, dict) and "deadLetterExchange" not in node.value:
        d.error(
            node,
            f"{RETRY} has no deadLetterExchange",
            "name the exchange tasks are published to, for example deadLetterExchange: tasks",
        )
    return RetrySettings(
        node,
        valid=len(d.errors) == before,
        prefix=values.get("exchangePrefix", "retry"),
        dead_letter_exchange=values.get("deadLetterExchange", ""),
        jitter_tiers=values.get("jitterTiers", DEFAULT_JITTER_TIERS),
    )


def _at(channel: Channel) -> Node | Channel:
    """Where to report a retry problem of a channel: its policy's maxAttempts."""
    policy = channel.policy_node
    return (policy.child("maxAttempts") or policy) if policy is not None else channel


def check_channels(
    retry: RetrySettings | None,
    channels: Iterable[Channel],
    exchanges: Mapping[str, ExchangeSpec],
    d: Diagnostics,
) -> None:
    """Each queue whose policy retries needs tiers, and a binding they send tasks back through."""
    if retry is not None and retry.valid and retry.dead_letter_exchange not in exchanges:
        where = retry.node.child("deadLetterExchange") or retry.node
        d.error(
            where,
            f"deadLetterExchange {retry.dead_letter_exchange!r} is not declared by any channel",
            "name the exchange tasks are published to; declared: " + ", ".join(sorted(exchanges)),
        )
        return
    for channel in channels:
        if channel.policy is None or channel.queue is None:
            continue
        attempts = channel.policy.retry.max_attempts
        if attempts <= 1:
            continue
        if retry is None:
            d.error(
                _at(channel),
                f"maxAttempts {attempts} needs retry tiers, but no document defines {RETRY}",
                f"add {RETRY}: {_EXAMPLE} at the root of the common document, "
                "or set maxAttempts: 1",
            )
        elif retry.valid and not any(
            b.exchange == retry.dead_letter_exchange for b in channel.queue.bindings
        ):
            d.error(
                _at(channel),
                f"retried tasks come back through exchange {retry.dead_letter_exchange!r}, "
                f"but queue {channel.queue.name!r} is not bound to it",
                f"bind the queue to {retry.dead_letter_exchange} in x-spectask-bindings, "
                "or set maxAttempts: 1",
            )


def derive(
    retry: RetrySettings | None,
    policies: Mapping[str, TaskPolicy],
    exchanges: Mapping[str, ExchangeSpec],
    queues: Mapping[str, QueueSpec],
    d: Diagnostics,
) -> Tiers:
    """The tiers every policy needs, as exchanges and queues, and the policies that use them."""
    if retry is None or not retry.valid:
        return Tiers()
    delays = sorted(
        {
            ms
            for policy in policies.values()
            for ms in tier_delays_ms(policy.retry, retry.jitter_tiers)
        }
    )
    if len(delays) > MAX_TIERS:
        d.error(
            retry.node,
            f"the policies need {len(delays)} retry tiers; at most {MAX_TIERS} are allowed",
            "use fewer distinct backoff settings or maxAttempts, or lower jitterTiers",
        )
        return Tiers()
    tier_exchanges, tier_queues = tier_topology(retry.prefix, retry.dead_letter_exchange, delays)
    taken = sorted(
        {e.name for e in tier_exchanges if e.name in exchanges}
        | {q.name for q in tier_queues if q.name in queues}
    )
    if taken:
        d.error(
            retry.node.child("exchangePrefix") or retry.node,
            f"retry tier name(s) {', '.join(taken)} are already declared by a channel",
            "choose another exchangePrefix",
        )
        return Tiers()
    return Tiers(
        tier_exchanges,
        tier_queues,
        {
            task_type: with_tiers(policy, retry.prefix, retry.jitter_tiers)
            for task_type, policy in policies.items()
        },
    )
