#!/usr/bin/env bash
# What a steady 1,000 orders/s costs on PostgreSQL, measured on `som serve` (release build):
#  1. CPU per order, of the server and of all PostgreSQL processes together: 10 s of writes at
#     1,000 orders/s beside a light read load, less the same 10 s of that read load alone;
#  2. reads at c=64 (the newest order, a page of 50 of a user's 1,000 orders) alone and under
#     1,000 orders/s, three times each, with the p99 ratio;
#  3. orders placed flat out by 1, 16 and 64 clients, and the orders each commit carried.
#
#   SOM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/bench-write-cost.sh [SOM_BINARY]
#
# SOM_BINARY defaults to the release build of this checkout; pass another build to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SOM_TEST_POSTGRES_URL:?set SOM_TEST_POSTGRES_URL to a PostgreSQL server (admin URL)}"
cargo build --release --quiet -p som-cli && cargo build --release --quiet -p som --example loadgen
SOM="${1:-target/release/som}"
LG=target/release/examples/loadgen
db="som_cost_$$"
url="${SOM_TEST_POSTGRES_URL%/*}/${db}"
psql "$SOM_TEST_POSTGRES_URL" -qc "CREATE DATABASE ${db}" > /dev/null
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
SOM_DATABASE_URL="$url" SOM_AUTH_RATE_LIMIT=0 SOM_LOG=warn "$SOM" serve --listen "127.0.0.1:${port}" > /dev/null 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null; wait $srv 2>/dev/null; psql "$SOM_TEST_POSTGRES_URL" -qc "DROP DATABASE ${db} WITH (FORCE)" > /dev/null' EXIT
U=(--url "http://127.0.0.1:${port}")
until curl -fsS "http://127.0.0.1:${port}/healthz" > /dev/null 2>&1; do sleep 0.01; done

# CPU ticks (1/100 s) used so far by the server and by every postgres process.
ticks() {
    local pg=0 t q
    for q in $(pgrep -x postgres); do
        t=$(awk '{print $14 + $15}' "/proc/$q/stat" 2> /dev/null || echo 0)
        pg=$((pg + t))
    done
    echo "$(awk '{print $14 + $15}' "/proc/$srv/stat") $pg"
}
"$LG" "${U[@]}" --scenario healthz --concurrency 1 --duration 2 > /dev/null
read -r s0 p0 < <(ticks)
"$LG" "${U[@]}" --scenario healthz --concurrency 1 --duration 10 --write-rate 1000 | tail -1
read -r s1 p1 < <(ticks)
"$LG" "${U[@]}" --scenario healthz --concurrency 1 --duration 10 > /dev/null
read -r s2 p2 < <(ticks)
# 10,000 orders: one tick (10 ms) over 10,000 orders is 1 µs per order.
echo "CPU per order at 1,000 orders/s: postgres $(((p1 - p0) - (p2 - p1))) µs (all processes), server $(((s1 - s0) - (s2 - s1))) µs"

field() { grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
for _ in 1 2 3; do
    for s in latest list; do
        extra=(); [ "$s" = list ] && extra=(--orders 1000)
        alone="$("$LG" "${U[@]}" --scenario "$s" --concurrency 64 --duration 5 "${extra[@]}")"
        busy="$("$LG" "${U[@]}" --scenario "$s" --concurrency 64 --duration 5 "${extra[@]}" --write-rate 1000)"
        pa="$(echo "$alone" | field p99)"; pb="$(echo "$busy" | field p99)"
        echo "${s}: alone $(echo "$alone" | field throughput)/s p99 ${pa} ms;" \
            "with writes $(echo "$busy" | field throughput)/s p99 ${pb} ms;" \
            "ratio $(python3 -c "print(round(${pb} / ${pa}, 2))");" \
            "writes $(echo "$busy" | grep -o 'rate=[0-9]*/s p50=[0-9.]*ms p99=[0-9.]*ms')"
    done
done

# 3. Orders flat out (one client, 16, 64), and how many orders each commit carried.
for c in 1 16 64; do
    echo "orders flat out, c=${c}: $("$LG" "${U[@]}" --scenario create --concurrency "$c" --duration 5 | grep -o 'throughput=.*')"
done
echo "orders per commit over the whole run: $(psql "$url" -Atc \
    "SELECT round(count(*)::numeric / count(DISTINCT xmin::text), 2) FROM orders")"
