"""HTTPS for the embedded server without the guard: a TLS-terminating TCP proxy in front of Triton's HTTP.

Triton's HTTP endpoint has no TLS options (its gRPC endpoint does). With the guard on (the default),
the guard terminates TLS itself; with `--no-guard` and `--tls-cert`, this proxy listens on the public
port: it completes the TLS handshake (optionally requiring a client certificate) and forwards bytes
both ways, one upstream connection per client connection, so keep-alive and pipelining pass through
unchanged. In production the Helm chart's Ingress terminates TLS instead.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from tritonkit.server.front import LoopServer, close_writer

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


class TlsProxy(LoopServer):
    """Listens with TLS on (host, port) and forwards each connection to (upstream_host, upstream_port)."""

    def __init__(
        self,
        host: str,
        port: int,
        upstream_host: str,
        upstream_port: int,
        context: ssl.SSLContext,
        handshake_timeout_s: float = 10.0,
    ):
        super().__init__(host, port, context, handshake_timeout_s)
        self.upstream_host, self.upstream_port = upstream_host, upstream_port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError as e:
            logger.warning(
                "TLS proxy: Triton's HTTP endpoint %s:%d is unreachable: %s", self.upstream_host, self.upstream_port, e
            )
            return
        self.track(up_writer)
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
            self.untrack(up_writer)
            await close_writer(up_writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_BUFFER):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError) as e:
        logger.debug("TLS proxy connection ended: %s", e)
