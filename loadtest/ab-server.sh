#!/usr/bin/env bash
# A/B of the alknet server in two alknet-loadtest builds (say, before and after a change)
# under one workload, driven by the same (NEW) client: per round, OLD's then NEW's
# `alknet-loadtest serve --kind alknet` is started, loaded with `NEW WORKLOAD --server ...`
# (its CPU read from /proc of that server), and stopped. Prints each round's throughput,
# server CPU per operation and latency line.
#
# Environment: OLD (required: the other build's alknet-loadtest), NEW (default
# target/release/alknet-loadtest), WORKLOAD (h3), ROUNDS (3), ARGS (the workload's options;
# default "--duration 5 --connections 16 --streams 32 --client-threads 2"), SERVE_ARGS
# (options of `serve`, e.g. "--workers 1"; default none).
# Example: OLD=/tmp/lt-old bash loadtest/ab-server.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OLD:?set OLD to the alknet-loadtest binary of the other build}"
NEW=${NEW:-target/release/alknet-loadtest}
WORKLOAD=${WORKLOAD:-h3}
ROUNDS=${ROUNDS:-3}
ARGS=${ARGS:---duration 5 --connections 16 --streams 32 --client-threads 2}
SERVE_ARGS=${SERVE_ARGS:-}
for r in $(seq "$ROUNDS"); do
    for which in old new; do
        bin=$NEW
        [[ $which == old ]] && bin=$OLD
        # shellcheck disable=SC2086 # SERVE_ARGS is a list of options
        coproc SRV { exec "$bin" serve --kind alknet $SERVE_ARGS; }
        pid=$SRV_PID
        read -r listening <&"${SRV[0]}"
        read -r fingerprint <&"${SRV[0]}"
        # shellcheck disable=SC2086 # ARGS is a list of options
        out=$("$NEW" "$WORKLOAD" --server "${listening#listening }" \
            --fingerprint "${fingerprint#fingerprint }" --server-pid "$pid" $ARGS 2>&1)
        echo "round $r $which: $(grep -E '^ *result' <<<"$out" | xargs) | $(grep -E '^ *efficiency' <<<"$out" | xargs) | $(grep -E '^ *latency' <<<"$out" | xargs)"
        # the server stops when its stdin closes
        eval "exec ${SRV[1]}>&-"
        wait "$pid" 2>/dev/null || true
    done
done
