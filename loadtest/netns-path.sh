#!/usr/bin/env bash
# A real link instead of loopback: two network namespaces joined by a veth pair, the
# server in one (alknetA), the load generator in the other (alknetB). Loopback's 64 KiB MTU
# hides everything a path MTU does (refused path-MTU probes: IPv6 over Ethernet fits 1452
# bytes of UDP payload, the engine probes up to 1472); this runs the same rr load over a
# link of MTU bytes, IPv4 or IPv6.
#
#   A: fd00::1, fd00::3, 10.9.0.1, 10.9.0.3      B: fd00::2, 10.9.0.2
#
# Environment: LISTEN (the server's --listen, default [::]:4433), TARGET (what the client
# dials, default [fd00::1]:4433), MTU (1500), DURATION (5), ALKNET (target/release/alknet),
# L (target/release/alknet-loadtest), WORKLOAD (rr; bulk, perf-rr, handshake ...), ARGS (the
# workload's options, default "--connections 4 --streams 4"), GRO (on/off: the veth's GRO,
# which needs ethtool; unset leaves the kernel's default). Needs root (ip netns).
# Example: TARGET=10.9.0.3:4433 MTU=1280 bash loadtest/netns-path.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ALKNET=${ALKNET:-target/release/alknet}
L=${L:-target/release/alknet-loadtest}
LISTEN=${LISTEN:-[::]:4433}
TARGET=${TARGET:-[fd00::1]:4433}
MTU=${MTU:-1500}
D=$(mktemp -d)
SP=
cleanup() {
    [[ -n $SP ]] && kill "$SP" 2>/dev/null && wait "$SP" 2>/dev/null
    ip netns del alknetA 2>/dev/null || true
    ip netns del alknetB 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT
ip netns del alknetA 2>/dev/null || true
ip netns del alknetB 2>/dev/null || true
ip netns add alknetA
ip netns add alknetB
ip link add alknetvA type veth peer name alknetvB
ip link set alknetvA netns alknetA
ip link set alknetvB netns alknetB
for ns in alknetA alknetB; do ip -n $ns link set lo up; done
ip -n alknetA addr add fd00::1/64 dev alknetvA nodad
ip -n alknetA addr add fd00::3/64 dev alknetvA nodad
ip -n alknetA addr add 10.9.0.1/24 dev alknetvA
ip -n alknetA addr add 10.9.0.3/24 dev alknetvA
ip -n alknetB addr add fd00::2/64 dev alknetvB nodad
ip -n alknetB addr add 10.9.0.2/24 dev alknetvB
ip -n alknetA link set alknetvA mtu "$MTU" up
ip -n alknetB link set alknetvB mtu "$MTU" up
if [[ -n ${GRO:-} ]]; then
    ip netns exec alknetA ethtool -K alknetvA gro "$GRO"
    ip netns exec alknetB ethtool -K alknetvB gro "$GRO"
fi
ip netns exec alknetA env ALKNET_DATA_DIR="$D" ALKNET_LOG=warn "$ALKNET" serve \
    --listen "$LISTEN" --workers 2 >"$D/log" 2>&1 &
SP=$!
FP=
for _ in $(seq 100); do
    FP=$(ALKNET_DATA_DIR="$D" "$ALKNET" fingerprint 2>/dev/null || true)
    [[ -n $FP ]] && break
    sleep 0.1
done
# the certificate is written before the workers bind; give them a moment
sleep 1
echo "== ${WORKLOAD:-rr}: $LISTEN reached at $TARGET over a veth pair of MTU $MTU"
# shellcheck disable=SC2086 # ARGS is a list of options
ip netns exec alknetB timeout 60 "$L" "${WORKLOAD:-rr}" --server "$TARGET" --fingerprint "$FP" \
    --server-pid "$SP" ${ARGS:---connections 4 --streams 4} --duration "${DURATION:-5}" 2>&1 |
    grep -E "result|operations|errors|cpu"
grep -iE "warn|error" "$D/log" | head -5 || true
