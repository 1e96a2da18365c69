#!/usr/bin/env python3
"""HTTP/3 check of Alknet's `h3` handler with an independent HTTP/3 stack (aioquic's
H3Connection, QPACK and QUIC: no code shared with h3/quinn/rustls).

Checks, all on one connection unless said: GET /health; POST 1 MiB to /echo and compare;
GET /bytes/10000000 complete and exact; 50 concurrent requests; a header section over
the server's limit refused with 431 (and the connection still serving); a declared body
over the limit refused with 413; a body without content-length growing past the limit
refused with 413; a HEADERS frame that never completes reset after the server's header
timeout; a streaming call read as Server-Sent Events; a topic subscription fed by
node.publish calls on the same connection, then cancelled. Exit status 0 only when every
check passes.
"""

import argparse
import asyncio
import hashlib
import json
import os
import ssl
import sys

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.buffer import Buffer, BufferReadError
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from cryptography.hazmat.primitives.serialization import Encoding

CHECK_TIMEOUT = 30.0  # seconds; bounds every network wait of one check
# over the server's default max_header_bytes (16 KiB), in values pylsqpack can encode
BIG_HEADER_FIELDS = 8
BIG_HEADER_VALUE = 4000
DEFAULT_MAX_BODY = 16 * 1024 * 1024  # the server's default max_body_bytes


class CheckFailed(Exception):
    """A check's expectation was not met; the message says how."""


class Response:
    def __init__(self):
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.done = asyncio.get_running_loop().create_future()
        # set whenever headers or body bytes arrive (for responses read as they stream)
        self.progress = asyncio.Event()

    async def wait_body(self, want: bytes, what: str) -> None:
        """Waits (bounded by the caller's check timeout) until the body contains `want`."""
        while want not in self.body:
            if self.done.done():
                self.done.result()  # raises if the stream failed
                raise CheckFailed(f"{what}: stream ended without {want!r}: {bytes(self.body)!r}")
            self.progress.clear()
            await self.progress.wait()

    @property
    def status(self) -> int:
        for k, v in self.headers:
            if k == b":status":
                return int(v)
        raise CheckFailed("response without :status")


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.pending: dict[int, Response] = {}
        self.terminated: events.ConnectionTerminated | None = None
        self.resets: dict[int, asyncio.Future] = {}
        # bytes of the server's unidirectional streams (its control stream carries GOAWAY,
        # which aioquic's H3Connection reads but does not report)
        self.server_uni: dict[int, bytearray] = {}
        self.goaway = asyncio.get_running_loop().create_future()

    def _watch_goaway(self, event: events.QuicEvent) -> None:
        if not isinstance(event, events.StreamDataReceived) or event.stream_id % 4 != 3:
            return
        data = self.server_uni.setdefault(event.stream_id, bytearray())
        data.extend(event.data)
        b = Buffer(data=bytes(data))
        try:
            if b.pull_uint_var() != 0:  # not the control stream
                return
            while not b.eof():
                kind, length = b.pull_uint_var(), b.pull_uint_var()
                payload = b.pull_bytes(length)
                if kind == 0x7 and not self.goaway.done():
                    self.goaway.set_result(Buffer(data=payload).pull_uint_var())
        except BufferReadError:
            return  # the rest is still to come

    def quic_event_received(self, event: events.QuicEvent) -> None:
        self._watch_goaway(event)
        if isinstance(event, events.ConnectionTerminated):
            self.terminated = event
            for r in self.pending.values():
                if not r.done.done():
                    r.done.set_exception(CheckFailed(
                        f"connection terminated: 0x{event.error_code:x} {event.reason_phrase!r}"))
        if isinstance(event, events.StreamReset) and event.stream_id in self.resets:
            fut = self.resets.pop(event.stream_id)
            if not fut.done():
                fut.set_result(event.error_code)
            return
        if isinstance(event, events.StreamReset) and event.stream_id in self.pending:
            r = self.pending[event.stream_id]
            if not r.done.done():
                r.done.set_exception(CheckFailed(
                    f"stream {event.stream_id} reset by the server: 0x{event.error_code:x}"))
        for ev in self.http.handle_event(event):
            r = self.pending.get(ev.stream_id)
            if r is None:
                continue
            if isinstance(ev, HeadersReceived):
                r.headers.extend(ev.headers)
            elif isinstance(ev, DataReceived):
                r.body.extend(ev.data)
            r.progress.set()
            if ev.stream_ended and not r.done.done():
                r.done.set_result(None)

    async def request(self, method: str, path: str, body: bytes | None = None,
                      extra: list[tuple[bytes, bytes]] = ()) -> Response:
        sid, r = self.start_request(method, path, body, extra)
        await r.done
        del self.pending[sid]
        return r

    def start_request(self, method: str, path: str, body: bytes | None = None,
                      extra: list[tuple[bytes, bytes]] = ()) -> tuple[int, Response]:
        """Sends a request and returns its stream and response without waiting for it."""
        sid = self._quic.get_next_available_stream_id()
        r = Response()
        self.pending[sid] = r
        headers = [(b":method", method.encode()), (b":scheme", b"https"),
                   (b":authority", b"localhost"), (b":path", path.encode()),
                   (b"user-agent", b"aioquic-h3-check"), *extra]
        if body is not None:
            headers.append((b"content-length", str(len(body)).encode()))
        self.http.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.http.send_data(sid, body, end_stream=True)
        self.transmit()
        return sid, r


def make_config() -> QuicConfiguration:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    # The certificate is self-signed; trust comes from the fingerprint pin.
    cfg.verify_mode = ssl.CERT_NONE
    cfg.idle_timeout = CHECK_TIMEOUT
    return cfg


def check_pin(proto: H3Client, fingerprint: str | None) -> str:
    tls = proto._quic.tls
    if tls.alpn_negotiated != "h3":
        raise CheckFailed(f"negotiated ALPN {tls.alpn_negotiated!r}, want 'h3'")
    if fingerprint is None:
        return "certificate not pinned"
    cert = tls._peer_certificate  # no public accessor in aioquic 1.7
    got = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    want = fingerprint.lower().replace(":", "").removeprefix("sha256")
    if got != want:
        raise CheckFailed(f"certificate fingerprint {got} != pinned {want}")
    return "h3 negotiated, certificate fingerprint matches"


def expect_status(r: Response, want: int, what: str) -> None:
    if r.status != want:
        raise CheckFailed(f"{what}: status {r.status}, want {want}; body {bytes(r.body[:200])!r}")


def pattern(n: int) -> bytes:
    """What GET /bytes/{n} serves: byte i is i % 251."""
    period = bytes(range(251))
    return (period * (n // 251 + 1))[:n]


async def check_health(p: H3Client) -> str:
    r = await p.request("GET", "/health")
    expect_status(r, 200, "GET /health")
    doc = json.loads(r.body)
    if doc.get("status") != "serving" or "h3" not in doc.get("alpns", []):
        raise CheckFailed(f"GET /health body {doc!r}")
    return "GET /health -> 200 {\"status\":\"serving\", ...}"


async def check_echo(p: H3Client) -> str:
    body = os.urandom(1 << 20)
    r = await p.request("POST", "/echo", body)
    expect_status(r, 200, "POST /echo")
    if bytes(r.body) != body:
        raise CheckFailed(f"POST /echo: {len(r.body)} bytes back, differing from the 1 MiB sent")
    return "POST /echo 1 MiB -> identical body"


async def check_bytes(p: H3Client) -> str:
    n = 10_000_000
    r = await p.request("GET", f"/bytes/{n}")
    expect_status(r, 200, "GET /bytes")
    if len(r.body) != n:
        raise CheckFailed(f"GET /bytes/{n}: got {len(r.body)} bytes")
    if bytes(r.body) != pattern(n):
        raise CheckFailed(f"GET /bytes/{n}: content differs from the pattern")
    return f"GET /bytes/{n} -> {n} exact bytes"


async def check_concurrent(p: H3Client) -> str:
    bodies = [os.urandom(1000 + 997 * i) for i in range(50)]

    async def one(i: int):
        kind = i % 3
        if kind == 0:
            r = await p.request("GET", "/health")
            expect_status(r, 200, f"concurrent #{i}")
            return json.loads(r.body).get("status") == "serving"
        if kind == 1:
            r = await p.request("POST", "/echo", bodies[i])
            expect_status(r, 200, f"concurrent #{i}")
            return bytes(r.body) == bodies[i]
        n = 100_000 + i
        r = await p.request("GET", f"/bytes/{n}")
        expect_status(r, 200, f"concurrent #{i}")
        return bytes(r.body) == pattern(n)

    ok = await asyncio.gather(*(one(i) for i in range(50)))
    bad = [i for i, good in enumerate(ok) if not good]
    if bad:
        raise CheckFailed(f"concurrent requests with wrong bodies: {bad}")
    return "50 concurrent requests on one connection -> all 200, bodies exact"


async def check_big_header(p: H3Client) -> str:
    extra = [(f"x-big-{i}".encode(), b"a" * BIG_HEADER_VALUE) for i in range(BIG_HEADER_FIELDS)]
    r = await p.request("GET", "/health", extra=extra)
    expect_status(r, 431, "oversized header section")
    after = await p.request("GET", "/health")
    expect_status(after, 200, "GET /health after the 431")
    size = BIG_HEADER_FIELDS * BIG_HEADER_VALUE
    return f"{size}-byte header section -> 431, connection still serving"


async def check_big_body(p: H3Client, max_body: int) -> str:
    big = 4 * max_body
    sid = p._quic.get_next_available_stream_id()
    r = Response()
    p.pending[sid] = r
    headers = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"),
               (b":path", b"/echo"), (b"content-length", str(big).encode())]
    # declare the big body but send only its start: the server must answer from the
    # declaration, without reading (or waiting for) the rest
    p.http.send_headers(sid, headers)
    p.http.send_data(sid, b"x" * 1000, end_stream=False)
    p.transmit()
    await r.done
    del p.pending[sid]
    expect_status(r, 413, "declared body over the limit")
    return f"declared {big}-byte body -> 413"


async def check_streamed_body(p: H3Client, max_body: int) -> str:
    """A body with no content-length that grows past the limit: refused with 413 once it
    does, and the connection keeps serving."""
    n = max_body + 256 * 1024
    sid = p._quic.get_next_available_stream_id()
    r = Response()
    p.pending[sid] = r
    headers = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"),
               (b":path", b"/echo")]
    p.http.send_headers(sid, headers)
    p.http.send_data(sid, b"y" * n, end_stream=True)
    p.transmit()
    await r.done
    del p.pending[sid]
    expect_status(r, 413, "streamed body over the limit")
    after = await p.request("GET", "/health")
    expect_status(after, 200, "GET /health after the 413")
    return f"streamed {n}-byte body (limit {max_body}) -> 413, connection still serving"


async def check_slow_headers(p: H3Client) -> str:
    """A HEADERS frame that never completes (slowloris): the server must give up on it
    after its header timeout, resetting the stream with H3_REQUEST_CANCELLED."""
    sid = p._quic.get_next_available_stream_id()
    fut = asyncio.get_running_loop().create_future()
    p.resets[sid] = fut
    # HEADERS (type 0x01), length 100 (varint 0x40 0x64), then only 10 of the 100 bytes
    p._quic.send_stream_data(sid, bytes([0x01, 0x40, 0x64]) + bytes(10), end_stream=False)
    p.transmit()
    code = await fut
    if code != 0x10C:
        raise CheckFailed(f"incomplete headers: stream reset with 0x{code:x}, want 0x10c")
    after = await p.request("GET", "/health")
    expect_status(after, 200, "GET /health after the slow headers")
    return "incomplete HEADERS frame -> stream reset with H3_REQUEST_CANCELLED, connection still serving"


async def check_sse(p: H3Client) -> str:
    """A streaming call operation (needs alknet/call) read to its end as Server-Sent Events."""
    body = json.dumps({"count": 3, "item": {"n": 1}}).encode()
    r = await p.request("POST", "/api/call/echo.stream", body,
                        [(b"content-type", b"application/json")])
    expect_status(r, 200, "POST /api/call/echo.stream")
    ctype = dict(r.headers).get(b"content-type", b"")
    if ctype != b"text/event-stream":
        raise CheckFailed(f"content-type {ctype!r}, want text/event-stream")
    text = r.body.decode()
    want = "".join(f'event: item\nid: {i}\ndata: {{"n":1}}\n\n' for i in range(3))
    want += "event: end\ndata: {}\n\n"
    if text != want:
        raise CheckFailed(f"event stream {text!r}, want {want!r}")
    return "echo.stream over h3: 3 items and the end as text/event-stream"


async def sse_streams_open(p: H3Client) -> int:
    """The node's open SSE streams, as GET /metrics over h3 says (the topic check's
    server makes /metrics public)."""
    r = await p.request("GET", "/metrics")
    expect_status(r, 200, "GET /metrics")
    for line in r.body.decode().splitlines():
        if line.startswith("alknet_http_sse_streams_open "):
            return int(float(line.split()[1]))
    raise CheckFailed("GET /metrics without alknet_http_sse_streams_open")


async def check_topic(p: H3Client, watcher: str, admin: str) -> str:
    """GET /api/events/node.events as Server-Sent Events on one request stream while
    node.publish calls on other streams of the same connection deliver three events to it;
    then the client cancels the subscription, and the node lets go of it: no subscriber left
    on the topic (node.publish delivers to none) and no SSE stream open (/metrics, which
    the server must make public)."""
    if not watcher or not admin:
        raise CheckFailed("the topic check needs --watcher-token and --admin-token")
    sid, sub = p.start_request("GET", "/api/events/node.events",
                               extra=[(b"authorization", b"Bearer " + watcher.encode())])
    await sub.wait_body(b": subscribed", "subscription")
    expect_status(sub, 200, "GET /api/events/node.events")
    ctype = dict(sub.headers).get(b"content-type", b"")
    if ctype != b"text/event-stream":
        raise CheckFailed(f"content-type {ctype!r}, want text/event-stream")

    async def publish(n: int) -> int:
        r = await p.request("POST", "/api/call/node.publish",
                            json.dumps({"data": {"n": n}}).encode(),
                            [(b"content-type", b"application/json"),
                             (b"authorization", b"Bearer " + admin.encode())])
        expect_status(r, 200, "POST /api/call/node.publish")
        return json.loads(r.body)["delivered"]

    for n in range(3):
        delivered = await publish(n)
        if delivered != 1:
            raise CheckFailed(f"publish {n}: delivered to {delivered}, want 1")
        await sub.wait_body(f'id: {n}\ndata: {{"n":{n}}}\n\n'.encode(), f"event {n}")
    # exactly those events, in publish order, after the subscription comment (keep-alive
    # comments may fall anywhere between frames)
    got = bytes(sub.body).replace(b": keep-alive\n\n", b"")
    want = b": subscribed\n\n" + b"".join(
        f'id: {n}\ndata: {{"n":{n}}}\n\n'.encode() for n in range(3))
    if got != want:
        raise CheckFailed(f"topic stream {got!r}, want {want!r}")
    open_now = await sse_streams_open(p)
    if open_now != 1:
        raise CheckFailed(f"alknet_http_sse_streams_open {open_now} while subscribed, want 1")
    # cancel the subscription: the server must let go of it (H3_REQUEST_CANCELLED)
    p._quic.stop_stream(sid, 0x10C)
    p._quic.reset_stream(sid, 0x10C)
    p.transmit()
    del p.pending[sid]
    for _ in range(100):  # bounded: 100 x 50 ms
        if await publish(99) == 0 and await sse_streams_open(p) == 0:
            return ("topic node.events over h3: 3 published events read as SSE, "
                    "subscriber and SSE stream freed on cancel")
        await asyncio.sleep(0.05)
    raise CheckFailed("the cancelled subscription is still held after 5 s "
                      f"(SSE streams open: {await sse_streams_open(p)})")


async def check_goaway(p: H3Client) -> str:
    """A request, then "drain-me" for the test to drain the server; the server's GOAWAY
    must name the stream after that request (it was served, later ones would not be)."""
    sid = p._quic.get_next_available_stream_id()
    r = await p.request("GET", "/health")
    expect_status(r, 200, "GET /health before the drain")
    print("drain-me", flush=True)
    goaway = await p.goaway
    if goaway != sid + 4:
        raise CheckFailed(f"GOAWAY names stream {goaway}, want {sid + 4} (after {sid})")
    return f"GOAWAY with stream id {goaway} after request stream {sid}"


async def step(name: str, coro) -> None:
    try:
        msg = await asyncio.wait_for(coro, CHECK_TIMEOUT)
    except asyncio.TimeoutError:
        raise CheckFailed(f"{name}: no answer within {CHECK_TIMEOUT:.0f} s") from None
    print(f"ok: {msg}", flush=True)


async def run(args) -> int:
    async with connect(args.host, args.port, configuration=make_config(),
                       create_protocol=H3Client) as p:
        print(f"ok: {check_pin(p, args.fingerprint)}", flush=True)
        checks = {
            "health": lambda: check_health(p),
            "echo": lambda: check_echo(p),
            "bytes": lambda: check_bytes(p),
            "concurrent": lambda: check_concurrent(p),
            "big-header": lambda: check_big_header(p),
            "big-body": lambda: check_big_body(p, args.max_body),
            "streamed-body": lambda: check_streamed_body(p, args.max_body),
            "slow-headers": lambda: check_slow_headers(p),
            "goaway": lambda: check_goaway(p),
            "sse": lambda: check_sse(p),
            "topic": lambda: check_topic(p, args.watcher_token, args.admin_token),
        }
        chosen = args.checks.split(",") if args.checks else list(checks)
        for name in chosen:
            if name not in checks:
                raise CheckFailed(f"unknown check {name!r}; known: {', '.join(checks)}")
            await step(name, checks[name]())
        return len(chosen) + 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--fingerprint", help="SHA-256 hex of the server's DER certificate")
    ap.add_argument("--checks", help="comma-separated subset of the checks, in order")
    ap.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY,
                    help="the server's max_body_bytes")
    ap.add_argument("--watcher-token", help="bearer token with subscribe:node.events (topic)")
    ap.add_argument("--admin-token", help="bearer token that may call node.publish (topic)")
    args = ap.parse_args()
    try:
        # Backstop only: each check and the handshake (idle_timeout) are bounded.
        passed = asyncio.run(asyncio.wait_for(run(args), 8 * CHECK_TIMEOUT))
    except (CheckFailed, ConnectionError, asyncio.TimeoutError) as exc:
        print(f"FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"aioquic h3: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
