#!/usr/bin/env python3
"""Interop check of Alknet's `doq` (RFC 9250) and `alknet/dns` against clients nobody
here wrote.

dnspython's DoQ client (`dns.query.quic`) asks for the records of the zone the Rust test
wrote (tests/tests/dns_doq.rs); aioquic, driven by hand, breaks RFC 9250 (message ID not
0, two queries on one stream, FIN inside a message, edns-tcp-keepalive) and expects the
connection closed
with DOQ_PROTOCOL_ERROR, and pipelines queries with random IDs on one `alknet/dns` stream.
Exit status 0 only when every check passes.
"""

import argparse
import asyncio
import random
import ssl
import struct
import sys

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset

CHECK_TIMEOUT = 10.0  # seconds; bounds every network wait
DOQ_PROTOCOL_ERROR = 0x2


class CheckFailed(Exception):
    pass


def ask(args, name, rdtype):
    q = dns.message.make_query(name, rdtype)
    return dns.query.quic(q, args.host, port=args.port, verify=False, timeout=CHECK_TIMEOUT)


def rrsets(section, rdtype):
    return [r for r in section if r.rdtype == rdtype]


def values(r, rdtype):
    return sorted(rd.to_text() for rr in rrsets(r.answer, rdtype) for rd in rr)


def expect(cond, what, r):
    if not cond:
        raise CheckFailed(f"{what}:\n{r}")
    print(f"ok: {what}", flush=True)


def dnspython_checks(args):
    A, AAAA, MX, TXT, SRV, CNAME, SOA = (
        dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.MX, dns.rdatatype.TXT,
        dns.rdatatype.SRV, dns.rdatatype.CNAME, dns.rdatatype.SOA)
    checks = 0

    r = ask(args, "host.example.com.", "A")
    expect(r.rcode() == dns.rcode.NOERROR and values(r, A) == ["192.0.2.80"]
           and r.flags & dns.flags.AA and r.id == 0, "A host.example.com (authoritative)", r)
    checks += 1
    r = ask(args, "host.example.com.", "AAAA")
    expect(values(r, AAAA) == ["2001:db8::80"], "AAAA host.example.com", r)
    checks += 1
    r = ask(args, "example.com.", "MX")
    expect(values(r, MX) == ["10 mail.example.com."] and rrsets(r.additional, A),
           "MX example.com with the exchange's address in additional", r)
    checks += 1
    r = ask(args, "example.com.", "TXT")
    expect(values(r, TXT) == ['"v=spf1 -all"'], "TXT example.com", r)
    checks += 1
    r = ask(args, "_sip._tcp.example.com.", "SRV")
    expect(values(r, SRV) == ["10 60 5060 host.example.com."], "SRV _sip._tcp", r)
    checks += 1
    r = ask(args, "nope.example.com.", "A")
    expect(r.rcode() == dns.rcode.NXDOMAIN and not r.answer and rrsets(r.authority, SOA),
           "NXDOMAIN with the SOA in authority", r)
    checks += 1
    r = ask(args, "host.example.com.", "MX")
    expect(r.rcode() == dns.rcode.NOERROR and not r.answer and rrsets(r.authority, SOA),
           "NODATA with the SOA in authority", r)
    checks += 1
    r = ask(args, "anything.wild.example.com.", "A")
    expect(values(r, A) == ["192.0.2.99"]
           and rrsets(r.answer, A)[0].name.to_text() == "anything.wild.example.com.",
           "wildcard synthesized under the query name", r)
    checks += 1
    r = ask(args, "www.example.com.", "A")
    expect(len(rrsets(r.answer, CNAME)) == 2 and values(r, A) == ["192.0.2.80"],
           "CNAME chain www -> web -> host followed inside the zone", r)
    checks += 1
    r = ask(args, "www.example.com.", "CNAME")
    expect(values(r, CNAME) == ["web.example.com."], "CNAME asked for itself", r)
    checks += 1
    r = ask(args, "HoSt.ExAmPlE.cOm.", "A")
    expect(values(r, A) == ["192.0.2.80"], "names are case-insensitive", r)
    checks += 1
    r = ask(args, "example.org.", "A")
    expect(r.rcode() == dns.rcode.REFUSED, "outside every zone: REFUSED (no recursion)", r)
    checks += 1
    r = ask(args, "sub.example.com.", "A")
    expect(not r.flags & dns.flags.AA and rrsets(r.authority, dns.rdatatype.NS)
           and rrsets(r.additional, A), "referral with glue, not authoritative", r)
    checks += 1
    r = ask(args, "example.com.", "ANY")
    expect(r.rcode() == dns.rcode.NOERROR and len(r.answer) == 1,
           "ANY answered with one RRset (RFC 8482)", r)
    checks += 1
    return checks


class RawClient(QuicConnectionProtocol):
    """An aioquic connection that records stream data and how the connection ended."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.data = {}
        self.ended = {}
        self.terminated = asyncio.get_event_loop().create_future()
        self.changed = asyncio.Event()

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            self.data[event.stream_id] = self.data.get(event.stream_id, b"") + event.data
            if event.end_stream:
                self.ended[event.stream_id] = "fin"
        elif isinstance(event, StreamReset):
            self.ended[event.stream_id] = f"reset {event.error_code}"
        elif isinstance(event, ConnectionTerminated) and not self.terminated.done():
            self.terminated.set_result(event)
        self.changed.set()

    def send(self, data, end):
        sid = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(sid, data, end_stream=end)
        self.transmit()
        return sid

    async def wait_for(self, cond):
        async def loop():
            while not cond():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), CHECK_TIMEOUT)


def framed(name, rdtype, qid, options=None):
    q = dns.message.make_query(name, rdtype, use_edns=0 if options else None,
                               options=options)
    q.id = qid
    wire = q.to_wire()
    return struct.pack(">H", len(wire)) + wire


def config(alpn):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[alpn])
    cfg.verify_mode = ssl.CERT_NONE
    cfg.idle_timeout = CHECK_TIMEOUT
    return cfg


async def expect_protocol_error(args, what, payloads):
    async with connect(args.host, args.port, configuration=config("doq"),
                       create_protocol=RawClient) as c:
        for data, end in payloads:
            c.send(data, end)
        ev = await asyncio.wait_for(c.terminated, CHECK_TIMEOUT)
        if ev.error_code != DOQ_PROTOCOL_ERROR:
            raise CheckFailed(f"{what}: closed with {ev.error_code:#x} {ev.reason_phrase!r}")
        print(f"ok: {what} -> DOQ_PROTOCOL_ERROR ({ev.reason_phrase})", flush=True)


async def raw_checks(args):
    checks = 0
    # a well-formed raw query first: the same code path answers
    async with connect(args.host, args.port, configuration=config("doq"),
                       create_protocol=RawClient) as c:
        sid = c.send(framed("host.example.com.", "A", 0), True)
        await c.wait_for(lambda: sid in c.ended)
        wire = c.data[sid]
        (n,) = struct.unpack(">H", wire[:2])
        r = dns.message.from_wire(wire[2:2 + n])
        if c.ended[sid] != "fin" or len(wire) != 2 + n or r.id != 0:
            raise CheckFailed(f"raw DoQ answer: {c.ended[sid]} {r}")
        print("ok: raw DoQ query answered once, stream finished", flush=True)
        checks += 1
    await expect_protocol_error(args, "message ID 0x1234",
                                [(framed("host.example.com.", "A", 0x1234), True)])
    checks += 1
    two = framed("host.example.com.", "A", 0) + framed("web.example.com.", "A", 0)
    await expect_protocol_error(args, "two queries on one stream", [(two, True)])
    checks += 1
    await expect_protocol_error(args, "FIN inside a message",
                                [(framed("host.example.com.", "A", 0)[:10], True)])
    checks += 1
    keepalive = [dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")]
    await expect_protocol_error(args, "edns-tcp-keepalive in a query",
                                [(framed("host.example.com.", "A", 0, keepalive), True)])
    checks += 1

    # alknet/dns: many queries with any IDs pipelined on one stream
    async with connect(args.host, args.port, configuration=config("alknet/dns"),
                       create_protocol=RawClient) as c:
        ids = random.sample(range(1, 65536), 200)
        names = ["host", "web", "mail", "nope", "x.wild"]
        batch = b"".join(framed(f"{names[i % 5]}.example.com.", "A", qid)
                         for i, qid in enumerate(ids))
        sid = c.send(batch, True)
        await c.wait_for(lambda: sid in c.ended)
        wire, seen = c.data[sid], {}
        while wire:
            (n,) = struct.unpack(">H", wire[:2])
            r = dns.message.from_wire(wire[2:2 + n])
            seen[r.id] = r
            wire = wire[2 + n:]
        if c.ended[sid] != "fin" or sorted(seen) != sorted(ids):
            raise CheckFailed(f"alknet/dns: {len(seen)} answers of {len(ids)}, {c.ended[sid]}")
        nx = sum(1 for r in seen.values() if r.rcode() == dns.rcode.NXDOMAIN)
        if nx != 40:
            raise CheckFailed(f"alknet/dns: {nx} NXDOMAIN answers, expected 40")
        print(f"ok: alknet/dns answered {len(ids)} pipelined queries with their IDs", flush=True)
        checks += 1
    return checks


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    passed = failed = 0
    try:
        passed += dnspython_checks(args)
        passed += asyncio.run(raw_checks(args))
    except CheckFailed as e:
        print(f"FAILED: {e}", flush=True)
        failed = 1
    print(f"dnspython doq: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
