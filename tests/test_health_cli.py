"""`spectask health --consumes QUEUE`: the collector's container health check, on RabbitMQ.

A consumer present is covered by tests/test_deploy_image.py (a real collector from the image's
tree); here the ways it reports unhealthy, each one line and exit 1, never a traceback.
"""

from __future__ import annotations

import os

from spectask.app import load_app
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from tests.cli_support import spectask

APP = "workloads.app:app"


def env(amqp_url: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "AMQP_URL": amqp_url, "SPECTASK_APP": APP}


def test_a_queue_outside_the_spec_is_named(amqp_url: str) -> None:
    result = spectask(env(amqp_url), "health", "--consumes", "no-such-queue")
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: no-such-queue: not a queue of the spec")
    assert "Traceback" not in result.stderr


async def test_a_queue_without_consumer_is_unhealthy(amqp_url: str) -> None:
    broker = await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-health")
    async with broker:  # the spec's queues exist, as after any worker or producer started
        await broker.declare(load_app(APP).topology)
    result = spectask(env(amqp_url), "health", "--consumes", "dead_letter")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.strip() == "unhealthy: dead_letter: no consumer"


def test_a_broker_that_refuses_the_login_is_one_line(amqp_url: str) -> None:
    wrong = amqp_url.replace("guest:guest@", "guest:wrong@")
    result = spectask(env(wrong), "health", "--consumes", "results")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: RabbitMQ at "), result.stderr
    assert "refused the login" in result.stderr and "wrong" not in result.stderr.split("@")[0]
