"""What the servers in front of Triton's HTTP endpoint share: a listener in its own asyncio loop and thread.

`TlsProxy` (server/tls_proxy.py) pipes bytes through TLS; `Guard` (server/guard.py) reads HTTP, checks
inference requests and forwards them. Both listen on the public HTTP port while Triton's own HTTP binds
loopback on an internal one. `start()` returns once the socket listens; `stop()` closes the listener
and every open connection, then ends the thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import threading

logger = logging.getLogger(__name__)


class LoopServer:
    """Accepts connections on (host, port), optionally with TLS, and runs `handle` for each in its loop.

    Args:
        host, port: where to listen (port 0 picks a free one; `port` holds the real one after start).
        context: a server-side TLS context, or None for plain TCP.
        max_connections: connections handled at once; one more is closed at once.
        stream_limit: the asyncio stream buffer limit (the longest line `readuntil` accepts).
    """

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext | None = None,
        handshake_timeout_s: float = 10.0,
        max_connections: int = 1024,
        stream_limit: int = 2**16,
    ):
        self.host, self.port, self.context = host, port, context
        self.handshake_timeout_s, self.max_connections, self.stream_limit = (
            handshake_timeout_s,
            max_connections,
            stream_limit,
        )
        self.connections = 0  # accepted connections since start (for tests and diagnostics)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def start(self):
        self._thread = threading.Thread(target=self._run, name=f"{type(self).__name__}-{self.port}", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.set_exception_handler(_quiet_handler)
        tls = {"ssl": self.context, "ssl_handshake_timeout": self.handshake_timeout_s} if self.context else {}
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, self.host, self.port, backlog=512, limit=self.stream_limit, **tls)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as e:  # noqa: BLE001 - handed to the starting thread, which raises it
            self._error = e
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if len(self._tasks) >= self.max_connections:
            logger.warning("%s: %d connections already open; refusing one more", type(self).__name__, len(self._tasks))
            writer.transport.abort()
            return
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self.handle(reader, writer)
        finally:
            self._writers.discard(writer)
            await close_writer(writer)
            self._tasks.discard(task)

    def track(self, writer: asyncio.StreamWriter) -> None:
        """Aborts this (upstream) connection on stop as well."""
        self._writers.add(writer)

    def untrack(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)

    def stop(self) -> None:
        """Stops listening, closes open connections and ends the thread."""
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            return

        async def shutdown() -> None:
            self._server.close()
            # Aborting the sockets ends each connection's reads, so its handler returns by itself.
            for writer in list(self._writers):
                writer.transport.abort()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=5)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


async def within(awaitable, seconds: float):
    """`await awaitable`, raising asyncio.TimeoutError after `seconds`; without wait_for's task per call on 3.11+."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout=2)
    except (ConnectionError, ssl.SSLError, OSError, asyncio.TimeoutError):
        pass


def _quiet_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """A failed handshake (a plain-text client, an unknown CA, no client certificate) is the client's problem."""
    error = context.get("exception")
    if isinstance(error, (ssl.SSLError, ConnectionError, asyncio.TimeoutError, OSError)):
        logger.debug("%s: %s", context.get("message"), error)
        return
    loop.default_exception_handler(context)
