"""The transition rule (`spectask.store.states.advance`) and the observation converters.

Pure functions, no database: table tests for each rule, and hypothesis properties for what
at-least-once, out-of-order delivery needs (any arrival order, any duplicates, same record).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from generated import models
from generated.worker import PUBLISH_DEAD_LETTER
from spectask.runtime.deadletter import DeadReason, build_dead_letter
from spectask.store import (
    ErrorDetail,
    EventKind,
    Observation,
    TaskRecord,
    TaskState,
    advance,
    observation_from_dead_letter,
    observation_from_event,
    observation_from_result,
    state_of,
)
from spectask.store.states import STATE_OF_KIND, TERMINAL_STATES, record_position
from tests.store_support import EXPECTED, OUTCOMES, T0, Scenario, history

# No example database in the repository; no deadline (CI machines are slow and shared).
PROPERTY = settings(database=None, deadline=None, max_examples=300)
NOW = datetime(2031, 1, 1, tzinfo=UTC)
CLOCK = itertools.count()


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def obs(kind: EventKind, ms: int = 0, attempt: int = 1, **fields: Any) -> Observation:
    return Observation(task_id="t1", kind=kind, at=at(ms), attempt=attempt, **fields)


def fold(observations: Iterable[Observation], record: TaskRecord | None = None) -> TaskRecord:
    """Apply in order, with a store clock that moves on every apply."""
    for observation in observations:
        record = advance(record, observation, now=NOW + timedelta(seconds=next(CLOCK)))
    assert record is not None
    return record


def comparable(record: TaskRecord) -> TaskRecord:
    """The record without the store's clock (which differs by arrival order on purpose)."""
    return replace(record, updated_at=NOW)


# --- the rules, one by one ---------------------------------------------------------------


def test_unknown_is_the_state_of_an_id_never_seen() -> None:
    assert state_of(None) is TaskState.UNKNOWN
    assert TaskState.UNKNOWN not in TERMINAL_STATES


@pytest.mark.parametrize(("kind", "state"), sorted(STATE_OF_KIND.items()))
def test_every_event_kind_reaches_its_state_from_nothing(kind: EventKind, state: TaskState) -> None:
    record = fold([obs(kind, message_type="a.b", worker_id="w")])
    assert record.state is state
    assert record.attempts == 1
    assert record.message_type == "a.b"
    assert record.is_final is (state in TERMINAL_STATES)
    assert record.finished_at == (at(0) if record.is_final else None)


def test_a_duplicate_returns_the_same_record_object() -> None:
    event = obs(EventKind.PROGRESS, 5, progress=40.0, worker_id="w")
    record = fold([obs(EventKind.STARTED, 1, worker_id="w"), event])
    assert advance(record, event, now=NOW + timedelta(days=9)) is record


def test_a_late_started_after_succeeded_only_fills_missing_fields() -> None:
    done = fold([obs(EventKind.SUCCEEDED, 10, result={"x": 1})])
    assert done.started_at is None and done.worker_id is None
    late = fold([obs(EventKind.STARTED, 2, worker_id="w1", started_at=at(2))], done)
    assert late.state is TaskState.SUCCEEDED
    assert late.finished_at == at(10)
    assert (late.started_at, late.worker_id, late.result) == (at(2), "w1", {"x": 1})


def test_a_stale_event_of_an_older_attempt_never_overrides_a_newer_one() -> None:
    newer = fold([obs(EventKind.STARTED, 20, attempt=2, worker_id="w2")])
    for stale in (EventKind.SUBMITTED, EventKind.STARTED, EventKind.PROGRESS, EventKind.RETRYING):
        record = fold([obs(stale, 5, attempt=1, progress=90.0, worker_id="w1")], newer)
        assert (record.state, record.attempts, record.progress) == (TaskState.STARTED, 2, None)


def test_within_an_attempt_queued_then_started_then_retrying() -> None:
    steps = [EventKind.SUBMITTED, EventKind.STARTED, EventKind.RETRYING]
    for order in itertools.permutations(steps):
        assert fold(obs(kind, index) for index, kind in enumerate(order)).state is (
            TaskState.RETRYING
        )
    # the retry of attempt 1 is queued as attempt 2: above RETRYING of attempt 1
    record = fold([obs(EventKind.RETRYING, 5), obs(EventKind.SUBMITTED, 6, attempt=2)])
    assert (record.state, record.attempts) == (TaskState.QUEUED, 2)


def test_progress_only_increases_within_an_attempt_and_resets_with_the_next() -> None:
    record = fold(
        [
            obs(EventKind.PROGRESS, 1, progress=50.0, progress_message="half"),
            obs(EventKind.PROGRESS, 2, progress=20.0, progress_message="stale"),
        ]
    )
    assert (record.progress, record.progress_message) == (50.0, "half")
    record = fold([obs(EventKind.STARTED, 3, attempt=2)], record)
    assert (record.progress, record.progress_message) == (None, None)
    record = fold([obs(EventKind.PROGRESS, 4, attempt=1, progress=99.0)], record)
    assert record.progress is None
    succeeded = fold([obs(EventKind.SUCCEEDED, 5, attempt=2)], record)
    assert (succeeded.progress, succeeded.progress_message) == (100.0, None)


def test_a_retrying_failure_keeps_its_error_until_the_next_attempt() -> None:
    error = ErrorDetail("OSError", "disk full")
    record = fold([obs(EventKind.STARTED, 1), obs(EventKind.RETRYING, 2, error=error)])
    assert (record.state, record.error) == (TaskState.RETRYING, error)
    record = fold([obs(EventKind.STARTED, 3, attempt=2)], record)
    assert (record.state, record.error) == (TaskState.STARTED, None)


FAILED = ErrorDetail("ValueError", "bad input", "Traceback ...")


@pytest.mark.parametrize(
    ("first", "second", "state", "error", "dead_reason"),
    [
        # DEAD then a duplicate FAILED result of the same final attempt: DEAD, error filled
        (EventKind.DEAD, EventKind.FAILED, TaskState.DEAD, FAILED, "attempts_exhausted"),
        (EventKind.FAILED, EventKind.DEAD, TaskState.DEAD, FAILED, "attempts_exhausted"),
        # a success stands: the result exists, whatever failure is reported around it
        (EventKind.SUCCEEDED, EventKind.DEAD, TaskState.SUCCEEDED, None, None),
        (EventKind.DEAD, EventKind.SUCCEEDED, TaskState.SUCCEEDED, None, None),
        (EventKind.FAILED, EventKind.SUCCEEDED, TaskState.SUCCEEDED, None, None),
        (EventKind.CANCELLED, EventKind.SUCCEEDED, TaskState.SUCCEEDED, None, None),
        # a cancellation explains the failure or dead letter that follows it
        (EventKind.CANCELLED, EventKind.FAILED, TaskState.CANCELLED, FAILED, None),
        (EventKind.DEAD, EventKind.CANCELLED, TaskState.CANCELLED, FAILED, None),
    ],
)
def test_terminal_conflicts(
    first: EventKind,
    second: EventKind,
    state: TaskState,
    error: ErrorDetail | None,
    dead_reason: str | None,
) -> None:
    def outcome(kind: EventKind, ms: int) -> Observation:
        return obs(
            kind,
            ms,
            attempt=3,
            error=FAILED if kind is not EventKind.SUCCEEDED else None,
            dead_reason="attempts_exhausted" if kind is EventKind.DEAD else None,
            result={"ok": True} if kind is EventKind.SUCCEEDED else None,
        )

    for ms in ((10, 20), (20, 10)):  # event times either way round
        one, two = outcome(first, ms[0]), outcome(second, ms[1])
        forward, backward = fold([one, two]), fold([two, one])
        assert comparable(forward) == comparable(backward)
        assert (forward.state, forward.error, forward.dead_reason) == (state, error, dead_reason)
        assert forward.result == ({"ok": True} if state is TaskState.SUCCEEDED else None)


def test_the_first_outcome_stands_among_duplicates_of_one_terminal_state() -> None:
    early = obs(EventKind.SUCCEEDED, 10, worker_id="a", result={"run": "first"})
    late = obs(EventKind.SUCCEEDED, 30, worker_id="b", result={"run": "second"})
    for order in ([early, late], [late, early]):
        record = fold(order)
        assert (record.result, record.finished_at) == ({"run": "first"}, at(10))
        assert record.worker_id == "b"  # the worker heard from last


def test_a_redelivered_task_shows_the_worker_running_it_now() -> None:
    crashed = obs(EventKind.STARTED, 1, worker_id="crashed", started_at=at(1))
    running = obs(EventKind.STARTED, 9, worker_id="alive", started_at=at(9))
    for order in ([crashed, running], [running, crashed]):
        record = fold(order)
        assert (record.worker_id, record.started_at, record.state_at) == ("alive", at(1), at(9))


def test_a_result_or_event_for_another_task_is_refused() -> None:
    record = fold([obs(EventKind.SUBMITTED)])
    with pytest.raises(ValueError, match="applied to record"):
        advance(record, replace(obs(EventKind.STARTED), task_id="t2"), now=NOW)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"attempt": 0}, "attempt"),
        ({"progress": 100.5}, "progress"),
        ({"at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"task_id": ""}, "task id"),
    ],
)
def test_observations_refuse_impossible_values(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"task_id": "t", "kind": EventKind.PROGRESS, "at": at(0)}
    with pytest.raises(ValueError, match=message):
        Observation(**(values | fields))


def test_times_are_kept_in_utc() -> None:
    local = datetime(2030, 1, 1, 12, tzinfo=UTC).astimezone(timezone(timedelta(hours=5)))
    assert obs(EventKind.SUBMITTED).at.tzinfo is UTC
    assert Observation(task_id="t", kind=EventKind.SUBMITTED, at=local).at.tzinfo is UTC


# --- properties ----------------------------------------------------------------------------

scenarios = st.builds(
    Scenario,
    outcome=st.sampled_from(OUTCOMES),
    attempts=st.integers(min_value=1, max_value=4),
    progress=st.lists(st.integers(0, 100).map(float), max_size=4).map(lambda xs: tuple(sorted(xs))),
    redelivered=st.booleans(),
)


@PROPERTY
@given(scenario=scenarios, data=st.data())
def test_any_arrival_order_with_duplicates_gives_the_in_order_record(
    scenario: Scenario, data: st.DataObject
) -> None:
    events = history("t1", scenario)
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
    arrival = data.draw(st.permutations(events + duplicates))
    in_order = fold(events)
    assert in_order.state is EXPECTED[scenario.outcome]
    assert comparable(fold(arrival)) == comparable(in_order)


@PROPERTY
@given(scenario=scenarios)
def test_each_scenario_ends_with_the_right_details(scenario: Scenario) -> None:
    record = fold(history("t1", scenario))
    running = scenario.outcome not in ("queued", "cancelled_queued")
    assert record.attempts == (scenario.attempts if running else 1)
    assert record.submitted_at is not None
    assert (record.started_at is not None) is running
    if record.state is TaskState.SUCCEEDED:
        assert record.result is not None and record.error is None and record.progress == 100
    else:
        assert record.result is None
        if running:
            assert record.progress == max(scenario.progress, default=None)
    if record.state in (TaskState.FAILED, TaskState.RETRYING, TaskState.CANCELLED):
        assert record.error is not None
    assert (record.dead_reason is not None) is (record.state is TaskState.DEAD)


kinds = st.sampled_from(list(EventKind))
arbitrary = st.builds(
    Observation,
    task_id=st.just("t1"),
    kind=kinds,
    at=st.integers(0, 50).map(at),
    attempt=st.integers(1, 4),
    worker_id=st.none() | st.sampled_from(["w1", "w2"]),
    progress=st.none() | st.integers(0, 100).map(float),
    error=st.none() | st.just(FAILED),
    result=st.none() | st.just({"x": 1}),
    dead_reason=st.none() | st.just("timeout"),
)
DETERMINED = ("state", "attempts", "progress", "state_at", "finished_at", "started_at")


@PROPERTY
@given(events=st.lists(arbitrary, min_size=1, max_size=12), data=st.data())
def test_even_arbitrary_observations_determine_state_in_any_order(
    events: list[Observation], data: st.DataObject
) -> None:
    arrival = data.draw(st.permutations(events))
    forward, shuffled = fold(events), fold(arrival)
    for name in DETERMINED:
        assert getattr(shuffled, name) == getattr(forward, name), name


@PROPERTY
@given(events=st.lists(arbitrary, min_size=1, max_size=12))
def test_never_backwards(events: list[Observation]) -> None:
    """Terminal stays terminal, the position never drops, progress never drops in an attempt."""
    before = advance(None, events[0], now=NOW)
    for event in events[1:]:
        after = advance(before, event, now=NOW)
        assert record_position(after) >= record_position(before)
        if before.is_final:
            assert after.is_final
        if after.attempts == before.attempts and before.progress is not None:
            assert after.progress is not None and after.progress >= before.progress
        assert advance(after, event, now=NOW) is after  # applying it again changes nothing
        before = after


# --- converters from the generated models --------------------------------------------------


def test_a_task_event_becomes_an_observation() -> None:
    event = models.TaskEvent.model_validate(
        {
            "task_id": "t1",
            "event": "progress",
            "message_type": "report_generation.pdf",
            "worker_id": "w1",
            "at": "2030-01-02T03:04:05.123456+02:00",
            "attempt": 2,
            "progress": 42.5,
            "message": "rendering page 3",
        }
    )
    seen = observation_from_event(event)
    assert (seen.kind, seen.attempt, seen.progress) == (EventKind.PROGRESS, 2, 42.5)
    assert seen.progress_message == "rendering page 3"
    assert seen.at == datetime(2030, 1, 2, 1, 4, 5, 123456, tzinfo=UTC)
    bare = observation_from_event(models.TaskEvent(task_id="t1", event="submitted", at=T0))
    assert (bare.attempt, bare.submitted_at, bare.progress_message) == (1, T0, None)


def test_failure_events_say_why() -> None:
    retry = models.TaskEvent(task_id="t", event="retrying", at=T0, message="broker hiccup")
    assert observation_from_event(retry).error == ErrorDetail("retrying", "broker hiccup")
    dead = models.TaskEvent(task_id="t", event="dead", at=T0, message="attempts_exhausted")
    assert observation_from_event(dead).dead_reason == "attempts_exhausted"


def test_a_task_result_becomes_its_outcome() -> None:
    result = models.TaskResult.model_validate(
        {
            "task_id": "t1",
            "message_type": "data_analysis.statistics",
            "status": "failed",
            "worker_id": "w3",
            "attempt": 3,
            "submitted_at": "2030-01-01T00:00:00+00:00",
            "started_at": "2030-01-01T00:00:01+00:00",
            "finished_at": "2030-01-01T00:00:02+00:00",
            "error": {"type": "ValueError", "message": "empty", "traceback": "..."},
        }
    )
    seen = observation_from_result(result)
    assert (seen.kind, seen.attempt, seen.worker_id) == (EventKind.FAILED, 3, "w3")
    assert seen.error == ErrorDetail("ValueError", "empty", "...")
    assert seen.at == datetime(2030, 1, 1, 0, 0, 2, tzinfo=UTC)
    ok = observation_from_result(result.model_copy(update={"status": "succeeded", "error": None}))
    assert (ok.kind, ok.error) == (EventKind.SUCCEEDED, None)


def test_a_dead_letter_becomes_the_dead_outcome() -> None:
    headers = models.DeadLetterHeaders.model_validate(
        {
            "x-spectask-reason": "schema_violation",
            "x-spectask-error": "width: must be >= 1",
            "x-spectask-attempts": 0,
            "x-spectask-origin-queue": "tasks.image_processing",
            "x-spectask-origin-exchange": "tasks",
            "x-spectask-origin-routing-key": "image_processing.resize",
        }
    )
    seen = observation_from_dead_letter(
        headers, task_id="t9", message_type="image_processing.resize", received_at=T0
    )
    assert (seen.kind, seen.attempt, seen.at, seen.dead_reason) == (
        EventKind.DEAD,
        1,
        T0,
        "schema_violation",
    )
    assert seen.error == ErrorDetail("schema_violation", "width: must be >= 1")


# --- a final failure of spectask's own worker: DEAD once, whichever message comes first -------


def worker_result(
    error: dict[str, str], *, dead_reason: str | None, finished_at: datetime = T0
) -> models.TaskResult:
    """The failed result a worker publishes for its last attempt (as `_result` builds it)."""
    document: dict[str, Any] = {
        "task_id": "t1",
        "message_type": "data_analysis.statistics",
        "status": "failed",
        "worker_id": "w1",
        "attempt": 3,
        "submitted_at": T0 - timedelta(seconds=5),
        "started_at": T0 - timedelta(seconds=1),
        "finished_at": finished_at,
        "error": error,
    }
    if dead_reason is not None:
        document["dead_reason"] = dead_reason
    return models.TaskResult.model_validate(document)


def worker_dead_letter(error: dict[str, str], reason: str, *, failed_at: datetime) -> Observation:
    """The same failure's dead letter, built by the runtime's own `build_dead_letter` with what
    `Outcomes.failed` passes it, read back as the collector reads it."""
    message = build_dead_letter(
        PUBLISH_DEAD_LETTER,
        body=b"{}",
        message_id="t1",
        message_type="spectask.task.data_analysis.statistics",
        original_headers={},
        reason=DeadReason(reason),
        error=f"{error['type']}: {error['message']}",
        origin_queue="tasks.data_analysis",
        origin_exchange="tasks",
        origin_routing_key="data_analysis.statistics",
        attempts=3,
        traceback=error.get("traceback", ""),
    )
    headers = {**message.headers, "x-spectask-last-failure-at": failed_at.isoformat()}
    return observation_from_dead_letter(
        models.DeadLetterHeaders.model_validate(headers),
        task_id="t1",
        message_type="data_analysis.statistics",
        received_at=NOW,
    )


WORKER_FAILURES = [
    pytest.param(
        {"type": "PermanentTaskError", "message": "hopeless", "traceback": "Traceback ...\n"},
        "permanent",
        id="permanent",
    ),
    pytest.param(
        {"type": "timeout", "message": "ran past its time limit of 1s"}, "timeout", id="timeout"
    ),
    pytest.param(
        {"type": "ValueError", "message": "no data", "traceback": "Traceback ...\n"},
        "attempts_exhausted",
        id="attempts_exhausted",
    ),
]


def test_a_failed_result_that_names_its_dead_reason_is_dead() -> None:
    error = {"type": "PermanentTaskError", "message": "hopeless", "traceback": "..."}
    seen = observation_from_result(worker_result(error, dead_reason="permanent"))
    assert (seen.kind, seen.dead_reason, seen.worker_id) == (EventKind.DEAD, "permanent", "w1")
    assert seen.error == ErrorDetail("permanent", "PermanentTaskError: hopeless", "...")
    assert fold([seen]).state is TaskState.DEAD


def test_a_plain_failed_result_stays_failed() -> None:
    """A worker that does not say it dead-lettered the task (a foreign one): FAILED, as sent."""
    error = {"type": "ValueError", "message": "empty", "traceback": "..."}
    seen = observation_from_result(worker_result(error, dead_reason=None))
    assert (seen.kind, seen.dead_reason) == (EventKind.FAILED, None)
    assert seen.error == ErrorDetail("ValueError", "empty", "...")
    record = fold([obs(EventKind.SUBMITTED), seen])
    assert (record.state, record.error, record.dead_reason) == (
        TaskState.FAILED,
        seen.error,
        None,
    )


@pytest.mark.parametrize("status", ["succeeded", "cancelled"])
def test_only_a_failed_result_is_made_dead_by_its_dead_reason(status: str) -> None:
    result = worker_result({"type": "x", "message": "y"}, dead_reason="permanent")
    seen = observation_from_result(result.model_copy(update={"status": status}))
    assert (seen.kind.value, seen.dead_reason) == (status, None)


@pytest.mark.parametrize(("error", "reason"), WORKER_FAILURES)
@pytest.mark.parametrize("letter_ms", [-3, 0, 3], ids=["letter-first", "same-time", "clock-step"])
def test_the_result_and_the_dead_letter_say_dead_in_either_order(
    error: dict[str, str], reason: str, letter_ms: int
) -> None:
    """DEAD from the first of the two, never FAILED; the same error and reason after both.

    The worker builds the dead letter just before the result (`letter-first`), but clocks
    may also tie or step back; none of it may change what the record says.
    """
    result = observation_from_result(worker_result(error, dead_reason=reason))
    letter = worker_dead_letter(error, reason, failed_at=T0 + timedelta(milliseconds=letter_ms))
    submitted = obs(EventKind.SUBMITTED, -5000, attempt=3)
    records = {}
    for order in ((result, letter), (letter, result)):
        first = fold([submitted, order[0]])
        both = fold([order[1]], first)
        assert first.state is both.state is TaskState.DEAD, order[0].kind
        assert (both.error, both.dead_reason) == (first.error, first.dead_reason)
        assert first.dead_reason == reason and first.error is not None
        assert first.error.type == reason
        assert first.error.message == f"{error['type']}: {error['message']}"
        records[order[0] is result] = both
    assert comparable(records[True]) == comparable(records[False])
    assert records[True].worker_id == "w1"  # the result's details fill in either way


@PROPERTY
@given(data=st.data())
def test_a_task_dead_by_the_worker_is_dead_from_its_first_final_observation(
    data: st.DataObject,
) -> None:
    """Any arrival order, any duplicates: once final it is DEAD, and its error never changes."""
    events = history("t1", Scenario("dead_by_worker", attempts=2, redelivered=True))
    arrival = data.draw(st.permutations(events + data.draw(st.lists(st.sampled_from(events)))))
    final = fold(events)
    record = None
    for observation in arrival:
        record = fold([observation], record)
        if record.is_final:
            assert record.state is TaskState.DEAD
            assert (record.error, record.dead_reason) == (final.error, final.dead_reason)
    assert record is not None and comparable(record) == comparable(final)
