#!/usr/bin/env python3
"""Interop check of Alknet's `alknet/call` against a client written from the wire spec.

aioquic (a QUIC stack sharing no code with the server) opens a bidirectional stream and
speaks the framing by hand: a u32 big-endian length, then a JSON object
{"type", "id", "payload"}. Nothing of the Rust client library is used.
Exit status 0 only when every check passes.
"""

import argparse
import asyncio
import json
import ssl
import struct
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

CALL_ALPN = "alknet/call"
CHECK_TIMEOUT = 20.0  # seconds; bounds every network wait
MAX_FRAME = 1 << 20


class CheckFailed(Exception):
    pass


def frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> dict:
    header = await reader.readexactly(4)
    (length,) = struct.unpack(">I", header)
    if length > MAX_FRAME:
        raise CheckFailed(f"server frame of {length} bytes")
    return json.loads(await reader.readexactly(length))


async def call(reader, writer, rid: str, op: str, payload_extra=None, **input_) -> dict:
    payload = {"operationId": op, "input": input_ or None}
    payload.update(payload_extra or {})
    writer.write(frame({"type": "call.requested", "id": rid, "payload": payload}))
    resp = await read_frame(reader)
    if resp.get("id") != rid:
        raise CheckFailed(f"answer for {resp.get('id')!r}, expected {rid!r}: {resp}")
    return resp


async def run(args) -> int:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[CALL_ALPN])
    cfg.verify_mode = ssl.CERT_NONE  # self-signed; the Rust tests cover pinning
    cfg.idle_timeout = CHECK_TIMEOUT
    passed = 0
    async with connect(args.host, args.port, configuration=cfg) as proto:
        if proto._quic.tls.alpn_negotiated != CALL_ALPN:
            raise CheckFailed(f"negotiated {proto._quic.tls.alpn_negotiated!r}")
        reader, writer = await proto.create_stream()

        # 1. node.info answers call.responded with the node's facts
        r = await call(reader, writer, "py-1", "node.info")
        out = r.get("payload", {}).get("output", {})
        if r.get("type") != "call.responded" or CALL_ALPN not in out.get("alpns", []):
            raise CheckFailed(f"node.info: {r}")
        print(f"ok: node.info -> version {out['version']}, {out['workers']} workers, "
              f"alpns {out['alpns']}", flush=True)
        passed += 1

        # 2. an operation that needs a scope the anonymous caller lacks: FORBIDDEN
        r = await call(reader, writer, "py-2", "node.stats")
        if r.get("type") != "call.error" or r["payload"].get("code") != "FORBIDDEN":
            raise CheckFailed(f"node.stats: {r}")
        print(f"ok: node.stats denied: {r['payload']['code']}: {r['payload']['message']}",
              flush=True)
        passed += 1

        # 3. unknown operation (with the leading slash form): NOT_FOUND
        r = await call(reader, writer, "py-3", "/no.such.op")
        if r.get("type") != "call.error" or r["payload"].get("code") != "NOT_FOUND":
            raise CheckFailed(f"unknown op: {r}")
        print("ok: unknown operation -> NOT_FOUND", flush=True)
        passed += 1

        # 4. a frame with an id but no type: INVALID_ARGUMENT, and the stream goes on
        writer.write(frame({"id": "py-4", "payload": {}}))
        r = await read_frame(reader)
        if r.get("id") != "py-4" or r["payload"].get("code") != "INVALID_ARGUMENT":
            raise CheckFailed(f"malformed frame: {r}")
        r = await call(reader, writer, "py-5", "echo", text="héllo ✓", n=[1, 2.5, None])
        if r.get("payload", {}).get("output") != {"text": "héllo ✓", "n": [1, 2.5, None]}:
            raise CheckFailed(f"echo after the malformed frame: {r}")
        print("ok: malformed frame answered INVALID_ARGUMENT; echo round-trips unicode",
              flush=True)
        passed += 1

        # 5. 200 pipelined requests, answered once each (in any order)
        for i in range(200):
            writer.write(frame({"type": "call.requested", "id": f"p{i}",
                                "payload": {"operationId": "echo", "input": i}}))
        seen = {}
        for _ in range(200):
            r = await read_frame(reader)
            seen[r["id"]] = r["payload"]["output"]
        if seen != {f"p{i}": i for i in range(200)}:
            raise CheckFailed("pipelined answers do not match")
        print("ok: 200 pipelined requests answered exactly once", flush=True)
        passed += 1

        writer.write_eof()
        try:
            extra = await reader.read()
        except ConnectionError:
            extra = b""
        if extra:
            raise CheckFailed(f"unexpected bytes after the last answer: {extra[:64]!r}")
    return passed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        passed = asyncio.run(asyncio.wait_for(run(args), 6 * CHECK_TIMEOUT))
    except (CheckFailed, ConnectionError, asyncio.TimeoutError,
            asyncio.IncompleteReadError, json.JSONDecodeError) as exc:
        print(f"FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"aioquic call interop: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
