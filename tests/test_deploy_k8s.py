"""deploy/k8s/, validated offline: core kinds against Kubernetes' own schemas, the operators'
kinds against the subset schemas in tests/fixtures/crd/, and this repo's policy for every pod.

kubernetes-validate (PyPI) ships the OpenAPI schemas of each Kubernetes release, so `--strict`
validation needs no cluster: an unknown or misplaced field fails. The renderer follows the
kustomizations (base, keda, cpu-hpa, overlays/production) as `kubectl apply -k` would for the
fields they use.
"""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from spectask.app import load_app
from spectask.cli import COMMANDS, build_parser
from spectask.logs import LogSettings
from spectask.queues import queue_kind
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.metrics import HEALTH_PATH
from spectask.runtime.shutdown import CLOSE_GRACE_SECONDS
from tests.brokers import in_ci
from tests.deploy_support import ROOT, containers, render, require_tool

try:
    import kubernetes_validate  # the dev extra (make install)
except ModuleNotFoundError:  # pragma: no cover - a broken install
    if in_ci():
        raise  # CI=true: a missing validator fails the run, never skips it
    pytest.skip("kubernetes-validate is not installed (make install)", allow_module_level=True)

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest release we claim; the manifests use nothing newer
CRD_SCHEMAS = ROOT / "tests" / "fixtures" / "crd"
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication.json",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmqcluster.json",
}
SECRET = "spectask-credentials"
SECRET_KEYS = {"AMQP_URL", "STORE_URL", "SPECTASK_DASHBOARD_TOKEN"}
APP = load_app("workloads.app:app")


def production() -> list[dict[str, Any]]:
    return render(K8S / "overlays" / "production")


def without_keda() -> list[dict[str, Any]]:
    return render(K8S / "base") + render(K8S / "cpu-hpa")


def validate(doc: dict[str, Any]) -> None:
    schema_file = CUSTOM.get((doc["apiVersion"], doc["kind"]))
    if schema_file is not None:
        schema = json.loads((CRD_SCHEMAS / schema_file).read_text())
        jsonschema.validate(doc, schema)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", [production, without_keda])
def test_every_resource_validates(variant: Any) -> None:
    documents = variant()
    assert documents
    for doc in documents:
        validate(doc)


def test_validation_can_fail() -> None:
    """A typo in a core kind and in a custom kind are both caught."""
    docs = production()
    deployment = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe_"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    scaled = copy.deepcopy(next(d for d in docs if d["kind"] == "ScaledObject"))
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


def policy_problems(documents: list[dict[str, Any]]) -> list[str]:
    """Every pod: resources and a locked-down security context; a long-running one (a
    Deployment) also probes and a long enough grace. A Job's pod runs to completion: nothing
    serves a probe there and it has no drain to wait for."""
    problems = []
    shutdown = float(configmap(documents).get("SPECTASK_SHUTDOWN_TIMEOUT", 30))
    for doc in documents:
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        long_running = doc["kind"] == "Deployment"
        name = doc["metadata"]["name"]
        pod = doc["spec"]["template"]["spec"]
        if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot")
        if pod.get("securityContext", {}).get("seccompProfile") != {"type": "RuntimeDefault"}:
            problems.append(f"{name}: seccompProfile RuntimeDefault (Pod Security restricted)")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if long_running and grace <= shutdown + CLOSE_GRACE_SECONDS:
            problems.append(f"{name}: terminationGracePeriodSeconds <= shutdown timeout + close")
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            for probe in ("readinessProbe", "livenessProbe") if long_running else ():
                if probe not in container:
                    problems.append(f"{where}: no {probe}")
            for bound in ("requests", "limits"):
                if set(container.get("resources", {}).get(bound, {})) != {"cpu", "memory"}:
                    problems.append(f"{where}: resources.{bound} needs cpu and memory")
            security = container.get("securityContext", {})
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem")
            if security.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities.drop ALL")
    return problems


@pytest.mark.parametrize("variant", [production, without_keda])
def test_every_pod_follows_the_policy(variant: Any) -> None:
    assert policy_problems(variant()) == []


def test_the_policy_check_can_fail() -> None:
    docs = production()
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    del pod["containers"][0]["livenessProbe"]
    pod["containers"][0]["securityContext"]["capabilities"]["drop"] = ["NET_RAW"]
    pod["terminationGracePeriodSeconds"] = 30
    del pod["securityContext"]["seccompProfile"]
    problems = policy_problems(docs)
    assert len(problems) == 4, problems
    job = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]
    job["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    del job["containers"][0]["resources"]["limits"]
    assert len(policy_problems(docs)) == 6, policy_problems(docs)


def configmap(documents: list[dict[str, Any]]) -> dict[str, str]:
    maps = [d for d in documents if d["kind"] == "ConfigMap"]
    assert len(maps) == 1
    data: dict[str, str] = maps[0]["data"]
    return data


def test_configmap_holds_settings_the_code_reads() -> None:
    data = configmap(production())
    known = {f"SPECTASK_{f.upper()}" for s in (RuntimeConfig, LogSettings) for f in s.model_fields}
    assert set(data) <= known, set(data) - known
    RuntimeConfig.model_validate(
        {
            k.removeprefix("SPECTASK_").lower(): v
            for k, v in data.items()
            if k.removeprefix("SPECTASK_").lower() in RuntimeConfig.model_fields
        }
    )


def test_no_credentials_are_committed() -> None:
    documents = production()
    assert not [d for d in documents if d["kind"] == "Secret"]
    for container in containers(documents):
        for variable in container.get("env", []):
            assert "value" not in variable or variable["name"] not in SECRET_KEYS, variable
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] == SECRET and ref["key"] in SECRET_KEYS, ref
    text = "\n".join(p.read_text() for p in K8S.rglob("*.yaml"))
    assert "guest" not in text and "password:" not in text.lower()


def deployments(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}


def worker_types(deployment: dict[str, Any]) -> list[str]:
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    argv = shlex.split(command[2].removeprefix("exec spectask "))
    return argv[argv.index("--types") + 1].split(",")


TOPOLOGY_JOB = "topology"  # the operator step: `spectask topology apply`


@pytest.mark.parametrize("variant", [production, without_keda])
def test_a_job_applies_the_topology_and_the_processes_only_check_it(variant: Any) -> None:
    """README: Running in production. One Job runs exactly `topology apply` (it declares
    whatever SPECTASK_TOPOLOGY says) with the settings the processes read, which say `check`:
    they need no configure permission, and none of them waits on the Job (an init container
    would hold every pod until it gave up); one started early stops with one line and its pod
    restarts until the Job has applied."""
    documents = variant()
    jobs = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Job"}
    assert set(jobs) == {TOPOLOGY_JOB}
    job = jobs[TOPOLOGY_JOB]["spec"]
    assert job["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}
    assert job["backoffLimit"] > 0  # the broker may still be starting
    (step,) = job["template"]["spec"]["containers"]
    assert step["command"] == ["spectask", "topology", "apply"]
    build_parser(step["command"][1:])[0].parse_args(step["command"][1:])
    config = configmap(documents)
    assert config["SPECTASK_TOPOLOGY"] == "check"
    assert RuntimeConfig.model_validate({"topology": config["SPECTASK_TOPOLOGY"]})
    for name, deployment in deployments(documents).items():
        pod = deployment["spec"]["template"]["spec"]
        assert "initContainers" not in pod, name
        for container in [*pod["containers"], step]:
            refs = [e["configMapRef"]["name"] for e in container.get("envFrom", [])]
            assert refs == [configmap_name(documents)], f"{name}/{container['name']}"
            assert "SPECTASK_TOPOLOGY" not in {e["name"] for e in container.get("env", [])}


def configmap_name(documents: list[dict[str, Any]]) -> str:
    (name,) = [d["metadata"]["name"] for d in documents if d["kind"] == "ConfigMap"]
    return str(name)


def test_a_worker_deployment_and_a_scaler_per_task_type() -> None:
    documents = production()
    workers = {n: d for n, d in deployments(documents).items() if n.startswith("worker-")}
    served = {t: name for name, d in workers.items() for t in worker_types(d)}
    assert set(served) == set(APP.policies), "a Deployment per task type of the spec"
    task_queues = {q.name for q in APP.topology.queues if queue_kind(q) == "queue"}
    scaled = {
        d["spec"]["scaleTargetRef"]["name"]: d for d in documents if d["kind"] == "ScaledObject"
    }
    assert set(scaled) == set(workers)
    for task_type, name in served.items():
        trigger = scaled[name]["spec"]["triggers"][0]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] in task_queues
        assert task_type in trigger["metadata"]["queueName"]
        assert trigger["authenticationRef"]["name"] in {
            d["metadata"]["name"] for d in documents if d["kind"] == "TriggerAuthentication"
        }


def test_cpu_fallback_targets_every_worker() -> None:
    documents = without_keda()
    workers = {n for n in deployments(documents) if n.startswith("worker-")}
    targets = {
        d["spec"]["scaleTargetRef"]["name"]
        for d in documents
        if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert targets == workers
    assert not [d for d in documents if d["kind"] == "ScaledObject"]


def test_selectors_match_their_pods() -> None:
    documents = production()
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in deployments(documents).values()]
    for doc in documents:
        if doc["kind"] in {"PodDisruptionBudget", "Service"}:
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert any(selector.items() <= labels.items() for labels in pods), doc["metadata"]
    budgets = [d for d in documents if d["kind"] == "PodDisruptionBudget"]
    assert {b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for b in budgets} >= {
        n for n in deployments(documents) if n.startswith("worker-")
    } | {"collector"}


def test_rabbitmq_through_the_operator_with_three_replicas() -> None:
    clusters = [d for d in production() if d["kind"] == "RabbitmqCluster"]
    assert len(clusters) == 1 and clusters[0]["spec"]["replicas"] == 3
    assert not [d for d in production() if d["kind"] == "StatefulSet"]


def test_probes_use_real_ports_and_commands() -> None:
    documents = production()
    metrics_port = int(configmap(documents)["SPECTASK_METRICS_PORT"])
    for container in containers(documents):
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        probes = [container[p] for p in ("readinessProbe", "livenessProbe") if p in container]
        for probe in probes:
            if "httpGet" in probe:
                assert ports[probe["httpGet"]["port"]] == metrics_port
                assert probe["httpGet"]["path"] == HEALTH_PATH
            elif probe["exec"]["command"][0] == "spectask":
                argv = probe["exec"]["command"][1:]
                assert argv[0] in COMMANDS
                build_parser(argv)[0].parse_args(argv)
        command = container["command"]
        argv = (
            shlex.split(command[2].removeprefix("exec "))[1:] if command[0] == "sh" else command[1:]
        )
        argv = [a if a != "$POD_NAME" else "w1" for a in argv]
        build_parser(argv)[0].parse_args(argv)


def test_the_production_overlay_sets_the_image() -> None:
    images = {c["image"] for c in containers(production())}
    assert images == {"registry.example/spectask:0.2.0"}


def test_yamllint_passes_on_the_deploy_files() -> None:
    tool = require_tool("yamllint", "make install (yamllint from PyPI)")
    config = (
        "{extends: default, rules: {line-length: {max: 250}, document-start: disable, "
        "truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}}}"
    )
    files = [str(p) for p in sorted(K8S.rglob("*.yaml"))] + [str(ROOT / "docker-compose.yml")]
    result = subprocess.run(
        [tool, "-s", "-d", config, *files], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


def test_files_under_k8s_are_all_rendered() -> None:
    """No manifest lies outside a kustomization (it would never be applied nor checked)."""
    listed: set[Path] = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        for entry in yaml.safe_load(kustomization.read_text()).get("resources", []):
            listed.add((kustomization.parent / entry).resolve())
    manifests = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert manifests <= listed, manifests - listed
