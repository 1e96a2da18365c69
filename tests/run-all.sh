#!/usr/bin/env bash
# Runs every test of the project: unit, integration and real-client interop tests, the
# load-test smoke runs, builds the benchmarks, runs the callgrind instruction-count gate,
# and builds the fuzz targets (with a short smoke run). Installs what a fresh machine
# lacks. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each section's start and the time taken so far, so a slow CI run shows where it went.
# The free disk beside it: a CI machine short of disk fails to link, and this shows where.
step() {
    echo "== run-all +$((SECONDS / 60))m$((SECONDS % 60))s: $* ($(df -h --output=avail . | tail -1 | tr -d ' ') free)"
}

# Real clients the suite drives (independent implementations, not ours).
# valgrind: the instruction-count gate; openssh-client (ssh, ssh-keygen): the OpenSSH
# tests of alknet/ssh, of `alknet vault export-ssh` and (sftp) of SFTP both ways; tmux: their
# pty session; curl: the SOCKS5 test of `alknet socks`; git: the clone/fetch/push tests of
# alknet/git (and its git backend runs the installed git); bind9-dnsutils (dig): the classic
# DNS tests.
missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null && command -v sftp >/dev/null \
    || missing+=(openssh-client)
command -v tmux >/dev/null || missing+=(tmux)
# Xvfb, xauth, xdpyinfo: an X server and an X client for ssh -X (ssh_openssh)
command -v Xvfb >/dev/null || missing+=(xvfb)
command -v xauth >/dev/null || missing+=(xauth)
command -v xdpyinfo >/dev/null || missing+=(x11-utils)
# rsync: `rsync -e ssh` through alknet/ssh (ssh_openssh)
command -v rsync >/dev/null || missing+=(rsync)
command -v curl >/dev/null || missing+=(curl)
# ip (iproute2): small_mtu gives its network namespace's loopback a 1400-byte MTU
command -v ip >/dev/null || missing+=(iproute2)
command -v git >/dev/null || missing+=(git)
# dig: the classic DNS (UDP/TCP) tests; kdig (Knot): the DoT (+tls) and DoH (+https) tests.
command -v dig >/dev/null || missing+=(bind9-dnsutils)
command -v kdig >/dev/null || missing+=(knot-dnsutils)
# openssl: the big certificate of the QUIC interop case amplificationlimit (and the
# public-key pin of the HTTP tests)
command -v openssl >/dev/null || missing+=(openssl)
# h2load: the HTTP/2 and HTTP/1.1 correctness run of the TLS-over-TCP listener (http_tcp).
command -v h2load >/dev/null || missing+=(nghttp2-client)
# prometheus: the real scraper of /metrics (http_tcp: HTTPS, a bearer token, gzip)
command -v prometheus >/dev/null || missing+=(prometheus)
# chromium: the dashboard test (http_dashboard) loads `GET /` over HTTP/2 and HTTP/3.
command -v chromium >/dev/null || command -v chromium-headless-shell >/dev/null \
    || missing+=(chromium)
# nss_wrapper: happy_eyeballs resolves a name of its own (IPv6 and IPv4) with the system's
# resolver, from a hosts file of the test's, without touching /etc/hosts.
dpkg -s libnss-wrapper >/dev/null 2>&1 || missing+=(libnss-wrapper)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q && apt-get install -y -q "${missing[@]}"
fi
# aioquic: raw QUIC and HTTP/3 interop; dnspython[doq]: the DoQ client of the DNS tests;
# paramiko: the second SFTP client; prometheus-client: its OpenMetrics parser checks /metrics;
# mcp: the official MCP SDK as the client of POST /mcp; httpx[http2]: dnspython's DoH client.
if ! python3 -c 'import aioquic, dns.quic, paramiko, prometheus_client, mcp, httpx, h2' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
fi

step build
# The CLI tests run the real `alknet` binary.
cargo build --workspace --bins --quiet

step tests
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
step legacy driver
# The same engine on monoio's legacy (epoll) driver, used where io_uring is refused.
ALKNET_DRIVER=legacy cargo test --quiet -p alknet-tests --test echo --test migration --test lifecycle --test git_wire --test http_tcp --test small_mtu
# The QUIC interop runner's server cases: aioquic (quinn for ecn) through the seeded bad-network relay
# alknet-netsim: every case with 2 workers (~2.5 minutes), then the cases where per-core
# routing can go wrong with 1 worker and with userspace forwarding instead of kernel
# steering (see README, "QUIC interop cases").
step quic interop
bash tests/quic-interop/run.sh
WORKERS=1 bash tests/quic-interop/run.sh retry zerortt rebind-port rebind-addr connectionmigration
STEERING=0 bash tests/quic-interop/run.sh retry resumption rebind-port rebind-addr connectionmigration v2
step doc tests and benches
cargo test --workspace --doc --quiet
# The criterion benches must keep compiling and linking; the dev profile reuses what the tests
# built (an optimized build of them would add minutes and proves nothing more: the gate below
# runs the optimized workload).
cargo build --workspace --benches --quiet
if [ "${CI:-}" = true ]; then
    # Nothing after this point uses the dev profile (the gate and the quick start build
    # release, the fuzz targets their own directory): on a fresh CI checkout its several GB
    # go before the release builds add theirs, so the run's peak disk is the larger of the
    # two, not their sum. A CI run out of disk on 2026-12-07 failed linking the release build.
    rm -rf target/debug
fi
step callgrind gate
# Instruction-count regression gate (enforced on the machine kind of the baseline).
bash benches/callgrind-gate.sh
step README quick start
# The README's quick start, run as written (builds the release binary).
bash tests/readme-quickstart.sh
step fuzz
if [ -f fuzz/build.sh ]; then
    bash fuzz/build.sh --smoke
fi
step done
