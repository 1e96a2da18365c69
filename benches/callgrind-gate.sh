#!/usr/bin/env bash
# callgrind-gate.sh: an instruction-count regression gate for Alknet's hot paths, in the
# manner of rustls' ci-bench. It counts instructions (callgrind's Ir), not seconds, so it
# gives the same answer on a noisy, shared or slow machine.
#
# What it does
#   1. cargo build --release -p alknet-benches --bin alknet-workload
#   2. runs each scenario of that fixed workload (handshake, datagrams, routing, framing,
#      streams, initial-dropped, initial-refused, initial-retry) under valgrind --tool=callgrind, counting only the measured part of the
#      scenario (--collect-atstart=no --toggle-collect=alknet_workload_measured; setup such
#      as certificate loading and pre-generating client datagrams is not counted). `streams`
#      runs a real server worker thread beside the client thread; collection toggles per
#      thread, so it is run with --instr-atstart=no and switches instrumentation (global)
#      on and off itself around its measured part.
#   3. prints  scenario  baseline  now  change%  and exits 1 if any count rose by more than
#      the threshold (default 2%) over benches/callgrind-baseline.txt.
#   The callgrind output files stay in the output directory (default
#   ${TMPDIR:-/tmp}/alknet-callgrind); look at one with
#      callgrind_annotate --inclusive=no  <dir>/callgrind.datagrams.out | head -40
#
# Usage
#   benches/callgrind-gate.sh [--threshold PCT] [--update] [--out DIR] [SCENARIO...]
#
# Determinism (measured on the machine that wrote the baseline, runs of one binary)
#   routing, framing: identical counts run to run.
#   datagrams: within ~250 instructions of 17M (0.002%); the difference is in glibc malloc
#   (free-list state), not in quinn-proto.
#   handshake: within ~0.04% (TLS key shares, signature nonces and CIDs are random).
#   streams: within ~0.1% (real sockets and timers: now and then a delayed ACK fires at
#   another point of the exchange, which changes the datagrams sent by one or two).
#   All far inside the 2% default threshold.
#   Counts do depend on the toolchain (rustc, LLVM), the dependency versions in Cargo.lock,
#   valgrind's version and the CPU features valgrind reports (ring picks AES/GHASH code by
#   CPU), so a baseline is only comparable on the kind of machine and toolchain named in its
#   header. Compare like with like: a rustc or dependency bump alone can move counts.
#
# When and how to update the baseline (on purpose, never to silence the gate)
#   - After a change that is meant to change the counts: an optimisation (counts fall:
#     update so the gain is locked in and later regressions are measured from it), a
#     feature that knowingly costs instructions on the hot path, a dependency or toolchain
#     upgrade, or a change to the workload itself (alknet-workload.rs, benches/src/pair.rs).
#   - When a regression is real but accepted: say so and why.
#   Then run
#       benches/callgrind-gate.sh --update
#   check the printed old/new table, and commit benches/callgrind-baseline.txt in the same
#   commit as the change (or right after it), with the reason and the old -> new counts in
#   the commit message, e.g. "callgrind baseline: datagrams -3.1% (ACK frames built once)".
#   Never update it in the same breath as an unexplained rise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
baseline="$here/callgrind-baseline.txt"
threshold=2
update=0
out="${TMPDIR:-/tmp}/alknet-callgrind"
all_scenarios=(handshake datagrams routing framing streams initial-dropped initial-refused initial-retry)
scenarios=()

usage() {
    sed -n '/^# Usage/,/^# Determinism/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
    --threshold)
        threshold=${2:?--threshold needs a percentage}
        shift 2
        ;;
    --threshold=*)
        threshold=${1#--threshold=}
        shift
        ;;
    --update)
        update=1
        shift
        ;;
    --out)
        out=${2:?--out needs a directory}
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*)
        echo "unknown option: $1" >&2
        usage >&2
        exit 2
        ;;
    *)
        scenarios+=("$1")
        shift
        ;;
    esac
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=("${all_scenarios[@]}")
if ! awk -v t="$threshold" 'BEGIN { exit !(t ~ /^[0-9]+(\.[0-9]+)?$/) }'; then
    echo "--threshold must be a non-negative number (percent), got '$threshold'" >&2
    exit 2
fi
for s in "${scenarios[@]}"; do
    case " ${all_scenarios[*]} " in
    *" $s "*) ;;
    *)
        echo "unknown scenario: $s (known: ${all_scenarios[*]})" >&2
        exit 2
        ;;
    esac
done
command -v valgrind >/dev/null || {
    echo "valgrind is not installed (apt-get install valgrind)" >&2
    exit 2
}

# Build, and learn where the binary is from cargo itself (honours CARGO_TARGET_DIR).
cd "$root"
bin=$(cargo build --release -p alknet-benches --bin alknet-workload \
    --message-format=json-render-diagnostics |
    sed -n 's/.*"executable":"\([^"]*alknet-workload\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || {
    echo "could not find the built alknet-workload binary" >&2
    exit 2
}

mkdir -p "$out"
declare -A now
for s in "${scenarios[@]}"; do
    file="$out/callgrind.$s.out"
    log="$out/callgrind.$s.log"
    case "$s" in
    streams) select=(--instr-atstart=no) ;;
    *) select=(--collect-atstart=no --toggle-collect=alknet_workload_measured) ;;
    esac
    if ! valgrind --tool=callgrind --callgrind-out-file="$file" "${select[@]}" \
        "$bin" "$s" >"$log" 2>&1; then
        echo "scenario $s failed under valgrind; see $log" >&2
        tail -n 20 "$log" >&2
        exit 2
    fi
    # "summary:" (and "totals:") hold the collected Ir of the whole run; with
    # --instr-atstart=no callgrind writes "summary: 0" and the count only in "totals:".
    count=$(awk '/^summary:/ && $2 != 0 { print $2; exit }' "$file")
    [ -n "$count" ] || count=$(awk '/^totals:/ { print $2; exit }' "$file")
    if [ -z "$count" ] || [ "$count" = 0 ]; then
        echo "no instruction count for $s in $file (was alknet_workload_measured reached?)" >&2
        exit 2
    fi
    now[$s]=$count
done

# A baseline only compares on the machine kind and toolchain that wrote it (see above).
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
machine_now="$(uname -sm), ${cpu:-unknown CPU}"
toolchain_now="$(rustc --version); $(valgrind --version)"
machine_base=$(sed -n 's/^# machine: //p' "$baseline" 2>/dev/null || true)
toolchain_base=$(sed -n 's/^# toolchain: //p' "$baseline" 2>/dev/null || true)
comparable=1
if [ "$machine_base" != "$machine_now" ] || [ "$toolchain_base" != "$toolchain_now" ]; then
    comparable=0
fi

declare -A base
if [ -f "$baseline" ]; then
    while read -r name count _; do
        case "$name" in '' | '#'*) continue ;; esac
        base[$name]=$count
    done <"$baseline"
fi

# The table; exit status 1 if a count rose past the threshold.
fail=0
printf '%-12s %14s %14s %9s\n' scenario baseline now change%
for s in "${scenarios[@]}"; do
    b=${base[$s]:-}
    n=${now[$s]}
    if [ -z "$b" ]; then
        printf '%-12s %14s %14s %9s\n' "$s" - "$n" new
        continue
    fi
    change=$(awk -v b="$b" -v n="$n" 'BEGIN { printf "%+.3f", (n - b) * 100 / b }')
    verdict=""
    if awk -v c="$change" -v t="$threshold" 'BEGIN { exit !(c > t) }'; then
        verdict="  REGRESSION (> +$threshold%)"
        fail=1
    fi
    printf '%-12s %14s %14s %9s%s\n' "$s" "$b" "$n" "$change" "$verdict"
done

if [ "$update" = 1 ]; then
    # Keep counts of scenarios not run this time.
    for s in "${all_scenarios[@]}"; do
        [ -n "${now[$s]:-}" ] || now[$s]=${base[$s]:-}
    done
    {
        echo "# Instruction counts (callgrind Ir) of alknet-workload scenarios; checked by"
        echo "# benches/callgrind-gate.sh, rewritten by 'benches/callgrind-gate.sh --update'."
        echo "# Update only on purpose; see the script's header. Format: scenario count"
        echo "# machine: $machine_now"
        echo "# toolchain: $toolchain_now"
        echo "# date: $(date -u +%Y-%m-%d)"
        for s in "${all_scenarios[@]}"; do
            [ -n "${now[$s]:-}" ] && echo "$s ${now[$s]}"
        done
    } >"$baseline.tmp"
    mv "$baseline.tmp" "$baseline"
    echo "wrote $baseline"
    exit 0
fi

if [ ${#base[@]} -eq 0 ]; then
    echo "no baseline at $baseline; create it with --update" >&2
    exit 1
fi
if [ "$fail" = 1 ] && [ "$comparable" = 0 ]; then
    echo "not enforced: the baseline was written on '$machine_base' with '$toolchain_base'," >&2
    echo "this is '$machine_now' with '$toolchain_now'; counts are not comparable across them" >&2
    exit 0
fi
if [ "$fail" = 1 ]; then
    echo "instruction count regression over $threshold%: find where with" >&2
    echo "  callgrind_annotate --inclusive=yes $out/callgrind.<scenario>.out" >&2
    echo "(if the rise is intended, update the baseline as the script's header says)" >&2
    exit 1
fi
echo "ok: no scenario rose more than $threshold%"
