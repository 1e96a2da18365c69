#!/usr/bin/env python3
"""Two TLS clients nobody here wrote, each writing its own key log, for the key log test.

- QUIC: aioquic on `alknet/echo` (its `secrets_log_file`), one bidirectional stream
  echoed back whole.
- TLS over TCP: Python's `ssl` (OpenSSL, `SSLContext.keylog_filename`) with ALPN
  `http/1.1`, one `GET /health` answered 200.

The test compares these files with the server's `SSLKEYLOGFILE`: the same secrets for the
same client random prove the server logs what was really negotiated. Exit status 0 only
when both exchanges succeeded; every wait is bounded.
"""

import argparse
import asyncio
import socket
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

TIMEOUT = 20.0  # seconds; bounds each exchange
PAYLOAD = b"key log check " * 100


async def quic_echo(host: str, port: int, log_path: str) -> None:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["alknet/echo"])
    # self-signed server: this test checks secrets, not the certificate
    cfg.verify_mode = ssl.CERT_NONE
    with open(log_path, "a") as log:
        cfg.secrets_log_file = log
        async with connect(host, port, configuration=cfg) as proto:
            reader, writer = await proto.create_stream()
            writer.write(PAYLOAD)
            writer.write_eof()
            got = await asyncio.wait_for(reader.read(), TIMEOUT)
            if got != PAYLOAD:
                raise SystemExit(f"QUIC echo: {len(got)} bytes back, want {len(PAYLOAD)}")
            proto.close()
            await proto.wait_closed()


def tcp_health(host: str, port: int, log_path: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.keylog_filename = log_path
    with socket.create_connection((host, port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    status = answer.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"TLS/TCP: unexpected answer {status!r}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--quic-log", required=True)
    ap.add_argument("--tcp-log", required=True)
    args = ap.parse_args()
    asyncio.run(asyncio.wait_for(quic_echo(args.host, args.port, args.quic_log), TIMEOUT))
    print("quic echo ok")
    tcp_health(args.host, args.port, args.tcp_log)
    print("tls/tcp health ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
