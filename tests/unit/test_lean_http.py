"""bench/lean_http.py, the benchmark HIS's lean HTTP/1.1 client: round trips against a real aiohttp server
(keep-alive reuse, the connection limit and its FIFO queue, Connection: close, chunked bodies, 1 MiB both ways,
the timeout), and against a server written by hand for exact bytes: a response dribbled a byte at a time, one
cut off mid-way by EOF or a reset. Then adapters/his.py's HisClient over the pool and over an aiohttp session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.his import FACADE_PATH, HisClient
from bench.lean_http import LeanHttpError, LeanPool
from gateway.http.auth import TokenMinter

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def aiohttp_server(handler: Handler) -> AsyncIterator[int]:
    """A real aiohttp server on 127.0.0.1 answering every POST with `handler`; yields its port."""
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def lean_pool(port: int, limit: int = 4, **kw: float) -> AsyncIterator[LeanPool]:
    pool = LeanPool("127.0.0.1", port, limit, **kw)
    try:
        yield pool
    finally:
        await pool.close()


def peer_port(request: web.Request) -> int:
    assert request.transport is not None
    return int(request.transport.get_extra_info("peername")[1])


async def test_status_headers_and_body_make_the_round_trip() -> None:
    async def handler(request: web.Request) -> web.Response:
        seen = {"path": request.path, "host": request.host, "auth": request.headers["Authorization"],
                "type": request.content_type, "body": (await request.read()).decode()}
        return web.Response(status=418, body=orjson.dumps(seen))

    async with aiohttp_server(handler) as port, lean_pool(port) as pool:
        status, body = await pool.post("/v1/x", b'{"a":1}', {"Authorization": "Bearer t", "Content-Type": "x/y"})
    assert status == 418
    assert orjson.loads(body) == {"path": "/v1/x", "host": f"127.0.0.1:{port}", "auth": "Bearer t", "type": "x/y",
                                  "body": '{"a":1}'}


async def test_sequential_posts_share_one_connection() -> None:
    ports: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        ports.append(peer_port(request))
        return web.Response(body=b"r" + await request.read())

    async with aiohttp_server(handler) as port, lean_pool(port) as pool:
        answers = [await pool.post("/", str(i).encode(), {}) for i in range(20)]
    assert answers == [(200, f"r{i}".encode()) for i in range(20)]
    assert len(ports) == 20 and len(set(ports)) == 1


async def test_callers_beyond_the_limit_wait_and_all_complete() -> None:
    ports: set[int] = set()
    in_flight = peak = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        ports.add(peer_port(request))
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.Response(body=await request.read())

    async with aiohttp_server(handler) as port, lean_pool(port, limit=3) as pool:
        answers = await asyncio.gather(*(pool.post("/", str(i).encode(), {}) for i in range(12)))
    assert answers == [(200, str(i).encode()) for i in range(12)]
    assert peak == 3 and len(ports) == 3


async def test_waiting_callers_are_served_in_order() -> None:
    order: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        order.append(await request.read())
        await asyncio.sleep(0.01)
        return web.Response(body=b"ok")

    async with aiohttp_server(handler) as port, lean_pool(port, limit=1) as pool:
        await asyncio.gather(*(pool.post("/", str(i).encode(), {}) for i in range(6)))
    assert order == [str(i).encode() for i in range(6)]


async def test_connection_close_from_the_server_makes_the_next_post_open_a_new_connection() -> None:
    ports: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        ports.append(peer_port(request))
        response = web.Response(body=await request.read())
        if response.body == b"last":
            response.force_close()  # "Connection: close", then aiohttp closes the socket
        return response

    async with aiohttp_server(handler) as port, lean_pool(port, limit=1) as pool:
        answers = [await pool.post("/", body, {}) for body in (b"one", b"last", b"three", b"four")]
    assert answers == [(200, b"one"), (200, b"last"), (200, b"three"), (200, b"four")]
    assert ports[0] == ports[1] != ports[2] == ports[3]


async def test_a_chunked_response_is_read_whole_and_the_connection_reused() -> None:
    ports: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ports.append(peer_port(request))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in (b"first,", b"", b"second," * 1000, b"third"):  # an empty write sends no chunk
            await response.write(piece)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    async with aiohttp_server(handler) as port, lean_pool(port) as pool:
        first = await pool.post("/", b"", {})
        second = await pool.post("/", b"", {})
    assert first == second == (200, b"first," + b"second," * 1000 + b"third")
    assert len(ports) == 2 and len(set(ports)) == 1


async def test_a_mebibyte_travels_both_ways() -> None:
    payload = os.urandom(1024 * 1024)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=(await request.read())[::-1])

    async with aiohttp_server(handler) as port, lean_pool(port) as pool:
        status, body = await pool.post("/", payload, {})
        again = await pool.post("/", b"small", {})  # the big response left nothing behind
    assert status == 200 and body == payload[::-1]
    assert again == (200, b"llams")


async def test_a_request_past_its_timeout_raises_and_the_next_one_succeeds() -> None:
    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        if body == b"slow":
            await asyncio.sleep(1.0)
        return web.Response(body=body)

    async with aiohttp_server(handler) as port, lean_pool(port, limit=1, timeout=0.2) as pool:
        slow = asyncio.ensure_future(pool.post("/", b"slow", {}))
        queued = asyncio.ensure_future(pool.post("/", b"queued", {}))  # waits for the only slot, then times out
        with pytest.raises(TimeoutError):
            await slow
        with pytest.raises(TimeoutError):
            await queued
        assert await pool.post("/", b"fast", {}) == (200, b"fast")  # neither left its slot taken


@pytest.mark.parametrize("handed", ["its connection", "its slot"])
async def test_a_waiter_cancelled_after_being_handed_a_connection_passes_it_on(handed: str) -> None:
    bodies: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        bodies.append(body)
        response = web.Response(body=body)
        if handed == "its slot":
            response.force_close()  # the connection is dropped: the waiter is handed a slot to open one in
        return response

    async with aiohttp_server(handler) as port, lean_pool(port, limit=1, timeout=2.0) as pool:
        waiting = asyncio.ensure_future(pool.post("/", b"waiting", {}))
        assert await pool.post("/", b"first", {}) == (200, b"first")  # hands the connection or slot to `waiting`
        waiting.cancel()  # before it ran: what it was handed must not be lost
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await pool.post("/", b"next", {}) == (200, b"next")
    assert bodies == [b"first", b"next"]


async def test_a_header_with_a_line_break_is_refused() -> None:
    pool = LeanPool("127.0.0.1", 9)  # never connects: refused before
    with pytest.raises(ValueError, match="CR or LF"):
        await pool.post("/", b"", {"X-A": "b\r\nX-Injected: 1"})
    with pytest.raises(ValueError, match="client's to write"):
        await pool.post("/", b"", {"content-length": "5"})
    await pool.close()


class RawServer:
    """An HTTP/1.1 server written by hand, to send exactly the bytes (and the ends of connection) a test needs.
    `respond(n, writer)` answers the n-th request (from 0, over all connections); False ends its connection."""

    def __init__(self, respond: Callable[[int, asyncio.StreamWriter], Awaitable[bool]]) -> None:
        self.respond = respond
        self.requests = self.connections = self.open = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                assert length is not None
                await reader.readexactly(int(length[1]))
                n, self.requests = self.requests, self.requests + 1
                if not await self.respond(n, writer):
                    break
        except asyncio.IncompleteReadError:  # the client closed the connection
            pass
        finally:
            self.open -= 1
            writer.close()


async def dribble(writer: asyncio.StreamWriter, data: bytes) -> None:
    """One byte per TCP segment, each on its own (the client reads them in as many data_received calls)."""
    for i in range(len(data)):
        writer.write(data[i:i + 1])
        await writer.drain()
        await asyncio.sleep(0.001)


async def test_a_response_split_into_single_bytes_and_one_in_a_single_write_are_both_read() -> None:
    chunked = (b"HTTP/1.1 201 Created\r\nTRANSFER-encoding: chunked\r\nX-Other: a:b\r\n\r\n"
               b"5;ext=1\r\nhello\r\nA\r\n, dribbled\r\n0\r\nX-Trailer: t\r\n\r\n")

    async def respond(n: int, writer: asyncio.StreamWriter) -> bool:
        if n == 0:
            await dribble(writer, chunked)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 4\r\n\r\nwhol")
        return True

    raw = RawServer(respond)
    async with raw as port, lean_pool(port) as pool:
        first = await pool.post("/", b"a", {})
        second = await pool.post("/", b"b", {})
    assert first == (201, b"hello, dribbled")
    assert second == (200, b"whol")
    assert raw.connections == 1


@pytest.mark.parametrize("cut", ["in the headers", "in the body", "in a chunk"])
@pytest.mark.parametrize("end", ["eof", "reset"])
async def test_a_response_cut_off_fails_that_request_and_the_next_one_succeeds(cut: str, end: str) -> None:
    partial = {"in the headers": b"HTTP/1.1 200 OK\r\nContent-Len",
               "in the body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
               "in a chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n01234"}[cut]

    async def respond(n: int, writer: asyncio.StreamWriter) -> bool:
        if n == 0:
            writer.write(partial)
            await writer.drain()
            await asyncio.sleep(0.05)  # the client has read the partial response
            if end == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            return False
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    raw = RawServer(respond)
    async with raw as port, lean_pool(port, limit=1) as pool:
        with pytest.raises(LeanHttpError, match="before the response was complete") as failed:
            await pool.post("/", b"first", {})
        assert await pool.post("/", b"second", {}) == (200, b"ok")
    assert isinstance(failed.value, ConnectionError)
    assert raw.connections == 2


async def test_close_ends_every_connection_and_refuses_further_posts() -> None:
    async def respond(n: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return True

    raw = RawServer(respond)
    async with raw as port:
        pool = LeanPool("127.0.0.1", port, 4)
        await asyncio.gather(*(pool.post("/", b"", {}) for _ in range(3)))
        assert raw.open == 3
        await pool.close()
        for _ in range(100):
            if raw.open == 0:
                break
            await asyncio.sleep(0.01)
        assert raw.open == 0
        with pytest.raises(LeanHttpError, match="closed"):
            await pool.post("/", b"", {})


class FixedMinter:
    def mint(self) -> str:
        return "token"


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
async def test_the_his_posts_through_either_client(client: str) -> None:
    seen: list[tuple[str, str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers["Authorization"], orjson.loads(await request.read())))
        return web.Response(body=orjson.dumps({"infcode": 0, "output": {"data": {"ok": 1}}}))

    async with aiohttp_server(handler) as port, contextlib.AsyncExitStack() as stack:
        if client == "lean":
            session: Any = await stack.enter_async_context(lean_pool(port))
        else:
            session = await stack.enter_async_context(aiohttp.ClientSession())
        his = HisClient(session, f"http://127.0.0.1:{port}/", cast(TokenMinter, FixedMinter()))
        answer = await his.transact("1101", {"data": {"psn_no": "P1"}})
    assert (answer.status, answer.infcode, answer.output) == (200, 0, {"data": {"ok": 1}})
    assert answer.latency_s > 0 and answer.msgid.startswith(his.fixmedins_code)
    [(path, auth, doc)] = seen
    assert (path, auth, doc["infno"], doc["msgid"], doc["input"]) == (
        FACADE_PATH, "Bearer token", "1101", answer.msgid, {"data": {"psn_no": "P1"}})


async def test_post_full_gives_the_response_headers() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=429, body=b"{}", headers={"Retry-After": "2", "X-Twice": "a"})

    async with aiohttp_server(handler) as port, lean_pool(port) as pool:
        answer = await pool.post_full("/", b"", {})
    assert (answer.status, answer.body) == (429, b"{}")
    assert answer.headers["retry-after"] == "2" and answer.headers["x-twice"] == "a"
