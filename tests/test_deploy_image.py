"""What the Dockerfile builds, built and run without Docker (no engine runs here).

The build stage's instructions are carried out as written, in a temporary directory that
stands for the image's filesystem (`/opt/venv` and `/app` mapped into it): its COPY sources,
its ENV, its RUN commands (a fresh venv, `pip install -c constraints.txt '.[...]'`, the
generator). The final stage's COPY --from and ENV then lay out the runtime tree, and its CMD,
its HEALTHCHECK and the compose services' commands run against the test broker: a worker
takes tasks, the health checks answer, SIGTERM drains it. What this cannot show: the base
image's own Python and libraries (this machine's Python 3.11 stands in for python:3.11-slim),
the non-root user and read-only filesystem, and the container network.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from spectask.runtime.shutdown import CLOSE_GRACE_SECONDS
from tests.brokers import unique_name
from tests.dashboard_support import free_port
from tests.deploy_support import (
    COMPOSE_FILE,
    ROOT,
    Instruction,
    dockerfile,
    exec_form,
)

pytestmark = pytest.mark.timeout(900)
WAIT = 120.0
BUILD_STAGE, FINAL_STAGE = 0, 1
VENV = "/opt/venv"
MAPPED = re.compile(r"(?<![\w/.-])(/opt/venv|/app|/var/lib/spectask|/tmp)(?=[/\s:'\"]|$)")


@dataclass
class Image:
    """The image's filesystem in a directory: `path('/app')` is where /app would be."""

    root: Path
    env: dict[str, str]
    workdir: Path
    venv: Path  # both stages' /opt/venv: a venv only works at the path it was made at

    def path(self, absolute: str) -> Path:
        if absolute == VENV or absolute.startswith(VENV + "/"):
            return self.venv / absolute.removeprefix(VENV).lstrip("/")
        return self.root / absolute.lstrip("/")

    def map(self, text: str) -> str:
        """An instruction's absolute paths, pointed into the image directory."""
        return MAPPED.sub(lambda match: str(self.path(match.group(0))), text)


def dockerignore_allows(source: str) -> bool:
    """The build context holds `source` (`*` plus `!` exceptions, as .dockerignore says)."""
    allowed = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(source.rstrip("/"), pattern):
            allowed = negated
    return allowed


def copy(sources: list[Path], destination: Path, *, into_directory: bool) -> None:
    """COPY's rules: a directory's contents go to the destination; files into it or as it."""
    for source in sources:
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(source, destination, dirs_exist_ok=True, ignore=ignore)
        elif into_directory:
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / source.name)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def destination_of(image: Image, destination: str) -> Path:
    return image.path(destination) if destination.startswith("/") else image.workdir / destination


def apply_env(image: Image, instruction: Instruction) -> None:
    for pair in shlex.split(instruction.arguments):
        name, _, value = pair.partition("=")
        image.env[name] = image.map(value.replace("$PATH", image.env.get("PATH", "")))


def build(root: Path) -> Image:
    base_path = f"{Path(sys.base_prefix) / 'bin'}:/usr/bin:/bin"
    stage_env = {"PATH": base_path, "HOME": str(root / "home")}
    venv = root / "opt" / "venv"
    build_image = Image(root / "build", dict(stage_env), root / "build", venv)
    final = Image(root / "final", dict(stage_env), root / "final", venv)
    build_image.path("/app").mkdir(parents=True)
    for instruction in dockerfile():
        image = build_image if instruction.stage == BUILD_STAGE else final
        keyword, arguments = instruction.keyword, instruction.arguments
        if keyword == "WORKDIR":
            image.workdir = image.path(arguments)
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "ENV":
            apply_env(image, instruction)
        elif keyword == "COPY":
            from_build = arguments.startswith("--from=build ")
            *sources, destination = arguments.removeprefix("--from=build ").split()
            if from_build and sources == [destination] == [VENV]:
                continue  # the same directory in both stages here (see Image.venv)
            if from_build:
                paths = [build_image.path(source) for source in sources]
            else:
                assert all(map(dockerignore_allows, sources)), f".dockerignore drops {sources}"
                paths = [ROOT / source for source in sources]
            into_directory = len(sources) > 1 or destination.endswith("/")
            copy(paths, destination_of(image, destination), into_directory=into_directory)
        elif keyword == "RUN" and instruction.stage == BUILD_STAGE:
            env = {**image.env, "PIP_NO_CACHE_DIR": "0"}  # pip's cache: same files, faster
            result = subprocess.run(
                ["sh", "-c", image.map(arguments)],
                cwd=image.workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"RUN {arguments}\n{result.stdout}\n{result.stderr}"
    # the final stage's RUNs add the user and create these (as root)
    for variable in ("SPECTASK_OUTPUT_DIR", "SPECTASK_IMAGE_INPUT_ROOT", "MPLCONFIGDIR"):
        Path(final.env[variable]).mkdir(parents=True, exist_ok=True)
    return final


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    root = tmp_path_factory.mktemp("image")
    started = time.monotonic()
    built = build(root)
    print(f"\nbuilt the image's tree without Docker in {time.monotonic() - started:.0f}s")
    return built


class Running:
    """A process started as the container would start it, its output in a file."""

    def __init__(self, image: Image, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.log_path = image.root / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            cwd=image.workdir,
            env={**image.env, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + WAIT
        while text not in self.output():
            assert self.process.poll() is None, (
                f"exited ({self.process.returncode}):\n{self.output()}"
            )
            assert time.monotonic() < deadline, f"no {text!r} within {WAIT}s:\n{self.output()}"
            time.sleep(0.1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30 + CLOSE_GRACE_SECONDS + 10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._log.close()


def run(image: Image, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=image.workdir,
        env={**image.env, **env},
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def final(keyword: str) -> Instruction:
    return [i for i in dockerfile() if i.stage == FINAL_STAGE and i.keyword == keyword][-1]


def compose_services() -> dict[str, dict[str, object]]:
    services: dict[str, dict[str, object]] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return services


def compose_argv(service: str, key: str = "command") -> list[str]:
    value: Any = compose_services()[service][key]
    argv = list(value["test"][1:]) if key == "healthcheck" else list(value)
    return [str(part).replace("$$", "$") for part in argv]


def until(check: object, what: str) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + WAIT
    while True:
        result = check()  # type: ignore[operator]
        if result.returncode == 0:
            return result  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, (
            f"{what} within {WAIT}s:\n{result.stdout}{result.stderr}"
        )
        time.sleep(0.5)


@pytest.fixture
def stack(image: Image, amqp_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The settings a container gets from compose, pointed at the test broker and a store."""
    yield {
        "AMQP_URL": amqp_url,
        "STORE_URL": f"sqlite:///{tmp_path / 'tasks.db'}",
        "SPECTASK_METRICS_PORT": str(free_port()),  # 9100 is the container's own; here shared
        "HOSTNAME": unique_name("image-worker"),
        "SPECTASK_SHUTDOWN_TIMEOUT": "10",
    }


def test_the_image_runs_the_whole_system(image: Image, stack: dict[str, str]) -> None:
    health = ["spectask", *compose_argv("collector", "healthcheck")[1:]]
    assert run(image, health, stack).returncode == 1, "healthy with no collector running"
    collector = Running(image, "collector", compose_argv("collector"), stack)
    worker = Running(image, "worker", exec_form(final("CMD").arguments), stack)
    try:
        worker.wait_for("consuming")
        collector.wait_for("consuming")
        probe = exec_form(final("HEALTHCHECK").arguments.split(" CMD ", 1)[1])
        until(lambda: run(image, probe, stack), "the image's HEALTHCHECK passing")
        assert until(lambda: run(image, health, stack), "the collector's health check").stdout
        produced = run(
            image,
            ["spectask", "produce", "--count", "6", "--wait", "--wait-timeout", "90"],
            stack,
        )
        assert produced.returncode == 0, produced.stdout + produced.stderr
        assert stack["HOSTNAME"] in worker.output(), "the worker is named after its hostname"
    finally:
        worker_code = worker.stop()
        collector_code = collector.stop()
    assert worker_code == 0, worker.output()
    assert collector_code == 0, collector.output()
    probe = exec_form(final("HEALTHCHECK").arguments.split(" CMD ", 1)[1])
    assert run(image, probe, stack).returncode != 0, "the HEALTHCHECK passes with no worker"


def test_the_dashboard_service_and_its_health_check(image: Image, stack: dict[str, str]) -> None:
    port = str(free_port())
    token = "t" * 32
    argv = [a.replace("8077", port) for a in compose_argv("dashboard")]
    check = [a.replace("8077", port) for a in compose_argv("dashboard", "healthcheck")]
    env = {**stack, "SPECTASK_DASHBOARD_TOKEN": token}
    dashboard = Running(image, "dashboard", argv, env)
    try:
        until(lambda: run(image, check, env), "the dashboard's health check passing")
        wrong = run(image, check, {**env, "SPECTASK_DASHBOARD_TOKEN": "x" * 32})
        assert wrong.returncode != 0, "the check passes with a wrong token"
    finally:
        dashboard.stop()


def test_the_image_holds_generated_code_and_no_dev_tools(image: Image) -> None:
    assert (image.path("/app/generated/__init__.py")).exists()
    site = run(image, ["python", "-c", "import generated, workloads.app; print('ok')"], {})
    assert site.stdout.strip() == "ok", site.stderr
    for dev_only in ("pytest", "mypy", "hypothesis"):
        found = run(image, ["python", "-c", f"import {dev_only}"], {})
        assert found.returncode != 0, f"{dev_only} is in the image"
    assert not list(image.path("/app").glob(".env*"))
