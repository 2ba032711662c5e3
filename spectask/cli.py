"""The `spectask` command: one entry point whose subcommands the top-level mains share."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from pydantic import ValidationError

from spectask import __version__
from spectask.app import APP_VARIABLE
from spectask.errors import SpectaskError
from spectask.logs import configure_logging

# Commands with their own argument parsing: `spectask generate --help`, `spectask broker ensure`.
PASSTHROUGH = {
    "generate": "spectask.codegen",
    "broker": "spectask.devbroker",
}

# subcommand -> (module, help); modules load lazily, so `--help` needs no application
COMMANDS = {
    "init": ("spectask.commands.init", "write a new spectask project (spec, handlers, Makefile)"),
    "protocol": ("spectask.commands.protocol", "write spectask's protocol document into a spec"),
    "worker": ("spectask.commands.worker", "run a competing worker"),
    "produce": ("spectask.commands.producer", "submit tasks"),
    "collect": ("spectask.commands.collector", "consume and report task results"),
    "dlq": ("spectask.commands.dlq", "inspect, replay or purge dead letters"),
    "status": ("spectask.commands.status", "the stored state of tasks (status RPC)"),
    "result": ("spectask.commands.result", "the stored result of one task (status RPC)"),
    "cancel": ("spectask.commands.cancel", "cancel queued, retrying or running tasks"),
    "queues": ("spectask.commands.queues", "each spec queue's depth, consumers and rates"),
    "tasks": ("spectask.commands.tasks", "recent tasks from the store, by batch, state, type"),
    "workers": ("spectask.commands.workers", "workers online (or lost) from their heartbeats"),
    "dashboard": ("spectask.commands.dashboard", "the live web dashboard (and /metrics)"),
}


NEEDS_APP = frozenset(
    {"worker", "produce", "collect", "dlq", "status", "result", "cancel", "queues", "dashboard"}
)


def build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, ModuleType | None]:
    parser = argparse.ArgumentParser(prog="spectask", description=__doc__)
    parser.add_argument("--version", action="version", version=f"spectask {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("generate", help="write typed clients from spec/ into generated/")
    sub.add_parser("broker", help="find or start a RabbitMQ broker (ensure | status | stop)")
    chosen = next((arg for arg in argv if arg in COMMANDS), None)
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text)
        if name in NEEDS_APP:
            command_parser.add_argument(
                "--app",
                metavar="MODULE:ATTR",
                help=f"your application (default: ${APP_VARIABLE}); see `spectask.Application`",
            )
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
    return parser, module


# settings read from SPECTASK_* (and AMQP_URL / STORE_URL) variables: a bad value is the
# user's to fix, so it is one line naming the variable, not a traceback
SETTINGS = frozenset({"RuntimeConfig", "TaskSettings"})


def settings_problems(exc: ValidationError) -> list[str]:
    """`SPECTASK_PREFETCH='abc': Input should be a valid integer` for each bad variable."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        variable = (
            field.upper()
            if field.upper() in ("AMQP_URL", "STORE_URL")
            else f"SPECTASK_{field.upper()}"
        )
        problems.append(f"{variable}={error.get('input')!r}: {error['msg']}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        passthrough: int = importlib.import_module(PASSTHROUGH[argv[0]]).main(argv[1:])
        return passthrough
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    assert module is not None
    try:
        result = module.run(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except SpectaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        if exc.title not in SETTINGS:
            raise
        for problem in settings_problems(exc):
            print(f"error: {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
