#!/usr/bin/env python3
"""Interop check of Alknet's `alknet/echo` service against an independent QUIC stack.

aioquic shares no code with the server (quinn/rustls), so agreement here is evidence
that the server speaks RFC 9000/9001/9221 rather than "whatever our own client does".
Exit status 0 only when all five checks pass.
"""

import argparse
import asyncio
import contextlib
import hashlib
import random
import ssl
import sys

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.quic.logger import QuicLogger
from cryptography.hazmat.primitives.serialization import Encoding

ECHO_ALPN = "alknet/echo"
UNKNOWN_ALPN = "alknet/no-such-service"
NO_APPLICATION_PROTOCOL = 0x100 + 120  # QUIC CRYPTO_ERROR carrying TLS alert 120
CHECK_TIMEOUT = 20.0  # seconds; bounds every network wait of one check
VERSIONS = {"v1": QuicProtocolVersion.VERSION_1, "v2": QuicProtocolVersion.VERSION_2}
VERSION_NAMES = {v: k for k, v in VERSIONS.items()}
# --versions: the versions aioquic supports, the one it starts in first (None: aioquic's
# default, v1 first with v2 also offered)
CLIENT_VERSIONS: list[int] | None = None


class CheckFailed(Exception):
    """A check's expectation was not met; the message says how."""


class HandshakeFailed(CheckFailed):
    def __init__(self, event: "events.ConnectionTerminated | None"):
        super().__init__(f"handshake failed: {describe(event) if event else 'no reason given'}")
        self.event = event


class EchoProtocol(QuicConnectionProtocol):
    """Adds capture of what the asyncio streams API cannot surface: server-opened
    unidirectional streams, DATAGRAM frames, and the reason a connection ended."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.uni_data: dict[int, bytearray] = {}
        self.uni_finished: set[int] = set()
        self.datagrams: list[bytes] = []
        self.terminated: events.ConnectionTerminated | None = None
        self.changed = asyncio.Event()

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived) and event.stream_id % 4 == 3:
            # Server-initiated uni stream: keep it out of the base class, which would
            # otherwise buffer it in a StreamReader nobody reads.
            self.uni_data.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream:
                self.uni_finished.add(event.stream_id)
            self.changed.set()
            return
        if isinstance(event, events.DatagramFrameReceived):
            self.datagrams.append(event.data)
            self.changed.set()
            return
        if isinstance(event, events.ConnectionTerminated):
            self.terminated = event
            self.changed.set()
        super().quic_event_received(event)

    async def wait_until(self, predicate) -> None:
        """Wait until predicate() holds; callers bound this with wait_for."""
        while not predicate():
            if self.terminated is not None:
                raise CheckFailed(f"connection terminated: {describe(self.terminated)}")
            self.changed.clear()
            await self.changed.wait()


def describe(ev: events.ConnectionTerminated) -> str:
    return f"error_code=0x{ev.error_code:x} reason={ev.reason_phrase!r}"


def make_config(alpn: str, logger: QuicLogger | None = None) -> QuicConfiguration:
    # The certificate is self-signed; trust comes from the optional fingerprint pin.
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[alpn],
                            max_datagram_frame_size=65536, quic_logger=logger)
    cfg.verify_mode = ssl.CERT_NONE
    if CLIENT_VERSIONS is not None:
        cfg.supported_versions = list(CLIENT_VERSIONS)
        cfg.original_version = CLIENT_VERSIONS[0]
    # Also bounds the handshake, which no asyncio.wait_for of ours covers.
    cfg.idle_timeout = CHECK_TIMEOUT
    return cfg


@contextlib.asynccontextmanager
async def echo_connect(args, alpn: str, logger: QuicLogger | None = None):
    """aioquic's connect(), but a failed handshake says why: aioquic itself only raises
    a bare ConnectionError, the reason sits in the protocol's termination event."""
    protos: list[EchoProtocol] = []

    def factory(*a, **kw):
        protos.append(EchoProtocol(*a, **kw))
        return protos[-1]

    try:
        async with connect(args.host, args.port, configuration=make_config(alpn, logger),
                           create_protocol=factory) as proto:
            yield proto
    except ConnectionError:
        if protos and protos[0]._connected:
            raise
        raise HandshakeFailed(protos[0].terminated if protos else None) from None


def check_pin(proto: EchoProtocol, fingerprint: str | None) -> str:
    tls = proto._quic.tls
    if tls.alpn_negotiated != ECHO_ALPN:
        raise CheckFailed(f"negotiated ALPN {tls.alpn_negotiated!r}, want {ECHO_ALPN!r}")
    if fingerprint is None:
        return "certificate not pinned"
    # aioquic keeps the parsed leaf certificate only in a private attribute of its TLS
    # context; there is no public accessor in 1.7.
    cert = tls._peer_certificate
    if cert is None:
        raise CheckFailed("server presented no certificate")
    got = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    want = fingerprint.lower().replace(":", "").removeprefix("sha256")
    if got != want:
        raise CheckFailed(f"certificate fingerprint {got} != pinned {want}")
    return "certificate fingerprint matches"


def payload_sizes(n: int, max_size: int) -> list[int]:
    # Always cover one byte, a packet-and-a-half, several packets and the maximum;
    # the rest are random so framing boundaries fall in different places each stream.
    sizes = [min(s, max_size) for s in (1, 1500 + 17, 4096 * 3 + 5, max_size)][:n]
    rng = random.Random(4242)
    return sizes + [rng.randint(1, max_size) for _ in range(n - len(sizes))]


async def echo_bidi(proto: EchoProtocol, index: int, size: int) -> None:
    data = random.Random(1000 + index).randbytes(size)
    reader, writer = await proto.create_stream()
    sid = writer.get_extra_info("stream_id")
    writer.write(data)
    writer.write_eof()
    echoed = await reader.read()  # returns at the server's FIN
    if echoed != data or hashlib.sha256(echoed).digest() != hashlib.sha256(data).digest():
        prefix = next((i for i, (a, b) in enumerate(zip(data, echoed)) if a != b),
                      min(len(data), len(echoed)))
        raise CheckFailed(f"bidi stream {sid}: sent {size} bytes, got {len(echoed)} "
                          f"back, first difference at offset {prefix}")


async def check_bidi(proto: EchoProtocol, args, pin: str) -> str:
    sizes = payload_sizes(args.streams, args.max_size)
    await asyncio.gather(*(echo_bidi(proto, i, s) for i, s in enumerate(sizes)))
    return (f"{len(sizes)} concurrent bidi streams echoed, {sum(sizes)} bytes "
            f"(sizes {sizes}; ALPN {ECHO_ALPN}, {pin})")


async def check_uni(proto: EchoProtocol) -> str:
    data = random.Random(7).randbytes(200_000)  # several flow-control updates' worth
    quic = proto._quic
    sid = quic.get_next_available_stream_id(is_unidirectional=True)
    quic.send_stream_data(sid, data, end_stream=True)
    proto.transmit()
    await proto.wait_until(lambda: proto.uni_finished)
    got_sid = min(proto.uni_finished)
    got = bytes(proto.uni_data[got_sid])
    if got != data:
        raise CheckFailed(f"uni echo on server stream {got_sid}: sent {len(data)} bytes, "
                          f"got {len(got)} back (content differs)")
    return f"uni stream {sid} echoed on server uni stream {got_sid} ({len(data)} bytes)"


async def check_datagrams(proto: EchoProtocol) -> str:
    quic = proto._quic
    if not quic._remote_max_datagram_frame_size:
        raise CheckFailed("server did not advertise max_datagram_frame_size")
    # Sizes stay below aioquic's 1200-byte packet size: a DATAGRAM frame cannot be
    # fragmented, and aioquic keeps one that never fits queued forever.
    sent = [random.Random(100 + i).randbytes(n) for i, n in enumerate((1, 500, 1000))]
    for attempt in range(1, 4):
        # DATAGRAM is unreliable by design, so resend what is missing instead of
        # failing on the first loss.
        for d in sent:
            if d not in proto.datagrams:
                quic.send_datagram_frame(d)
        proto.transmit()
        try:
            await asyncio.wait_for(
                proto.wait_until(lambda: all(d in proto.datagrams for d in sent)), 1.0)
            return f"3 datagrams echoed (attempts: {attempt})"
        except asyncio.TimeoutError:
            pass
    missing = [i for i, d in enumerate(sent) if d not in proto.datagrams]
    raise CheckFailed(f"datagrams {missing} never echoed; received {len(proto.datagrams)} "
                      f"datagram(s) of sizes {[len(d) for d in proto.datagrams]}; "
                      f"{len(quic._datagrams_pending)} still queued unsent in aioquic")


async def check_close(proto: EchoProtocol) -> str:
    if proto.terminated is not None:
        raise CheckFailed(f"connection already ended: {describe(proto.terminated)}")
    proto.close()
    await proto.wait_closed()
    if proto.terminated is None or proto.terminated.error_code != 0:
        raise CheckFailed(f"unclean close: {proto.terminated and describe(proto.terminated)}")
    return "connection closed with NO_ERROR"


def peer_close_frames(logger: QuicLogger) -> list[dict]:
    return [f for t in logger.to_dict()["traces"] for e in t["events"]
            if e["name"] == "transport:packet_received"
            for f in e["data"].get("frames", []) if f.get("frame_type") == "connection_close"]


async def check_unknown_alpn(args) -> str:
    logger = QuicLogger()
    try:
        async with echo_connect(args, UNKNOWN_ALPN, logger) as proto:
            raise CheckFailed(f"handshake with only {UNKNOWN_ALPN!r} succeeded "
                              f"(negotiated {proto._quic.tls.alpn_negotiated!r})")
    except HandshakeFailed as exc:
        ev = exc.event
    if ev is None or ev.error_code != NO_APPLICATION_PROTOCOL:
        raise CheckFailed(f"expected error 0x{NO_APPLICATION_PROTOCOL:x}, got "
                          f"{describe(ev) if ev else 'no termination event'}")
    # aioquic itself raises no_application_protocol when a server answers without ALPN,
    # so only a CONNECTION_CLOSE received from the server proves the server refused.
    remote = peer_close_frames(logger)
    if not any(f["error_code"] == NO_APPLICATION_PROTOCOL for f in remote):
        raise CheckFailed(f"0x{NO_APPLICATION_PROTOCOL:x} raised locally, not by the "
                          f"server ({describe(ev)}; server close frames: {remote})")
    return f"unknown ALPN refused by server ({describe(ev)})"


async def step(name: str, coro) -> None:
    try:
        msg = await asyncio.wait_for(coro, CHECK_TIMEOUT)
    except asyncio.TimeoutError:
        raise CheckFailed(f"{name}: no answer within {CHECK_TIMEOUT:.0f} s") from None
    print(f"ok: {msg}", flush=True)


def check_version(proto: EchoProtocol, expect: str | None) -> None:
    """Prints the version the connection runs in and the one it started in (aioquic's
    first Initial); with --expect-version, fails unless the former is that one."""
    quic = proto._quic
    started = quic._configuration.original_version or quic._configuration.supported_versions[0]
    got = VERSION_NAMES.get(quic._version, hex(quic._version))
    print(f"version: {got} (started in {VERSION_NAMES.get(started, hex(started))})", flush=True)
    if expect is not None and got != expect:
        raise CheckFailed(f"connection runs QUIC {got}, want {expect}")


async def run(args) -> int:
    # Checks 1-4 share one connection, so the first failure ends the run.
    async with echo_connect(args, ECHO_ALPN) as proto:
        check_version(proto, args.expect_version)
        pin = check_pin(proto, args.fingerprint)
        await step("bidi echo", check_bidi(proto, args, pin))
        await step("uni echo", check_uni(proto))
        await step("datagram echo", check_datagrams(proto))
        await step("close", check_close(proto))
    await step("unknown ALPN", check_unknown_alpn(args))
    return 5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--fingerprint", help="SHA-256 hex of the server's DER certificate")
    ap.add_argument("--streams", type=int, default=8, help="concurrent bidi streams")
    ap.add_argument("--max-size", type=int, default=1 << 20, help="largest stream payload")
    ap.add_argument("--versions", help="QUIC versions aioquic supports, comma-separated "
                    "(v1, v2), the first the one it starts in; default: aioquic's (v1, v2)")
    ap.add_argument("--expect-version", choices=sorted(VERSIONS),
                    help="fail unless the connection runs in this version")
    args = ap.parse_args()
    if args.versions is not None:
        global CLIENT_VERSIONS
        try:
            CLIENT_VERSIONS = [VERSIONS[v] for v in args.versions.split(",")]
        except KeyError as e:
            ap.error(f"--versions: unknown version {e}")
    if args.streams < 1 or args.max_size < 1:
        ap.error("--streams and --max-size must be positive")
    try:
        # Backstop only: each check and each handshake (idle_timeout) is bounded.
        passed = asyncio.run(asyncio.wait_for(run(args), 8 * CHECK_TIMEOUT))
    except (CheckFailed, ConnectionError, asyncio.TimeoutError) as exc:
        print(f"FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"aioquic interop: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
