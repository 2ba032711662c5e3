"""`open_store`: which URLs it takes, and how it says what is wrong with the ones it refuses."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spectask.errors import ConfigError, SpectaskError
from spectask.store import (
    EventKind,
    Observation,
    StoreConfigError,
    StoreUnavailableError,
    TaskState,
    default_store_path,
    default_store_url,
    open_store,
)
from spectask.store.url import PostgresTarget, SqliteTarget, parse_store_url, redact
from tests.store_support import database_url, require_postgres


def submitted(task_id: str) -> Observation:
    return Observation(task_id=task_id, kind=EventKind.SUBMITTED, at=datetime.now(UTC), attempt=1)


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("sqlite:///.spectask/tasks.db", SqliteTarget(".spectask/tasks.db")),
        ("sqlite:////var/lib/spectask/tasks.db", SqliteTarget("/var/lib/spectask/tasks.db")),
        ("SQLite:///tasks.db", SqliteTarget("tasks.db")),
        ("sqlite:///:memory:", SqliteTarget(":memory:")),
        ("postgresql://u:p@db:5432/tasks", PostgresTarget("postgresql://u:p@db:5432/tasks")),
        ("postgres://db/tasks", PostgresTarget("postgres://db/tasks")),
    ],
)
def test_supported_urls(url: str, target: object) -> None:
    assert parse_store_url(url) == target


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://db/tasks", "scheme 'mysql' is not supported"),
        ("tasks.db", "has no scheme"),
        ("sqlite://tasks.db", "three slashes"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///tasks.db?mode=ro", "take no options"),
        ("postgresql:///tasks", "names no host"),
    ],
)
def test_unsupported_urls_say_what_is_supported(url: str, complaint: str) -> None:
    with pytest.raises(StoreConfigError, match=complaint) as caught:
        parse_store_url(url)
    assert "sqlite:///" in str(caught.value) and "postgresql://" in str(caught.value)
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, SpectaskError)


async def test_open_store_refuses_a_bad_url_before_touching_anything() -> None:
    with pytest.raises(StoreConfigError, match="supported store URLs"):
        await open_store("redis://localhost/0")


def test_passwords_never_reach_messages() -> None:
    assert redact("postgresql://u:secret@db:5433/x") == "postgresql://u:***@db:5433/x"
    with pytest.raises(StoreConfigError) as caught:
        parse_store_url("mongodb://u:secret@db/x")
    assert "secret" not in str(caught.value)


async def test_the_default_is_one_sqlite_file_whatever_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Collectors started in different directories used different files (issue 9 item 14)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("STORE_URL", raising=False)
    expected = tmp_path / "data" / "spectask" / "tasks.db"
    assert default_store_path() == expected
    assert default_store_url() == f"sqlite:///{expected}"
    for directory in ("one", "two"):
        (tmp_path / directory).mkdir()
        monkeypatch.chdir(tmp_path / directory)
        with caplog.at_level(logging.INFO, logger="spectask.store.factory"):
            store = await open_store()
            await store.apply(submitted(f"t-{directory}"))
            await store.close()
    assert caplog.text.count(f"task store: SQLite {expected} ") == 2
    assert not (tmp_path / "one" / ".spectask").exists()
    with sqlite3.connect(expected) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        rows = conn.execute("SELECT task_id FROM tasks ORDER BY task_id").fetchall()
    assert rows == [("t-one",), ("t-two",)]


async def test_store_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORE_URL", f"sqlite:///{tmp_path}/deep/er/history.db")
    store = await open_store()
    try:
        assert await store.counts_by_state() == dict.fromkeys(
            [state for state in TaskState if state is not TaskState.UNKNOWN], 0
        )
    finally:
        await store.close()
    assert (tmp_path / "deep" / "er" / "history.db").is_file()


async def test_a_sqlite_path_that_cannot_be_a_database(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is not SQLite" * 100)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreUnavailableError, match="is it a SQLite database"):
        await open_store(f"sqlite:///{tmp_path}/not-a-db")
    with pytest.raises(StoreUnavailableError, match="cannot create the directory"):
        await open_store(f"sqlite:///{tmp_path}/a-file/tasks.db")
    with pytest.raises(StoreUnavailableError, match="unable to open"):
        await open_store(f"sqlite:///{tmp_path}")  # a directory


async def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/tasks.db")
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(StoreUnavailableError, match="closed"):
        await store.get("t1")


async def test_an_unreachable_postgresql_is_a_clear_error() -> None:
    with pytest.raises(StoreUnavailableError, match="cannot connect") as caught:
        await open_store("postgresql://spectask:secret@127.0.0.1:1/tasks")
    assert "secret" not in str(caught.value)


async def test_a_missing_postgresql_database_is_a_clear_error() -> None:
    require_postgres()
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        await open_store(database_url("spectask_no_such_database"))


async def test_a_store_says_at_open_which_file_it_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Collectors started in different directories must not quietly use different files."""
    from spectask.store import open_store

    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="spectask.store.factory"):
        store = await open_store("sqlite:///.spectask/tasks.db")
        await store.close()
    assert f"task store: SQLite {tmp_path / '.spectask' / 'tasks.db'}" in caplog.text
