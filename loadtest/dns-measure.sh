#!/usr/bin/env bash
# Classic DNS over UDP and DNS over TLS, alknet against NSD, in one run, side by side:
#
#   the same generated zone (ZONE_NAMES A records under bench.test., a wildcard, an MX) is
#   served by
#     (a) NSD (Debian `nsd`), `server-count: 2` with `reuseport: yes` (its fastest setup
#         on two cores), response rate limiting off;
#     (b) `alknet serve --workers 2` with `[dns] udp_listen` (two SO_REUSEPORT listener
#         threads) and `rrl_responses_per_second = 0` (off, as for NSD);
#   and dnsperf (Debian `dnsperf`, 2 threads) sends the same query file to each
#   (90 % names that exist, 10 % NXDOMAIN), ROUNDS times each, alternating:
#     - saturation: unlimited rate for SECONDS s with QUEUE queries outstanding: queries/s;
#     - latency: a fixed LAT_QPS queries/s for SECONDS s with `-v` (one line per answer),
#       from which p50/p90/p99/p99.9 are taken.
#   With DOT=1 (default) also DNS over TLS (dnsperf -m dot, one connection per client,
#   2 clients): alknet's `dot` on its QUIC port against NSD's tls-port with the same
#   self-signed ECDSA P-256 certificate. DOH=1 adds DoH (dnsperf -m doh, HTTP/2 POST)
#   against alknet alone (NSD serves no DoH); off by default: dnsperf 2.10 counts only the
#   first answer of each HTTP/2 connection as completed against alknet, although the
#   server's h2 log shows every stream answered (HEADERS + DATA with END_STREAM) and
#   curl, httpx and kdig get every answer; not understood yet.
#
# Server CPU: utime + stime of the server's processes from /proc (NSD: its main process
# and its server children; alknet: the one process, all threads), before and after each
# run, reported as CPU seconds and as microseconds of server CPU per answered query. On
# this 2-core machine dnsperf shares the cores with the server: compare CPU per query
# beside queries/s.
#
#   loadtest/dns-measure.sh                 # ROUNDS=3 SECONDS=10
#   ROUNDS=1 SECONDS=5 DOT=0 loadtest/dns-measure.sh
#   ALKNET=/path/to/alknet loadtest/dns-measure.sh   # skip the release build
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
DOT=${DOT:-1}
DOH=${DOH:-0}
TCK=$(getconf CLK_TCK)

need_apt=()
command -v dnsperf >/dev/null || need_apt+=(dnsperf)
[ -x /usr/sbin/nsd ] || need_apt+=(nsd)
command -v openssl >/dev/null || need_apt+=(openssl)
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

# both answer before measuring (bounded: 20 s)
for _ in $(seq 1 100); do
    if dig +short +time=1 +tries=1 @127.0.0.1 -p "$NSD_PORT" host1.bench.test A 2>/dev/null | grep -q 10.0.0.1 &&
        dig +short +time=1 +tries=1 @127.0.0.1 -p "$ALKNET_PORT" host1.bench.test A 2>/dev/null | grep -q 10.0.0.1; then
        break
    fi
    sleep 0.2
done
for port in "$NSD_PORT" "$ALKNET_PORT"; do
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
echo "== UDP, unlimited rate, $QUEUE outstanding"
for r in $(seq 1 "$ROUNDS"); do
    run "nsd udp #$r" "$NSD_PID" -s 127.0.0.1 -p "$NSD_PORT" -c 4 -q "$QUEUE"
    run "alknet udp #$r" "$ALKNET_PID" -s 127.0.0.1 -p "$ALKNET_PORT" -c 4 -q "$QUEUE"
done
echo "== UDP latency at $LAT_QPS q/s"
latency "nsd udp" -s 127.0.0.1 -p "$NSD_PORT" -c 4
latency "alknet udp" -s 127.0.0.1 -p "$ALKNET_PORT" -c 4
if [ "$DOT" = 1 ]; then
    echo "== DoT (2 connections), unlimited rate, $QUEUE outstanding"
    for r in $(seq 1 "$ROUNDS"); do
        run "nsd dot #$r" "$NSD_PID" -m dot -s 127.0.0.1 -p "$NSD_TLS_PORT" -c 2 -q "$QUEUE"
        run "alknet dot #$r" "$ALKNET_PID" -m dot -s 127.0.0.1 -p "$ALKNET_QUIC_PORT" -c 2 -q "$QUEUE"
    done
fi
if [ "$DOH" = 1 ]; then
    # NSD has no DoH: alknet alone, for the figure (HTTP/2, one connection per client)
    echo "== DoH (HTTP/2 POST, 2 connections), unlimited rate, $QUEUE outstanding; no NSD baseline"
    for r in $(seq 1 "$ROUNDS"); do
        run "alknet doh #$r" "$ALKNET_PID" -m doh -s 127.0.0.1 -p "$ALKNET_QUIC_PORT" -c 2 -q "$QUEUE" \
            -O doh-method=POST -O "doh-uri=https://127.0.0.1:$ALKNET_QUIC_PORT/dns-query"
    done
fi
