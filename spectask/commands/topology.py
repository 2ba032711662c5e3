"""`spectask topology apply|check`: declaring the spec's topology as an explicit step.

`apply` is the operator's: it declares every exchange, queue and binding the spec names
(configure permission needed), whatever SPECTASK_TOPOLOGY says. `check` lists every
difference between the broker and the spec and exits 1 if there is any, so a deploy
pipeline can stop before the processes (started with SPECTASK_TOPOLOGY=check) refuse to.
"""

from __future__ import annotations

import argparse
import json

from spectask.app import load_app
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.connect_errors import vhost_of
from spectask.topology_check import check


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("apply", "check"),
        help="apply: declare the spec's exchanges, queues and bindings; check: list every "
        "difference between the broker and the spec (exit 1 if any)",
    )
    parser.add_argument("--json", action="store_true", help="check: one JSON document")


async def run(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    config = RuntimeConfig()
    if args.action == "apply":
        config = config.model_copy(update={"topology": "declare"})
    broker = await Broker.connect(config, name=f"spectask-topology-{args.action}")
    async with broker:
        topology = app.topology
        if args.action == "apply":
            await broker.declare(topology)
            bindings = sum(len(queue.bindings) for queue in topology.queues)
            print(
                f"declared {len(topology.exchanges)} exchanges, {len(topology.queues)} queues "
                f"and {bindings} bindings in virtual host {vhost_of(broker.url)!r}"
            )
            return 0
        report = await check(broker, topology)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 1 if report.differences else 0
