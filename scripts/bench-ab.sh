#!/usr/bin/env bash
# Two or more builds of `som serve` measured alternately on this machine, each on a fresh
# database, so that a change is compared with the build before it in the same minutes rather than
# with figures from another hour (or another machine).
#
#   BUILDS="/tmp/before /tmp/after" scripts/bench-ab.sh ROUNDS SECONDS sqlite|postgres SCENARIO:CONCURRENCY…
#   e.g. BUILDS="/tmp/before /tmp/after" scripts/bench-ab.sh 2 10 postgres healthz:64 flow:64
#
# Each directory in BUILDS holds a release `som` binary (copy target/release/som there after
# building each version); the load generator is this tree's. PostgreSQL uses
# SOM_TEST_POSTGRES_URL's server (a database is created and dropped per build and round).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { sed -n 2,11p "$0"; exit 2; }
rounds="$1" seconds="$2" kind="$3"; shift 3
cargo build --release --quiet -p som --example loadgen
lg=target/release/examples/loadgen
admin="${SOM_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
for round in $(seq 1 "$rounds"); do
    for build in ${BUILDS:?set BUILDS to the directories of the builds to compare}; do
        dir="$(mktemp -d)" db=""
        if [ "$kind" = sqlite ]; then
            url="sqlite://${dir}/ab.db"
        else
            db="som_ab_$$_${round}_$(basename "$build")"
            psql "$admin" -qc "CREATE DATABASE ${db}" > /dev/null
            url="${admin%/*}/${db}"
        fi
        port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        SOM_DATABASE_URL="$url" SOM_AUTH_RATE_LIMIT=0 SOM_LOG=warn "$build/som" serve --listen "127.0.0.1:${port}" > /dev/null 2>&1 &
        pid=$!
        until curl -fs "http://127.0.0.1:${port}/healthz" > /dev/null; do sleep 0.05; done
        for load in "$@"; do
            scenario="${load%:*}" concurrency="${load#*:}" extra=()
            case "$scenario" in list | pages) extra=(--orders 1000) ;; esac
            line="$("$lg" --url "http://127.0.0.1:${port}" --scenario "$scenario" --concurrency "$concurrency" \
                --duration "$seconds" "${extra[@]}" 2>&1 | grep throughput)"
            echo "$(basename "$build") round ${round} ${scenario} c=${concurrency} $(echo "$line" | grep -o 'throughput=.*')"
        done
        kill "$pid"; wait "$pid" 2> /dev/null || true
        [ -n "$db" ] && psql "$admin" -qc "DROP DATABASE ${db} WITH (FORCE)" > /dev/null
        rm -rf "$dir"
    done
done
