#!/usr/bin/env python3
"""Interop check of Alknet's DNS over TLS (RFC 7858, ALPN "dot") and DNS over HTTPS
(RFC 8484, /dns-query) against clients nobody here wrote.

dnspython asks for the records of the zone the Rust test wrote (tests/tests/dns_encrypted.rs)
over DoT (`dns.query.tls`) and over DoH with HTTP/1.1 and HTTP/2 (httpx) and HTTP/3
(aioquic), GET and POST. Python's ssl module pipelines queries with random IDs on one DoT
connection and breaks the protocol (a response sent as a query, a malformed message, an
idle connection); httpx checks DoH's HTTP side (media type, cache lifetime, status codes).
Exit status 0 only when every check passes.
"""

import argparse
import base64
import random
import socket
import ssl
import struct
import sys
import time

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx

CHECK_TIMEOUT = 10.0  # seconds; bounds every network wait


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def texts(answer, rdtype):
    return sorted(
        rd.to_text() for rrset in answer.answer if rrset.rdtype == rdtype for rd in rrset
    )


def dot_connect(port, alpn=True):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(["dot"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=CHECK_TIMEOUT)
    s = ctx.wrap_socket(raw)
    want = "dot" if alpn else None
    expect(s.selected_alpn_protocol() == want, f"ALPN {s.selected_alpn_protocol()!r}")
    return s


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def recv_message(s):
    (length,) = struct.unpack("!H", recv_exact(s, 2))
    return dns.message.from_wire(recv_exact(s, length))


def closed_by_server(s, within):
    """True when the server closes the connection (EOF or reset) within `within` seconds."""
    s.settimeout(within)
    try:
        while True:
            if not s.recv(4096):
                return True
    except (ConnectionError, ssl.SSLError):
        return True
    except socket.timeout:
        return False


def check_dot(port):
    tls = lambda q: dns.query.tls(q, "127.0.0.1", port=port, timeout=CHECK_TIMEOUT, verify=False)
    a = tls(dns.message.make_query("host.example.com", "A"))
    expect(texts(a, dns.rdatatype.A) == ["192.0.2.80"], f"DoT A: {a}")
    expect(a.flags & dns.flags.AA, "DoT answers are authoritative")
    mx = tls(dns.message.make_query("example.com", "MX"))
    expect(texts(mx, dns.rdatatype.MX) == ["10 mail.example.com."], f"DoT MX: {mx}")
    nx = tls(dns.message.make_query("nope.example.com", "A"))
    expect(nx.rcode() == dns.rcode.NXDOMAIN and nx.authority, f"DoT NXDOMAIN: {nx}")
    big = tls(dns.message.make_query("big.example.com", "TXT"))
    expect(len(texts(big, dns.rdatatype.TXT)) == 8, "DoT carries answers over 1232 bytes")
    # a padded query gets a padded answer (RFC 7830, block length 468 per RFC 8467)
    q = dns.message.make_query("host.example.com", "A", use_edns=0, pad=128)
    padded = tls(q)
    expect(
        any(o.otype == dns.edns.OptionType.PADDING for o in padded.options),
        f"padded answer: {padded}",
    )
    expect(len(padded.to_wire()) % 468 == 0, f"answer of {len(padded.to_wire())} bytes")
    print("dot: dnspython answers ok")

    # many queries with random IDs in one write, answered on the same connection
    s = dot_connect(port)
    names = [f"n{i}.wild.example.com" for i in range(50)] + ["host.example.com"] * 10
    ids = random.sample(range(1, 65536), len(names))
    wire = b""
    for name, qid in zip(names, ids):
        m = dns.message.make_query(name, "A", id=qid).to_wire()
        wire += struct.pack("!H", len(m)) + m
    s.sendall(wire)
    got = {}
    for _ in names:
        r = recv_message(s)
        got[r.id] = r
    expect(sorted(got) == sorted(ids), "every pipelined query answered once, by ID")
    for name, qid in zip(names, ids):
        want = "192.0.2.99" if "wild" in name else "192.0.2.80"
        expect(texts(got[qid], dns.rdatatype.A) == [want], f"{name}: {got[qid]}")
    # a message split over writes, byte by byte at first
    m = dns.message.make_query("host.example.com", "AAAA", id=7).to_wire()
    framed = struct.pack("!H", len(m)) + m
    for b in framed[:5]:
        s.sendall(bytes([b]))
    s.sendall(framed[5:])
    r = recv_message(s)
    expect(r.id == 7 and texts(r, dns.rdatatype.AAAA) == ["2001:db8::80"], f"split: {r}")
    # a header with an undecodable body: FORMERR, and the connection goes on
    s.sendall(struct.pack("!H", 14) + struct.pack("!HHHHHH", 9, 0, 1, 0, 0, 0) + b"\x05a")
    r = recv_message(s)
    expect(r.id == 9 and r.rcode() == dns.rcode.FORMERR, f"FORMERR: {r}")
    # a response sent as a query: nothing to answer, the server closes
    resp = dns.message.make_response(dns.message.make_query("host.example.com", "A"))
    m = resp.to_wire()
    s.sendall(struct.pack("!H", len(m)) + m)
    expect(closed_by_server(s, CHECK_TIMEOUT), "a response as a query closes the connection")
    s.close()
    # a DoT client that offers no ALPN (RFC 7858 has none) is told from HTTP/1.1 by its
    # first byte
    s = dot_connect(port, alpn=False)
    for qid in (11, 12):
        m = dns.message.make_query("host.example.com", "A", id=qid).to_wire()
        s.sendall(struct.pack("!H", len(m)) + m)
    got = sorted(recv_message(s).id for _ in range(2))
    expect(got == [11, 12], f"DoT without ALPN: {got}")
    s.close()
    print("dot: pipelining, no ALPN and bad input ok")


def check_dot_idle(port, idle_s):
    s = dot_connect(port)
    m = dns.message.make_query("host.example.com", "A", id=1).to_wire()
    s.sendall(struct.pack("!H", len(m)) + m)
    expect(recv_message(s).id == 1, "answer before idling")
    expect(
        closed_by_server(s, idle_s + CHECK_TIMEOUT),
        "an idle connection is closed by the server",
    )
    s.close()
    # a message begun and never finished: closed too (query_timeout_ms)
    s = dot_connect(port)
    s.sendall(b"\x00\x40\x00")
    expect(closed_by_server(s, idle_s + CHECK_TIMEOUT), "a half message is not held forever")
    s.close()
    print("dot: idle and unfinished connections closed ok")


def check_doh(port):
    url = f"https://127.0.0.1:{port}/dns-query"
    for version in (dns.query.HTTPVersion.HTTP_1, dns.query.HTTPVersion.HTTP_2,
                    dns.query.HTTPVersion.HTTP_3):
        for post in (True, False):
            ask = lambda name, rdtype: dns.query.https(
                dns.message.make_query(name, rdtype),
                url,
                timeout=CHECK_TIMEOUT,
                verify=False,
                post=post,
                http_version=version,
            )
            what = f"DoH {version.name} {'POST' if post else 'GET'}"
            a = ask("www.example.com", "A")
            expect(
                [rrset.rdtype for rrset in a.answer]
                == [dns.rdatatype.CNAME, dns.rdatatype.CNAME, dns.rdatatype.A],
                f"{what} CNAME chain: {a}",
            )
            expect(texts(a, dns.rdatatype.A) == ["192.0.2.80"], f"{what}: {a}")
            srv = ask("_sip._tcp.example.com", "SRV")
            expect(
                texts(srv, dns.rdatatype.SRV) == ["10 60 5060 host.example.com."],
                f"{what} SRV: {srv}",
            )
            nodata = ask("host.example.com", "MX")
            expect(
                nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority,
                f"{what} NODATA: {nodata}",
            )
            refused = ask("example.org", "A")
            expect(refused.rcode() == dns.rcode.REFUSED, f"{what} REFUSED: {refused}")
            print(f"{what}: ok")

    with httpx.Client(http2=True, verify=False, timeout=CHECK_TIMEOUT) as c:
        q = dns.message.make_query("host.example.com", "A", id=0).to_wire()
        b64 = base64.urlsafe_b64encode(q).rstrip(b"=").decode()
        r = c.get(url, params={"dns": b64}, headers={"accept": "application/dns-message"})
        expect(r.status_code == 200 and r.http_version == "HTTP/2", f"GET {r}")
        expect(r.headers["content-type"] == "application/dns-message", str(r.headers))
        # host's A has the zone's $TTL 3600
        expect(r.headers["cache-control"] == "max-age=3600", str(r.headers))
        expect(dns.message.from_wire(r.content).id == 0, "the ID comes back 0")
        # negative: the SOA's MINIMUM (300) under its TTL (3600), RFC 2308
        q = dns.message.make_query("nope.example.com", "A").to_wire()
        r = c.post(url, content=q, headers={"content-type": "application/dns-message"})
        expect(r.headers["cache-control"] == "max-age=300", f"NXDOMAIN {r.headers}")
        q = dns.message.make_query("example.org", "A").to_wire()
        r = c.post(url, content=q, headers={"content-type": "application/dns-message"})
        expect(r.status_code == 200 and r.headers["cache-control"] == "no-store", str(r.headers))
        # HTTP errors
        r = c.post(url, content=q, headers={"content-type": "application/json"})
        expect(r.status_code == 415, f"wrong media type: {r.status_code}")
        r = c.get(url, params={"dns": "!!not base64!!"})
        expect(r.status_code == 400, f"bad base64: {r.status_code}")
        r = c.get(url)
        expect(r.status_code == 400, f"no dns parameter: {r.status_code}")
        r = c.post(url, content=b"\x00" * 5, headers={"content-type": "application/dns-message"})
        expect(r.status_code == 400, f"not a DNS message: {r.status_code}")
        r = c.post(url, content=b"\x00" * 70000,
                   headers={"content-type": "application/dns-message"})
        expect(r.status_code == 413, f"oversized: {r.status_code}")
        # still serving after all that
        r = c.get(url, params={"dns": b64})
        expect(r.status_code == 200, "serving after bad requests")
    print("doh: HTTP side ok")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--idle-port", type=int, help="a server with a short dot_idle_timeout_ms")
    p.add_argument("--idle-seconds", type=float, default=1.0)
    args = p.parse_args()
    try:
        check_dot(args.port)
        check_doh(args.port)
        if args.idle_port:
            check_dot_idle(args.idle_port, args.idle_seconds)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print("all encrypted DNS checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
