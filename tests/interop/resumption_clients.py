#!/usr/bin/env python3
"""Two TLS clients nobody here wrote, resuming their sessions, for the resumption test.

- QUIC: aioquic on `alknet/echo`, keeping the newest session ticket the server sent
  (`session_ticket_handler`) and offering it on its next connection.
- TLS over TCP: Python's `ssl` (OpenSSL) with ALPN `http/1.1`, `GET /health`, keeping
  `SSLSocket.session` (TLS 1.3 tickets arrive after the handshake, so it is taken once the
  answer has been read) and offering it next time.

One round connects both and prints `quic resumed=<bool>` and `tcp resumed=<bool>` (or
`quic failed=<why>`, `tcp failed=<why>` when the server refused the connection), then
`round done`. A round runs at start and again for every line read on stdin, so the test
can restart or reload the server between rounds while the tickets stay in this process
(as in a browser or a resolver that outlives a server restart). Ends at end of input.
Every wait is bounded.
"""

import argparse
import asyncio
import socket
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

TIMEOUT = 20.0  # seconds; bounds each exchange
PAYLOAD = b"resume me " * 50


class Tickets:
    def __init__(self) -> None:
        self.quic = None
        self.tcp = None


async def quic_echo(host: str, port: int, tickets: Tickets) -> bool:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["alknet/echo"])
    # self-signed server: this test checks resumption, not the certificate
    cfg.verify_mode = ssl.CERT_NONE
    cfg.session_ticket = tickets.quic

    def keep(ticket) -> None:
        tickets.quic = ticket

    async with connect(host, port, configuration=cfg, session_ticket_handler=keep) as proto:
        reader, writer = await proto.create_stream()
        writer.write(PAYLOAD)
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(), TIMEOUT)
        if got != PAYLOAD:
            raise RuntimeError(f"QUIC echo: {len(got)} bytes back, want {len(PAYLOAD)}")
        resumed = bool(proto._quic.tls.session_resumed)
        proto.close()
        await proto.wait_closed()
    return resumed


def tcp_health(host: str, port: int, tickets: Tickets) -> bool:
    ctx = tcp_health.ctx
    with socket.create_connection((host, port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, session=tickets.tcp) as tls:
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
            resumed = tls.session_reused
            tickets.tcp = tls.session
    status = answer.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"TLS/TCP: unexpected answer {status!r}")
    return resumed


def tcp_context() -> ssl.SSLContext:
    # one context for every connection: OpenSSL offers a session only to the context
    # that made it
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def round_trip(host: str, port: int, tickets: Tickets) -> None:
    # a refused connection is an outcome the test may want (a policy it must not slip
    # past by resuming): reported, and the next round still runs
    try:
        quic = asyncio.run(asyncio.wait_for(quic_echo(host, port, tickets), TIMEOUT))
        print(f"quic resumed={quic}", flush=True)
    except Exception as e:  # noqa: BLE001 - any failure is reported the same way
        print(f"quic failed={type(e).__name__}: {e}", flush=True)
    try:
        tcp = tcp_health(host, port, tickets)
        print(f"tcp resumed={tcp}", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"tcp failed={type(e).__name__}: {e}", flush=True)
    print("round done", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    tcp_health.ctx = tcp_context()
    tickets = Tickets()
    round_trip(args.host, args.port, tickets)
    for _ in sys.stdin:
        round_trip(args.host, args.port, tickets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
