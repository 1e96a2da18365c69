#!/usr/bin/env python3
"""Interop checks of Alknet's forwarded answers with dnspython, a client nobody here wrote
(tests/tests/dns_forward.rs starts the servers and a fake upstream that answers names
beginning with "slow" late, every A question with 192.0.2.77, padded its own way).

--mode out-of-order  classic DNS over TCP: a query to forward to the slow upstream and local
                     ones behind it, sent together on one connection without waiting
                     (RFC 7766 §6.2.1.1): the local answers come first, every ID once.
--mode bound         the same against a server with max_pipelined_queries = 1: the query
                     behind a second slow one is answered only after the first slow answer
                     (the connection is not read while the bound is reached).
--mode doq-padding   DNS over QUIC (RFC 9250), with the raw answer bytes: a padded query for
                     a forwarded name gets an answer whose length is a multiple of 468
                     (RFC 8467) carrying one Padding option (the upstream's is not relayed).

Exit status 0 only when every check passes.
"""

import argparse
import socket
import struct
import sys
import time

import dns.edns
import dns.flags
import dns.message
import dns.quic
import dns.rcode

CHECK_TIMEOUT = 15.0  # seconds; bounds every network wait
PADDING_BLOCK = 468
UPSTREAM_A = "192.0.2.77"


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def query(name, qid, **kw):
    q = dns.message.make_query(name, "A", **kw)
    q.id = qid
    return q


def pipeline_tcp(port, queries):
    """Sends every query on one TCP connection at once (one write, each behind its 2-byte
    length); returns the answers in the order they arrive, with their arrival times."""
    wire = b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries))
    s = socket.create_connection(("127.0.0.1", port), timeout=CHECK_TIMEOUT)
    try:
        s.sendall(wire)
        start = time.monotonic()
        answers = []
        buf = b""
        while len(answers) < len(queries):
            chunk = s.recv(65536)
            expect(chunk, f"connection closed after {len(answers)} answers")
            buf += chunk
            while len(buf) >= 2:
                (n,) = struct.unpack("!H", buf[:2])
                if len(buf) < 2 + n:
                    break
                answers.append((dns.message.from_wire(buf[2 : 2 + n]), time.monotonic() - start))
                buf = buf[2 + n :]
        s.settimeout(0.3)
        try:
            extra = s.recv(65536)
        except socket.timeout:
            extra = b""
        expect(extra == b"", f"{len(extra)} bytes more than one answer per query")
        return answers
    finally:
        s.close()


def first_a(answer):
    return [rd.to_text() for rrset in answer.answer for rd in rrset if rrset.rdtype == 1]


def check_answers(queries, answers):
    """Every ID answered exactly once, each with the answer to its own question."""
    by_id = {q.id: q for q in queries}
    ids = [a.id for a, _ in answers]
    expect(sorted(ids) == sorted(by_id), f"answered IDs {ids}, asked {sorted(by_id)}")
    for a, _ in answers:
        q = by_id[a.id]
        expect(q.is_response(a), f"answer {a.id} does not match its question")
        expect(a.rcode() == dns.rcode.NOERROR, f"answer {a.id}: {dns.rcode.to_text(a.rcode())}")
    return ids


def out_of_order(port):
    queries = [
        query("slow1.example.org", 101),  # forwarded: the upstream takes its time
        query("host.example.com", 102),
        query("mail.example.com", 103),
        query("ns1.example.com", 104),
    ]
    answers = pipeline_tcp(port, queries)
    ids = check_answers(queries, answers)
    expect(ids[-1] == 101, f"the slow forwarded answer is not last: {ids}")
    expect(sorted(ids[:3]) == [102, 103, 104], f"local answers not first: {ids}")
    slow, slow_at = answers[-1]
    expect(first_a(slow) == [UPSTREAM_A], f"forwarded answer {slow}")
    expect(slow.flags & dns.flags.RA, "forwarded answer without RA")
    local = {a.id: first_a(a) for a, _ in answers[:3]}
    expect(local[102] == ["192.0.2.80"] and local[103] == ["192.0.2.25"], f"{local}")
    print(f"out of order: {ids}; local answers by {answers[2][1]:.3f}s, slow at {slow_at:.3f}s")


def bound(port):
    queries = [
        query("slow2.example.org", 201),
        query("host.example.com", 202),
        query("slow3.example.org", 203),  # waits for a place: the connection is not read
        query("mail.example.com", 204),
    ]
    answers = pipeline_tcp(port, queries)
    ids = check_answers(queries, answers)
    expect(ids == [202, 201, 204, 203], f"order with one query in flight: {ids}")
    print(f"bound of one in flight: {ids}")


def doq_padding(port):
    q = query("padme.example.org", 0, use_edns=0, pad=128)
    manager = dns.quic.SyncQuicManager(verify_mode=False)
    with manager:
        conn = manager.connect("127.0.0.1", port)
        with conn.make_stream(CHECK_TIMEOUT) as stream:
            stream.send(q.to_wire(), True)
            wire = stream.receive(CHECK_TIMEOUT)
    expect(len(wire) % PADDING_BLOCK == 0, f"forwarded DoQ answer of {len(wire)} bytes")
    a = dns.message.from_wire(wire)
    expect(q.is_response(a), "the answer does not match the query")
    expect(first_a(a) == [UPSTREAM_A], f"forwarded answer {a}")
    pads = [o for o in a.options if o.otype == dns.edns.OptionType.PADDING]
    expect(len(pads) == 1, f"{len(pads)} Padding options in {a.options}")
    print(f"doq padding: forwarded answer of {len(wire)} bytes, one Padding option")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=["out-of-order", "bound", "doq-padding"], required=True)
    args = p.parse_args()
    try:
        {"out-of-order": out_of_order, "bound": bound, "doq-padding": doq_padding}[args.mode](
            args.port
        )
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print("forwarded checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
