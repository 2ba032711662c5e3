"""The generator end to end: golden files, determinism, --check, lint and types of its output.

The fixture spec in tests/fixtures/spec is small on purpose (two services, cross-file `$ref`s,
property names with `-`); its generated tree is kept in tests/golden so a template change shows
up as a reviewable diff. tests/fixtures/rpc_spec is the request/reply fixture (AsyncAPI 3
`reply`: a requester and a responder), its tree kept in tests/golden/rpc.
Regenerate both with `SPECTASK_UPDATE_GOLDEN=1 pytest tests/test_codegen.py`.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, get_args, get_origin, get_type_hints

import pytest
import yaml

from spectask.codegen import build, main
from spectask.codegen.operations import snake_case
from spectask.codegen.routing import topic_matches
from spectask.errors import SpectaskError
from spectask.runtime.topology import ReceiveRoute, ReplySpec, RpcRoute
from spectask.runtime.worker import TaskContext

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec"
FIXTURE_SPEC = Path(__file__).resolve().parent / "fixtures" / "spec"
GOLDEN = Path(__file__).resolve().parent / "golden"
RPC_SPEC = Path(__file__).resolve().parent / "fixtures" / "rpc_spec"
RPC_GOLDEN = GOLDEN / "rpc"


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


def importable(package: Path) -> Iterator[str]:
    """Make a generated package importable; forget it again afterwards."""
    sys.path.insert(0, str(package.parent))
    try:
        yield package.name
    finally:
        sys.path.remove(str(package.parent))
        for name in [n for n in sys.modules if n.split(".")[0] == package.name]:
            del sys.modules[name]


@pytest.fixture
def real_package(real_generated: Path) -> Iterator[str]:
    """The real spec's generated package, importable for the test."""
    yield from importable(real_generated)


def golden_files(directory: Path) -> dict[str, bytes]:
    """The golden files of one fixture: those directly in `directory` (a subfolder holds the
    golden files of another fixture, as tests/golden/rpc does)."""
    if not directory.is_dir():
        return {}
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}


def check_golden(out: Path, golden: Path) -> None:
    """`out` must equal `golden`; with SPECTASK_UPDATE_GOLDEN=1, `golden` is rewritten first."""
    if os.environ.get("SPECTASK_UPDATE_GOLDEN") == "1":
        for name in golden_files(golden):
            (golden / name).unlink()
        golden.mkdir(parents=True, exist_ok=True)
        for name, data in tree(out).items():
            (golden / name).write_bytes(data)
    assert tree(out) == golden_files(golden)


def test_fixture_matches_golden_files(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    assert main(["--spec", str(FIXTURE_SPEC), "--out", str(out)]) == 0
    check_golden(out, GOLDEN)


def test_rpc_fixture_matches_golden_files(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    assert main(["--spec", str(RPC_SPEC), "--out", str(out)]) == 0
    check_golden(out, RPC_GOLDEN)
    assert sorted(tree(out)) == [
        "__init__.py",
        "models.py",
        "requester.py",
        "responder.py",
        "topology.py",
    ]


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


@pytest.fixture(scope="module")
def rpc_generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The request/reply fixture generated once into a package of its own (gen_rpc)."""
    out = tmp_path_factory.mktemp("rpc") / "gen_rpc"
    assert main(["--spec", str(RPC_SPEC), "--out", str(out)]) == 0
    return out


@pytest.fixture
def rpc_package(rpc_generated: Path) -> Iterator[str]:
    """The request/reply fixture's generated package, importable for the test."""
    yield from importable(rpc_generated)


def _rpc_modules(package: str) -> tuple[ModuleType, ModuleType, ModuleType]:
    """(requester, responder, models) of the generated request/reply package."""
    return (
        importlib.import_module(f"{package}.requester"),
        importlib.import_module(f"{package}.responder"),
        importlib.import_module(f"{package}.models"),
    )


def test_rpc_routes_carry_the_reply(rpc_package: str) -> None:
    requester, responder, models = _rpc_modules(rpc_package)
    ping_reply = ReplySpec(message_type="ping.reply", model=models.PingReply)
    lookup_reply = ReplySpec(message_type="lookup.reply", model=models.LookupReply)
    ping = RpcRoute(
        operation="ping",
        exchange="rpc",  # through the binding of the request queue
        routing_key="ping",
        message_type="ping.request",
        model=models.PingRequest,
        reply=ping_reply,
        persistent=False,  # deliveryMode: 1, allowed only with a reply
    )
    assert ping == requester.PING
    look_up = RpcRoute(
        operation="lookUp",
        exchange="rpc",  # the operation's channel is the exchange itself
        routing_key="lookup",
        message_type="lookup.request",
        model=models.LookupRequest,
        reply=lookup_reply,
        persistent=True,
    )
    assert look_up == requester.LOOK_UP
    assert requester.RPC_ROUTES == (requester.LOOK_UP, requester.PING)
    assert requester.SEND_ROUTES == ()  # a request waits for its reply: no fire-and-forget route
    answer_ping = ReceiveRoute(
        operation="answerPing",
        queue="rpc.ping",
        message_type="ping.request",
        task_type="ping",
        model=models.PingRequest,
        reply=ping_reply,
    )
    assert answer_ping == responder.ANSWER_PING
    answer_lookup = ReceiveRoute(
        operation="answerLookup",
        queue="rpc.lookup",
        message_type="lookup.request",
        task_type="lookup",
        model=models.LookupRequest,
        reply=lookup_reply,
    )
    assert answer_lookup == responder.ANSWER_LOOKUP
    assert responder.RECEIVE_ROUTES == (responder.ANSWER_LOOKUP, responder.ANSWER_PING)
    # a reply channel (address: null) declares nothing: replies go to the request's replyTo
    topology = importlib.import_module(f"{rpc_package}.topology")
    assert [e.name for e in topology.TOPOLOGY.exchanges] == ["rpc", "rpc.dead"]
    assert [q.name for q in topology.TOPOLOGY.queues] == ["rpc.dead", "rpc.lookup", "rpc.ping"]


def test_rpc_client_methods_are_typed_from_the_request(rpc_package: str) -> None:
    requester, _, models = _rpc_modules(rpc_package)
    client = requester.RequesterClient
    positional, keyword_only = (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    # a request of required, simply typed properties: one parameter per property, in order
    ping = inspect.signature(client.ping).parameters
    assert [(p.name, p.kind) for p in ping.values()] == [
        ("self", positional),
        ("text", positional),
        ("count", positional),
        ("tags", positional),
        ("timeout", keyword_only),
    ]
    assert all(ping[name].default is inspect.Parameter.empty for name in ("text", "count", "tags"))
    assert ping["timeout"].default == 5.0
    assert get_type_hints(client.ping) == {
        "text": str,
        "count": int,
        "tags": Sequence[str],
        "timeout": float,
        "return": models.PingReply,
    }
    # a request with an optional property: the method takes the model
    look_up = inspect.signature(client.look_up).parameters
    assert [(p.name, p.kind) for p in look_up.values()] == [
        ("self", positional),
        ("request", positional),
        ("timeout", keyword_only),
    ]
    assert look_up["timeout"].default == 5.0
    assert get_type_hints(client.look_up) == {
        "request": models.LookupRequest,
        "timeout": float,
        "return": models.LookupReply,
    }
    assert inspect.iscoroutinefunction(client.ping)
    assert inspect.iscoroutinefunction(client.look_up)
    assert not hasattr(client, "prepare_ping")  # nothing to batch: a request waits for its reply
    assert not hasattr(client, "prepare_look_up")


def test_reply_address_may_be_a_ref(tmp_path: Path) -> None:
    """AsyncAPI 3 lets `reply.address` be a $ref (to components.replyAddresses)."""
    spec = tmp_path / RPC_SPEC.name
    shutil.copytree(RPC_SPEC, spec)
    document = spec / "requester.asyncapi.yaml"
    data = yaml.safe_load(document.read_text())
    data["components"] = {"replyAddresses": {"replyTo": {"location": "$message.header#/replyTo"}}}
    for operation in data["operations"].values():
        operation["reply"]["address"] = {"$ref": "#/components/replyAddresses/replyTo"}
    document.write_text(yaml.safe_dump(data, sort_keys=False))

    def without_sha(files: dict[str, bytes]) -> dict[str, list[bytes]]:
        return {
            name: [line for line in text.splitlines() if not line.startswith(b"# spec sha256: ")]
            for name, text in files.items()
        }

    assert without_sha(build(spec)) == without_sha(build(RPC_SPEC))


def _without_sha(files: dict[str, bytes]) -> dict[str, list[bytes]]:
    return {
        name: [line for line in text.splitlines() if not line.startswith(b"# spec sha256: ")]
        for name, text in files.items()
    }


def test_the_whole_reply_may_be_a_ref(tmp_path: Path) -> None:
    """AsyncAPI 3 lets `reply` itself be a $ref (to components.replies)."""
    spec = tmp_path / RPC_SPEC.name
    shutil.copytree(RPC_SPEC, spec)
    document = spec / "requester.asyncapi.yaml"
    data = yaml.safe_load(document.read_text())
    data["components"] = {"replies": {}}
    for name, operation in data["operations"].items():
        data["components"]["replies"][name] = operation["reply"]
        operation["reply"] = {"$ref": f"#/components/replies/{name}"}
    document.write_text(yaml.safe_dump(data, sort_keys=False))
    assert _without_sha(build(spec)) == _without_sha(build(RPC_SPEC))


@pytest.mark.parametrize("name", ["timeout", "self", "models", "request"])
def test_a_request_field_named_like_the_method_s_own_takes_the_model(
    tmp_path: Path, name: str
) -> None:
    """`ping(timeout: str, *, timeout=5.0)` would not compile: the method takes the model."""
    spec = tmp_path / RPC_SPEC.name
    shutil.copytree(RPC_SPEC, spec)
    document = spec / "common.asyncapi.yaml"
    data = yaml.safe_load(document.read_text())
    request = data["components"]["schemas"]["PingRequest"]
    request["properties"][name] = {"type": "string"}
    request["required"].append(name)
    document.write_text(yaml.safe_dump(data, sort_keys=False))
    requester = build(spec)["requester.py"].decode()
    assert "request: models.PingRequest," in requester


class _RecordingRpc:
    """Stands in for RpcClient: the client must only hand over route, request and timeout."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.calls: list[tuple[Any, Any, float]] = []

    async def call(self, route: Any, request: Any, *, timeout: float) -> Any:
        self.calls.append((route, request, timeout))
        return self.reply


async def test_rpc_client_delegates_to_the_rpc_client(rpc_package: str) -> None:
    requester, _, models = _rpc_modules(rpc_package)
    pong = models.PingReply(text="pong", count=2)
    rpc = _RecordingRpc(pong)
    client = requester.RequesterClient(_RecordingPublisher(), rpc)
    assert await client.ping("hi", 2, ["a"]) is pong
    assert await client.ping(text="ho", count=1, tags=[], timeout=0.5) is pong
    found = models.LookupReply(found=True, value="v")
    rpc.reply = found
    request = models.LookupRequest(key="k")
    assert await client.look_up(request, timeout=1.5) is found
    assert rpc.calls == [
        (requester.PING, {"text": "hi", "count": 2, "tags": ["a"]}, 5.0),
        (requester.PING, {"text": "ho", "count": 1, "tags": []}, 0.5),
        (requester.LOOK_UP, request, 1.5),
    ]
    without_rpc = requester.RequesterClient(_RecordingPublisher())
    with pytest.raises(SpectaskError, match="no RPC client"):
        await without_rpc.ping("hi", 1, [])


def test_responder_handlers_return_the_reply(rpc_package: str) -> None:
    _, responder, models = _rpc_modules(rpc_package)
    app = responder.ResponderApp()

    def answer(payload: Any, context: Any) -> Any:
        return models.PingReply(text=payload.text)

    assert app.answer_ping(answer) is answer
    assert dict(app.handlers) == {"answerPing": answer}
    with pytest.raises(SpectaskError, match="answerPing"):
        app.answer_ping(answer)
    for method, request, reply in [
        (responder.ResponderApp.answer_ping, models.PingRequest, models.PingReply),
        (responder.ResponderApp.answer_lookup, models.LookupRequest, models.LookupReply),
    ]:
        handler = get_type_hints(method)["handler"]  # Callable[[request, TaskContext], reply]
        arguments, result = get_args(handler)
        assert arguments == [request, TaskContext]
        awaited, returned = get_args(result)  # Awaitable[reply] | reply
        assert (get_origin(awaited), get_args(awaited), returned) == (Awaitable, (reply,), reply)


def test_topology_holds_the_whole_common_document(real_package: str) -> None:
    topology = importlib.import_module(f"{real_package}.topology")
    declared = [e.name for e in topology.TOPOLOGY.exchanges if not e.name.startswith("retry.")]
    assert declared == [
        "control",
        "dead_letter",
        "events",
        "results",
        "rpc",
        "tasks",
        "workers",
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
        assert queue.arguments_dict() == {
            "x-message-ttl": ttl,
            "x-dead-letter-exchange": "tasks",
            "x-queue-type": "classic",  # follows SPECTASK_QUEUE_TYPE
        }
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


def test_runtime_operations_get_no_decorator_and_status_gets_wait(real_package: str) -> None:
    """`x-spectask-runtime`: the worker follows the cancellation stream itself (no handler to
    register), and the producer's status operation also gives it `wait()`."""
    worker = _worker(real_package)
    producer = importlib.import_module(f"{real_package}.producer")
    route = worker.WATCH_CANCELLATIONS
    assert route.runtime == "cancellations" and route.queue == "spectask.cancellations"
    assert route in worker.RECEIVE_ROUTES
    assert not hasattr(worker.WorkerApp, "watch_cancellations")
    wait = producer.ProducerClient.wait
    assert list(inspect.signature(wait).parameters)[:3] == ["self", "task_ids", "timeout"]
    assert "TaskStatusView" in str(get_type_hints(wait)["return"])
    assert all(r.runtime is None for r in worker.RECEIVE_ROUTES if r is not route)
