"""Issue 12, breaking changes caught: `spectask spec diff OLD NEW` and the released baseline.

Each planted breaking change must be flagged for the side it breaks, each planted compatible
change must pass, and the repo's spec/ must be compatible with tests/fixtures/released-spec/
(`make release-spec` refreshes it) unless the changed document's info.version major went up.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from spectask.specdiff import Report, SpecDiffError, diff, read_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec"
RELEASED = ROOT / "tests" / "fixtures" / "released-spec"
COMMON = "common.asyncapi.yaml"

# a one-document spec with one of each kind, for the removals and additions
MINIMAL: dict[str, Any] = {
    "asyncapi": "3.0.0",
    "info": {"title": "mini", "version": "1.0.0"},
    "channels": {
        "jobs": {
            "address": "jobs",
            "messages": {"job": {"$ref": "#/components/messages/Job"}},
        }
    },
    "operations": {
        "sendJob": {
            "action": "send",
            "channel": {"$ref": "#/channels/jobs"},
            "messages": [{"$ref": "#/channels/jobs/messages/job"}],
        }
    },
    "components": {
        "messages": {"Job": {"name": "Job", "payload": {"$ref": "#/components/schemas/Job"}}},
        "schemas": {
            "Job": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
        },
    },
}


def write_spec(directory: Path, documents: dict[str, Any]) -> Path:
    directory.mkdir(parents=True)
    for name, data in documents.items():
        (directory / name).write_text(yaml.safe_dump(data, sort_keys=False))
    return directory


def planted(tmp_path: Path, document: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of spec/ with `edit` applied to one document's parsed YAML."""
    target = tmp_path / "new"
    shutil.copytree(SPEC, target)
    data = yaml.safe_load((target / document).read_text())
    edit(data)
    (target / document).write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def minimal_pair(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Report:
    old = write_spec(tmp_path / "old", {"mini.asyncapi.yaml": MINIMAL})
    changed: dict[str, Any] = yaml.safe_load(yaml.safe_dump(MINIMAL))
    edit(changed)
    new = write_spec(tmp_path / "new", {"mini.asyncapi.yaml": changed})
    return diff(read_spec(old), read_spec(new))


def schemas(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = data["components"]["schemas"]
    return result


def report_for(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Report:
    return diff(read_spec(SPEC), read_spec(planted(tmp_path, COMMON, edit)))


def test_the_repo_spec_is_compatible_with_its_released_baseline() -> None:
    report = diff(read_spec(RELEASED), read_spec(SPEC))
    assert report.blocking == [], "\n".join(c.line() for c in report.blocking) + (
        "\nbump the info.version major of the document, or make the change compatible"
    )


def test_identical_specs_have_no_changes() -> None:
    assert diff(read_spec(SPEC), read_spec(SPEC)).changes == ()


BREAKING_IN_REPO_SPEC: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "new required field",
        lambda d: schemas(d)["DataStatistics"]["required"].append("percentiles"),
        "breaking for producers: message DataStatistics payload: "
        "field 'percentiles' became required",
    ),
    (
        "removed enum value",
        lambda d: schemas(d)["ImageFormat"]["enum"].remove("TIFF"),
        "breaking for producers: schema ImageFormat: enum value 'TIFF' removed",
    ),
    (
        "new enum value",
        lambda d: schemas(d)["ImageFormat"]["enum"].append("ICO"),
        "breaking for consumers: schema ImageFormat: enum value 'ICO' added",
    ),
    (
        "narrowed type",
        lambda d: schemas(d)["ImageFilter"]["properties"]["radius"].update(type="integer"),
        "breaking for producers: message ImageFilter payload.radius: type narrowed from "
        "['number'] to ['integer']",
    ),
    (
        "lower maxItems",
        lambda d: schemas(d)["DataStatistics"]["properties"]["values"].update(maxItems=10),
        "breaking for producers: schema DataStatistics.values: "
        "maxItems tightened from 1000000 to 10",
    ),
    (
        "higher minimum",
        lambda d: schemas(d)["ImageFilter"]["properties"]["radius"].update(minimum=1),
        "breaking for producers: schema ImageFilter.radius: minimum tightened from 0 to 1",
    ),
    (
        "field no longer required",
        lambda d: schemas(d)["ImageFilter"]["required"].remove("filter"),
        "breaking for consumers: schema ImageFilter: field 'filter' is no longer required",
    ),
    (
        "changed channel address",
        lambda d: d["channels"]["reportGeneration"].update(address="tasks/reports"),
        "breaking for producers and consumers: channel reportGeneration: address changed from "
        "'tasks/report_generation' to 'tasks/reports'",
    ),
    (
        "added optional field to a closed schema",
        lambda d: schemas(d)["ReportChart"]["properties"].update(colour={"type": "string"}),
        "breaking for consumers: schema ReportChart: optional field 'colour' added",
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [(edit, expected) for _, edit, expected in BREAKING_IN_REPO_SPEC],
    ids=[name for name, _, _ in BREAKING_IN_REPO_SPEC],
)
def test_a_planted_breaking_change_is_flagged(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], expected: str
) -> None:
    report = report_for(tmp_path, edit)
    assert expected in report.lines()
    assert report.blocking


def test_a_renamed_channel_is_a_removed_one(tmp_path: Path) -> None:
    new = tmp_path / "new"
    shutil.copytree(SPEC, new)
    for path in new.glob("*.yaml"):
        path.write_text(path.read_text().replace("reportGeneration", "reports"))
    lines = diff(read_spec(SPEC), read_spec(new)).lines()
    assert "breaking for producers and consumers: channel reportGeneration: removed" in lines
    assert "compatible: channel reports: added" in lines


def test_removed_message_channel_and_operation_break_both_sides(tmp_path: Path) -> None:
    def remove_all(d: dict[str, Any]) -> None:
        d["channels"].clear()
        d["operations"].clear()
        d["components"]["messages"].clear()

    lines = minimal_pair(tmp_path, remove_all).lines()
    for subject in ("channel jobs", "operation sendJob", "message Job"):
        assert f"breaking for producers and consumers: {subject}: removed" in lines


def test_an_operation_that_stops_carrying_a_message_is_breaking(tmp_path: Path) -> None:
    def add_and_switch(d: dict[str, Any]) -> None:
        d["components"]["messages"]["Other"] = {"payload": {"type": "object"}}
        d["channels"]["jobs"]["messages"] = {"other": {"$ref": "#/components/messages/Other"}}
        d["operations"]["sendJob"]["messages"] = [{"$ref": "#/channels/jobs/messages/other"}]

    report = minimal_pair(tmp_path, add_and_switch)
    assert (
        "breaking for producers and consumers: operation sendJob: no longer references "
        "messages=job" in report.lines()
    )


def test_planted_compatible_changes_pass(tmp_path: Path) -> None:
    def grow(d: dict[str, Any]) -> None:
        d["info"]["description"] = "reworded"
        d["channels"]["more"] = {
            "address": "more",
            "messages": {"job": {"$ref": "#/components/messages/Job"}},
        }
        d["operations"]["sendMore"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/more"},
            "messages": [{"$ref": "#/channels/more/messages/job"}],
        }
        d["components"]["messages"]["Extra"] = {"payload": {"type": "object"}}
        job = d["components"]["schemas"]["Job"]
        job["properties"]["note"] = {"type": "string", "description": "optional"}
        job["properties"]["id"]["description"] = "documented"

    report = minimal_pair(tmp_path, grow)
    assert report.blocking == []
    assert {
        "compatible: channel more: added",
        "compatible: operation sendMore: added",
        "compatible: message Extra: added",
        "compatible: schema Job: optional field 'note' added",
        "compatible: message Job payload: optional field 'note' added",
    } <= set(report.lines())


def test_retry_policy_and_descriptions_are_not_the_wire_contract(tmp_path: Path) -> None:
    def retune(d: dict[str, Any]) -> None:
        amqp = d["channels"]["imageProcessing"]["bindings"]["amqp"]
        amqp["x-spectask-policy"]["maxAttempts"] = 7
        d["channels"]["imageProcessing"]["description"] = "reworded"
        schemas(d)["ImageFilter"]["description"] = "reworded"

    assert report_for(tmp_path, retune).changes == ()


def test_a_major_version_bump_allows_a_breaking_change(tmp_path: Path) -> None:
    def break_and_bump(d: dict[str, Any]) -> None:
        schemas(d)["DataStatistics"]["required"].append("percentiles")
        d["info"]["version"] = "1.0.0"  # was 0.2.0

    report = report_for(tmp_path, break_and_bump)
    assert report.blocking == []
    assert (
        "breaking for producers: schema DataStatistics: field 'percentiles' became required "
        "(allowed: common.asyncapi.yaml major version bumped)" in report.lines()
    )


def test_a_minor_bump_or_another_documents_bump_does_not(tmp_path: Path) -> None:
    def break_and_bump_minor(d: dict[str, Any]) -> None:
        schemas(d)["DataStatistics"]["required"].append("percentiles")
        d["info"]["version"] = "0.3.0"

    new = planted(tmp_path, COMMON, break_and_bump_minor)
    worker = yaml.safe_load((new / "worker.asyncapi.yaml").read_text())
    worker["info"]["version"] = "1.0.0"
    (new / "worker.asyncapi.yaml").write_text(yaml.safe_dump(worker, sort_keys=False))
    report = diff(read_spec(SPEC), read_spec(new))
    assert {change.owner for change in report.blocking} == {COMMON}


@pytest.mark.parametrize("problem", ["missing", "empty", "bad-yaml", "broken-ref", "a-file"])
def test_an_unreadable_directory_is_one_clear_error(tmp_path: Path, problem: str) -> None:
    target = tmp_path / "spec"
    if problem == "a-file":
        target.write_text("not a directory")
    elif problem != "missing":
        target.mkdir()
    if problem == "bad-yaml":
        (target / "x.asyncapi.yaml").write_text("info: {title: a: b}\n")
    if problem == "broken-ref":
        broken = {**MINIMAL, "operations": {"op": {"channel": {"$ref": "#/channels/nowhere"}}}}
        (target / "x.asyncapi.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(SpecDiffError) as caught:
        read_spec(target)
    message = str(caught.value)
    assert "\n" not in message and str(target) in message


def spectask(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spectask.cli", "spec", "diff", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_cli_exit_codes_and_lines(tmp_path: Path) -> None:
    compatible = spectask(str(RELEASED), str(SPEC))
    assert compatible.returncode == 0, compatible.stdout + compatible.stderr
    assert "spec diff: compatible" in compatible.stdout

    new = planted(tmp_path, COMMON, lambda d: schemas(d)["ImageFormat"]["enum"].remove("TIFF"))
    breaking = spectask(str(SPEC), str(new))
    assert breaking.returncode == 1
    assert "breaking for producers: schema ImageFormat: enum value 'TIFF' removed" in (
        breaking.stdout.splitlines()
    )
    assert "bump the info.version major of common.asyncapi.yaml" in breaking.stderr

    missing = spectask(str(tmp_path / "nowhere"), str(SPEC))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "not a directory" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_tightened_result_schema_breaks_the_tasks_consumers(tmp_path: Path) -> None:
    """Workers produce results: a result that lets fewer values through breaks them."""
    report = report_for(tmp_path, lambda d: schemas(d)["ImageFormat"]["enum"].remove("TIFF"))
    lines = report.lines()
    assert (
        "breaking for consumers: message ImageConvert result.format: enum value 'TIFF' removed"
        in lines
    )
    assert (
        "breaking for producers: message ImageConvert payload.format: enum value 'TIFF' removed"
        in lines
    )


def job_id(d: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = d["components"]["schemas"]["Job"]["properties"]["id"]
    return result


MORE_BREAKING: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "maxLength added",
        lambda d: job_id(d).update(maxLength=5),
        "breaking for producers: schema Job.id: maxLength 5 added",
    ),
    (
        "pattern added",
        lambda d: job_id(d).update(pattern="^[a-z]+$"),
        "breaking for producers: schema Job.id: pattern '^[a-z]+$' added",
    ),
    (
        "type widened",
        lambda d: job_id(d).update(type=["string", "null"]),
        "breaking for consumers: schema Job.id: type widened from ['string'] to ['null', 'string']",
    ),
    (
        "channel binding",
        lambda d: d["channels"]["jobs"].update(bindings={"amqp": {"is": "queue"}}),
        "breaking for producers and consumers: channel jobs: bindings changed "
        "(exchange, queue, routing or arguments)",
    ),
    (
        "operation action",
        lambda d: d["operations"]["sendJob"].update(action="receive"),
        "breaking for producers and consumers: operation sendJob: action changed from "
        "'send' to 'receive'",
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [(edit, expected) for _, edit, expected in MORE_BREAKING],
    ids=[name for name, _, _ in MORE_BREAKING],
)
def test_more_planted_breaking_changes(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], expected: str
) -> None:
    report = minimal_pair(tmp_path, edit)
    assert expected in report.lines()
    assert report.blocking


def test_a_lower_max_length_is_tightened_and_a_higher_one_loosened(tmp_path: Path) -> None:
    def with_limit(name: str, limit: int) -> Path:
        changed: dict[str, Any] = yaml.safe_load(yaml.safe_dump(MINIMAL))
        job_id(changed)["maxLength"] = limit
        return write_spec(tmp_path / name, {"mini.asyncapi.yaml": changed})

    base = read_spec(with_limit("base", 10))
    lower = diff(base, read_spec(with_limit("lower", 3))).lines()
    higher = diff(base, read_spec(with_limit("higher", 30))).lines()
    assert "breaking for producers: schema Job.id: maxLength tightened from 10 to 3" in lower
    assert "breaking for consumers: schema Job.id: maxLength loosened from 10 to 30" in higher
