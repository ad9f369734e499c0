#!/usr/bin/env bash
# Memory of an idle `som serve`: started STARTS times (default 3) on an empty SQLite file, in an
# empty directory (no `.env` is read), its VmRSS and the anonymous and file-mapped parts read
# from /proc after 3 s.
#
#   scripts/idle-rss.sh [BINARY [STARTS [ENV=VALUE…]]]     # BINARY: target/release/som, built if absent
#
# Measure the binary as `cargo build --release` wrote it: a copy made with `cp` is cached in
# large folios, mapped whole, and measures several MB more (BENCHMARKS.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-}" starts="${2:-3}"
shift $(( $# < 2 ? $# : 2 ))
if [ -z "$bin" ]; then
    bin="${root}/target/release/som"
    [ -x "$bin" ] || (cd "$root" && cargo build --release --quiet -p som-cli)
fi
bin="$(realpath "$bin")"
[ -x "$bin" ] || { echo "no som binary at $bin" >&2; exit 2; }
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
pid="" dir=""
trap '[ -n "$pid" ] && kill "$pid" 2> /dev/null; [ -n "$dir" ] && rm -rf "$dir"' EXIT
for _ in $(seq 1 "$starts"); do
    dir="$(mktemp -d)"
    (cd "$dir" && exec env "$@" SOM_DATABASE_URL="sqlite://${dir}/idle.db" SOM_LOG=warn "$bin" serve \
        --listen "127.0.0.1:${port}" > "${dir}/serve.log" 2>&1) &
    pid=$!
    sleep 3
    kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/${pid}/status" 2> /dev/null; }
    rss="$(kb VmRSS)"
    if ! kill -0 "$pid" 2> /dev/null || [ -z "$rss" ]; then
        echo "som serve did not stay up:" >&2; cat "${dir}/serve.log" >&2; exit 1
    fi
    echo "VmRSS ${rss} kB (anonymous $(kb RssAnon) kB, files $(kb RssFile) kB)"
    kill "$pid"; wait "$pid" 2> /dev/null || true
    pid=""
    rm -rf "$dir"; dir=""
done
