"""`spectask queues`: every queue of the spec with its depth, consumers and (API) rates."""

from __future__ import annotations

import argparse
import json

from spectask.app import load_app
from spectask.queues import QueueSource, render
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document, for machines")


async def run(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    broker = await Broker.connect(RuntimeConfig(), name="spectask-queues")
    async with broker:
        report = await QueueSource(broker, app.topology).report()
    print(json.dumps(report.to_json(), indent=2) if args.json else render(report))
    return 0
