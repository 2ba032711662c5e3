"""Sync handlers in child processes: time limits that stop the handler, crashes that fail a task.

A thread cannot be stopped from outside: a sync handler that overruns its time limit in a thread
keeps its CPU and memory for as long as it likes. Here each of `size` slots is a child process
that takes one task at a time over a socket. On timeout the slot's process gets SIGTERM (Python
code unwinds, `finally` blocks run), then SIGKILL after a short grace, and a fresh process takes
the slot. A slot process that dies (segfault, `os._exit`, the OOM killer) fails only its task.

Children come from the `forkserver` start method: a small single-threaded server process, not a
fork of the worker with its event loop and threads. The server imports the handlers' module
once, so a slot (re)starts in milliseconds and shares those pages. Handlers and payloads cross
by pickle: module-level functions, `functools.partial` over them and the generated pydantic
models all do. A handler is sent to each slot once and cached there; after that a task costs
one small round trip (pickled payload and context out, the JSON-ready result back).

While a handler runs, its progress reports (`ctx.progress`) come back over the same socket as
frames ahead of the answer, throttled in the child; a cancellation reaches it through a flag
in shared memory, one per slot, that `ctx.cancelled` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from types import FrameType
from typing import Any, Literal

from spectask.errors import TaskCancelledError
from spectask.runtime.context import NO_SIGNALS, TaskContext, check_percent
from spectask.runtime.control import TaskSignals, Throttle

log = logging.getLogger(__name__)

SyncHandler = Callable[[Any, Any], object]
Finish = Callable[[object], object]

KILL_GRACE_SECONDS = 0.5
EXIT_WAIT_SECONDS = 2.0
_HEADER = struct.Struct("!Q")
_OK, _ERROR, _PROGRESS = 0, 1, 2
DEFAULT_PROGRESS_INTERVAL = 0.5
_PICKLE = pickle.HIGHEST_PROTOCOL


class TaskTimeoutError(Exception):
    """The handler ran past its task type's time limit."""


class HandlerCrashedError(Exception):
    """The process running a handler died before answering (signal, `os._exit`, OOM kill)."""


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in a slot process (as its cause)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\nin the handler process:\n{self.text}"


class RemoteHandlerError(Exception):
    """A handler's exception that could not be sent back as itself (it does not pickle)."""


@dataclass(eq=False)
class _Slot:
    process: BaseProcess
    sock: socket.socket
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    cancel_flag: Any  # a shared c_byte (multiprocessing RawValue): 1 once the task is cancelled
    handlers: set[int] = field(default_factory=set)


class ProcessPool:
    """`size` slot processes running sync handlers; see the module docstring.

    `finish` runs in the child on each handler's return value (so only plain data crosses back);
    it and every handler must be picklable (`accepts` checks a handler once).
    """

    def __init__(
        self,
        size: int,
        finish: Finish,
        *,
        start_method: Literal["forkserver", "spawn"] = "forkserver",
        kill_grace: float = KILL_GRACE_SECONDS,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        self._context = (
            multiprocessing.get_context("spawn")
            if start_method == "spawn"
            else multiprocessing.get_context("forkserver")
        )
        self._finish = finish
        self._kill_grace = kill_grace
        self._progress_interval = progress_interval
        self._free = asyncio.Semaphore(size)
        self._idle: list[_Slot] = []
        self._busy: set[_Slot] = set()
        self._stopped: list[BaseProcess] = []
        self._keys: dict[SyncHandler, int] = {}
        self._pickled: dict[int, bytes] = {}
        self._started = False
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the live slots (idle or busy)."""
        slots = [*self._idle, *self._busy]
        return sorted(slot.process.pid for slot in slots if slot.process.pid is not None)

    def accepts(self, handler: SyncHandler) -> bool:
        """Whether the handler pickles (and so can run here); the bytes are kept for the slots."""
        if handler in self._keys:
            return True
        try:
            data = pickle.dumps(handler, _PICKLE)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            log.debug("handler %r does not pickle: %s", handler, exc)
            return False
        key = self._keys[handler] = len(self._keys)
        self._pickled[key] = data
        return True

    async def run(
        self,
        handler: SyncHandler,
        payload: object,
        context: Any,
        time_limit: float,
        signals: TaskSignals | None = None,
    ) -> object:
        """Run `handler(payload, context)` in a slot; the time limit starts once a slot is free.

        With `signals`, the handler's progress reports reach them and their cancellation
        reaches the handler (a TaskContext's own signals stay behind: they do not pickle).
        """
        if not self.accepts(handler):
            raise TypeError(f"handler {handler!r} cannot be pickled for a handler process")
        key = self._keys[handler]
        if isinstance(context, TaskContext):
            context = replace(context, signals=NO_SIGNALS)
        async with self._free:
            if signals is not None and signals.cancelled():
                raise TaskCancelledError("cancelled while waiting for a handler process")
            slot = await self._take(handler)
            self._busy.add(slot)
            healthy = False
            slot.cancel_flag.value = 0
            unsubscribe = (
                signals.on_cancel(functools.partial(_raise_flag, slot)) if signals else None
            )
            try:
                reply = await self._call(slot, key, payload, context, time_limit, signals)
                healthy = True
            finally:
                if unsubscribe is not None:
                    unsubscribe()
                self._busy.discard(slot)
                if healthy and not self._closed:
                    self._idle.append(slot)
                elif healthy:
                    self._retire(slot)
        return self._unpack(reply)

    async def _take(self, handler: SyncHandler) -> _Slot:
        while self._idle:
            slot = self._idle.pop()
            if not slot.reader.at_eof():
                return slot
            self._retire(slot)  # died while idle; nobody was waiting on it
        return await self._start(handler)

    async def _start(self, handler: SyncHandler) -> _Slot:
        if self._closed:
            raise RuntimeError("the handler process pool is closed")
        module = _module_of(handler)
        if not self._started and self._context.get_start_method() == "forkserver":
            # The server imports these once; each slot forked from it starts warm.
            preload = ["__main__", module] if module == "__main__" else [module]
            self._context.set_forkserver_preload(preload)
        self._started = True
        ours, theirs = socket.socketpair()
        cancel_flag = self._context.RawValue("b", 0)
        process = self._context.Process(
            target=_serve,
            args=(theirs, self._finish, cancel_flag, self._progress_interval),
            name="spectask-handler",
            daemon=True,
        )
        try:
            # Off the loop: the first start waits for the fork server to import the handlers.
            await asyncio.to_thread(_start_without_main, process, module == "__main__")
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return _Slot(process, ours, reader, writer, cancel_flag)

    async def _call(
        self,
        slot: _Slot,
        key: int,
        payload: object,
        context: Any,
        time_limit: float,
        signals: TaskSignals | None,
    ) -> tuple[Any, ...]:
        handler = None if key in slot.handlers else self._pickled[key]
        request = pickle.dumps((key, handler, payload, context), _PICKLE)
        try:
            async with asyncio.timeout(time_limit):
                slot.writer.write(_HEADER.pack(len(request)) + request)
                await slot.writer.drain()
                while True:
                    size = _HEADER.unpack(await slot.reader.readexactly(_HEADER.size))[0]
                    reply: tuple[Any, ...] = pickle.loads(await slot.reader.readexactly(size))
                    if reply[0] != _PROGRESS:
                        break
                    if signals is not None:
                        signals.forward(reply[1], reply[2])
        except TimeoutError:
            await self._stop(slot)
            raise TaskTimeoutError(
                f"handler exceeded its time limit of {time_limit:g}s; "
                f"its process (pid {slot.process.pid}) was stopped"
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self._stop(slot, wait=EXIT_WAIT_SECONDS)
            raise HandlerCrashedError(_crash_message(slot.process, context)) from exc
        except BaseException:  # cancelled (worker shutdown) mid-task: nobody wants the result
            slot.process.kill()
            self._retire(slot)
            raise
        if reply[0] == _OK:
            slot.handlers.add(key)  # cached there now (after an error, send it again)
        return reply

    async def _stop(self, slot: _Slot, wait: float = 0.0) -> None:
        """End a slot's process: wait `wait` for it to exit, SIGTERM, grace, SIGKILL; reap it."""
        process = slot.process
        self._close_transport(slot)
        try:
            if wait and await _exited(process, wait):
                return
            process.terminate()
            if await _exited(process, self._kill_grace):
                return
            process.kill()
            if not await _exited(process, EXIT_WAIT_SECONDS):
                log.error("handler process %s did not exit after SIGKILL", process.pid)
        except BaseException:  # cancelled while stopping it: make sure it dies
            process.kill()
            raise
        finally:
            if process.exitcode is None:
                self._stopped.append(process)  # reaped later (or at close)

    def _retire(self, slot: _Slot) -> None:
        """Let a slot go without waiting: closing its socket makes an idle child exit."""
        self._close_transport(slot)
        # `exitcode` reaps the ones that are gone, so the list stays short in a long run.
        self._stopped = [process for process in self._stopped if process.exitcode is None]
        self._stopped.append(slot.process)

    @staticmethod
    def _close_transport(slot: _Slot) -> None:
        with contextlib.suppress(OSError):
            slot.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            slot.writer.close()

    def _unpack(self, reply: tuple[Any, ...]) -> object:
        if reply[0] == _OK:
            return reply[1]
        _, exc_bytes, type_name, message, remote_tb = reply
        exc: BaseException | None = None
        if exc_bytes is not None:
            with contextlib.suppress(Exception):
                exc = pickle.loads(exc_bytes)
        if not isinstance(exc, Exception):
            exc = RemoteHandlerError(f"{type_name}: {message}")
        raise exc from RemoteTraceback(remote_tb)

    def close(self) -> None:
        """Stop every slot process and reap it: idle ones exit on EOF, busy ones are killed."""
        self._closed = True
        idle, busy = self._idle, list(self._busy)
        self._idle, self._busy = [], set()
        for slot in idle:
            self._retire(slot)
        for slot in busy:
            slot.process.terminate()
            self._retire(slot)
        stopped, self._stopped = self._stopped, []
        deadline = time.monotonic() + EXIT_WAIT_SECONDS
        for process in stopped:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in stopped:
            if process.exitcode is None:
                process.kill()
                process.join(EXIT_WAIT_SECONDS)


async def _exited(process: BaseProcess, timeout: float) -> bool:
    """Wait up to `timeout` for the process to exit (its sentinel becomes readable); reap it."""
    if process.exitcode is not None:
        return True
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    sentinel = process.sentinel

    def on_exit() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(sentinel, on_exit)
    try:
        async with asyncio.timeout(timeout):
            await done
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(sentinel)
    process.join(1.0)  # the sentinel fired: this only collects the exit status
    return process.exitcode is not None


def _raise_flag(slot: _Slot) -> None:
    slot.cancel_flag.value = 1


def _crash_message(process: BaseProcess, context: Any) -> str:
    task = getattr(context, "task_id", None)
    what = f"task {task}" if task else "a task"
    code = process.exitcode
    if code is None:
        how = "it closed its connection without answering and was killed"
    elif code < 0:
        name = _signal_name(-code)
        how = f"it was killed by {name}"
        if -code == signal.SIGKILL:
            how += " (when nobody sent it, that is usually the kernel's out-of-memory killer)"
        elif -code in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL):
            how += " (a crash in native code)"
    else:
        how = f"it exited with status {code} (os._exit, sys.exit or a fatal error in the handler)"
    return (
        f"the handler process (pid {process.pid}) died while running {what}: {how}; "
        "the attempt counts as failed and a fresh process takes the slot"
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _start_without_main(process: BaseProcess, handler_in_main: bool) -> None:
    """Start a slot process that does not run the parent's `__main__` again.

    multiprocessing makes each child import the parent's main script (as `__mp_main__`) so
    that objects defined there unpickle. A user's worker script without an `if __name__ ==
    "__main__"` guard would then start a whole second worker in every slot. A handler defined
    in another module needs none of that, so the child is shown an empty `__main__` while it
    starts; only a handler defined in the script itself keeps the import (and needs the guard).
    """
    if handler_in_main:
        process.start()
        return
    main = sys.modules["__main__"]
    with _MAIN_SWAP:
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            process.start()
        finally:
            sys.modules["__main__"] = main


_MAIN_SWAP = threading.Lock()


def _module_of(handler: object) -> str:
    while isinstance(handler, functools.partial):
        handler = handler.func
    module = getattr(handler, "__module__", None)
    return module if isinstance(module, str) else type(handler).__module__


# --- the child side ---------------------------------------------------------------------------


class _Terminated(BaseException):
    """SIGTERM in a slot process: unwind the handler (running its `finally` blocks) and exit."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _exit_with_parent(sentinel: int) -> None:
    """A watchdog thread: when the parent dies (even by SIGKILL), do not outlive it.

    The sentinel is a pipe whose other end only the parent holds: it reads EOF once the parent
    is gone, even while the main thread is busy in a handler that never returns.
    """
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


class _ChildSignals:
    """A handler process's TaskContext signals: progress frames out, the slot's flag in."""

    def __init__(
        self, sock: socket.socket, lock: threading.Lock, flag: Synchronized[int], interval: float
    ) -> None:
        self._sock = sock
        self._lock = lock
        self._flag = flag
        self._throttle = Throttle(interval)

    def report(self, percent: float, message: str | None) -> None:
        check_percent(percent)
        with self._lock:
            if self._throttle.allow():
                frame = pickle.dumps((_PROGRESS, float(percent), message), _PICKLE)
                self._sock.sendall(_HEADER.pack(len(frame)) + frame)

    def cancelled(self) -> bool:
        return bool(self._flag.value)


def _serve(
    sock: socket.socket, finish: Finish, cancel_flag: Synchronized[int], interval: float
) -> None:
    """A slot process: read a task, run it, answer; exit when the parent closes the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the worker, which drains
    signal.signal(signal.SIGTERM, _on_sigterm)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with_parent, args=(parent.sentinel,), name="parent-watchdog", daemon=True
        ).start()
    handlers: dict[int, SyncHandler] = {}
    lock = threading.Lock()  # a handler's own threads may report progress too
    stream = sock.makefile("rb")
    try:
        while True:
            header = stream.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return  # the pool closed the slot
            request = stream.read(_HEADER.unpack(header)[0])
            try:
                key, pickled, payload, context = pickle.loads(request)
                if pickled is not None:
                    handlers[key] = pickle.loads(pickled)
                if isinstance(context, TaskContext):
                    signals = _ChildSignals(sock, lock, cancel_flag, interval)
                    context = replace(context, signals=signals)
                reply = pickle.dumps((_OK, finish(handlers[key](payload, context))), _PICKLE)
            except Exception as exc:
                reply = _error_reply(exc)
            with lock:
                sock.sendall(_HEADER.pack(len(reply)) + reply)
    except _Terminated:
        return
    except (ConnectionError, EOFError):
        return  # the worker died (kill -9): its socket is gone, and so is our reason to run
    finally:
        stream.close()
        sock.close()


def _error_reply(exc: Exception) -> bytes:
    return pickle.dumps(
        (_ERROR, _portable(exc), type(exc).__name__, str(exc), traceback.format_exc()), _PICKLE
    )


def _portable(exc: Exception) -> bytes | None:
    """The pickled exception, if it survives the round trip (custom `__init__`s often do not)."""
    try:
        data = pickle.dumps(exc, _PICKLE)
        pickle.loads(data)
    except Exception:
        return None
    return data
