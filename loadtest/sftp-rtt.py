#!/usr/bin/env python3
"""SFTP round trip, request by request: runs a command (argv) that speaks SFTP v3 on its
stdin/stdout, and times each request of the chain of dependent requests a small-file `get`
makes (open, fstat, read, read to EOF, close), one at a time, for N files PREFIX1..N.
Prints the median, p10 and p90 of each in microseconds. With ECHO=BYTES it times an echo
of that many bytes instead (the transport's own round trip, e.g. through alknet/echo).

  N=1000 PREFIX=small/f loadtest/sftp-rtt.py /usr/lib/openssh/sftp-server   # in the tree
  N=1000 PREFIX=/small/f loadtest/sftp-rtt.py alknet connect --alpn alknet/sftp \
      --cert C --key K --fingerprint FP 127.0.0.1:PORT
  N=2000 ECHO=64 loadtest/sftp-rtt.py alknet connect --alpn alknet/echo --fingerprint FP HOST:PORT
"""
import os, struct, subprocess, sys, time, statistics

N = int(os.environ.get("N", "500"))
PREFIX = os.environ.get("PREFIX", "small/f")
ECHO = os.environ.get("ECHO")  # just echo raw bytes (alknet/echo): transport RTT

p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
w, r = p.stdin, p.stdout

def readn(n):
    b = b""
    while len(b) < n:
        c = r.read(n - len(b))
        if not c:
            raise SystemExit("eof")
        b += c
    return b

if ECHO:
    ts = []
    msg = b"x" * int(ECHO)
    for _ in range(N):
        t0 = time.perf_counter()
        w.write(msg)
        readn(len(msg))
        ts.append((time.perf_counter() - t0) * 1e6)
    ts.sort()
    print(f"echo {ECHO} B: median {statistics.median(ts):.0f} us p90 {ts[len(ts)*9//10]:.0f} us")
    sys.exit(0)

def send(t, payload):
    w.write(struct.pack(">IB", len(payload) + 1, t) + payload)

def recv():
    (l,) = struct.unpack(">I", readn(4))
    b = readn(l)
    return b[0], b[1:]

def s(x):
    return struct.pack(">I", len(x)) + x

send(1, struct.pack(">I", 3))
recv()
times = {k: [] for k in ("open", "fstat", "read", "read-eof", "close")}
rid = 0
def rt(kind, t, payload):
    global rid
    rid += 1
    t0 = time.perf_counter()
    send(t, struct.pack(">I", rid) + payload)
    typ, body = recv()
    times[kind].append((time.perf_counter() - t0) * 1e6)
    return typ, body

for i in range(1, N + 1):
    typ, body = rt("open", 3, s(f"{PREFIX}{i}".encode()) + struct.pack(">II", 1, 0))
    assert typ == 102, (typ, body)
    h = body[8:8 + struct.unpack(">I", body[4:8])[0]]
    rt("fstat", 8, s(h))
    typ, body = rt("read", 5, s(h) + struct.pack(">QI", 0, 32768))
    assert typ == 103, typ
    n = struct.unpack(">I", body[4:8])[0]
    typ, _ = rt("read-eof", 5, s(h) + struct.pack(">QI", n, 32768 - n))
    assert typ == 101
    rt("close", 4, s(h))
tot = 0
for k, v in times.items():
    v.sort()
    med = statistics.median(v)
    tot += med
    print(f"{k:9s} median {med:6.0f} us  p10 {v[len(v)//10]:6.0f}  p90 {v[len(v)*9//10]:6.0f}")
print(f"chain     {tot:6.0f} us per file")
w.close()
p.wait()
