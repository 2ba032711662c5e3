"""`spectask dashboard`: serve the live dashboard (and /metrics) with uvicorn.

127.0.0.1 by default; any other `--host` needs SPECTASK_DASHBOARD_TOKEN (see
`spectask.dashboard.auth`), and the command refuses to start without one.
"""

from __future__ import annotations

import argparse
import os

from spectask.app import load_app
from spectask.commands.dlq import spec_queue
from spectask.dashboard.auth import TOKEN_VARIABLE, check_bind
from spectask.errors import ConfigError
from spectask.runtime.config import RuntimeConfig

DEFAULT_PORT = 8077


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    parser.add_argument("--dlq-queue", help="dead-letter queue (default: the spec's)")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from spectask.dashboard.app import DashboardSettings, create_app
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the dashboard needs {exc.name}: pip install 'spectask[dashboard]' (make install)"
        ) from None
    token = os.environ.get(TOKEN_VARIABLE, "").strip() or None
    check_bind(args.host, token)
    app = load_app(args.app)
    # the spec's dead-letter queue under this deployment's names (a --dlq-queue is taken as given)
    queue = args.dlq_queue or RuntimeConfig().naming.name(spec_queue(args.app)[0])
    api = create_app(DashboardSettings(app=app, dead_letter_queue=queue, token=token))
    print(f"spectask dashboard on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(api, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
