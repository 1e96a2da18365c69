#!/usr/bin/env bash
# Does an SFTP request that frees a large file hold up the worker's other connections?
#
# One `alknet serve --workers 1` (everything on one worker) on tmpfs; an `alknet/echo`
# ping loop on a connection of its own (`alknet-loadtest rr`, 1 connection, 1 stream,
# 64 B, its own client thread) runs for $DURATION seconds while the stock `sftp` client
# puts a 1 GiB file over an existing 1 GiB file $PUTS times through `alknet connect`
# (`put` opens with SSH_FXF_TRUNC: the kernel frees the old file's pages inside that
# openat2). Prints the ping loop's latency line: its `max` is the longest the worker left
# the other connection waiting. Before `INLINE_FREE_MAX_BYTES` (handlers/sftp) the
# truncation ran on the worker's own thread: max ~150 ms; now it runs on a blocking
# thread. OP=rm removes the 1 GiB file instead (`REMOVE`: the unlink frees it), and puts
# it back in place between rounds.
#
#   loadtest/sftp-stall.sh                 # ALKNET=target/release/alknet, LOADTEST=...-loadtest
#   ALKNET=/tmp/alknet-old loadtest/sftp-stall.sh   # another build as server and client
#   OP=rm loadtest/sftp-stall.sh
#
# Needs openssh-client (`sftp`). Uses about 2.1 GiB of /dev/shm while it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ALKNET=${ALKNET:-target/release/alknet}
LOADTEST=${LOADTEST:-target/release/alknet-loadtest}
PUTS=${PUTS:-3}
OP=${OP:-put}
[[ $OP == put || $OP == rm ]] || { echo "OP is put or rm" >&2; exit 2; }
DURATION=${DURATION:-6}
PORT=${PORT:-4498}
command -v sftp >/dev/null || { echo "sftp (openssh-client) is needed" >&2; exit 1; }
[[ -x $ALKNET && -x $LOADTEST ]] || cargo build --release -q -p alknet -p alknet-loadtest

W=$(mktemp -d /dev/shm/alknet-sftp-stall.XXXXXX)
SERVER=""
cleanup() {
    [[ -n $SERVER ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT

CFP=$("$ALKNET" fingerprint --data-dir "$W/client")
ALKNET_DATA_DIR=$W/alk "$ALKNET" peer add bench-sftp --fingerprint "$CFP" \
    --scope sftp:read --scope sftp:write >/dev/null 2>&1
FP=$(ALKNET_DATA_DIR=$W/alk "$ALKNET" fingerprint)
mkdir -p "$W/alk/sftp/bench-sftp"
head -c 1073741824 /dev/zero >"$W/alk/sftp/bench-sftp/up"
head -c 1073741824 /dev/zero >"$W/up"
if [[ $OP == put ]]; then echo "put $W/up up"; else echo "rm up"; fi >"$W/batch"

ALKNET_DATA_DIR=$W/alk ALKNET_LOG=warn "$ALKNET" serve --listen "127.0.0.1:$PORT" --workers 1 \
    2>"$W/server.log" &
SERVER=$!
for _ in $(seq 50); do
    ss -uln | grep -q "127.0.0.1:$PORT " && break
    sleep 0.1
done

"$LOADTEST" rr --server "127.0.0.1:$PORT" --fingerprint "$FP" --connections 1 --streams 1 \
    --size 64 --warmup 0 --duration "$DURATION" >"$W/ping" 2>&1 &
PING=$!
sleep 0.5
for _ in $(seq "$PUTS"); do
    sftp -q -b "$W/batch" -D "$ALKNET connect --alpn alknet/sftp --fingerprint $FP \
--cert $W/client/cert.pem --key $W/client/key.pem 127.0.0.1:$PORT" >/dev/null
    [[ $OP == rm ]] && cp "$W/up" "$W/alk/sftp/bench-sftp/up"
    sleep 0.3
done
wait "$PING"
what="puts over a 1 GiB file"
[[ $OP == rm ]] && what="removals of a 1 GiB file"
echo "== $("$ALKNET" --version 2>/dev/null || echo alknet): ping loop on the same worker during $PUTS $what"
grep -E "result|latency" "$W/ping"
