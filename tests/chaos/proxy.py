"""A TCP proxy on 127.0.0.1 that can cut every connection through it: a network fault on loopback.

There is no toxiproxy or `tc netem` on these machines, and a cut must look to a client like a
real network failure (its socket reset under it, not a polite AMQP close), so the chaos suite
puts this proxy between the broker and the processes under test. It runs its own asyncio loop
on a thread, so the test can block on processes meanwhile. `cut(hold)` resets every open
connection and, for `hold` seconds, resets new ones at once too (an outage, not a blip).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time

from spectask.devbroker.probe import LOOPBACK

CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port` until `close()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._blocked_until = 0.0

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, user: str = "guest", password: str = "guest") -> str:
        return f"amqp://{user}:{password}@{LOOPBACK}:{self.port}/"

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, LOOPBACK, 0)

    async def _accept(self, client_in: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._blocked_until:
            _reset(client)
            return
        try:
            broker_in, broker = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            _reset(client)
            return
        self._open |= {client, broker}
        try:
            await asyncio.gather(_pipe(client_in, broker), _pipe(broker_in, client))
        finally:
            for writer in (client, broker):
                self._open.discard(writer)
                writer.close()

    def cut(self, hold: float = 0.0) -> int:
        """Reset every connection (and new ones for `hold` s); how many sockets were cut."""

        def cut_now() -> int:
            self._blocked_until = time.monotonic() + hold
            cut = list(self._open)
            for writer in cut:
                _reset(writer)
            return len(cut)

        return asyncio.run_coroutine_threadsafe(_call(cut_now), self._loop).result(10)

    def close(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._open):
                _reset(writer)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


async def _call(function: object) -> int:
    assert callable(function)
    return int(function())


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (linger 0, then abort), as a broken network would, not a FIN."""
    with contextlib.suppress(Exception):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
    _reset(sink)
