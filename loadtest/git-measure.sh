#!/usr/bin/env bash
# The alknet/git figures of the README: the same generated repositories cloned and fetched
# with the stock git through
#   gix     alknet serve, [git] backend = "gix" (git-remote-alknet, QUIC)
#   gixwalk the same with use_bitmaps = false: every clone walks the history (what the gix
#           backend did before answering full clones from git's reachability bitmaps)
#   git     alknet serve, [git] backend = "git" (git upload-pack per stream, QUIC)
#   daemon  git daemon --export-all --base-path on loopback TCP (git://), the anchor
# all three serving the very same bare repositories, protocol v2 everywhere.
#
# Per repository and server: `clone --bare` (seconds, pack bytes, server CPU), a one-commit
# fetch (the server's newest commit arrived by a push, so it is loose there, as after a
# real push), and a no-op fetch. Medians of ROUNDS rounds (default 3), servers interleaved
# (gix gixwalk git daemon gix …) so load drift hits all alike.
#
# seconds     wall time of the git client command
# pack bytes  the packfile as received: a fetch's from GIT_TRACE_PACKFILE, a clone's as
#             stored (index-pack keeps a clone's pack as it arrived), every server alike
# server CPU  utime+stime+cutime+cstime of the server process from /proc (children are
#             counted once reaped: git daemon's per-connection forks, the git backend's
#             upload-pack and pack-objects), read 0.3 s after the client finished
#
# Usage: loadtest/git-measure.sh [--quick]   (--quick: small repositories, 1 round)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
MEDIUM_COMMITS=${MEDIUM_COMMITS:-3000} MEDIUM_FILES=${MEDIUM_FILES:-2000}
LARGE_COMMITS=${LARGE_COMMITS:-20000} LARGE_FILES=${LARGE_FILES:-300}
if [[ ${1:-} == --quick ]]; then
    ROUNDS=1 MEDIUM_COMMITS=200 MEDIUM_FILES=100 LARGE_COMMITS=500 LARGE_FILES=50
fi
export CARGO_PROFILE_RELEASE_DEBUG=0
[[ -n ${SKIP_BUILD:-} ]] || nice -n 19 cargo build --release -q -p alknet --bins
BIN=$PWD/target/release
export PATH=$BIN:$PATH
command -v git >/dev/null || { echo "git is needed" >&2; exit 1; }

W=$(mktemp -d /tmp/alknet-git-measure.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
ROOT=$W/root
mkdir -p "$ROOT/bench"
export GIT_CONFIG_NOSYSTEM=1 HOME=$W/home GIT_TERMINAL_PROMPT=0
mkdir -p "$HOME"
git config --global user.name bench
git config --global user.email bench@example.org
git config --global init.defaultBranch main

echo "== $(date -u) $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)," \
    "load $(cut -d' ' -f1-3 /proc/loadavg), $(git version)"

# A fast-import stream: COMMITS commits over FILES text files (all created by the first
# commit, then 1-3 changed per commit, keeping most lines: deltas), a 32 KiB random binary
# blob added every 40 commits. Deterministic.
fast_import_stream() {
    python3 - "$1" "$2" <<'EOF'
import random, sys
commits, files = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(7)
out = sys.stdout.buffer
def data(b):
    out.write(b"data %d\n" % len(b)); out.write(b); out.write(b"\n")
def text(f, i):
    lines = [b"file %d line %d: %s\n" % (f, l, b"x" * (l % 50)) for l in range(60)]
    lines[rng.randrange(60)] = b"changed in commit %d\n" % i
    return b"".join(lines)
for i in range(commits):
    out.write(b"commit refs/heads/main\nmark :%d\n" % (i + 1))
    out.write(b"committer Bench <bench@example.org> %d +0000\n" % (1_700_000_000 + i * 60))
    data(b"commit %d\n" % i)
    if i > 0:
        out.write(b"from :%d\n" % i)
    changed = range(files) if i == 0 else [rng.randrange(files) for _ in range(rng.randint(1, 3))]
    for f in changed:
        out.write(b"M 100644 inline src/d%d/f%d.txt\n" % (f % 37, f))
        data(text(f, i))
    if i % 40 == 0:
        out.write(b"M 100644 inline bin/blob%d.bin\n" % i)
        data(rng.randbytes(32 * 1024))
out.write(b"reset refs/tags/v1\nfrom :%d\n\n" % commits)
EOF
}

# bench/NAME.git: NAME's history but its last commit, fully repacked (a gc'd server), then
# the last commit pushed into it (loose, as a push leaves it); base-NAME.git: a client
# that cloned before that push.
make_repo() {
    local name=$1 commits=$2 files=$3 t0=$EPOCHREALTIME
    local src=$W/src-$name srv=$ROOT/bench/$name.git
    git init -q --bare "$src"
    fast_import_stream "$commits" "$files" | git -C "$src" fast-import --quiet
    git init -q --bare "$srv"
    git -C "$src" push -q "$srv" main~1:refs/heads/main
    git -C "$srv" repack -q -a -d -f
    git clone -q --bare --no-local "$srv" "$W/base-$name.git"
    git -C "$src" push -q "$srv" main v1
    echo "-- $name: $commits commits, $(git -C "$srv" ls-tree -r --name-only main | wc -l) files," \
        "$(git -C "$srv" count-objects -v | awk '/^in-pack/ {p=$2} /^size-pack/ {s=$2} /^count/ {c=$2} END {print p " objects packed (" s " KiB), " c " loose"}')," \
        "built in $(awk "BEGIN {printf \"%.0f\", $EPOCHREALTIME - $t0}") s"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# alknet serve with [git] backend = $1 (and the [git] line $3, in $W/alknet-$2); sets
# SERVER_PID, URL_BASE, FP
start_alknet() {
    local backend=$1 dir=$W/alknet-${2:-$1} port
    port=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/config.toml" <<EOF
[handlers]
enabled = ["alknet/git"]
[identity]
sqlite = false
[git]
backend = "$backend"
root = "$ROOT"
public_read = ["bench/*"]
${3:-}
EOF
    ALKNET_DATA_DIR=$dir ALKNET_LOG=warn "$BIN/alknet" serve --listen "127.0.0.1:$port" \
        --workers 2 --config "$dir/config.toml" 2>"$dir/log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 200); do
        FP=$(ALKNET_DATA_DIR=$dir "$BIN/alknet" fingerprint 2>/dev/null || true)
        [[ -n $FP ]] && ALKNET_FINGERPRINT=$FP \
            git ls-remote "alknet://127.0.0.1:$port/bench/medium.git" >/dev/null 2>&1 && break
        sleep 0.1
    done
    ALKNET_FINGERPRINT=$FP git ls-remote "alknet://127.0.0.1:$port/bench/medium.git" >/dev/null
    URL_BASE=alknet://127.0.0.1:$port
}

start_daemon() {
    local port
    port=$(free_port)
    # git-daemon itself, not the `git` wrapper (which would be the pid and never reap it)
    "$(git --exec-path)/git-daemon" --export-all --base-path="$ROOT" --reuseaddr --listen=127.0.0.1 --port="$port" \
        "$ROOT" 2>"$W/daemon.log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 200); do
        git ls-remote "git://127.0.0.1:$port/bench/medium.git" >/dev/null 2>&1 && break
        sleep 0.1
    done
    URL_BASE=git://127.0.0.1:$port
}

cpu_ticks() { # utime+stime+cutime+cstime of $1
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13 + $14 + $15}'
}

declare -A PID_OF URL_OF FP_OF
start_servers() {
    start_alknet gix
    PID_OF[gix]=$SERVER_PID URL_OF[gix]=$URL_BASE FP_OF[gix]=$FP
    start_alknet gix gixwalk "use_bitmaps = false"
    PID_OF[gixwalk]=$SERVER_PID URL_OF[gixwalk]=$URL_BASE FP_OF[gixwalk]=$FP
    start_alknet git
    PID_OF[git]=$SERVER_PID URL_OF[git]=$URL_BASE FP_OF[git]=$FP
    start_daemon
    PID_OF[daemon]=$SERVER_PID URL_OF[daemon]=$URL_BASE FP_OF[daemon]=
}

# Memory this VM has left free for a few tens of seconds is slow to write again, as if the
# hypervisor had taken it back (free page reporting is on in its kernel's command line;
# not proven to be the cause): 1 GiB written into /dev/shm took 2.4-3.0 s after a minute's
# rest, 0.5 s right after 1 GiB had been freed (2026-12-07, AMD host). A large clone
# writes ~60 MB of fresh pages (the pack and its index in the page cache, index-pack's
# heap), up to ~0.15 s of a 1.2 s clone on cold memory. So each timed operation starts
# right after WARM_MIB of memory was written and freed.
WARM_MIB=${WARM_MIB:-256}
warm_memory() {
    local f
    f=$(mktemp -p /dev/shm git-measure-warm.XXXXXX)
    dd if=/dev/zero of="$f" bs=1M count="$WARM_MIB" status=none
    rm -f "$f"
}

TICK=$(getconf CLK_TCK)
# measure SERVER OP REPO: runs OP (clone | fetch1 | noop) against SERVER; prints
# "seconds bytes cpu_seconds"
measure() {
    local server=$1 op=$2 repo=$3 pid=${PID_OF[$1]} url=${URL_OF[$1]}/bench/$3.git
    local dst=$W/client-$server-$op-$repo trace=$W/trace.pack
    rm -rf "$dst" "$trace"
    case $op in
        clone) ;;
        fetch1) cp -a "$W/base-$repo.git" "$dst" ;;
        noop) cp -a "$W/base-$repo.git" "$dst"
              ALKNET_FINGERPRINT=${FP_OF[$server]} git -C "$dst" fetch -q --no-tags "$url" +main:refs/remotes/o/main ;;
    esac
    sleep 0.3
    warm_memory
    local c0 t0 t1 c1
    c0=$(cpu_ticks "$pid")
    t0=$EPOCHREALTIME
    case $op in
        # a clone stores the pack it received byte for byte (checked: `cmp` with
        # GIT_TRACE_PACKFILE's copy), so its size is read afterwards and the timed command
        # is the plain clone users run, without a second 26 MB copy written beside it
        clone) ALKNET_FINGERPRINT=${FP_OF[$server]} git clone -q --bare "$url" "$dst" ;;
        *) ALKNET_FINGERPRINT=${FP_OF[$server]} GIT_TRACE_PACKFILE=$trace git -C "$dst" fetch -q --no-tags "$url" +main:refs/remotes/o/main ;;
    esac
    t1=$EPOCHREALTIME
    sleep 0.3
    c1=$(cpu_ticks "$pid")
    local bytes=0
    if [[ $op == clone ]]; then
        bytes=$(stat -c %s "$dst"/objects/pack/*.pack | awk '{n += $1} END {print n}')
        [[ $(git -C "$dst" rev-parse main) == $(git -C "$ROOT/bench/$repo.git" rev-parse main) ]] ||
            { echo "clone from $server: wrong main" >&2; exit 1; }
    else
        [[ -f $trace ]] && bytes=$(stat -c %s "$trace")
        [[ $(git -C "$dst" rev-parse o/main) == $(git -C "$ROOT/bench/$repo.git" rev-parse main) ]] ||
            { echo "fetch from $server: wrong main" >&2; exit 1; }
    fi
    rm -rf "$dst"
    awk "BEGIN {printf \"%.3f %d %.2f\n\", $t1 - $t0, $bytes, ($c1 - $c0) / $TICK}"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

echo "== generating (git fast-import, repack -adf)"
make_repo medium "$MEDIUM_COMMITS" "$MEDIUM_FILES"
make_repo large "$LARGE_COMMITS" "$LARGE_FILES"
start_servers
SERVERS=(gix gixwalk git daemon)
for repo in medium large; do
    for op in clone fetch1 noop; do
        declare -A S=() B=() C=()
        for r in $(seq "$ROUNDS"); do
            for s in "${SERVERS[@]}"; do
                read -r sec bytes cpu < <(measure "$s" "$op" "$repo")
                S[$s]+="$sec "; B[$s]+="$bytes "; C[$s]+="$cpu "
            done
        done
        printf '%-7s %-7s %-7s %9s %12s %9s   %s\n' repo op server seconds "pack bytes" "srv CPU s" "(median of $ROUNDS; ratio to daemon)"
        for s in "${SERVERS[@]}"; do
            ms=$(tr ' ' '\n' <<<"${S[$s]}" | grep . | median)
            mb=$(tr ' ' '\n' <<<"${B[$s]}" | grep . | median)
            mc=$(tr ' ' '\n' <<<"${C[$s]}" | grep . | median)
            ds=$(tr ' ' '\n' <<<"${S[daemon]}" | grep . | median)
            db=$(tr ' ' '\n' <<<"${B[daemon]}" | grep . | median)
            ratio=$(awk "BEGIN {printf \"time %.2fx\", $ms / ($ds > 0 ? $ds : 1); if ($db > 0) printf \", bytes %.2fx\", $mb / $db}")
            printf '%-7s %-7s %-7s %9s %12s %9s   %s  [all: %s]\n' "$repo" "$op" "$s" "$ms" "$mb" "$mc" "$ratio" "${S[$s]% }"
        done
        unset S B C
    done
done
