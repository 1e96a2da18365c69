#!/usr/bin/env bash
# Reproduces the Performance table of the README: every workload, alknet against the
# strongest quinn baseline (`quinn`: quinn 0.11 + tokio as `quinn-perf server` runs), with
# the former multi-thread baseline (`quinn-mt`) beside it where it was used before.
# Medians of 3 rounds, A B C A B C so drift hits all alike. Run it on an otherwise idle
# machine: every figure is read from this one run.
cd "$(dirname "$0")/.."
# L=<path to a prebuilt alknet-loadtest> skips the build (which, built alone, recompiles
# much of the tree: the loadtest's features differ from the `alknet` binary's)
if [[ -z ${L:-} ]]; then
    cargo build --release -q -p alknet-loadtest
    L=target/release/alknet-loadtest
fi
R=${ROUNDS:-3}
echo "== $(date -u) $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "== probe"; $L probe --seconds 2
echo "== perf-rr 64 B x 64 bi requests, 1 conn (alknet client)"
$L compare --workload perf-rr --rounds $R --duration 5 --connections 1 --streams 64 --baseline quinn --baseline quinn-mt 2>/dev/null
echo "== perf-rr 64 B x 64 bi requests, 1 conn (quinn-perf-like client: quinn + tokio current-thread)"
$L compare --workload perf-rr --client quinn --rounds $R --duration 5 --connections 1 --streams 64 2>/dev/null
echo "== perf-rr 64 B x 64, 1 conn, --split-cores: server alone on CPU 0, client on CPU 1 (both clients)"
$L compare --workload perf-rr --split-cores --rounds $R --duration 5 --connections 1 --streams 64 2>/dev/null
$L compare --workload perf-rr --split-cores --client quinn --rounds $R --duration 5 --connections 1 --streams 64 2>/dev/null
echo "== perf-rr --split-cores on monoio's legacy (epoll) driver, alknet only"
for i in $(seq $R); do
    ALKNET_DRIVER=legacy $L perf-rr --split-cores --connections 1 --streams 64 --duration 5 2>/dev/null | grep -E "result|efficiency|context"
done
echo "== rr 32 conns x 8 streams, 2 client threads"
$L compare --workload rr --rounds $R --duration 5 --connections 32 --streams 8 --client-threads 2 --baseline quinn --baseline quinn-mt 2>/dev/null
echo "== rr 32 conns x 8 streams, 2 client threads (quinn-perf-like client: quinn + tokio current-thread)"
$L compare --workload rr --client quinn --rounds $R --duration 5 --connections 32 --streams 8 --client-threads 2 2>/dev/null
echo "== perf-bulk 1 GiB download, 1 stream"
$L compare --workload perf-bulk --rounds $R --bytes 1073741824 2>/dev/null
echo "== perf-bulk 1 GiB upload, 1 stream"
$L compare --workload perf-bulk --rounds $R --bytes 1073741824 --direction upload 2>/dev/null
echo "== handshake, 16 loops, 1 client thread"
$L compare --workload handshake --rounds $R --duration 3 --connections 16 2>/dev/null
echo "== handshake, 16 loops, quinn's kind of client (quinn + tokio current-thread), 1 and 2 client threads"
$L compare --workload handshake --client quinn --rounds $R --duration 3 --connections 16 2>/dev/null
$L compare --workload handshake --client quinn --rounds $R --duration 3 --connections 16 --client-threads 2 2>/dev/null
echo "== handshake, 16 loops, 1 client thread, --split-cores"
$L compare --workload handshake --split-cores --rounds $R --duration 3 --connections 16 2>/dev/null
echo "== handshake, 16 loops, 2 client threads"
$L compare --workload handshake --rounds $R --duration 3 --connections 16 --client-threads 2 2>/dev/null
echo "== handshake, 16 loops, 2 client threads, Ed25519 certificate (a node served from the vault)"
$L compare --workload handshake --rounds $R --duration 3 --connections 16 --client-threads 2 --tls-key ed25519 2>/dev/null
echo "== handshake + resumption, 2 client threads"
$L compare --workload handshake --rounds $R --duration 3 --connections 16 --client-threads 2 --resumption 2>/dev/null
echo "== idle 5000 connections: server memory per connection"
$L compare --workload idle --rounds 1 --connections 5000 --client-threads 2 --duration 2 2>/dev/null
echo "== scaling: server CPU per request with 1 and 2 workers (alknet), same load"
for i in $(seq $R); do
    for w in 1 2; do
        for load in "perf-rr --connections 1 --streams 64" "rr --connections 32 --streams 8 --client-threads 2"; do
            echo "-- workers $w: $load"
            $L $load --workers $w --duration 5 2>/dev/null | grep -E "result|efficiency|server"
        done
    done
done
echo "== pinning on this shared box: handshake 1 client thread, perf-rr; ALKNET_PIN_WORKERS=1 (pinned) vs 0"
for i in $(seq $R); do
    for pin in 1 0; do
        echo "-- pinned=$pin"
        ALKNET_PIN_WORKERS=$pin $L handshake --duration 3 --connections 16 2>/dev/null | grep -E "result|efficiency"
        ALKNET_PIN_WORKERS=$pin $L perf-rr --duration 5 --connections 1 --streams 64 2>/dev/null | grep -E "result|efficiency"
    done
done
echo "== call stack vs plain streams (alknet only: the baseline serves neither call nor ssh)"
for i in $(seq $R); do
    for w in "call --connections 1 --streams 64" "rr --connections 1 --streams 64" "call --connections 32 --streams 8 --client-threads 2" "rr --connections 32 --streams 8 --client-threads 2"; do
        echo "-- $w"; $L $w --duration 5 2>/dev/null | grep -E "result|latency|efficiency"
    done
done
echo "== SSH through the bridge vs plain streams"
for i in $(seq $R); do
    for w in "ssh-cat --bytes 1073741824" "bulk --bytes 1073741824" "ssh-rr --connections 1 --size 64 --duration 5" "rr --connections 1 --streams 1 --size 64 --duration 5"; do
        echo "-- $w"; $L $w 2>/dev/null | grep -E "result|latency|efficiency"
    done
done
echo "== bridge micro-benchmark (criterion)"
cargo bench -q -p alknet-benches --bench ssh_bridge 2>/dev/null | grep -E "^bridge|time:|thrpt:"
