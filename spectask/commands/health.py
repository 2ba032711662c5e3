"""`spectask health --consumes QUEUE`: a container health check for processes with no HTTP port.

A collector serves no /metrics, but its work is visible at the broker: it consumes the results
queue. So its check logs in with the process's own AMQP_URL (the same credentials, vhost and
TLS settings) and asks whether each named queue has a consumer: exit 0 if all do, else exit 1
with one line naming the queues without one. It proves the broker is reachable with those
credentials and that some collector is consuming, not which replica; with several collectors
behind one name, a dead one is found by its own exit (the process ends, the runtime restarts it).
"""

from __future__ import annotations

import argparse

from spectask.app import load_app
from spectask.queues import QueueSource
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--consumes",
        action="append",
        required=True,
        metavar="QUEUE",
        help="a queue of the spec that must have a consumer (repeat for several)",
    )


async def run(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    broker = await Broker.connect(RuntimeConfig(), name="spectask-health")
    async with broker:
        report = await QueueSource(broker, app.topology).report()
    known = {queue.name: queue for queue in report.queues}
    problems = []
    for name in args.consumes:
        queue = known.get(name)
        if queue is None:
            problems.append(f"{name}: not a queue of the spec (known: {', '.join(sorted(known))})")
        elif queue.missing:
            problems.append(f"{name}: not declared on the broker")
        elif not queue.consumers:
            problems.append(f"{name}: no consumer")
    if problems:
        print("unhealthy: " + "; ".join(problems))
        return 1
    print(f"healthy: {', '.join(args.consumes)} consumed ({report.source})")
    return 0
