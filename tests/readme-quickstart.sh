#!/usr/bin/env bash
# Runs the README's quick start as written: the first line of "Two commands" (the server, in
# the background) and the two client lines after it, on a fresh data directory, and checks
# that the echo comes back. The lines are read from README.md, not copied here, so the README
# cannot drift from what works.
set -euo pipefail
cd "$(dirname "$0")/.."

readme_blocks() {
    # every ```sh block of the "## Two commands" section, in order, one line each
    awk '/^## Two commands/ { s = 1; next } /^## / { s = 0 } s && /^```sh/ { b = 1; next }
         s && /^```/ { b = 0; next } s && b' README.md
}
serve_line=$(readme_blocks | sed -n 1p | sed 's/ *#.*$//')
client_lines=$(readme_blocks | sed -n '3,$p')
[[ "$serve_line" == *"serve"* ]] || { echo "README quick start: no serve line found" >&2; exit 1; }
[ -n "$client_lines" ] || { echo "README quick start: no client lines found" >&2; exit 1; }

data=$(mktemp -d)
log="$data/serve.log"
export ALKNET_DATA_DIR="$data"
cleanup() {
    [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$data"
}
trap cleanup EXIT

echo "README: $serve_line &"
bash -c "exec $serve_line" >"$log" 2>&1 &
server_pid=$!
for _ in $(seq 1 1200); do # the first run builds the release binary
    grep -q "alknet serving" "$log" && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; echo "the server exited" >&2; exit 1; }
    sleep 1
done
grep -q "alknet serving" "$log" || { tail -20 "$log" >&2; echo "the server did not start" >&2; exit 1; }

echo "README: $client_lines"
out=$(timeout 60 bash -euo pipefail -c "$client_lines")
if [ "$out" != "hello" ]; then
    echo "README quick start: expected 'hello', got '$out'" >&2
    exit 1
fi
echo "README quick start: ok"
