"""The `spectask` command: one entry point whose subcommands the top-level mains share."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Coroutine, Sequence
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from spectask import __version__, eventloop
from spectask.app import APP_VARIABLE
from spectask.errors import SpectaskError, StoppedBeforeConnectingError
from spectask.logs import FORMATS, LEVELS, configure_logging
from spectask.runtime.config import RuntimeConfig
from spectask.signals import cancel_on_signals

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
    "topology": (
        "spectask.commands.topology",
        "topology apply | check: declare the spec's topology, or list how the broker differs",
    ),
    "health": ("spectask.commands.health", "exit 0 if the named queues have consumers (probes)"),
    "spec": (
        "spectask.commands.spec",
        "spec diff OLD NEW: breaking changes for producers/consumers",
    ),
}


NEEDS_APP = frozenset(
    {
        "worker",
        "produce",
        "collect",
        "dlq",
        "status",
        "result",
        "cancel",
        "queues",
        "dashboard",
        "health",
        "topology",
    }
)
# services stop on a signal by draining (spectask.signals.stop_on_signals); the other commands
# are cancelled, within the shutdown timeout (cancel_on_signals)
SERVICES = frozenset({"worker", "collect"})


def add_logging_options(parser: argparse.ArgumentParser, default: object) -> None:
    """-v, --log-level, --log-format: before the command or after it (`main-worker.py w1 -v`).

    The command's copies default to SUPPRESS, so they never undo the ones given before it.
    """
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if default is None else default,
        help="spectask's debug lines (--log-level DEBUG)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LEVELS,
        default=default,
        help="spectask's log level (default: $SPECTASK_LOG_LEVEL, else INFO); third-party "
        "libraries stay quiet",
    )
    parser.add_argument(
        "--log-format",
        type=str.lower,
        choices=FORMATS,
        default=default,
        help="text, or json: one JSON object per line (default: $SPECTASK_LOG_FORMAT, else text)",
    )


def build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, ModuleType | None]:
    parser = argparse.ArgumentParser(prog="spectask", description=__doc__)
    parser.add_argument("--version", action="version", version=f"spectask {__version__}")
    add_logging_options(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("generate", help="write typed clients from spec/ into generated/")
    sub.add_parser("broker", help="find or start a RabbitMQ broker (ensure | status | stop)")
    chosen = next((arg for arg in argv if arg in COMMANDS), None)
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text)
        add_logging_options(command_parser, default=argparse.SUPPRESS)
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
SETTINGS = frozenset({"RuntimeConfig", "TaskSettings", "LogSettings"})


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


async def _cancelled_on_signals(command: Coroutine[Any, Any, int], who: str) -> int:
    """Run a short-lived command so that SIGTERM/SIGINT cancel it within the shutdown timeout;
    its exit code is then 128 + the signal's number, as for a process the signal ended."""
    timeout = RuntimeConfig().shutdown_timeout
    task = asyncio.ensure_future(command)
    signalled = cancel_on_signals(task, who, timeout=timeout)
    try:
        return await task
    except asyncio.CancelledError:
        if not signalled:
            raise
        return 128 + signalled[0]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        passthrough: int = importlib.import_module(PASSTHROUGH[argv[0]]).main(argv[1:])
        return passthrough
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    assert module is not None
    try:
        configure_logging("DEBUG" if args.verbose else args.log_level, args.log_format)
        eventloop.loop_name()  # a bad SPECTASK_EVENT_LOOP is refused before any coroutine exists
        result = module.run(args)
        if inspect.iscoroutine(result):
            if args.command not in SERVICES:
                result = _cancelled_on_signals(result, f"spectask {args.command}")
            result = eventloop.run(result)
        return int(result)
    except StoppedBeforeConnectingError as exc:
        print(str(exc), file=sys.stderr)
        return 0
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
