#!/usr/bin/env bash
# HTTP/2 and HTTP/1.1 over TLS/TCP: alknet's TCP listener against nginx (the Debian
# package), both with 2 workers and the same ECDSA P-256 certificate, serving the same
# small fixed response (alknet's `GET /health`; nginx `return 200` of the very body
# alknet sent, same length, `application/json`), driven by h2load on loopback with the
# same client settings. Per round and server: requests/s, h2load's p50/p99 request time
# (from its --log-file: one line per request, its elapsed µs), and the server's CPU (utime
# + stime from /proc/PID/stat of every server process: nginx's master and workers,
# alknet's one process with all its threads) as requests per server CPU-second and µs of
# server CPU per request. Median of $ROUNDS rounds, servers interleaved (A B B A A B ...) so
# drift hits both alike. Then the h3 workload of alknet-loadtest against its quinn +
# h3-quinn baseline (same router), unless H3=0: with its wire client (pre-encoded
# requests, the least client CPU, as h2load is for HTTP/2) on 1 and on 2 client threads,
# both baselines (`quinn`, quinn-perf server's single-thread configuration, and
# `quinn-mt`, tokio's multi-thread runtime), then with the `h3` crate's client.
#
# nginx's settings: its defaults except
#   worker_processes 2            the benchmark: 2 workers each side
#   access_log off                what benchmarks run; alknet has no per-request log
#   keepalive_requests 10000000   nginx's default 1000 ends a connection (HTTP/2 GOAWAY
#                                 included) every 1000 requests, and h2load does not
#                                 reconnect; alknet has no such limit
#   ssl_protocols TLSv1.3         what alknet speaks
#   listen ... ssl http2          HTTP/2 (1.22's syntax; `http2 on` is 1.25+)
#   daemon off, pid/error_log/temp paths in the work dir (no root-owned state)
# alknet's: the embedded defaults except workers = 2, [tls] cert/key = the same pair,
# client_auth = "none" (nginx asks for no client certificate either), QUIC handlers =
# ["alknet/echo"] only (the HTTP front end serves TCP whatever the QUIC ALPNs; one is
# required), [identity] sqlite = false, ALKNET_LOG=warn (no per-request logging exists).
#
# Environment: ROUNDS (3), N2 (requests per HTTP/2 run, 300000), N1 (HTTP/1.1, 150000),
# H2_CLIENT ("-c 16 -m 32"), H1_CLIENT ("-c 64"), H3 (1), ALKNET_BIN (default: build
# target/release/alknet), LOADTEST_BIN (default: build target/release/alknet-loadtest).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
N2=${N2:-300000}
N1=${N1:-150000}
H2_CLIENT=${H2_CLIENT:--c 16 -m 32}
H1_CLIENT=${H1_CLIENT:--c 64}
H3=${H3:-1}

need=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    apt-get install -y -q "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [[ -z ${ALKNET_BIN:-} ]]; then
    nice cargo build --release -q -p alknet
    ALKNET_BIN=target/release/alknet
fi
if [[ $H3 == 1 && -z ${LOADTEST_BIN:-} ]]; then
    nice cargo build --release -q -p alknet-loadtest
    LOADTEST_BIN=target/release/alknet-loadtest
fi

W=$(mktemp -d /tmp/http-measure.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null

# ---- alknet
A_PORT=$(free_port)
mkdir -p "$W/alknet"
cat >"$W/alknet/config.toml" <<EOF
workers = 2
[tls]
cert = "$W/cert.pem"
key = "$W/key.pem"
client_auth = "none"
[handlers]
enabled = ["alknet/echo"]
[identity]
sqlite = false
EOF
ALKNET_DATA_DIR=$W/alknet ALKNET_LOG=warn "$ALKNET_BIN" serve --listen "127.0.0.1:$A_PORT" \
    --config "$W/alknet/config.toml" 2>"$W/alknet/log" &
A_PID=$!
PIDS+=("$A_PID")
for _ in $(seq 100); do
    curl -sf --cacert "$W/cert.pem" "https://localhost:$A_PORT/health" -o "$W/body" \
        --resolve "localhost:$A_PORT:127.0.0.1" && break
    sleep 0.1
done
[[ -s $W/body ]] || { echo "alknet did not serve /health:"; cat "$W/alknet/log"; exit 1; }
BODY=$(cat "$W/body")

# ---- nginx
N_PORT=$(free_port)
mkdir -p "$W/nginx"
cat >"$W/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log;
events {}
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $W/nginx/body;
    proxy_temp_path $W/nginx/proxy;
    fastcgi_temp_path $W/nginx/fastcgi;
    uwsgi_temp_path $W/nginx/uwsgi;
    scgi_temp_path $W/nginx/scgi;
    server {
        listen 127.0.0.1:$N_PORT ssl http2;
        ssl_certificate $W/cert.pem;
        ssl_certificate_key $W/key.pem;
        ssl_protocols TLSv1.3;
        location = /health {
            default_type application/json;
            return 200 '$BODY';
        }
    }
}
EOF
"$NGINX" -c "$W/nginx/nginx.conf" -p "$W/nginx" 2>"$W/nginx/stderr" &
N_PID=$!
PIDS+=("$N_PID")
for _ in $(seq 100); do
    curl -sf --cacert "$W/cert.pem" "https://localhost:$N_PORT/health" -o "$W/nbody" \
        --resolve "localhost:$N_PORT:127.0.0.1" && break
    sleep 0.1
done
cmp -s "$W/body" "$W/nbody" || { echo "nginx does not serve the same body"; cat "$W/nginx/stderr"; exit 1; }

# CPU ticks (utime + stime) of a process and its children (nginx's workers; alknet has
# none, its threads are in its own stat)
cpu_ticks() {
    local total=0 p
    for p in $1 $(pgrep -P "$1" || true); do
        [[ -r /proc/$p/stat ]] || continue
        total=$((total + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat")))
    done
    echo "$total"
}
HZ=$(getconf CLK_TCK)

# one h2load run; prints "rps p50_us p99_us cpu_s requests failed"
run() {
    local pid=$1 port=$2 proto=$3 n client log=$W/h2load.log
    if [[ $proto == h2 ]]; then n=$N2 client=$H2_CLIENT; else n=$N1 client="--h1 $H1_CLIENT"; fi
    local c0 c1 out
    # h2load appends to an existing --log-file: without this every run's percentiles were
    # those of all the runs before it, both servers and both protocols mixed
    rm -f "$log"
    c0=$(cpu_ticks "$pid")
    # shellcheck disable=SC2086
    out=$(h2load -n "$n" $client --log-file="$log" "https://127.0.0.1:$port/health")
    c1=$(cpu_ticks "$pid")
    local rps done failed
    rps=$(awk '/^finished in/ {print $4}' <<<"$out")
    done=$(awk '/^requests:/ {print $8}' <<<"$out")
    failed=$(awk '/^requests:/ {print $10}' <<<"$out")
    if [[ $SHOW_TLS == 1 ]]; then
        echo "   $(grep -E '^(TLS Protocol|Cipher|Server Temp Key|Application protocol):' <<<"$out" | tr '\n' ' ')" >"$W/tls"
    fi
    local p
    p=$(awk '{print $3}' "$log" | sort -n | awk '{v[NR]=$1} END {
        i50=int(NR*0.50); if (i50<1) i50=1; i99=int(NR*0.99); if (i99<1) i99=1;
        print v[i50], v[i99]}')
    echo "$rps $p $(awk "BEGIN {printf \"%.3f\", ($c1 - $c0) / $HZ}") $done $failed"
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

echo "== $(date -u '+%Y-%m-%d %H:%M UTC') $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "== nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), $(h2load --version | head -1), $("$ALKNET_BIN" --version 2>/dev/null || echo 'alknet ?')"
echo "== body: ${#BODY} bytes: $BODY"
for proto in h2 h1; do
    if [[ $proto == h2 ]]; then
        echo "== HTTP/2: h2load -n $N2 $H2_CLIENT"
    else
        echo "== HTTP/1.1: h2load -n $N1 --h1 $H1_CLIENT"
    fi
    for r in $(seq "$ROUNDS"); do
        # A B, then B A: a drift that moves both servers' figures along the run (h2load's
        # p99 falls ~20 us per run in a 5-round run on the 2-core VM) then lands on each
        # server as often early as late, instead of always on the one that goes first
        order="alknet nginx"
        if ((r % 2 == 0)); then order="nginx alknet"; fi
        for s in $order; do
            if [[ $s == alknet ]]; then pid=$A_PID port=$A_PORT; else pid=$N_PID port=$N_PORT; fi
            SHOW_TLS=$([[ $r == 1 ]] && echo 1 || echo 0)
            read -r rps p50 p99 cpu done failed < <(run "$pid" "$port" "$proto")
            eff=$(awk "BEGIN {printf \"%.0f\", $done / $cpu}")
            us=$(awk "BEGIN {printf \"%.1f\", $cpu * 1e6 / $done}")
            printf '   round %d %-6s %9.0f req/s  p50 %6d us  p99 %6d us  server CPU %6.2f s  %7d req/CPU-s  %5.1f us CPU/req  failed %s  load %s\n' \
                "$r" "$s" "$rps" "$p50" "$p99" "$cpu" "$eff" "$us" "$failed" "$(cut -d' ' -f1 /proc/loadavg)"
            echo "$rps $p99 $eff $us" >>"$W/$proto-$s"
            if [[ $SHOW_TLS == 1 ]]; then echo "   $s: $(cat "$W/tls")"; fi
        done
    done
    for s in alknet nginx; do
        printf '   median %-6s %9.0f req/s  p99 %6d us  %7d req/CPU-s  %5.1f us CPU/req\n' "$s" \
            "$(cut -d' ' -f1 "$W/$proto-$s" | median)" "$(cut -d' ' -f2 "$W/$proto-$s" | median)" \
            "$(cut -d' ' -f3 "$W/$proto-$s" | median)" "$(cut -d' ' -f4 "$W/$proto-$s" | median)"
    done
    awk -v a="$(cut -d' ' -f1 "$W/$proto-alknet" | median)" -v n="$(cut -d' ' -f1 "$W/$proto-nginx" | median)" \
        -v ap="$(cut -d' ' -f2 "$W/$proto-alknet" | median)" -v np="$(cut -d' ' -f2 "$W/$proto-nginx" | median)" \
        -v ae="$(cut -d' ' -f3 "$W/$proto-alknet" | median)" -v ne="$(cut -d' ' -f3 "$W/$proto-nginx" | median)" \
        'BEGIN {printf "   alknet / nginx: req/s %.2fx  p99 %.2fx  req per server CPU-s %.2fx\n", a/n, ap/np, ae/ne}'
done
for p in "$A_PID" "$N_PID"; do kill "$p" 2>/dev/null || true; done

if [[ $H3 == 1 ]]; then
    echo "== HTTP/3: alknet-loadtest compare --workload h3 (GET /health closed loops; baseline quinn + h3-quinn, same router)"
    for threads in 1 2; do
        echo "-- wire client, $threads client thread(s)"
        "$LOADTEST_BIN" compare --workload h3 --baseline quinn --baseline quinn-mt --h3-client wire \
            --client-threads "$threads" --rounds "$ROUNDS" --duration 5 --connections 16 --streams 32 2>/dev/null
    done
    echo "-- the h3 crate's client, 2 client threads"
    "$LOADTEST_BIN" compare --workload h3 --h3-client h3-crate --client-threads 2 \
        --rounds "$ROUNDS" --duration 5 --connections 16 --streams 32 2>/dev/null
    echo "-- the baseline's own client stack: h3 over quinn + h3-quinn, one tokio thread"
    "$LOADTEST_BIN" compare --workload h3 --h3-client quinn \
        --rounds "$ROUNDS" --duration 5 --connections 16 --streams 32 2>/dev/null
    echo "   load $(cut -d' ' -f1-3 /proc/loadavg)"
fi
