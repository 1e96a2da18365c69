#!/usr/bin/env python3
"""WebTransport (draft-02) check of Alknet's `h3` handler with an independent stack:
aioquic's H3Connection(enable_webtransport=True) (its own QUIC, QPACK, HTTP/3 and
WebTransport code: nothing shared with h3/quinn/rustls).

Checks: a session at /alknet/echo answered 200 with `sec-webtransport-http3-draft:
draft02`; 256 KiB echoed on a client-opened bidirectional stream; a unidirectional
stream echoed on a server-opened unidirectional stream of the session; datagrams echoed
with the session's quarter stream ID; a session at /alknet/call answering node.info;
refusals: a path not allowed (/perf) 404, an unknown path 404, a bad token 401. Prints
"aioquic webtransport: N passed, 0 failed"; exit status 0 only when every check passes.
"""

import argparse
import asyncio
import hashlib
import json
import os
import ssl
import struct
import sys

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration

CHECK_TIMEOUT = 30.0  # seconds; bounds every network wait


class CheckFailed(Exception):
    pass


class WtClient(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic, enable_webtransport=True)
        self.headers: dict[int, asyncio.Future] = {}
        self.streams: dict[int, bytearray] = {}
        self.ended: dict[int, asyncio.Future] = {}
        self.server_uni: asyncio.Queue = asyncio.Queue()
        self.datagrams: asyncio.Queue = asyncio.Queue()

    def stream_done(self, stream_id: int) -> asyncio.Future:
        return self.ended.setdefault(
            stream_id, asyncio.get_running_loop().create_future()
        )

    def quic_event_received(self, event):
        for ev in self.http.handle_event(event):
            if isinstance(ev, HeadersReceived):
                fut = self.headers.get(ev.stream_id)
                if fut and not fut.done():
                    fut.set_result(dict(ev.headers))
            elif isinstance(ev, WebTransportStreamDataReceived):
                if ev.stream_id not in self.streams:
                    self.streams[ev.stream_id] = bytearray()
                    if ev.stream_id % 4 == 3:  # server-opened unidirectional
                        self.server_uni.put_nowait(ev.stream_id)
                self.streams[ev.stream_id].extend(ev.data)
                if ev.stream_ended:
                    fut = self.stream_done(ev.stream_id)
                    if not fut.done():
                        fut.set_result(bytes(self.streams[ev.stream_id]))
            elif isinstance(ev, DatagramReceived):
                self.datagrams.put_nowait((ev.stream_id, ev.data))

    async def open_session(self, authority: str, path: str) -> tuple[int, dict]:
        sid = self._quic.get_next_available_stream_id()
        self.headers[sid] = asyncio.get_running_loop().create_future()
        self.http.send_headers(
            sid,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"webtransport"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"sec-webtransport-http3-draft02", b"1"),
            ],
        )
        self.transmit()
        headers = await asyncio.wait_for(self.headers[sid], CHECK_TIMEOUT)
        return sid, headers

    def open_bi(self, session_id: int) -> int:
        stream_id = self.http.create_webtransport_stream(session_id)
        # aioquic's create_webtransport_stream writes the 0x41 header but does not mark
        # the client-opened bidirectional stream as a WebTransport stream on its own side,
        # so the server's reply on it would be parsed as HTTP/3 frames (H3_FRAME_ERROR):
        # the check marks the stream itself.
        with self.http._get_or_create_stream(stream_id) as stream:
            stream.frame_type = FrameType.WEBTRANSPORT_STREAM
            stream.session_id = session_id
        return stream_id


def status(headers: dict) -> int:
    return int(headers.get(b":status", b"0"))


def frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


async def run(args) -> int:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    cfg.verify_mode = ssl.CERT_NONE  # trust comes from the pin below
    cfg.idle_timeout = CHECK_TIMEOUT
    cfg.max_datagram_frame_size = 65536  # H3_DATAGRAM needs QUIC DATAGRAM
    authority = f"{args.host}:{args.port}"
    passed = 0

    async with connect(
        args.host, args.port, configuration=cfg, create_protocol=WtClient
    ) as client:
        if args.sha256:
            from cryptography.hazmat.primitives.serialization import Encoding

            cert = client._quic.tls._peer_certificate
            got = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
            if got != args.sha256:
                raise CheckFailed(f"certificate {got} is not the published {args.sha256}")
            print("ok: the h3 certificate is the one /api/webtransport publishes", flush=True)
            passed += 1

        # 1. the session
        sid, headers = await client.open_session(authority, "/alknet/echo")
        if status(headers) != 200 or headers.get(b"sec-webtransport-http3-draft") != b"draft02":
            raise CheckFailed(f"session refused or not draft02: {headers}")
        print(f"ok: session {sid} at /alknet/echo (draft02)", flush=True)
        passed += 1

        # 2. a bidirectional stream of the session, echoed
        data = os.urandom(256 * 1024)
        bi = client.open_bi(sid)
        client._quic.send_stream_data(bi, data, end_stream=True)
        client.transmit()
        back = await asyncio.wait_for(client.stream_done(bi), CHECK_TIMEOUT)
        if hashlib.sha256(back).digest() != hashlib.sha256(data).digest():
            raise CheckFailed(f"bi echo: {len(back)} bytes back of {len(data)}, or different")
        print(f"ok: {len(data)} bytes echoed on bidirectional stream {bi}", flush=True)
        passed += 1

        # 3. a unidirectional stream, echoed on one the server opens in the session
        uni = client.http.create_webtransport_stream(sid, is_unidirectional=True)
        client._quic.send_stream_data(uni, b"one way and back", end_stream=True)
        client.transmit()
        server_uni = await asyncio.wait_for(client.server_uni.get(), CHECK_TIMEOUT)
        back = await asyncio.wait_for(client.stream_done(server_uni), CHECK_TIMEOUT)
        if back != b"one way and back":
            raise CheckFailed(f"uni echo: {back!r}")
        print(f"ok: uni stream {uni} echoed on server stream {server_uni}", flush=True)
        passed += 1

        # 4. datagrams with the session's quarter stream ID
        got = set()
        for i in range(50):
            client.http.send_datagram(sid, f"dgram-{i % 5}".encode())
            client.transmit()
            try:
                stream_id, d = await asyncio.wait_for(client.datagrams.get(), 0.2)
                if stream_id != sid:
                    raise CheckFailed(f"datagram for stream {stream_id}, not {sid}")
                got.add(d)
            except asyncio.TimeoutError:
                pass
            if len(got) == 5:
                break
        if got != {f"dgram-{i}".encode() for i in range(5)}:
            raise CheckFailed(f"datagrams back: {got}")
        print("ok: datagrams echoed in the session", flush=True)
        passed += 1

        # 5. alknet/call in a second session on the same connection
        call_sid, headers = await client.open_session(authority, "/alknet/call")
        if status(headers) != 200:
            raise CheckFailed(f"/alknet/call: {headers}")
        cs = client.open_bi(call_sid)
        client._quic.send_stream_data(
            cs,
            frame({"type": "call.requested", "id": "py-wt",
                   "payload": {"operationId": "node.info", "input": None}}),
            end_stream=True,
        )
        client.transmit()
        raw = await asyncio.wait_for(client.stream_done(cs), CHECK_TIMEOUT)
        (n,) = struct.unpack(">I", raw[:4])
        answer = json.loads(raw[4 : 4 + n])
        if answer.get("type") != "call.responded" or "h3" not in answer["payload"]["output"]["alpns"]:
            raise CheckFailed(f"node.info: {answer}")
        print(f"ok: node.info over WebTransport -> {answer['payload']['output']['version']}", flush=True)
        passed += 1

        # 6. refusals
        for path, want in [("/perf", 404), ("/alknet/nothing", 404),
                           ("/alknet/echo?token=not-a-token", 401)]:
            _, headers = await client.open_session(authority, path)
            if status(headers) != want:
                raise CheckFailed(f"{path}: {headers}, want {want}")
            print(f"ok: {path} refused with {want}", flush=True)
            passed += 1
    return passed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sha256", help="hex SHA-256 the h3 certificate must have")
    args = ap.parse_args()
    try:
        passed = asyncio.run(asyncio.wait_for(run(args), 4 * CHECK_TIMEOUT))
    except (CheckFailed, asyncio.TimeoutError, ConnectionError) as e:
        print(f"FAILED: {e!r}", flush=True)
        print("aioquic webtransport: 0 passed, 1 failed", flush=True)
        return 1
    print(f"aioquic webtransport: {passed} passed, 0 failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
