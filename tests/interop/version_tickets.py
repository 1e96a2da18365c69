#!/usr/bin/env python3
"""Session tickets and QUIC versions, with aioquic: a ticket belongs to the QUIC version
of the connection that issued it, and the server must not resume a session in another
(RFC 9369, "TLS Resumption and NEW_TOKEN Tokens").

For each `FIRST:SECOND` argument (each `v1`, `v2` or `v1+v2`: the versions aioquic
supports, starting in the first; `v1+v2` is aioquic's default, which a server preferring
v2 switches), connects on `alknet/echo` with FIRST, keeps the newest ticket, connects
with SECOND offering it, and prints `FIRST:SECOND version=<negotiated> resumed=<bool>`.
Every wait is bounded.
"""

import asyncio
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion

TIMEOUT = 20.0
V = {"v1": QuicProtocolVersion.VERSION_1, "v2": QuicProtocolVersion.VERSION_2}
NAMES = {v: k for k, v in V.items()}


def config(versions: str, ticket) -> QuicConfiguration:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["alknet/echo"])
    cfg.verify_mode = ssl.CERT_NONE
    cfg.idle_timeout = TIMEOUT
    cfg.supported_versions = [V[v] for v in versions.split("+")]
    cfg.original_version = cfg.supported_versions[0]
    cfg.session_ticket = ticket
    return cfg


async def echo(host: str, port: int, versions: str, ticket):
    tickets = []
    async with connect(
        host, port, configuration=config(versions, ticket), session_ticket_handler=tickets.append
    ) as proto:
        reader, writer = await proto.create_stream()
        writer.write(b"ticket?")
        writer.write_eof()
        if await asyncio.wait_for(reader.read(), TIMEOUT) != b"ticket?":
            raise RuntimeError("echo mismatch")
        for _ in range(100):  # tickets come after the handshake
            if tickets:
                break
            await asyncio.sleep(0.02)
        result = (NAMES[proto._quic._version], bool(proto._quic.tls.session_resumed))
        proto.close()
        await proto.wait_closed()
    return result, (tickets[-1] if tickets else None)


async def main(host: str, port: int, pairs: list[str]) -> None:
    for pair in pairs:
        first, second = pair.split(":")
        _, ticket = await echo(host, port, first, None)
        if ticket is None:
            raise RuntimeError(f"{pair}: no ticket from the first connection")
        (version, resumed), _ = await echo(host, port, second, ticket)
        print(f"{pair} version={version} resumed={resumed}", flush=True)


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    asyncio.run(asyncio.wait_for(main(host, port, sys.argv[3:]), 120))
