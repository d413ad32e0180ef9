"""HTTPS for the embedded server: a TLS-terminating TCP proxy in front of Triton's plain HTTP endpoint.

Triton's HTTP endpoint has no TLS options (its gRPC endpoint does). When the embedded server is asked
for HTTPS, Triton's HTTP binds loopback on an internal port and this proxy listens on the public one:
it completes the TLS handshake (optionally requiring a client certificate) and forwards bytes both
ways, one upstream connection per client connection, so keep-alive and pipelining pass through
unchanged. In production the Helm chart's Ingress terminates TLS instead.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

_BUFFER = 256 * 1024


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+); with `client_ca`, clients must present a certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class TlsProxy:
    """Listens with TLS on (host, port) and forwards each connection to (upstream_host, upstream_port).

    Runs its own asyncio loop in a daemon thread; `start()` returns once the socket listens.
    """

    def __init__(
        self,
        host: str,
        port: int,
        upstream_host: str,
        upstream_port: int,
        context: ssl.SSLContext,
        handshake_timeout_s: float = 10.0,
    ):
        self.host, self.port = host, port
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.context = context
        self.handshake_timeout_s = handshake_timeout_s
        self.connections = 0  # accepted TLS connections since start (for tests and diagnostics)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> TlsProxy:
        self._thread = threading.Thread(target=self._run, name=f"tls-proxy-{self.port}", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.set_exception_handler(_quiet_handler)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(
                    self._handle,
                    self.host,
                    self.port,
                    ssl=self.context,
                    ssl_handshake_timeout=self.handshake_timeout_s,
                    backlog=512,
                )
            )
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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            except OSError as e:
                logger.warning(
                    "TLS proxy: Triton's HTTP endpoint %s:%d is unreachable: %s",
                    self.upstream_host,
                    self.upstream_port,
                    e,
                )
                return
            self._writers.add(up_writer)
            try:
                # Either side closing ends the exchange: TLS has no half-close, and HTTP needs none.
                pipes = [asyncio.create_task(_pipe(reader, up_writer)), asyncio.create_task(_pipe(up_reader, writer))]
                try:
                    await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for pipe in pipes:
                        pipe.cancel()
                    await asyncio.gather(*pipes, return_exceptions=True)
            finally:
                self._writers.discard(up_writer)
                await _close(up_writer)
        finally:
            self._writers.discard(writer)
            await _close(writer)
            self._tasks.discard(task)

    def stop(self) -> None:
        """Stops listening, closes open connections and ends the thread."""
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            return

        async def shutdown() -> None:
            self._server.close()
            # Aborting the sockets ends each connection's pipes, so its handler returns by itself.
            for writer in list(self._writers):
                writer.transport.abort()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=5)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_BUFFER):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError) as e:
        logger.debug("TLS proxy connection ended: %s", e)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout=2)
    except (ConnectionError, ssl.SSLError, OSError, asyncio.TimeoutError):
        pass


def _quiet_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """A failed handshake (a plain-text client, an unknown CA, no client certificate) is the client's problem."""
    error = context.get("exception")
    if isinstance(error, (ssl.SSLError, ConnectionError, asyncio.TimeoutError, OSError)):
        logger.debug("TLS proxy: %s: %s", context.get("message"), error)
        return
    loop.default_exception_handler(context)
