#!/usr/bin/env bash
# Reproduces the Performance table of the README: every workload, alknet vs quinn.
cd "$(dirname "$0")/.."
cargo build --release -q -p alknet-loadtest
L=target/release/alknet-loadtest
echo "== $(date -u) $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "== probe"; $L probe --seconds 2
echo "== rr 1x64"; $L compare --workload rr --rounds 3 --duration 5 --connections 1 --streams 64 2>/dev/null
echo "== rr 32x8"; $L compare --workload rr --rounds 3 --duration 5 --connections 32 --streams 8 2>/dev/null
echo "== bulk 1 GiB download"; $L compare --workload bulk --rounds 3 --bytes 1073741824 2>/dev/null
echo "== bulk 1 GiB upload"; $L compare --workload bulk --rounds 3 --bytes 1073741824 --direction upload 2>/dev/null
echo "== handshake 1 client thread"; $L compare --workload handshake --rounds 3 --duration 3 --connections 16 2>/dev/null
echo "== handshake 2 client threads"; $L compare --workload handshake --rounds 3 --duration 3 --connections 16 --client-threads 2 2>/dev/null
echo "== handshake resumption 2 client threads"; $L compare --workload handshake --rounds 3 --duration 3 --connections 16 --client-threads 2 --resumption 2>/dev/null
echo "== idle 5000"; $L compare --workload idle --rounds 1 --connections 5000 --client-threads 2 --duration 2 2>/dev/null
echo "== scaling rr 32x8, 2 client threads"; for w in 1 2; do $L rr --duration 5 --workers $w --connections 32 --streams 8 --client-threads 2 2>/dev/null | grep -E "^rr|result|cpu"; done
echo "== call stack vs plain streams (alknet only: the baseline serves neither call nor ssh)"
for i in 1 2 3; do
    for w in "call --connections 1 --streams 64" "rr --connections 1 --streams 64" "call --connections 32 --streams 8 --client-threads 2" "rr --connections 32 --streams 8 --client-threads 2"; do
        echo "-- $w"; $L $w --duration 5 2>/dev/null | grep -E "result|latency|cpu"
    done
done
echo "== SSH through the bridge vs plain streams"
for i in 1 2 3; do
    for w in "ssh-cat --bytes 1073741824" "bulk --bytes 1073741824" "ssh-rr --connections 1 --size 64 --duration 5" "rr --connections 1 --streams 1 --size 64 --duration 5"; do
        echo "-- $w"; $L $w 2>/dev/null | grep -E "result|latency|cpu"
    done
done
echo "== bridge micro-benchmark (criterion)"
cargo bench -q -p alknet-benches --bench ssh_bridge 2>/dev/null | grep -E "^bridge|time:|thrpt:"
