"""Errors a user meets first: one line with the cause and the fix, never a traceback.

Each case runs the real command line. Wrong password and missing virtual host go to the
suite's own RabbitMQ node; the rest fail before any connection is tried.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


def spectask(*args: str, **env: str) -> tuple[int, str, float]:
    """Exit code, stderr and seconds taken by `spectask ARGS` with `env` added."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "spectask.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr, time.monotonic() - started


def with_url(url: str, *, password: str | None = None, vhost: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if password is not None:
        netloc = f"{parts.username or 'guest'}:{password}@{parts.hostname}:{parts.port}"
    path = f"/{vhost}" if vhost is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def assert_one_error(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Reconnecting" not in stderr and "aio_pika" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in stderr, stderr


def test_a_wrong_password_says_so(amqp_url: str) -> None:
    code, err, _ = spectask("status", "x", AMQP_URL=with_url(amqp_url, password="wrong"))
    assert code == 1
    assert_one_error(err, "refused the login of user", "wrong user name or password", "***")
    assert "wrong@" not in err  # the password is never printed


def test_a_missing_virtual_host_says_so(amqp_url: str) -> None:
    code, err, _ = spectask("status", "x", AMQP_URL=with_url(amqp_url, vhost="no-such-vhost"))
    assert code == 1
    assert_one_error(err, "virtual host 'no-such-vhost'", "rabbitmqctl add_vhost no-such-vhost")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("garbage", "has no scheme"),
        ("http://localhost:5672/", "has scheme 'http'"),
        ("amqp+tls://localhost/", "has scheme 'amqp+tls'"),
        ("amqp:///", "names no host"),
        ("amqp://localhost:port/", "is not a URL"),
    ],
)
def test_a_url_that_is_not_one_fails_at_once(url: str, problem: str) -> None:
    code, err, seconds = spectask("status", "x", AMQP_URL=url)
    assert code == 1
    assert_one_error(err, f"AMQP_URL {url!r} {problem}", "amqp://USER:PASSWORD@HOST:5672/VHOST")
    assert seconds < 10, f"took {seconds:.1f}s: it retried instead of refusing the URL"


def test_a_missing_params_file_says_which() -> None:
    code, err, _ = spectask(
        "produce", "--task", "data_analysis.statistics", "--params", "@no-such-file.json"
    )
    assert code == 1
    assert_one_error(err, "--params @no-such-file.json: cannot read 'no-such-file.json'")


def test_a_bad_setting_names_its_variable() -> None:
    code, err, _ = spectask("status", "x", SPECTASK_PREFETCH="abc")
    assert code == 1
    assert_one_error(err, "SPECTASK_PREFETCH='abc'", "valid integer")
