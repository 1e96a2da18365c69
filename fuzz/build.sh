#!/usr/bin/env bash
# Build the fuzz targets (alknet-proto parsers incl. the git request line and WebTransport stream headers, the gix backend's git conversations, the vault file, session tickets, DNS message handling, SFTP requests, file request paths, the SSH handler's KRL and authorized_keys parsers, russh's server before a key is agreed, the static files' Range and validator headers, the QUIC server's version-negotiation read of a first Initial, pkarr relay payloads); with --smoke, also run each for 5 s.
#
# Works on a stable toolchain: cargo-fuzz passes nightly-only -Z flags
# (sanitizer, coverage), which RUSTC_BOOTSTRAP=1 unlocks on stable rustc.
# The default AddressSanitizer build works with stable 1.95.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export RUSTC_BOOTSTRAP=1

# 1. cargo-fuzz, only if missing.
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# 2. Build every target (ASan, release, debug assertions on).
cargo fuzz build

# 3. Smoke run: libFuzzer exits non-zero on a panic/crash, which fails the script.
if [[ "${1:-}" == "--smoke" ]]; then
    for target in $(cargo fuzz list); do
        echo "== fuzzing $target for 5 s"
        # seeds/TARGET (committed, unlike corpus/): inputs a short run would not find, such
        # as a DNS packet with records for pkarr_relay; read as a second corpus directory
        seeds=()
        [[ -d seeds/$target ]] && seeds=("seeds/$target")
        mkdir -p "corpus/$target"
        cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time=5
    done
fi
