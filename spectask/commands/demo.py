"""`spectask demo`: a collector and three workers as real processes, a mixed batch, a summary.

Everything it starts, it stops; the exit code is the collector's (0 when every task succeeded).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from spectask.samples import DEFAULT_MIX

WORKERS = ("worker1", "worker2", "worker3")
STOP_SECONDS = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=90, help="tasks to submit (default 90)")
    parser.add_argument("--types", default=",".join(DEFAULT_MIX), help="task types in the mix")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for results")


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    # A small prefetch spreads a short demo batch fairly over the three workers.
    env = {"SPECTASK_PREFETCH": "2", **os.environ}
    return subprocess.Popen([sys.executable, "-m", "spectask.cli", *args], env=env)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(args: argparse.Namespace) -> int:
    batch = f"demo{os.getpid()}x{int(time.time())}"
    print(
        f"demo: batch {batch}: collector + {len(WORKERS)} workers, {args.count} tasks", flush=True
    )
    collector = _spawn(
        "collect",
        "--expect",
        str(args.count),
        "--batch",
        batch,
        "--timeout",
        str(args.timeout),
        "--quiet",
    )
    workers = [_spawn("worker", worker_id) for worker_id in WORKERS]
    try:
        produced = subprocess.run(
            [
                sys.executable,
                "-m",
                "spectask.cli",
                "produce",
                "--count",
                str(args.count),
                "--types",
                args.types,
                "--batch",
                batch,
            ],
            check=False,
        )
        if produced.returncode != 0:
            print("demo: the producer failed; stopping", file=sys.stderr)
            return produced.returncode
        code = collector.wait(timeout=args.timeout + STOP_SECONDS)
    finally:
        _stop([*workers, collector])
    print(f"demo: {'done' if code == 0 else f'collector exited {code}'}", flush=True)
    return code
