"""A small HTTP/1.1 client over asyncio streams, with keep-alive connections, for the teacher client.

Why not httpx/aiohttp: the teacher needs four things only (POST/GET, keep-alive, TLS, Content-Length or
chunked bodies), and owning the transport lets every failure map onto one of a few retryable kinds
(dropped connection, truncated body, timeout) without a third-party exception zoo or a new dependency.
Responses are requested with `Accept-Encoding: identity`, so no decompression is needed.
"""
from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

_MAX_HEADER_BYTES = 64 * 1024


class TransportError(Exception):
    """The connection failed before a complete response arrived (refused, dropped, truncated)."""


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    path: str  # base path without trailing slash, e.g. "/v1"

    @classmethod
    def parse(cls, base_url: str) -> "Endpoint":
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port]/path, got {base_url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")


class HttpPool:
    """Keep-alive connections to one endpoint; callers bound concurrency themselves (one request per connection)."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._ssl = ssl.create_default_context() if endpoint.scheme == "https" else None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer = self._idle.pop()
            # A server that closed an idle connection has sent EOF: reusing it would look like a drop.
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        try:
            return await asyncio.open_connection(
                self.endpoint.host, self.endpoint.port, ssl=self._ssl, limit=_MAX_HEADER_BYTES,
                server_hostname=self.endpoint.host if self._ssl else None,
            )
        except OSError as e:
            raise TransportError(f"cannot connect to {self.endpoint.host}:{self.endpoint.port}: {e}") from e

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
        timeout: float | None = None,
    ) -> HttpResponse:
        """One request; `path` is relative to the endpoint's base path. Raises TransportError or TimeoutError.
        The timeout covers connecting too."""
        if hasattr(asyncio, "timeout"):  # 3.11+: no extra task per request, unlike wait_for
            async with asyncio.timeout(timeout):
                return await self._request(method, path, headers or {}, body)
        return await asyncio.wait_for(self._request(method, path, headers or {}, body), timeout)

    async def _request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> HttpResponse:
        reader, writer = await self._connect()
        try:
            response, keep = await self._exchange(reader, writer, method, path, headers, body)
        except BaseException:
            writer.close()  # half-read or timed-out connections cannot be reused
            raise
        if keep:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return response

    async def _exchange(self, reader, writer, method, path, headers, body) -> tuple[HttpResponse, bool]:
        ep = self.endpoint
        host = ep.host if ep.port in (80, 443) else f"{ep.host}:{ep.port}"
        lines = [f"{method} {ep.path}{path} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity",
                 "Connection: keep-alive", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status, resp_headers = _parse_head(head)
            if resp_headers.get("transfer-encoding", "").lower() == "chunked":
                data = await _read_chunked(reader)
            elif "content-length" in resp_headers:
                data = await reader.readexactly(int(resp_headers["content-length"]))
            else:
                data = await reader.read()
                return HttpResponse(status, resp_headers, data), False
        except asyncio.IncompleteReadError as e:
            what = "connection closed before a response" if not e.partial else "truncated response"
            raise TransportError(what) from e
        except asyncio.LimitOverrunError as e:
            raise TransportError("response headers too large") from e
        except (ConnectionError, OSError) as e:
            raise TransportError(f"connection error: {e}") from e
        keep = resp_headers.get("connection", "").lower() != "close"
        return HttpResponse(status, resp_headers, data), keep

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    text = head.decode("latin-1").split("\r\n")
    parts = text[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise TransportError(f"bad status line {text[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in text[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as e:
            raise TransportError(f"bad chunk size {size_line[:40]!r}") from e
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)
