"""A lean asyncio HTTP/1.1 client for the benchmark's HIS: POSTs over a pool of keep-alive connections to one host.

bench/counter.py's driver runs on the same 2 cores as the gateways, the broker and the insured platform it
measures, so every microsecond the driver spends is taken from them. Profiled, aiohttp's client machinery
(ClientSession._request, the connector, its response parser) was 35-40 % of the driver's ~0.9 ms of CPU per
round trip. Load generators are lean for that reason; this client does what the HIS needs and nothing more: an
`asyncio.Protocol` per connection (no streams), one request at a time per connection (no pipelining), the request
written with one `transport.write`, the response framed by Content-Length, chunked encoding or the end of the
connection. Plain http only, no redirects, no retries (a POST is not idempotent), no decompression (it never
sends Accept-Encoding).
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LeanHttpError", "LeanPool"]

_MAX_HEAD = 64 * 1024  # bytes of status line and headers before the response counts as malformed
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: .*)?")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection"})  # the client writes these

# Parser states
_DONE, _HEAD, _LENGTH, _CHUNK_SIZE_LINE, _CHUNK_DATA, _TRAILER, _UNTIL_EOF = range(7)


class LeanHttpError(ConnectionError):
    """The response could not be read: the connection ended (EOF or reset) before it was complete, or it was not
    HTTP/1.x. The connection is discarded; the pool's other requests are unaffected."""


@dataclass(frozen=True, slots=True)
class LeanResponse:
    status: int
    headers: dict[str, str]  # names in lower case; repeated ones joined with ", "
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, the response parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reusable = False  # True only between a complete keep-alive response and the next request
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter: asyncio.Future[LeanResponse] | None = None
        self._buf = bytearray()
        self._state = _DONE
        self._status = 0
        self._headers: dict[bytes, bytes] = {}
        self._keep_alive = True
        self._remaining = 0  # body bytes still expected (_LENGTH) or of the current chunk (_CHUNK_DATA)
        self._chunks: list[bytes] = []

    async def request(self, data: bytes) -> LeanResponse:
        if not self.reusable or self.transport is None:  # closed between its opening and now
            raise LeanHttpError("the server closed the connection before the request was sent")
        self.reusable = False  # until this response is complete: a cancelled or failed request discards it
        waiter: asyncio.Future[LeanResponse] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._state = _HEAD
        self._chunks = []
        self.transport.write(data)
        try:
            return await waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.reusable = True

    def data_received(self, data: bytes) -> None:
        if self._state == _DONE:  # bytes nobody asked for: the connection's framing cannot be trusted
            self.close()
            return
        self._buf += data
        try:
            self._parse()
        except ValueError as e:
            self._fail(LeanHttpError(f"malformed HTTP response: {e}"))

    def eof_received(self) -> bool:
        if self._state == _UNTIL_EOF:
            self._finish(bytes(self._buf), keep_alive=False)
        elif self._state != _DONE:
            self._fail(LeanHttpError("the server closed the connection before the response was complete"))
        self.reusable = False
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._state == _UNTIL_EOF and exc is None:
            self._finish(bytes(self._buf), keep_alive=False)
        elif self._state != _DONE:
            err = LeanHttpError("the connection was reset before the response was complete" if exc is not None
                                else "the connection closed before the response was complete")
            err.__cause__ = exc
            self._fail(err)
        if not self.lost.done():
            self.lost.set_result(None)

    # parsing

    def _parse(self) -> None:
        buf = self._buf
        while True:
            state = self._state
            if state == _LENGTH:
                if len(buf) < self._remaining:
                    return
                body = bytes(buf[:self._remaining])
                del buf[:self._remaining]
                self._finish(body, self._keep_alive)
                return
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise ValueError(f"no end of headers within {_MAX_HEAD} bytes")
                    return
                head = bytes(buf[:end])
                del buf[:end + 4]
                self._head(head)
            elif state == _CHUNK_SIZE_LINE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise ValueError("chunk size line too long")
                    return
                size = buf[:end].split(b";", 1)[0].strip()  # chunk extensions are ignored
                if not _CHUNK_SIZE.fullmatch(size):
                    raise ValueError(f"bad chunk size {bytes(size)!r}")
                del buf[:end + 2]
                self._remaining = int(size, 16)
                self._state = _CHUNK_DATA if self._remaining else _TRAILER
            elif state == _CHUNK_DATA:
                n = self._remaining
                if len(buf) < n + 2:
                    return
                if buf[n:n + 2] != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
                self._chunks.append(bytes(buf[:n]))
                del buf[:n + 2]
                self._state = _CHUNK_SIZE_LINE
            elif state == _TRAILER:  # trailer fields, then an empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise ValueError("trailer line too long")
                    return
                del buf[:end + 2]
                if end == 0:
                    self._finish(b"".join(self._chunks), self._keep_alive)
                    return
            else:  # _UNTIL_EOF: the body is everything up to the end of the connection; _DONE: nothing to parse
                return

    def _head(self, head: bytes) -> None:
        """The status line and headers; sets how the body is framed (RFC 9112 section 6.3)."""
        lines = head.split(b"\r\n")
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise ValueError(f"bad status line {lines[0][:100]!r}")
        http11, status = match[1] == b"1", int(match[2])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():  # no space before the colon, no folded lines
                raise ValueError(f"bad header line {line[:100]!r}")
            name, value = name.lower(), value.strip()
            if name in headers:
                if name == b"content-length" and headers[name] != value:
                    raise ValueError("conflicting Content-Length headers")
                headers[name] = headers[name] + b", " + value
            else:
                headers[name] = value
        if 100 <= status < 200:  # an interim response (never asked for, but allowed): the real one follows
            self._state = _HEAD
            return
        self._status, self._headers = status, headers
        tokens = {t.strip() for t in headers.get(b"connection", b"").lower().split(b",")}
        keep_alive = b"close" not in tokens if http11 else b"keep-alive" in tokens
        encoding = headers.get(b"transfer-encoding")
        length = headers.get(b"content-length")
        if status in (204, 304):
            self._finish(b"", keep_alive)
        elif encoding is not None:
            if encoding.lower().rsplit(b",", 1)[-1].strip() != b"chunked":
                self._state, self._keep_alive = _UNTIL_EOF, False
            else:  # with a Content-Length as well the framing is ambiguous: read it chunked, then drop the connection
                self._state, self._keep_alive = _CHUNK_SIZE_LINE, keep_alive and length is None
        elif length is not None:
            if not length.isdigit():
                raise ValueError(f"bad Content-Length {length[:40]!r}")
            self._state, self._keep_alive, self._remaining = _LENGTH, keep_alive, int(length)
        else:
            self._state, self._keep_alive = _UNTIL_EOF, False

    def _finish(self, body: bytes, keep_alive: bool) -> None:
        self._state = _DONE
        # bytes after the response were never asked for: the connection is not reused
        self.reusable = keep_alive and not self._buf and self.transport is not None and not self.lost.done()
        if not self.reusable:
            self.close()
        if self._waiter is not None and not self._waiter.done():
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self._headers.items()}
            self._waiter.set_result(LeanResponse(self._status, headers, body))

    def _fail(self, exc: Exception) -> None:
        self._state = _DONE
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)


class LeanPool:
    """Up to `limit` keep-alive connections to http://host:port (0: unbounded, as aiohttp's TCPConnector). A free
    connection is reused; when every one is busy and the limit is reached, callers wait in FIFO order. Each
    request (waiting for a connection included) must finish within `timeout` seconds, else TimeoutError."""

    def __init__(self, host: str, port: int, limit: int = 100, *, timeout: float = 60.0) -> None:
        self.host, self.port = host, port
        self.limit = limit or sys.maxsize
        self.timeout = timeout
        self._host_line = f"Host: {host}:{port}\r\n"
        self._idle: list[_Connection] = []  # the most recently used on top: the others may idle out
        self._conns: set[_Connection] = set()  # open ones, busy or idle
        self._slots = 0  # connections open or being opened
        # a waiter gets a connection handed over, or None: a free slot to open one in
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST `body` to `path`; (status, body) of the response. Host and Content-Length are written here."""
        response = await self.post_full(path, body, headers)
        return response.status, response.body

    async def post_full(self, path: str, body: bytes, headers: Mapping[str, str]) -> LeanResponse:
        """As post(), with the response's headers."""
        if self._closed:
            raise LeanHttpError("the pool is closed")
        lines = [f"POST {path} HTTP/1.1\r\n", self._host_line, f"Content-Length: {len(body)}\r\n"]
        for name, value in headers.items():
            if name.lower() in _RESERVED:
                raise ValueError(f"header {name} is the client's to write")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        head = "".join(lines)
        if head.count("\n") != len(lines) or head.count("\r") != len(lines):  # no header injection
            raise ValueError("CR or LF in the path or a header")
        data = head.encode("latin-1") + body
        async with asyncio.timeout(self.timeout):
            conn = await self._acquire()
            try:
                return await conn.request(data)
            finally:
                self._release(conn)

    async def close(self) -> None:
        """Close every connection (a request in flight fails with LeanHttpError) and refuse further posts."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(LeanHttpError("the pool is closed"))
        conns = list(self._conns)
        for conn in conns:
            conn.close()
        await asyncio.gather(*(conn.lost for conn in conns))
        self._idle.clear()
        self._conns.clear()

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                return conn
            self._discard(conn)  # the server closed it while it was idle
        if not self._waiters and self._slots < self.limit:
            self._slots += 1
            return await self._open()
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            got = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed over just as the caller gave up: pass it on
                handed = waiter.result()
                if handed is None:
                    self._slots -= 1
                    self._grant()
                else:
                    self._release(handed)
            raise
        if got is None:
            return await self._open()
        if not got.reusable:  # the server closed it on its way here: open a new one in its slot
            got.close()
            self._conns.discard(got)
            return await self._open()
        return got

    async def _open(self) -> _Connection:
        """A new connection in a slot already counted."""
        try:
            _, conn = await asyncio.get_running_loop().create_connection(_Connection, self.host, self.port)
        except BaseException:
            self._slots -= 1
            self._grant()
            raise
        if self._closed:
            conn.close()
            raise LeanHttpError("the pool is closed")
        self._conns.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        if not conn.reusable or self._closed:
            self._discard(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter is skipped
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._conns.discard(conn)
        self._slots -= 1
        self._grant()

    def _grant(self) -> None:
        """A slot came free: the first waiter opens a connection in it."""
        while self._waiters and self._slots < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._slots += 1
                waiter.set_result(None)
