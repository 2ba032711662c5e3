"""What the deploy tests share: the tools they need, the files they read, a kustomize renderer.

No Docker engine or Kubernetes cluster runs here, so deploy/ is checked with offline tools
(docker-compose's `config`, hadolint, kubernetes-validate) and policy read from the files. A
missing tool skips a test on a laptop but fails it under CI=true, where a skip would hide a
broken `make install`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.brokers import in_ci

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent


def require_tool(name: str, install: str) -> str:
    """The tool's path, from the venv first; skip, or fail under CI=true, when it is missing."""
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if found is None:
        reason = f"{name} is not installed ({install})"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: deploy checks must not be skipped)", pytrace=False)
        pytest.skip(reason)
    return str(found)


def env_example() -> dict[str, str]:
    """The variables .env.example documents, as `name: value` ('' for the secrets to set)."""
    variables = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            variables[name.strip()] = value.strip()
    return variables


def filled_env() -> dict[str, str]:
    """.env.example with a made-up value for every empty secret, as a user's .env would be."""
    return {
        name: value or f"test-{name.lower()}-0123456789" for name, value in env_example().items()
    }


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction (continuation lines joined), with the stage it belongs to."""

    stage: int
    keyword: str
    arguments: str


def dockerfile() -> list[Instruction]:
    instructions: list[Instruction] = []
    stage, pending = -1, ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword.upper(), arguments.strip()))
    return instructions


def exec_form(arguments: str) -> list[str]:
    """A JSON-array instruction argument (CMD, HEALTHCHECK CMD) as argv."""
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"not exec form: {arguments}"
    return [str(part) for part in parsed]


def env_instructions(stage: int) -> dict[str, str]:
    """The ENV of a stage (`A=1 B=2` form), values unquoted."""
    values: dict[str, str] = {}
    for instruction in dockerfile():
        if instruction.stage == stage and instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                name, _, value = pair.partition("=")
                values[name] = value
    return values


SUPPORTED_KUSTOMIZE = {"apiVersion", "kind", "namespace", "resources", "images", "labels"}


def render(directory: Path) -> list[dict[str, Any]]:
    """The resources a kustomization yields: the fields this repo uses, and no others.

    An unknown field is an error rather than ignored, so the tests never check less than
    `kubectl apply -k` would apply.
    """
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED_KUSTOMIZE
    assert not unknown, f"{directory}: the test renderer does not know {sorted(unknown)}"
    documents: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            documents.extend(render(path))
        else:
            documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for doc in documents:
        if "namespace" in spec and doc["kind"] != "Namespace":
            doc.setdefault("metadata", {})["namespace"] = spec["namespace"]
        for label in spec.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
    for image in spec.get("images", []):
        for container in containers(documents):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return documents


def containers(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for doc in documents:
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            pod = doc["spec"]["template"]["spec"]
            found.extend(pod.get("containers", []) + pod.get("initContainers", []))
    return found
