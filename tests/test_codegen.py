"""The generator end to end: golden files, determinism, --check, lint and types of its output.

The fixture spec in tests/fixtures/spec is small on purpose (two services, cross-file `$ref`s,
property names with `-`); its generated tree is kept in tests/golden so a template change shows
up as a reviewable diff. Regenerate with `SPECTASK_UPDATE_GOLDEN=1 pytest tests/test_codegen.py`.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from spectask.codegen import build, main
from spectask.codegen.operations import snake_case
from spectask.codegen.routing import topic_matches
from spectask.errors import SpectaskError

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec"
FIXTURE_SPEC = Path(__file__).resolve().parent / "fixtures" / "spec"
GOLDEN = Path(__file__).resolve().parent / "golden"


def tree(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def real_generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real spec generated once into a package with a name of its own (gen_real)."""
    out = tmp_path_factory.mktemp("real") / "gen_real"
    assert main(["--spec", str(SPEC), "--out", str(out)]) == 0
    return out


@pytest.fixture
def real_package(real_generated: Path) -> Iterator[str]:
    """Make the generated package importable; forget it again afterwards."""
    sys.path.insert(0, str(real_generated.parent))
    try:
        yield real_generated.name
    finally:
        sys.path.remove(str(real_generated.parent))
        for name in [n for n in sys.modules if n.split(".")[0] == real_generated.name]:
            del sys.modules[name]


def test_fixture_matches_golden_files(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    assert main(["--spec", str(FIXTURE_SPEC), "--out", str(out)]) == 0
    if os.environ.get("SPECTASK_UPDATE_GOLDEN") == "1":
        for name in tree(GOLDEN):
            (GOLDEN / name).unlink()
        GOLDEN.mkdir(exist_ok=True)
        for name, data in tree(out).items():
            (GOLDEN / name).write_bytes(data)
    assert tree(out) == tree(GOLDEN)


def test_every_file_starts_with_the_header(real_generated: Path) -> None:
    for name, data in tree(real_generated).items():
        first, second = data.decode().splitlines()[:2]
        assert first.startswith("# generated from spec/"), name
        assert first.endswith(" by spectask — do not edit"), name
        assert second.startswith("# spec sha256: "), name


def test_real_spec_generates_identical_bytes_twice(tmp_path: Path, real_generated: Path) -> None:
    again = tmp_path / "gen_real"
    assert main(["--spec", str(SPEC), "--out", str(again)]) == 0
    assert tree(again) == tree(real_generated)
    assert sorted(tree(again)) == [
        "__init__.py",
        "collector.py",
        "models.py",
        "producer.py",
        "topology.py",
        "worker.py",
    ]


def test_python_m_entry_point_prints_the_files_written(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    done = subprocess.run(
        [sys.executable, "-m", "spectask.codegen", "--spec", str(FIXTURE_SPEC), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "__init__.py, client.py, echoer.py, models.py, topology.py" in done.stdout
    assert sorted(tree(out)) == [
        "__init__.py",
        "client.py",
        "echoer.py",
        "models.py",
        "topology.py",
    ]


def test_check_detects_stale_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "generated"
    args = ["--spec", str(FIXTURE_SPEC), "--out", str(out)]
    assert main([*args, "--check"]) == 1  # nothing generated yet
    assert not out.exists()
    assert main(args) == 0
    assert main([*args, "--check"]) == 0
    (out / "__pycache__").mkdir()  # byte-code caches do not make the output stale
    (out / "__pycache__" / "models.cpython-311.pyc").write_bytes(b"")
    assert main([*args, "--check"]) == 0
    (out / "models.py").write_bytes((out / "models.py").read_bytes() + b"# edited\n")
    capsys.readouterr()
    assert main([*args, "--check"]) == 1
    assert "models.py" in capsys.readouterr().err
    assert main(args) == 0
    (out / "extra.py").write_text("# generated from nowhere\n")
    assert main([*args, "--check"]) == 1


def test_regenerating_replaces_the_whole_tree(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    args = ["--spec", str(FIXTURE_SPEC), "--out", str(out)]
    assert main(args) == 0
    (out / "stale_service.py").write_text("# generated from spec/old.asyncapi.yaml by spectask\n")
    assert main(args) == 0
    assert "stale_service.py" not in tree(out)
    assert [p.name for p in tmp_path.iterdir()] == ["generated"]  # no temp dirs left behind


def test_refuses_to_replace_a_directory_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "src"
    out.mkdir()
    (out / "precious.py").write_text("print('hand-written')\n")
    assert main(["--spec", str(FIXTURE_SPEC), "--out", str(out)]) == 1
    assert "precious.py was not generated by spectask" in capsys.readouterr().err
    assert tree(out) == {"precious.py": b"print('hand-written')\n"}


def test_build_is_deterministic_in_process() -> None:
    assert build(FIXTURE_SPEC) == build(FIXTURE_SPEC)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)


def test_generated_code_passes_mypy_strict(real_generated: Path) -> None:
    mypy = Path(sys.executable).parent / "mypy"
    done = _run(str(mypy), "--config-file", "pyproject.toml", "--strict", str(real_generated))
    assert done.returncode == 0, done.stdout + done.stderr


def test_generated_code_passes_the_project_lint(real_generated: Path) -> None:
    ruff = [sys.executable, "-m", "ruff"]
    config = ["--config", str(ROOT / "pyproject.toml")]
    done = _run(*ruff, "check", "--no-respect-gitignore", *config, str(real_generated))
    assert done.returncode == 0, done.stdout + done.stderr
    done = _run(*ruff, "format", "--check", *config, str(real_generated))
    assert done.returncode == 0, done.stdout + done.stderr


def _worker(package: str) -> ModuleType:
    return importlib.import_module(f"{package}.worker")


def test_worker_app_registers_each_handler_once(real_package: str) -> None:
    worker = _worker(real_package)
    models = importlib.import_module(f"{real_package}.models")
    app = worker.WorkerApp()
    assert dict(app.handlers) == {}

    def resize(payload: Any, context: Any) -> None:
        return None

    assert app.process_image_resize(resize) is resize  # a decorator: the function comes back
    assert dict(app.handlers) == {"processImageResize": resize}
    with pytest.raises(SpectaskError, match="processImageResize"):
        app.process_image_resize(resize)
    with pytest.raises(TypeError):
        app.handlers["processImageFilter"] = resize  # a read-only view
    assert worker.PROCESS_IMAGE_RESIZE.model is models.ImageResize
    assert worker.PROCESS_IMAGE_RESIZE.policy.retry.max_attempts == 3
    assert {route.operation for route in worker.RECEIVE_ROUTES} >= {"processImageResize"}


class _RecordingPublisher:
    """Stands in for TaskPublisher: the client must only hand over route and arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any, dict[str, Any]]] = []

    async def submit(self, route: Any, payload: Any, **options: Any) -> str:
        self.calls.append(("submit", route, payload, options))
        return "task-1"

    def build(self, route: Any, payload: Any, **options: Any) -> str:
        self.calls.append(("build", route, payload, options))
        return "message"


async def test_producer_client_delegates_to_the_publisher(real_package: str) -> None:
    producer = importlib.import_module(f"{real_package}.producer")
    models = importlib.import_module(f"{real_package}.models")
    publisher = _RecordingPublisher()
    client = producer.ProducerClient(publisher)
    payload = models.ImageResize(image=models.ImageSource(path="a.png"), width=10, height=20)
    assert await client.submit_image_resize(payload, priority="high") == "task-1"
    assert client.prepare_submit_image_resize(payload, task_id="t") == "message"
    route = producer.SUBMIT_IMAGE_RESIZE
    assert publisher.calls == [
        ("submit", route, payload, {"priority": "high", "task_id": None}),
        ("build", route, payload, {"priority": None, "task_id": "t"}),
    ]
    assert (route.exchange, route.routing_key, route.task_type) == (
        "tasks",
        "image_processing.resize",
        "image_processing",
    )
    assert route.default_priority == 5


def test_topology_holds_the_whole_common_document(real_package: str) -> None:
    topology = importlib.import_module(f"{real_package}.topology")
    declared = [e.name for e in topology.TOPOLOGY.exchanges if not e.name.startswith("retry.")]
    assert declared == [
        "dead_letter",
        "events",
        "results",
        "rpc",
        "tasks",
    ]
    assert "tasks.image_processing" in [q.name for q in topology.TOPOLOGY.queues]
    assert topology.Priority.HIGH == 8
    assert topology.TOPOLOGY.priority("urgent") == 10
    assert sorted(topology.POLICIES) == ["data_analysis", "image_processing", "report_generation"]


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("image_processing.#", "image_processing.resize", True),
        ("image_processing.#", "image_processing", True),
        ("image_processing.#", "data_analysis.resize", False),
        ("#", "anything.at.all", True),
        ("*.resize", "image_processing.resize", True),
        ("*.resize", "a.b.resize", False),
        ("a.*", "a", False),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.z", True),
        ("result", "result", True),
        ("result", "results", False),
    ],
)
def test_topic_matching(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("submitImageResize", "submit_image_resize"),
        ("processDataDetectPatterns", "process_data_detect_patterns"),
        ("getHTTPStatus", "get_http_status"),
        ("run2Fast", "run2_fast"),
    ],
)
def test_snake_case(name: str, snake: str) -> None:
    assert snake_case(name) == snake


def test_retry_tiers_are_derived_from_the_policies(real_package: str) -> None:
    """One tier per distinct retry delay (with jitter 0.1: 0.9x, 1x, 1.1x of each step)."""
    topology = importlib.import_module(f"{real_package}.topology")
    tiers = {q.name: q for q in topology.TOPOLOGY.queues if q.name.startswith("retry.")}
    steps = [1000, 2000, 4000, 8000, 16000]  # image/data: 1, 2 s; reports: 2, 4, 8, 16 s
    expected = sorted({round(step * f) for step in steps for f in (0.9, 1.0, 1.1)})
    assert sorted(int(name[len("retry.") : -2]) for name in tiers) == expected
    for name, queue in tiers.items():
        ttl = int(name[len("retry.") : -2])
        assert queue.arguments_dict() == {"x-message-ttl": ttl, "x-dead-letter-exchange": "tasks"}
        assert [(b.exchange, b.routing_key) for b in queue.bindings] == [(name, "")]
    kinds = {e.name: e.type for e in topology.TOPOLOGY.exchanges}
    assert all(kinds[name] == "fanout" for name in tiers)
    report = topology.POLICIES["report_generation"].retry
    assert [t.delay_ms for t in report.tiers] == [
        1800, 2000, 2200, 3600, 4000, 4400, 7200, 8000, 8800, 14400, 16000, 17600
    ]  # fmt: skip
    image = topology.POLICIES["image_processing"].retry
    assert [t.delay_ms for t in image.tiers] == [900, 1000, 1100, 1800, 2000, 2200]
    assert all(t.exchange in tiers for p in topology.POLICIES.values() for t in p.retry.tiers)
