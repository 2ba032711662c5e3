"""Issue 12: `make docs` renders spec/ as HTML, offline, and the dashboard serves it.

tools/asyncapi-docs/docs.mjs (what `make docs` runs) renders each document with the official
@asyncapi/generator and @asyncapi/html-template (pinned by the folder's lock file, installed by
`make docs-tools`) and writes an index of every operation. It runs here without a network
(`unshare -n`, as root) where it can, so a template that fetched anything would fail. Without
node or the tools the test is skipped, and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.dashboard_support import DashboardProcess
from tests.node_support import node, require

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools" / "asyncapi-docs"
SPEC = ROOT / "spec"
DOCUMENTS = sorted(SPEC.glob("*.asyncapi.yaml"))

pytestmark = pytest.mark.timeout(300)


def render(spec: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """docs.mjs, as `make docs` runs it, without a network where we may cut it (root)."""
    require(TOOLS / "node_modules" / "@asyncapi" / "html-template", "docs-tools")
    unshare = shutil.which("unshare")
    offline = [unshare, "--net"] if unshare and os.geteuid() == 0 else []
    return node(TOOLS / "docs.mjs", spec, out, timeout=280, wrapper=offline)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spec-docs")
    done = render(SPEC, out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def operations(path: Path) -> dict[str, str]:
    """A document's operations: id -> how the template's anchors name its action (an
    operation with a reply is a `request` when it sends, a `reply` when it receives)."""
    found = yaml.safe_load(path.read_text()).get("operations", {})
    paired = {"send": "request", "receive": "reply"}
    return {
        name: paired[op["action"]] if "reply" in op else op["action"]
        for name, op in sorted(found.items())
    }


def test_the_index_links_every_operation_of_every_document(docs: Path) -> None:
    index = (docs / "index.html").read_text()
    for path in DOCUMENTS:
        name = path.name.removesuffix(".asyncapi.yaml")
        assert f'href="{name}/index.html"' in index, path.name
        for operation, action in operations(path).items():
            link = f'<a href="{name}/index.html#operation-{action}-{operation}"><code>{operation}'
            assert link in index, f"{path.name}: {operation}"


def test_each_document_page_is_one_self_contained_file(docs: Path) -> None:
    """The official template's page shows each operation, with its CSS and JS inline: no
    script or stylesheet is fetched when it is opened (the dashboard serves it offline)."""
    for path in DOCUMENTS:
        page = (docs / path.name.removesuffix(".asyncapi.yaml") / "index.html").read_text()
        title = yaml.safe_load(path.read_text())["info"]["title"]
        assert f"<title>{title}" in page, path.name
        for operation, action in operations(path).items():
            assert f'id="operation-{action}-{operation}"' in page, operation
        assert "<script src=" not in page and 'rel="stylesheet" href=' not in page, path.name


def test_a_spec_that_does_not_parse_is_one_clear_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "broken.asyncapi.yaml").write_text("asyncapi: 3.1.0\ninfo: {title: t}\n")
    done = render(spec, tmp_path / "out")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("docs: broken.asyncapi.yaml does not parse: "), done.stderr
    assert "version" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "index.html").exists()


async def test_the_dashboard_serves_the_docs_when_they_exist(
    docs: Path, amqp_url: str, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    with_docs = DashboardProcess(
        amqp_url, store, tmp_path, extra_env={"SPECTASK_SPEC_DOCS_DIR": str(docs)}
    )
    without = DashboardProcess(
        amqp_url, store, tmp_path, extra_env={"SPECTASK_SPEC_DOCS_DIR": str(tmp_path / "none")}
    )
    try:
        await asyncio.gather(
            asyncio.to_thread(with_docs.wait_ready), asyncio.to_thread(without.wait_ready)
        )
        status, index = with_docs.get("/docs/spec/")
        assert status == 200 and "submitImageResize" in index, index[:500]
        status, page = with_docs.get("/docs/spec/producer/")
        assert status == 200 and "<title>spectask producer" in page, page[:500]
        status, text = without.get("/docs/spec/")
        assert status == 404 and "run `make docs`" in text, text
    finally:
        with_docs.stop()
        without.stop()
