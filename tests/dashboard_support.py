"""A real `spectask dashboard` process for the HTTP and browser tests, and plain HTTP calls."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.workqueue_support import ChildProcess

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DashboardProcess(ChildProcess):
    """`main-dashboard.py` on a free port, with its own AMQP_URL and STORE_URL."""

    def __init__(
        self,
        amqp_url: str,
        store_url: str,
        log_dir: Path,
        *,
        host: str = "127.0.0.1",
        token: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.host = host
        self.token = token
        env = {**os.environ, "AMQP_URL": amqp_url, "STORE_URL": store_url, **(extra_env or {})}
        env.pop("SPECTASK_DASHBOARD_TOKEN", None)
        if token is not None:
            env["SPECTASK_DASHBOARD_TOKEN"] = token
        self.log_path = log_dir / f"dashboard-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "main-dashboard.py"),
                "--host",
                host,
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the dashboard exited:\n{self.log()}")
            try:
                status, _ = self.get("/api/summary")
                if status == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the dashboard never answered:\n{self.log()}"
            time.sleep(0.1)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status = response.status
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raw, status, kind = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        return status, json.loads(raw) if "json" in kind else raw.decode()

    def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return self.request("POST", path, body if body is not None else {})

    def wait_summary(self, ok: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Poll /api/summary (each answer is a fresh snapshot) until `ok(summary)`."""
        deadline = time.monotonic() + timeout
        while True:
            status, summary = self.get("/api/summary")
            assert status == 200, summary
            if ok(summary):
                return dict(summary)
            assert time.monotonic() < deadline, f"never reached; last {json.dumps(summary)[:2000]}"
            time.sleep(0.2)
