"""Invalid specs: each error is reported with file, JSON path and a hint; nothing is written.

Every case copies the fixture spec, breaks one thing in one document (through its YAML as a
dict) and runs the generator: exit code 1, a message naming the place, and no output directory.
The request/reply cases (AsyncAPI 3 `reply`) break the rpc fixture (tests/fixtures/rpc_spec).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from spectask.codegen import main

FIXTURE_SPEC = Path(__file__).resolve().parent / "fixtures" / "spec"
RPC_SPEC = Path(__file__).resolve().parent / "fixtures" / "rpc_spec"
COMMON, CLIENT, ECHOER = "common.asyncapi.yaml", "client.asyncapi.yaml", "echoer.asyncapi.yaml"
REQUESTER, RESPONDER = "requester.asyncapi.yaml", "responder.asyncapi.yaml"
Path_ = tuple[str | int, ...]

ECHO_AMQP: Path_ = ("channels", "echoQueue", "bindings", "amqp")
POLICY: Path_ = (*ECHO_AMQP, "x-spectask-policy")
SAY_AMQP: Path_ = ("operations", "sayEcho", "bindings", "amqp")
RETRY: Path_ = ("x-spectask-retry",)
MAX_ATTEMPTS = "$.channels.echoQueue.bindings.amqp.x-spectask-policy.maxAttempts"
PING: Path_ = ("operations", "ping")  # requester: send with a reply
ANSWER: Path_ = ("operations", "answerPing")  # responder: receive with a reply
REPLY_LOCATION = "reply address must be {location: '$message.header#/replyTo'}"
NOT_DYNAMIC = "reply channel must have address: null and no bindings"


def _parent(data: Any, path: Path_) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


def put(path: Path_, value: Any) -> Callable[[Any], None]:
    """A mutation that sets the value at `path`."""

    def mutate(data: Any) -> None:
        _parent(data, path)[path[-1]] = value

    return mutate


def drop(path: Path_) -> Callable[[Any], None]:
    """A mutation that deletes the key at `path`."""

    def mutate(data: Any) -> None:
        del _parent(data, path)[path[-1]]

    return mutate


def both(*mutations: Callable[[Any], None]) -> Callable[[Any], None]:
    """A mutation made of several."""

    def mutate(data: Any) -> None:
        for mutation in mutations:
            mutation(data)

    return mutate


@dataclass(frozen=True)
class Case:
    file: str
    mutate: Callable[[Any], None]
    json_path: str
    message: str
    spec: Path = FIXTURE_SPEC  # the fixture to break
    reported_in: str | None = None  # the file the error names, if not the one broken


def rpc(
    file: str,
    mutate: Callable[[Any], None],
    json_path: str,
    message: str,
    reported_in: str | None = None,
) -> Case:
    """A case that breaks the request/reply fixture."""
    return Case(file, mutate, json_path, message, RPC_SPEC, reported_in)


CASES = {
    "dangling ref to a missing file": Case(
        CLIENT,
        put(("channels", "echoQueue"), {"$ref": "./nope.asyncapi.yaml#/channels/echoQueue"}),
        "$.channels.echoQueue",
        "points to a file that is not part of the spec",
    ),
    "dangling ref to a missing pointer": Case(
        COMMON,
        put(
            ("components", "schemas", "EchoSay", "properties", "style", "$ref"),
            "#/components/schemas/Nope",
        ),
        "$.components.schemas.EchoSay.properties.style",
        "points to nothing: no 'Nope'",
    ),
    "ref cycle": Case(
        COMMON,
        put(("components", "schemas", "Style"), {"$ref": "#/components/schemas/Style"}),
        "$.components.schemas.Style",
        "cycle of $refs",
    ),
    "operation on an unknown channel": Case(
        CLIENT,
        put(("operations", "sayEcho", "channel"), {"$ref": "#/channels/nowhere"}),
        "$.operations.sayEcho.channel",
        "operation on unknown channel 'nowhere'",
    ),
    "operation channel not in its document": Case(
        CLIENT,
        put(
            ("operations", "sayEcho", "channel"),
            {"$ref": "./common.asyncapi.yaml#/channels/echoQueue"},
        ),
        "$.operations.sayEcho.channel",
        "is not in this document's channels",
    ),
    "operation message not in its channel": Case(
        CLIENT,
        put(
            ("operations", "sayEcho", "messages"),
            [{"$ref": "#/channels/replyQueue/messages/reply"}],
        ),
        "$.operations.sayEcho.messages[0]",
        "not among its channel's messages",
    ),
    "operation with two messages": Case(
        CLIENT,
        put(
            ("operations", "sayEcho", "messages"),
            [{"$ref": "#/channels/echoQueue/messages/say"}] * 2,
        ),
        "$.operations.sayEcho.messages",
        "exactly one message",
    ),
    "action neither send nor receive": Case(
        CLIENT,
        put(("operations", "sayEcho", "action"), "publish"),
        "$.operations.sayEcho.action",
        "action must be send or receive",
    ),
    "message without payload": Case(
        COMMON,
        drop(("components", "messages", "EchoSay", "payload")),
        "$.components.messages.EchoSay",
        "message has no payload",
    ),
    "payload not a schema of components.schemas": Case(
        COMMON,
        put(("components", "messages", "EchoSay", "payload"), {"type": "object"}),
        "$.components.messages.EchoSay.payload",
        "payload must be a $ref",
    ),
    "message without messageType": Case(
        COMMON,
        put(("components", "messages", "EchoSay", "bindings", "amqp"), {"bindingVersion": "0.3.0"}),
        "$.components.messages.EchoSay",
        "no bindings.amqp.messageType",
    ),
    "duplicate messageType": Case(
        COMMON,
        put(("components", "messages", "EchoReply", "bindings", "amqp", "messageType"), "echo.say"),
        "$.components.messages.EchoSay",
        "messageType 'echo.say' is also used",
    ),
    "send without cc": Case(
        CLIENT,
        drop((*SAY_AMQP, "cc")),
        "$.operations.sayEcho.bindings.amqp",
        "exactly one routing key",
    ),
    "send with two routing keys": Case(
        CLIENT,
        put((*SAY_AMQP, "cc"), ["echo.say", "echo.other"]),
        "$.operations.sayEcho.bindings.amqp.cc",
        "exactly one routing key",
    ),
    "send with deliveryMode 1": Case(
        CLIENT,
        put((*SAY_AMQP, "deliveryMode"), 1),
        "$.operations.sayEcho.bindings.amqp.deliveryMode",
        "deliveryMode: 2",
    ),
    "unknown x-spectask key in a channel": Case(
        COMMON,
        put((*ECHO_AMQP, "x-spectask-polcy"), {}),
        "$.channels.echoQueue.bindings.amqp.x-spectask-polcy",
        "unknown or misplaced extension 'x-spectask-polcy'",
    ),
    "x-spectask key in the wrong place": Case(
        CLIENT,
        put((*SAY_AMQP, "x-spectask-policy"), {}),
        "$.operations.sayEcho.bindings.amqp.x-spectask-policy",
        "unknown or misplaced extension",
    ),
    "unknown key inside the policy": Case(
        COMMON,
        put((*POLICY, "maxAttempt"), 3),
        "$.channels.echoQueue.bindings.amqp.x-spectask-policy.maxAttempt",
        "unknown key 'maxAttempt'",
    ),
    "maxAttempts below 1": Case(
        COMMON,
        put((*POLICY, "maxAttempts"), 0),
        "$.channels.echoQueue.bindings.amqp.x-spectask-policy.maxAttempts",
        "maxAttempts must be an integer >= 1",
    ),
    "deliveryLimit below 1": Case(
        COMMON,
        put((*POLICY, "deliveryLimit"), 0),
        "$.channels.echoQueue.bindings.amqp.x-spectask-policy.deliveryLimit",
        "deliveryLimit must be an integer >= 1",
    ),
    "negative delay": Case(
        COMMON,
        put((*POLICY, "backoff", "initial"), -1),
        "$.channels.echoQueue.bindings.amqp.x-spectask-policy.backoff.initial",
        "initial must be seconds >= 0",
    ),
    "jitter outside [0, 1]": Case(
        COMMON,
        put((*POLICY, "backoff", "jitter"), 1.5),
        "$.channels.echoQueue.bindings.amqp.x-spectask-policy.backoff.jitter",
        "jitter must be a fraction in [0, 1]",
    ),
    "time limit of the wrong type": Case(
        COMMON,
        put((*POLICY, "timeLimit"), "5s"),
        "$.channels.echoQueue.bindings.amqp.x-spectask-policy.timeLimit",
        "timeLimit must be seconds > 0",
    ),
    "side effects of a message type the channel does not carry": Case(
        COMMON,
        put((*POLICY, "sideEffects"), ["echo.shout"]),
        "$.channels.echoQueue.bindings.amqp.x-spectask-policy.sideEffects",
        "sideEffects names 'echo.shout', which this channel does not carry",
    ),
    "side effects not a list": Case(
        COMMON,
        put((*POLICY, "sideEffects"), True),
        "$.channels.echoQueue.bindings.amqp.x-spectask-policy.sideEffects",
        "sideEffects must be a list of this channel's message types",
    ),
    "unknown default priority": Case(
        COMMON,
        put((*POLICY, "defaultPriority"), "urgent"),
        "$.channels.echoQueue.bindings.amqp.x-spectask-policy.defaultPriority",
        "unknown priority 'urgent'",
    ),
    "priority not an integer": Case(
        COMMON,
        put(("x-spectask-priorities", "high"), 9.5),
        "$.x-spectask-priorities.high",
        "must be an integer in 0..255",
    ),
    "priority above 255": Case(
        COMMON,
        put(("x-spectask-priorities", "high"), 300),
        "$.x-spectask-priorities.high",
        "must be an integer in 0..255",
    ),
    "x-spectask-retry not a mapping": Case(
        COMMON, put(RETRY, "retry"), "$.x-spectask-retry", "must be a mapping"
    ),
    "unknown key in x-spectask-retry": Case(
        COMMON,
        put((*RETRY, "prefix"), "retry"),
        "$.x-spectask-retry.prefix",
        "unknown key 'prefix'",
    ),
    "x-spectask-retry without deadLetterExchange": Case(
        COMMON,
        drop((*RETRY, "deadLetterExchange")),
        "$.x-spectask-retry",
        "x-spectask-retry has no deadLetterExchange",
    ),
    "retry deadLetterExchange not declared": Case(
        COMMON,
        put((*RETRY, "deadLetterExchange"), "nowhere"),
        "$.x-spectask-retry.deadLetterExchange",
        "deadLetterExchange 'nowhere' is not declared by any channel",
    ),
    "retry exchangePrefix reserved by RabbitMQ": Case(
        COMMON,
        put((*RETRY, "exchangePrefix"), "amq.retry"),
        "$.x-spectask-retry.exchangePrefix",
        "exchangePrefix must be a name prefix",
    ),
    "retry exchangePrefix with a space": Case(
        COMMON,
        put((*RETRY, "exchangePrefix"), "re try"),
        "$.x-spectask-retry.exchangePrefix",
        "exchangePrefix must be a name prefix",
    ),
    "retry jitterTiers of 0": Case(
        COMMON,
        put((*RETRY, "jitterTiers"), 0),
        "$.x-spectask-retry.jitterTiers",
        "jitterTiers must be an integer in 1..9",
    ),
    "x-spectask-retry in two documents": Case(
        ECHOER,
        put(RETRY, {"exchangePrefix": "r", "deadLetterExchange": "jobs"}),
        "$.x-spectask-retry",
        "x-spectask-retry is also defined in common.asyncapi.yaml",
    ),
    "x-spectask-retry inside a channel": Case(
        COMMON,
        put((*ECHO_AMQP, "x-spectask-retry"), {"deadLetterExchange": "jobs"}),
        "$.channels.echoQueue.bindings.amqp.x-spectask-retry",
        "unknown or misplaced extension 'x-spectask-retry'",
    ),
    "retries without x-spectask-retry": Case(
        COMMON,
        drop(RETRY),
        MAX_ATTEMPTS,
        "maxAttempts 2 needs retry tiers, but no document defines x-spectask-retry",
    ),
    "retried queue not bound to the deadLetterExchange": Case(
        COMMON,
        put((*RETRY, "deadLetterExchange"), "replies"),
        MAX_ATTEMPTS,
        "retried tasks come back through exchange 'replies', but queue 'jobs.echo' is not bound",
    ),
    "retry tier name taken by a queue": Case(
        COMMON,
        put(("channels", "replyQueue", "bindings", "amqp", "queue", "name"), "jobs.retry.500ms"),
        "$.x-spectask-retry.exchangePrefix",
        "retry tier name(s) jobs.retry.500ms are already declared by a channel",
    ),
    "too many retry tiers": Case(
        COMMON,
        both(put((*POLICY, "maxAttempts"), 40), put((*POLICY, "backoff", "multiplier"), 1.1)),
        "$.x-spectask-retry",
        "retry tiers; at most 32 are allowed",
    ),
    "binding without routingKey": Case(
        COMMON,
        put((*ECHO_AMQP, "x-spectask-bindings"), [{"exchange": "jobs"}]),
        "$.channels.echoQueue.bindings.amqp.x-spectask-bindings[0]",
        "binding is missing routingKey",
    ),
    "binding to an undeclared exchange": Case(
        COMMON,
        put((*ECHO_AMQP, "x-spectask-bindings"), [{"exchange": "nowhere", "routingKey": "echo.#"}]),
        "$.channels.echoQueue.bindings.amqp.x-spectask-bindings[0]",
        "binding to exchange 'nowhere', which no channel declares",
    ),
    "stream retention that RabbitMQ would refuse": Case(
        COMMON,
        put((*ECHO_AMQP, "x-spectask-arguments", "x-max-age"), "7 days"),
        "$.channels.echoQueue.bindings.amqp.x-spectask-arguments.x-max-age",
        "x-max-age must be a stream retention like 7D",
    ),
    "x-max-priority above 255": Case(
        COMMON,
        put((*ECHO_AMQP, "x-spectask-arguments", "x-max-priority"), 300),
        "$.channels.echoQueue.bindings.amqp.x-spectask-arguments.x-max-priority",
        "x-max-priority must be an integer in 1..255",
    ),
    "default priority above x-max-priority": Case(
        COMMON,
        both(
            put((*POLICY, "defaultPriority"), "high"),
            put((*ECHO_AMQP, "x-spectask-arguments", "x-max-priority"), 5),
        ),
        "$.channels.echoQueue",
        "default priority 9 exceeds the queue's x-max-priority 5",
    ),
    "duplicate queue name": Case(
        COMMON,
        put(("channels", "replyQueue", "bindings", "amqp", "queue", "name"), "jobs.echo"),
        "$.channels.replyQueue",
        "queue 'jobs.echo' is declared by two channels",
    ),
    "same exchange declared with other settings": Case(
        COMMON,
        put(
            ("channels", "replies", "bindings", "amqp", "exchange"),
            {"name": "jobs", "type": "direct"},
        ),
        "$.channels.replies",
        "exchange 'jobs' is declared again with other settings",
    ),
    "send key no binding of its queue routes": Case(
        CLIENT,
        put((*SAY_AMQP, "cc"), ["other.say"]),
        "$.operations.sayEcho.bindings.amqp.cc",
        "routing key 'other.say' matches no binding of queue 'jobs.echo'",
    ),
    "send key no queue on the exchange routes": Case(
        ECHOER,
        put(("operations", "sendReply", "bindings", "amqp", "cc"), ["echo.reply.late"]),
        "$.operations.sendReply.bindings.amqp.cc",
        "matches no queue bound to exchange 'replies'",
    ),
    "asyncapi 2": Case(
        COMMON, put(("asyncapi",), "2.6.0"), "$.asyncapi", "asyncapi must be a 3.x version"
    ),
    "channel is neither queue nor routingKey": Case(
        COMMON,
        put((*ECHO_AMQP, "is"), "exchange"),
        "$.channels.echoQueue.bindings.amqp.is",
        "must be 'queue' or 'routingKey'",
    ),
    "queue channel without queue name": Case(
        COMMON,
        drop((*ECHO_AMQP, "queue", "name")),
        "$.channels.echoQueue.bindings.amqp.queue",
        "queue has no name",
    ),
    "unknown exchange type": Case(
        COMMON,
        put(("channels", "jobs", "bindings", "amqp", "exchange", "type"), "x-delayed-message"),
        "$.channels.jobs.bindings.amqp.exchange.type",
        "exchange type must be one of topic, direct, fanout, headers",
    ),
    "receive from an exchange": Case(
        ECHOER,
        put(
            ("operations", "handleEcho"),
            {
                "action": "receive",
                "channel": {"$ref": "#/channels/replies"},
                "messages": [{"$ref": "#/channels/replies/messages/reply"}],
            },
        ),
        "$.operations.handleEcho",
        "receive operation on a channel that is not a queue",
    ),
}


REPLY_CASES = {
    "reply not a mapping": rpc(
        REQUESTER,
        put((*PING, "reply"), "$message.header#/replyTo"),
        "$.operations.ping.reply",
        "reply must be a mapping",
    ),
    "reply address other than the replyTo header": rpc(
        REQUESTER,
        put((*PING, "reply", "address", "location"), "$message.payload#/replyTo"),
        "$.operations.ping.reply.address.location",
        REPLY_LOCATION,
    ),
    "reply without address": rpc(
        RESPONDER,
        drop((*ANSWER, "reply", "address")),
        "$.operations.answerPing.reply",
        REPLY_LOCATION,
    ),
    "reply without channel": rpc(
        REQUESTER,
        drop((*PING, "reply", "channel")),
        "$.operations.ping.reply",
        "operation has no channel $ref",
    ),
    "reply channel not in its document": rpc(
        REQUESTER,
        put((*PING, "reply", "channel"), {"$ref": "./common.asyncapi.yaml#/channels/pingReplies"}),
        "$.operations.ping.reply.channel",
        "operation channel './common.asyncapi.yaml#/channels/pingReplies' is not in this document",
    ),
    "reply on an unknown channel": rpc(
        RESPONDER,
        put((*ANSWER, "reply", "channel"), {"$ref": "#/channels/nowhere"}),
        "$.operations.answerPing.reply.channel",
        "operation on unknown channel 'nowhere'",
    ),
    "reply channel is a queue": rpc(
        REQUESTER,
        put((*PING, "reply", "channel"), {"$ref": "#/channels/pingRequests"}),
        "$.operations.ping.reply.channel",
        NOT_DYNAMIC,
    ),
    "reply channel is an exchange": rpc(
        REQUESTER,
        put((*PING, "reply", "channel"), {"$ref": "#/channels/rpc"}),
        "$.operations.ping.reply.channel",
        NOT_DYNAMIC,
    ),
    "reply channel with address null but bindings": rpc(
        COMMON,
        put(
            ("channels", "pingReplies", "bindings"),
            {"amqp": {"is": "routingKey", "exchange": {"name": "rpc", "type": "direct"}}},
        ),
        "$.operations.answerPing.reply.channel",
        NOT_DYNAMIC,
        reported_in=RESPONDER,
    ),
    "reply channel with a static address": rpc(
        COMMON,
        put(("channels", "pingReplies", "address"), "rpc/replies"),
        "$.channels.pingReplies",
        "channel bindings.amqp.is must be 'queue' or 'routingKey'",
    ),
    "reply without messages": rpc(
        RESPONDER,
        drop((*ANSWER, "reply", "messages")),
        "$.operations.answerPing.reply",
        "operation must list exactly one message",
    ),
    "reply with two messages": rpc(
        REQUESTER,
        put(
            (*PING, "reply", "messages"),
            [{"$ref": "#/channels/pingReplies/messages/pingReply"}] * 2,
        ),
        "$.operations.ping.reply.messages",
        "operation must list exactly one message",
    ),
    "receive reply message not on the reply channel": rpc(
        RESPONDER,
        put(
            (*ANSWER, "reply", "messages"),
            [{"$ref": "#/channels/pingRequests/messages/pingRequest"}],
        ),
        "$.operations.answerPing.reply.messages[0]",
        "operation message is not among its channel's messages",
    ),
    "send reply message of another reply channel": rpc(
        REQUESTER,
        put(
            (*PING, "reply", "messages"),
            [{"$ref": "#/channels/lookupReplies/messages/lookupReply"}],
        ),
        "$.operations.ping.reply.messages[0]",
        "operation message is not among its channel's messages",
    ),
    "send on a reply channel": rpc(
        REQUESTER,
        both(
            put((*PING, "channel"), {"$ref": "#/channels/pingReplies"}),
            put((*PING, "messages"), [{"$ref": "#/channels/pingReplies/messages/pingReply"}]),
        ),
        "$.operations.ping.channel",
        "operation on a reply channel (address: null)",
    ),
    "receive on a reply channel": rpc(
        RESPONDER,
        both(
            put((*ANSWER, "channel"), {"$ref": "#/channels/pingReplies"}),
            put((*ANSWER, "messages"), [{"$ref": "#/channels/pingReplies/messages/pingReply"}]),
        ),
        "$.operations.answerPing.channel",
        "operation on a reply channel (address: null)",
    ),
    "request with deliveryMode 3": rpc(
        REQUESTER,
        put((*PING, "bindings", "amqp", "deliveryMode"), 3),
        "$.operations.ping.bindings.amqp.deliveryMode",
        "send operation must use deliveryMode: 2 (persistent)",
    ),
    "request without deliveryMode": rpc(
        REQUESTER,
        drop((*PING, "bindings", "amqp", "deliveryMode")),
        "$.operations.ping.bindings.amqp",
        "send operation must use deliveryMode: 2 (persistent)",
    ),
    "runtime status on a send without a reply": rpc(
        REQUESTER,
        both(
            drop((*PING, "reply")),
            put((*PING, "bindings", "amqp", "deliveryMode"), 2),
            put((*PING, "x-spectask-runtime"), "status"),
        ),
        "$.operations.ping.x-spectask-runtime",
        "x-spectask-runtime: status belongs on a send operation with a reply",
    ),
    "runtime cancellations on a receive with a reply": rpc(
        RESPONDER,
        put((*ANSWER, "x-spectask-runtime"), "cancellations"),
        "$.operations.answerPing.x-spectask-runtime",
        "x-spectask-runtime: cancellations belongs on a receive operation without a reply",
    ),
    "unknown runtime kind": rpc(
        REQUESTER,
        put((*PING, "x-spectask-runtime"), "telepathy"),
        "$.operations.ping.x-spectask-runtime",
        "unknown x-spectask-runtime 'telepathy'",
    ),
    "status operation whose request is not task_ids": rpc(
        REQUESTER,
        put((*PING, "x-spectask-runtime"), "status"),
        "$.operations.ping",
        "the status operation ping must take {task_ids: array of string}",
    ),
    "runtime extension on a channel": rpc(
        COMMON,
        put(("channels", "pingRequests", "x-spectask-runtime"), "status"),
        "$.channels.pingRequests.x-spectask-runtime",
        "unknown or misplaced extension 'x-spectask-runtime'",
    ),
}


def _mutated(tmp_path: Path, case: Case) -> Path:
    spec = tmp_path / "spec"
    shutil.copytree(case.spec, spec)
    document = spec / case.file
    data = yaml.safe_load(document.read_text())
    case.mutate(data)
    document.write_text(yaml.safe_dump(data, sort_keys=False))
    return spec


ALL_CASES = {**CASES, **REPLY_CASES}


@pytest.mark.parametrize("case", ALL_CASES.values(), ids=ALL_CASES.keys())
def test_invalid_spec_is_reported_and_nothing_written(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _mutated(tmp_path, case)
    out = tmp_path / "generated"
    assert main(["--spec", str(spec), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    location = f"{spec / (case.reported_in or case.file)}: {case.json_path}: "
    lines = err.splitlines()
    matching = [i for i, line in enumerate(lines) if line.startswith(location)]
    assert matching, f"no error at {location}\n{err}"
    assert any(case.message in lines[i] for i in matching), err
    assert all(lines[i + 1].startswith("  hint: ") and len(lines[i + 1]) > 10 for i in matching)
    assert not out.exists()


def test_all_errors_are_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _mutated(tmp_path, CASES["maxAttempts below 1"])
    client = spec / CLIENT
    data = yaml.safe_load(client.read_text())
    data["operations"]["sayEcho"]["action"] = "publish"
    client.write_text(yaml.safe_dump(data))
    assert main(["--spec", str(spec), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "$.operations.sayEcho.action" in err
    assert "x-spectask-policy.maxAttempts" in err
    assert "2 error(s)" in err


def test_existing_output_is_left_alone_on_errors(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    assert main(["--spec", str(FIXTURE_SPEC), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    spec = _mutated(tmp_path, CASES["asyncapi 2"])
    assert main(["--spec", str(spec), "--out", str(out)]) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_unparsable_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec"
    shutil.copytree(FIXTURE_SPEC, spec)
    (spec / CLIENT).write_text("asyncapi: [3.0.0\n")
    assert main(["--spec", str(spec), "--out", str(tmp_path / "out")]) == 1
    assert f"{spec / CLIENT}: $: not valid YAML" in capsys.readouterr().err


def test_missing_spec_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--spec", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 1
    assert "no *.asyncapi.yaml files" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_status_reply_without_tasks_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`wait()` reads `tasks[].state`: a status operation must answer that shape."""
    spec = tmp_path / "spec"
    shutil.copytree(RPC_SPEC, spec)
    common = yaml.safe_load((spec / COMMON).read_text())
    common["components"]["schemas"]["PingRequest"] = {
        "type": "object",
        "required": ["task_ids"],
        "properties": {"task_ids": {"type": "array", "items": {"type": "string"}}},
    }
    (spec / COMMON).write_text(yaml.safe_dump(common, sort_keys=False))
    requester = yaml.safe_load((spec / REQUESTER).read_text())
    requester["operations"]["ping"]["x-spectask-runtime"] = "status"
    (spec / REQUESTER).write_text(yaml.safe_dump(requester, sort_keys=False))
    assert main(["--spec", str(spec), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"{spec / REQUESTER}: $.operations.ping: the reply of the status operation ping" in err
    assert "task_id and state" in err
