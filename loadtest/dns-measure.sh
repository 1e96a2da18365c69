#!/usr/bin/env bash
# DNS load, alknet against the strongest peer of each transport, in one run, side by side.
#
# The same generated zone (ZONE_NAMES A records host0..host<n-1> under bench.test., a
# wildcard, an MX) is served by
#   (a) NSD (Debian `nsd`), `server-count: 2` with `reuseport: yes` (its fastest setup
#       on two cores), response rate limiting off: classic UDP and DoT;
#   (b) hickory-dns 0.26.3 (`cargo install hickory-dns --locked`, release, with its DoQ,
#       DoH and TLS features on ring, and jemalloc), `--workers 2`: DoQ (quinn) and DoH
#       (HTTP/2, the h2 crate);
#   (c) `alknet serve --workers 2` with `[dns] udp_listen` and `rrl_responses_per_second
#       = 0` (off, as for NSD): every transport, DoT/DoQ/DoH on its one port.
#
# Classic UDP and DoT: dnsperf (Debian `dnsperf`, 2 threads) sends the same query file to
# NSD and alknet (90 % names that exist, 10 % NXDOMAIN), ROUNDS times each, alternating:
#   - saturation: unlimited rate for SECONDS s with QUEUE queries outstanding: queries/s;
#   - latency: a fixed LAT_QPS queries/s for SECONDS s with `-v` (one line per answer),
#     from which p50/p90/p99/p99.9 are taken.
#   DoT (DOT=1, default): dnsperf -m dot, one connection per client, 2 clients, against
#   alknet's `dot` on its QUIC port and NSD's tls-port, with the same self-signed ECDSA
#   P-256 certificate.
# DoQ (DOQ=1, default): `alknet-loadtest doq` (A queries for host<i>.bench.test, one per
#   stream, ID 0, every answer checked) against alknet's `doq` and hickory-dns's DoQ port,
#   DOQ_CONNECTIONS connections x DOQ_STREAMS queries in flight, 2 client threads, medians
#   of ROUNDS. Each connection carries DOQ_PER_CONNECTION (100) queries and is then
#   replaced, because hickory-dns ends every DoQ connection after 100 queries
#   (hickory-server 0.26.3 `quic_handler.rs`: a fixed `max_requests = 100`) and answers a
#   connection's queries one after another; alknet is also run with its connections kept
#   for the whole run (what a DoQ client of alknet does).
# DoH (DOH=1, default): h2load (Debian `nghttp2-client`) POSTs one A query (ID 0,
#   `application/dns-message`) to `/dns-query` over HTTP/2, DOH_CLIENTS connections x
#   DOH_STREAMS streams, DOH_REQUESTS requests, against alknet and hickory-dns; every
#   answer must be a 2xx (kdig +https checks both servers' answers once before).
#   dnsperf's DoH mode is not used: dnsperf 2.10 completes one query per HTTP/2
#   connection against alknet and hickory-dns alike (see the README), so its figure
#   would measure dnsperf.
#
# Server CPU: utime + stime of the server's processes from /proc (NSD: its main process
# and its server children; alknet and hickory-dns: the one process, all threads), before
# and after each run, reported as CPU seconds and as microseconds of server CPU per
# answered query. On this 2-core machine the client shares the cores with the server:
# compare CPU per query beside queries/s.
#
#   loadtest/dns-measure.sh                 # ROUNDS=3 SECONDS=10
#   ROUNDS=1 SECONDS=5 DOT=0 DOQ=0 DOH=0 loadtest/dns-measure.sh   # classic UDP only
#   UDP=0 DOT=0 loadtest/dns-measure.sh     # DoQ and DoH only
#   NOCACHE=1 loadtest/dns-measure.sh       # also alknet with its answer cache off
#   ALKNET_OLD=/path/to/old/alknet loadtest/dns-measure.sh   # a second alknet binary
#       (e.g. before a change), same config, measured beside the first in every DoQ round
#   ALKNET=/path/to/alknet LOADTEST=/path/to/alknet-loadtest HICKORY=/path/to/hickory-dns \
#       loadtest/dns-measure.sh             # skip the builds
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_RUN=${SECONDS:-10}
QUEUE=${QUEUE:-500}
LAT_QPS=${LAT_QPS:-20000}
ZONE_NAMES=${ZONE_NAMES:-10000}
QUERIES=${QUERIES:-100000}
NSD_PORT=${NSD_PORT:-5390}
NSD_TLS_PORT=${NSD_TLS_PORT:-5391}
ALKNET_PORT=${ALKNET_PORT:-5392}
ALKNET_QUIC_PORT=${ALKNET_QUIC_PORT:-5393}
HICKORY_QUIC_PORT=${HICKORY_QUIC_PORT:-5394}
HICKORY_HTTPS_PORT=${HICKORY_HTTPS_PORT:-5395}
UDP=${UDP:-1}
DOT=${DOT:-1}
NOCACHE=${NOCACHE:-0}
NOCACHE_PORT=${NOCACHE_PORT:-5396}
NOCACHE_QUIC_PORT=${NOCACHE_QUIC_PORT:-5397}
ALKNET_OLD=${ALKNET_OLD:-}
OLD_PORT=${OLD_PORT:-5398}
OLD_QUIC_PORT=${OLD_QUIC_PORT:-5399}
DOQ=${DOQ:-1}
DOH=${DOH:-1}
DOQ_CONNECTIONS=${DOQ_CONNECTIONS:-32}
DOQ_STREAMS=${DOQ_STREAMS:-8}
DOQ_PER_CONNECTION=${DOQ_PER_CONNECTION:-100}
# DOQ_RESUMPTION=1: the DoQ client resumes TLS sessions (RFC 9250 §5.5 recommends it)
DOQ_RESUMPTION=${DOQ_RESUMPTION:-0}
DOQ_RESUME=()
# DOQ_RATE=Q: offer Q queries/s in all to both servers (paced, latency from each query's
# send time) instead of the closed loop, to compare p99 at the same load
DOQ_RATE=${DOQ_RATE:-0}
[ "$DOQ_RESUMPTION" = 1 ] && DOQ_RESUME=(--resumption)
DOH_CLIENTS=${DOH_CLIENTS:-4}
DOH_STREAMS=${DOH_STREAMS:-32}
DOH_REQUESTS=${DOH_REQUESTS:-400000}
HICKORY_VERSION=0.26.3
TCK=$(getconf CLK_TCK)

need_apt=()
command -v dnsperf >/dev/null || need_apt+=(dnsperf)
[ -x /usr/sbin/nsd ] || need_apt+=(nsd)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
command -v kdig >/dev/null || need_apt+=(knot-dnsutils)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing ${need_apt[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null
fi

ALKNET=${ALKNET:-}
if [ -z "$ALKNET" ]; then
    nice -n 19 cargo build --release -q -p alknet
    ALKNET=$PWD/target/release/alknet
fi
LOADTEST=${LOADTEST:-}
if [ -z "$LOADTEST" ] && [ "$DOQ" = 1 ]; then
    nice -n 19 cargo build --release -q -p alknet-loadtest
    LOADTEST=$PWD/target/release/alknet-loadtest
fi
# hickory-dns as its users install it: the published crate with its own lock file, release
HICKORY=${HICKORY:-}
if [ -z "$HICKORY" ] && { [ "$DOQ" = 1 ] || [ "$DOH" = 1 ]; }; then
    HICKORY=$PWD/target/hickory-dns-$HICKORY_VERSION/bin/hickory-dns
    if [ ! -x "$HICKORY" ]; then
        nice -n 19 cargo install -q hickory-dns --version "$HICKORY_VERSION" --locked \
            --no-default-features --features quic-ring,https-ring,tls-ring,jemalloc \
            --root "$PWD/target/hickory-dns-$HICKORY_VERSION"
    fi
fi

W=$(mktemp -d /dev/shm/dns-measure.XXXXXX)
chmod 755 "$W"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- the zone and the queries --------------------------------------------------------------
{
    echo '$TTL 3600'
    echo '@ IN SOA ns1.bench.test. hostmaster.bench.test. 1 7200 900 1209600 300'
    echo '@ IN NS ns1'
    echo '@ IN MX 10 mail'
    echo 'ns1 IN A 192.0.2.53'
    echo 'mail IN A 192.0.2.25'
    echo '*.wild IN A 192.0.2.99'
    awk -v n="$ZONE_NAMES" 'BEGIN { for (i = 0; i < n; i++) printf "host%d IN A 10.%d.%d.%d\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256 }'
} >"$W/bench.test.zone"
awk -v n="$QUERIES" -v names="$ZONE_NAMES" 'BEGIN {
    srand(42)
    for (i = 0; i < n; i++) {
        r = rand()
        if (r < 0.10) printf "nx%d.bench.test A\n", i
        else if (r < 0.15) printf "x%d.wild.bench.test A\n", i
        else if (r < 0.17) print "bench.test MX"
        else printf "host%d.bench.test A\n", int(rand() * names)
    }
}' >"$W/queries.txt"

# one self-signed certificate for both servers' TLS (alknet's default kind: ECDSA P-256)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
chmod 644 "$W/key.pem"

# --- NSD -----------------------------------------------------------------------------------
tls_conf=""
if [ "$DOT" = 1 ]; then
    tls_conf="    tls-service-key: \"$W/key.pem\"
    tls-service-pem: \"$W/cert.pem\"
    tls-port: $NSD_TLS_PORT
    ip-address: 127.0.0.1@$NSD_TLS_PORT"
fi
cat >"$W/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$NSD_PORT
$tls_conf
    server-count: 2
    reuseport: yes
    username: ""
    zonesdir: "$W"
    database: ""
    pidfile: "$W/nsd.pid"
    xfrdfile: "$W/xfrd.state"
    zonelistfile: "$W/zone.list"
    logfile: "$W/nsd.log"
    verbosity: 0
    hide-version: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: bench.test
    zonefile: bench.test.zone
EOF
nsd-checkconf "$W/nsd.conf"
/usr/sbin/nsd -d -c "$W/nsd.conf" &
NSD_PID=$!
PIDS+=("$NSD_PID")

# --- alknet --------------------------------------------------------------------------------
mkdir -p "$W/alknet"
cat >"$W/alknet.toml" <<EOF
[handlers]
enabled = ["doq"]
[tls]
cert = "$W/cert.pem"
key = "$W/key.pem"
[dns]
udp_listen = "127.0.0.1:$ALKNET_PORT"
rrl_responses_per_second = 0
[[dns.zones]]
origin = "bench.test"
file = "$W/bench.test.zone"
EOF
ALKNET_DATA_DIR="$W/alknet" ALKNET_LOG=warn "$ALKNET" serve --listen "127.0.0.1:$ALKNET_QUIC_PORT" \
    --workers 2 --config "$W/alknet.toml" &
ALKNET_PID=$!
PIDS+=("$ALKNET_PID")
# NOCACHE=1: a second alknet with the answer cache off (`answer_cache_bytes = 0`), measured
# beside the first over UDP and DoQ: the cache's A/B in one run
NOCACHE_PID=
if [ "$NOCACHE" = 1 ]; then
    mkdir -p "$W/alknet-nocache"
    sed -e "s/127.0.0.1:$ALKNET_PORT/127.0.0.1:$NOCACHE_PORT/" \
        -e 's/^rrl_responses_per_second = 0$/&\nanswer_cache_bytes = 0/' \
        "$W/alknet.toml" >"$W/alknet-nocache.toml"
    ALKNET_DATA_DIR="$W/alknet-nocache" ALKNET_LOG=warn "$ALKNET" serve \
        --listen "127.0.0.1:$NOCACHE_QUIC_PORT" --workers 2 --config "$W/alknet-nocache.toml" &
    NOCACHE_PID=$!
    PIDS+=("$NOCACHE_PID")
fi

# ALKNET_OLD: another alknet binary with the same config, for a before/after in one run
OLD_PID=
if [ -n "$ALKNET_OLD" ]; then
    mkdir -p "$W/alknet-old"
    sed -e "s/127.0.0.1:$ALKNET_PORT/127.0.0.1:$OLD_PORT/" "$W/alknet.toml" >"$W/alknet-old.toml"
    ALKNET_DATA_DIR="$W/alknet-old" ALKNET_LOG=warn "$ALKNET_OLD" serve \
        --listen "127.0.0.1:$OLD_QUIC_PORT" --workers 2 --config "$W/alknet-old.toml" &
    OLD_PID=$!
    PIDS+=("$OLD_PID")
fi

# --- hickory-dns ---------------------------------------------------------------------------
HICKORY_PID=
if [ "$DOQ" = 1 ] || [ "$DOH" = 1 ]; then
    cat >"$W/hickory.toml" <<EOF
listen_addrs_ipv4 = ["127.0.0.1"]
quic_listen_port = $HICKORY_QUIC_PORT
https_listen_port = $HICKORY_HTTPS_PORT
disable_udp = true
disable_tcp = true
disable_tls = true
directory = "$W"
drop_privileges = false
tls_cert = { path = "cert.pem", endpoint_name = "localhost", private_key = "key.pem" }

[[zones]]
zone = "bench.test"
zone_type = "Primary"
file = "bench.test.zone"
EOF
    "$HICKORY" --config "$W/hickory.toml" --workers 2 --quiet >"$W/hickory.log" 2>&1 &
    HICKORY_PID=$!
    PIDS+=("$HICKORY_PID")
fi

# both answer before measuring (bounded: 20 s)
for _ in $(seq 1 100); do
    if dig +short +time=1 +tries=1 @127.0.0.1 -p "$NSD_PORT" host1.bench.test A 2>/dev/null | grep -q 10.0.0.1 &&
        dig +short +time=1 +tries=1 @127.0.0.1 -p "$ALKNET_PORT" host1.bench.test A 2>/dev/null | grep -q 10.0.0.1; then
        break
    fi
    sleep 0.2
done
if [ -n "$NOCACHE_PID" ]; then
    for _ in $(seq 1 100); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p "$NOCACHE_PORT" host1.bench.test A 2>/dev/null |
            grep -q 10.0.0.1 && break
        sleep 0.2
    done
fi
for port in "$NSD_PORT" "$ALKNET_PORT" ${NOCACHE_PID:+"$NOCACHE_PORT"}; do
    dig +short +time=2 +tries=1 @127.0.0.1 -p "$port" host1.bench.test A | grep -q 10.0.0.1 ||
        { echo "server on port $port does not answer"; exit 1; }
done

# --- measuring -----------------------------------------------------------------------------
# CPU ticks (utime + stime) of a process and all its descendants: NSD's server processes
# are its grandchildren (nsd -d → main → servers), and a live child's time is not in its
# parent's cutime until it exits
tree_ticks() {
    local total=0 pid
    for pid in $(ps -eo pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            print root
            do { grew = 0
                for (p in parent) if (!(p in seen) && (parent[p] in seen || parent[p] == root)) { seen[p] = 1; print p; grew = 1 }
            } while (grew)
        }'); do
        [ -r "/proc/$pid/stat" ] || continue
        # utime and stime are fields 14 and 15; the name before them is in parentheses
        # and may hold spaces (NSD retitles its processes "nsd: server 1")
        total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')))
    done
    echo "$total"
}

# run LABEL PID ARGS...: dnsperf with ARGS; one result line
run() {
    local label=$1 pid=$2
    shift 2
    local c0 c1 out qps lost avg completed
    c0=$(tree_ticks "$pid")
    out=$(dnsperf -d "$W/queries.txt" -l "$SECONDS_RUN" -T 2 "$@" 2>&1)
    c1=$(tree_ticks "$pid")
    completed=$(awk '/Queries completed:/ {print $3}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
    avg=$(awk '/Average Latency/ {print $4}' <<<"$out")
    awk -v l="$label" -v q="$qps" -v c="$completed" -v lo="$lost" -v a="$avg" \
        -v t="$((c1 - c0))" -v tck="$TCK" 'BEGIN {
        cpu = t / tck
        printf "%-24s %10.0f q/s  completed %9d  lost %6d  avg %7.3f ms  server cpu %6.2f s  %6.2f us/query\n",
            l, q, c, lo, a * 1000, cpu, (c > 0 ? cpu * 1e6 / c : 0)
    }'
}

# latency LABEL ARGS...: percentiles of one fixed-rate run
latency() {
    local label=$1
    shift
    dnsperf -d "$W/queries.txt" -l "$SECONDS_RUN" -T 2 -Q "$LAT_QPS" -v "$@" 2>/dev/null |
        awk '$1 == ">" && $NF ~ /^[0-9.]+$/ { print $NF * 1000 }' | sort -n >"$W/lat.txt"
    awk -v l="$label" '{ v[NR] = $1 } END {
        if (NR == 0) { printf "%-24s no answers\n", l; exit }
        p = "p50 p90 p99 p99.9"; split("0.5 0.9 0.99 0.999", f, " "); split(p, n, " ")
        printf "%-24s %d answers at fixed rate:", l, NR
        for (i = 1; i <= 4; i++) { k = int(f[i] * NR); if (k < 1) k = 1; printf "  %s %.3f ms", n[i], v[k] }
        printf "\n"
    }' "$W/lat.txt"
}

echo "== $(date -u +%FT%TZ)  $(nproc) cores  zone ${ZONE_NAMES} names  ${QUERIES} queries  ${SECONDS_RUN}s runs  ${ROUNDS} rounds"
echo "== nsd $(/usr/sbin/nsd -v 2>&1 | head -1 | awk '{print $3}')  dnsperf $(dnsperf -h 2>&1 | awk '/Version/ {print $2}')  alknet $ALKNET"
if [ "$UDP" = 1 ]; then
    echo "== UDP, unlimited rate, $QUEUE outstanding"
    for r in $(seq 1 "$ROUNDS"); do
        run "nsd udp #$r" "$NSD_PID" -s 127.0.0.1 -p "$NSD_PORT" -c 4 -q "$QUEUE"
        run "alknet udp #$r" "$ALKNET_PID" -s 127.0.0.1 -p "$ALKNET_PORT" -c 4 -q "$QUEUE"
        if [ -n "$NOCACHE_PID" ]; then
            run "alknet-nocache udp #$r" "$NOCACHE_PID" -s 127.0.0.1 -p "$NOCACHE_PORT" -c 4 -q "$QUEUE"
        fi
    done
    echo "== UDP latency at $LAT_QPS q/s"
    latency "nsd udp" -s 127.0.0.1 -p "$NSD_PORT" -c 4
    latency "alknet udp" -s 127.0.0.1 -p "$ALKNET_PORT" -c 4
fi
if [ "$DOT" = 1 ]; then
    echo "== DoT (2 connections), unlimited rate, $QUEUE outstanding"
    for r in $(seq 1 "$ROUNDS"); do
        run "nsd dot #$r" "$NSD_PID" -m dot -s 127.0.0.1 -p "$NSD_TLS_PORT" -c 2 -q "$QUEUE"
        run "alknet dot #$r" "$ALKNET_PID" -m dot -s 127.0.0.1 -p "$ALKNET_QUIC_PORT" -c 2 -q "$QUEUE"
    done
fi
# one wire query for DoH, ID 0 (RFC 8484 §4.1): host1.bench.test A
printf '\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05host1\x05bench\x04test\x00\x00\x01\x00\x01' >"$W/query.bin"
if [ "$DOQ" = 1 ] || [ "$DOH" = 1 ]; then
    # both servers answer over DoQ and DoH (kdig, an independent client) before measuring
    for _ in $(seq 1 100); do
        kdig +short +quic +timeout=1 +retry=0 @127.0.0.1 -p "$HICKORY_QUIC_PORT" host1.bench.test A 2>/dev/null |
            grep -q 10.0.0.1 && break
        sleep 0.2
    done
    for port in "$HICKORY_QUIC_PORT" "$ALKNET_QUIC_PORT" ${OLD_PID:+"$OLD_QUIC_PORT"}; do
        kdig +short +quic +timeout=2 +retry=0 @127.0.0.1 -p "$port" host1.bench.test A 2>/dev/null | grep -q 10.0.0.1 ||
            { echo "no DoQ answer on port $port"; cat "$W/hickory.log"; exit 1; }
    done
    # DoH: hickory-dns wants its endpoint name as :authority and an Accept header (kdig
    # sends the address as authority): curl POSTs the query h2load will send
    for port in "$HICKORY_HTTPS_PORT" "$ALKNET_QUIC_PORT"; do
        curl -sk --http2 --max-time 5 --resolve "localhost:$port:127.0.0.1" -o "$W/answer.bin" \
            -H 'content-type: application/dns-message' -H 'accept: application/dns-message' \
            --data-binary @"$W/query.bin" "https://localhost:$port/dns-query" &&
            od -An -tx1 "$W/answer.bin" | tr -d ' \n' | grep -q '0a000001$' ||
            { echo "no DoH answer on port $port"; cat "$W/hickory.log"; exit 1; }
    done
    echo "== hickory-dns $("$HICKORY" --version 2>&1 | awk '{print $NF}')  $(h2load --version | head -1)"
fi

# median of the numbers on stdin
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# doq LABEL PID PORT QUERIES_PER_CONNECTION: one alknet-loadtest run; one result line, and
# "qps us_per_query p50 p99" appended to $W/doq-LABEL
doq() {
    local label=$1 pid=$2 port=$3 per=$4 out
    out=$("$LOADTEST" doq --server "127.0.0.1:$port" --fingerprint "$FP" --server-pid "$pid" \
        --connections "$DOQ_CONNECTIONS" --streams "$DOQ_STREAMS" --client-threads 2 \
        --queries-per-connection "$per" --dns-names "$ZONE_NAMES" --duration "$SECONDS_RUN" \
        --warmup 1 --json --doq-rate "$DOQ_RATE" "${DOQ_RESUME[@]}" 2>"$W/doq.err") || true
    # a run with failed queries still prints its JSON (and exits non-zero): report both
    [[ $out == "{"* ]] || { echo "$label: $(cat "$W/doq.err")"; return 0; }
    python3 - "$label" "$out" "$W/doq-${label%% *}" <<'PY'
import json, sys
label, m, path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
lat = m["latency_us"]
errors = " ".join(f"{k} {v}" for k, v in m["errors"].items()) or "0"
print(f"{label:<28} {m['result']:10.0f} q/s  {m['connections']:6d} new connections  failed queries {errors}"
      f"  p50 {lat['p50']} us  p99 {lat['p99']} us  p99.9 {lat['p999']} us  max {lat['max']} us  server cpu {m['server_cpu_percent']}%"
      f"  {m['server_us_per_op']:.2f} us/query  client cpu {m['client_cpu_percent']}%")
with open(path, "a") as f:
    f.write(f"{m['result']} {m['server_us_per_op']} {lat['p50']} {lat['p99']}\n")
PY
}

# doh LABEL PID PORT: one h2load run; one result line, "rps us_per_query p50 p99" appended
doh() {
    local label=$1 pid=$2 port=$3 c0 c1 out
    # h2load appends to an existing --log-file: the percentiles must be this run's alone
    rm -f "$W/h2load.log"
    c0=$(tree_ticks "$pid")
    out=$(h2load -n "$DOH_REQUESTS" -c "$DOH_CLIENTS" -m "$DOH_STREAMS" -t 2 -d "$W/query.bin" \
        -H 'content-type: application/dns-message' -H 'accept: application/dns-message' \
        -H ':authority: localhost' --log-file="$W/h2load.log" "https://127.0.0.1:$port/dns-query" 2>&1)
    c1=$(tree_ticks "$pid")
    local rps ok failed p
    rps=$(awk '/^finished in/ {print $4}' <<<"$out")
    ok=$(awk '/^status codes:/ {print $3}' <<<"$out")
    failed=$(awk '/^requests:/ {print $10 + $12 + $14}' <<<"$out")
    # h2load's log: time, status, request time (us)
    p=$(awk '{print $3}' "$W/h2load.log" | sort -n | awk '{ v[NR] = $1 } END {
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        print v[i50], v[i99] }')
    awk -v l="$label" -v r="$rps" -v ok="$ok" -v f="$failed" -v t="$((c1 - c0))" -v tck="$TCK" \
        -v p="$p" -v path="$W/doh-${label%% *}" 'BEGIN {
        split(p, q, " "); cpu = t / tck; us = (ok > 0 ? cpu * 1e6 / ok : 0)
        printf "%-28s %10.0f q/s  2xx %8d  failed %d  p50 %d us  p99 %d us  server cpu %6.2f s  %6.2f us/query\n",
            l, r, ok, f, q[1], q[2], cpu, us
        printf "%s %s %s %s\n", r, us, q[1], q[2] >> path
    }'
}

# summary KIND A B: medians of $W/KIND-A and $W/KIND-B and the ratios A/B
summary() {
    local kind=$1 a=$2 b=$3 qa qb ua ub
    qa=$(awk '{print $1}' "$W/$kind-$a" | median)
    qb=$(awk '{print $1}' "$W/$kind-$b" | median)
    ua=$(awk '{print $2}' "$W/$kind-$a" | median)
    ub=$(awk '{print $2}' "$W/$kind-$b" | median)
    awk -v k="$kind" -v a="$a" -v b="$b" -v qa="$qa" -v qb="$qb" -v ua="$ua" -v ub="$ub" \
        -v pa="$(awk '{print $4}' "$W/$kind-$a" | median)" -v pb="$(awk '{print $4}' "$W/$kind-$b" | median)" 'BEGIN {
        printf "%s medians: %s %.0f q/s, %.2f us server CPU/query, p99 %d us; %s %.0f q/s, %.2f us/query, p99 %d us\n",
            k, a, qa, ua, pa, b, qb, ub, pb
        printf "%s %s / %s: %.2fx queries/s, %.2fx queries per server CPU-second\n", k, a, b, qa / qb, ub / ua
    }'
}

if [ "$DOQ" = 1 ]; then
    FP=$(openssl x509 -in "$W/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2)
    echo "== DoQ: $DOQ_CONNECTIONS connections x $DOQ_STREAMS queries in flight, 2 client threads, $DOQ_PER_CONNECTION queries per connection, resumption $DOQ_RESUMPTION, offered rate $DOQ_RATE q/s (0: closed loop)"
    for r in $(seq 1 "$ROUNDS"); do
        doq "alknet doq #$r" "$ALKNET_PID" "$ALKNET_QUIC_PORT" "$DOQ_PER_CONNECTION"
        doq "hickory doq #$r" "$HICKORY_PID" "$HICKORY_QUIC_PORT" "$DOQ_PER_CONNECTION"
        if [ -n "$OLD_PID" ]; then
            doq "alknet-old doq #$r" "$OLD_PID" "$OLD_QUIC_PORT" "$DOQ_PER_CONNECTION"
        fi
    done
    summary doq alknet hickory
    if [ -n "$OLD_PID" ]; then
        summary doq alknet-old hickory
        summary doq alknet alknet-old
    fi
    echo "== DoQ, alknet alone, connections kept for the whole run (hickory-dns ends them after 100 queries)"
    for r in $(seq 1 "$ROUNDS"); do
        doq "alknet-kept doq #$r" "$ALKNET_PID" "$ALKNET_QUIC_PORT" 0
        if [ -n "$OLD_PID" ]; then
            doq "alknet-old-kept doq #$r" "$OLD_PID" "$OLD_QUIC_PORT" 0
        fi
        if [ -n "$NOCACHE_PID" ]; then
            doq "alknet-nocache-kept doq #$r" "$NOCACHE_PID" "$NOCACHE_QUIC_PORT" 0
        fi
    done
fi
if [ "$DOH" = 1 ]; then
    echo "== DoH: h2load POST /dns-query, HTTP/2, $DOH_CLIENTS connections x $DOH_STREAMS streams, $DOH_REQUESTS requests"
    for r in $(seq 1 "$ROUNDS"); do
        doh "alknet doh #$r" "$ALKNET_PID" "$ALKNET_QUIC_PORT"
        doh "hickory doh #$r" "$HICKORY_PID" "$HICKORY_HTTPS_PORT"
        if [ -n "$NOCACHE_PID" ]; then
            doh "alknet-nocache doh #$r" "$NOCACHE_PID" "$NOCACHE_QUIC_PORT"
        fi
    done
    summary doh alknet hickory
fi
