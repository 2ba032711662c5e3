"""`spectask init` end to end, as a new user meets it: a wheel in a fresh venv outside the repo.

The wheel of this repo (the framework alone: no `workloads`, no `generated`) goes into a new
virtual environment; `spectask init` writes a project; its own Makefile generates the clients
and runs the handler test; then a real collector and worker (the console command, with `--app`
and no PYTHONPATH) serve `produce --wait` and `status` on the suite's RabbitMQ. A worker script
without an `if __name__ == "__main__"` guard runs once, not once more per handler process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spectask.app import APP_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(600)
APP = "shop.app:app"
UNGUARDED_SCRIPT = """\
import asyncio

import spectask

stats = asyncio.run(spectask.run_worker("shop.app:app", "script-worker", burst=True))
print(f"SCRIPT WORKER DONE processed={stats.processed}", flush=True)
"""


def _run(
    args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (
        f"{' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}"
    )
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the repo with only the built wheel (and its dependencies)."""
    base = tmp_path_factory.mktemp("scaffold")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # Build from a copy of the files git knows (a build/ left in the tree could add stale
    # modules to the wheel, and a user's wheel is built from a clean checkout too).
    source = base / "source"
    listed = _run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, env=env
    )
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    wheels = base / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
        cwd=base,
        env=env,
    )
    (wheel,) = wheels.glob("spectask-*.whl")
    python = getattr(sys, "_base_executable", sys.executable)
    _run([python, "-m", "venv", str(base / "venv")], cwd=base, env=env)
    pip = [str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q"]
    # nothing else: the project's own `make test` must bring pytest itself
    _run([*pip, "-c", str(ROOT / "constraints.txt"), str(wheel)], cwd=base, env=env)
    return base / "venv"


@pytest.fixture
def project(venv: Path, tmp_path: Path, amqp_url: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """`spectask init shop` in an empty directory, with the project's environment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", APP_VARIABLE, "VIRTUAL_ENV"}
    }
    env |= {
        "AMQP_URL": amqp_url,
        "STORE_URL": f"sqlite:///{tmp_path / 'tasks.db'}",
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    }
    _run([str(venv / "bin" / "spectask"), "init", "shop"], cwd=tmp_path, env=env)
    yield tmp_path / "shop", env


class Service:
    """A long-running spectask command of the project, its output in a log file."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._file, stderr=subprocess.STDOUT
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text()}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self._file.close()


def test_init_generate_worker_collector_produce_status(
    venv: Path, project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    shop, env = project
    spectask = str(venv / "bin" / "spectask")
    assert sorted(p.name for p in (shop / "spec").iterdir()) == [
        "common.asyncapi.yaml",
        "producer.asyncapi.yaml",
        "spectask.asyncapi.yaml",
        "worker.asyncapi.yaml",
    ]
    _run(["make", "generate", "test", f"SPECTASK={spectask}"], cwd=shop, env=env)
    assert not list(venv.glob("lib/python*/site-packages/workloads"))  # the framework alone

    collector = Service([spectask, "collect", "--app", APP], shop, env, tmp_path / "c.log")
    worker = Service([spectask, "worker", "w1", "--app", APP], shop, env, tmp_path / "w.log")
    try:
        collector.wait_for("consuming")
        worker.wait_for("consuming")
        produced = _run(
            [
                spectask,
                "produce",
                "--app",
                APP,
                "--task",
                "text.wordcount",
                "--params",
                '{"text": "to be or not to be"}',
                "--wait",
                "--wait-timeout",
                "60",
            ],
            cwd=shop,
            env=env,
        )
        task_id = produced.stdout.splitlines()[0]
        assert "text.wordcount" in produced.stdout and "SUCCEEDED" in produced.stdout
        status = _run([spectask, "status", "--app", APP, task_id], cwd=shop, env=env)
        assert "SUCCEEDED" in status.stdout and "text.wordcount" in status.stdout
        result = _run([spectask, "result", "--app", APP, task_id], cwd=shop, env=env)
        assert '"words": 6' in result.stdout, result.stdout
    finally:
        worker.stop()
        collector.stop()
    assert "w1: 1 processed, 1 succeeded" in worker.text()


def test_a_worker_script_without_a_main_guard_runs_once(
    venv: Path, project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """The handler runs in a process of its own; that process must not re-run the script."""
    shop, env = project
    spectask = str(venv / "bin" / "spectask")
    _run([spectask, "generate"], cwd=shop, env=env)
    (shop / "run_worker.py").write_text(UNGUARDED_SCRIPT)
    _run(
        [spectask, "produce", "--app", APP, "--count", "3", "--ids-file", str(tmp_path / "ids")],
        cwd=shop,
        env=env,
    )
    python = str(venv / "bin" / "python")
    done = _run([python, "run_worker.py"], cwd=shop, env=env, timeout=120)
    output = done.stdout + done.stderr
    assert done.stdout.count("SCRIPT WORKER DONE") == 1, output
    assert "SCRIPT WORKER DONE processed=3" in done.stdout, output
    assert output.count("consuming tasks.text") == 1, output
