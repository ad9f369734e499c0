#!/usr/bin/env bash
# Memory of an idle `som serve`: started STARTS times (default 3) on an empty SQLite file, its
# VmRSS (and the anonymous and file-mapped parts) read from /proc after 3 s.
#
#   scripts/idle-rss.sh [BINARY (default target/release/som)] [STARTS] [ENV=VALUE…]
#
# Measure the binary as `cargo build --release` wrote it: a copy made with `cp` is cached in
# large folios, mapped whole, and measures several MB more (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release/som}" starts="${2:-3}"
shift $(( $# < 2 ? $# : 2 ))
[ -x "$bin" ] || cargo build --release --quiet -p som-cli
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
for _ in $(seq 1 "$starts"); do
    dir="$(mktemp -d)"
    env "$@" SOM_DATABASE_URL="sqlite://${dir}/idle.db" SOM_LOG=warn "$bin" serve --listen "127.0.0.1:${port}" \
        > /dev/null 2>&1 &
    pid=$!
    sleep 3
    kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/${pid}/status"; }
    echo "VmRSS $(kb VmRSS) kB (anonymous $(kb RssAnon) kB, files $(kb RssFile) kB)"
    kill "$pid"; wait "$pid" 2> /dev/null || true
    rm -rf "$dir"
done
