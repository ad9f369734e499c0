#!/usr/bin/env bash
# HTTP benchmarks of `som serve` (release build) with the in-repo load generator: throughput and
# latency per endpoint at concurrency 16 and 64 against /healthz measured in the same run
# (reads: the newest order, one order, a page of 50 of a user's 1,000 orders), reads alone and
# under a steady write load of 1,000 orders/s, memory (RSS) idle and under load, start-up time,
# the login-storm effect, and the same reads with 10 k and 1 M orders in the database.
# Loopback only. Figures go into BENCHMARKS.md.
#
#   scripts/bench-http.sh            # SQLite; PostgreSQL too when SOM_TEST_POSTGRES_URL is set
#   DURATION=5 scripts/bench-http.sh # shorter runs
#   SCALE_ONLY=1 scripts/bench-http.sh  # only the 10 k / 1 M scale runs
#   SKIP_SCALE=1 scripts/bench-http.sh  # everything but the scale runs
#   ONLY=postgres SKIP_SCALE=1 scripts/bench-http.sh  # one backend (postgres or sqlite)
#   CONSOLE_ONLY=1 scripts/bench-http.sh  # only the console pages beside /healthz
#   STREAM_ONLY=1 scripts/bench-http.sh   # order creation with the event stream off, to NATS
#                                         # JetStream and to RabbitMQ (brokers on 127.0.0.1)
#   PAGES_ONLY=1 scripts/bench-http.sh    # a 1,000-order user's whole list at limit=200 beside
#                                         # /healthz and the single-order reads
#   EXPORT_ONLY=1 scripts/bench-http.sh   # exporting 1 M orders (CSV, NDJSON): rate and RSS
#   RSS_ONLY=1 scripts/bench-http.sh      # RSS idle over 1 M orders and its peak through logins,
#                                         # reads, whole lists, writes and an export (SQLite)
#   FLOW_ONLY=1 scripts/bench-http.sh     # create → initiate → confirm beside /healthz (c=64),
#                                         # with the CPU time the server, PostgreSQL and the load
#                                         # generator each used through it
#   REPLICA_ONLY=1 scripts/bench-http.sh  # reads on a private PostgreSQL primary alone, then with
#                                         # a streaming replica (pg_basebackup; needs the server's
#                                         # tools and, as root, the postgres user)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
cargo build --release --quiet -p som-cli
cargo build --release --quiet -p som --example loadgen --example seed --example amqp_queue
SOM=target/release/som
LG=target/release/examples/loadgen
work="$(mktemp -d)"
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# healthy PORT: GET /healthz answered 200, with bash's own /dev/tcp (starting curl takes
# longer than some servers take to start).
healthy() {
    local line
    { exec 3<> "/dev/tcp/127.0.0.1/$1"; } 2> /dev/null || return 1
    printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    read -r line <&3 || true
    exec 3<&-
    [[ "$line" == *" 200 "* ]]
}

# Extra environment of the servers started (the event stream's settings).
SERVER_ENV=()

# start_server URL -> sets PID, BASE, STARTUP_MS
start_server() {
    local p; p="$(port)"
    BASE="http://127.0.0.1:${p}"
    local t0; t0="$(date +%s%N)"
    env "${SERVER_ENV[@]}" SOM_DATABASE_URL="$1" SOM_AUTH_RATE_LIMIT=0 SOM_LOG=warn \
        "$SOM" serve --listen "127.0.0.1:${p}" > /dev/null 2>&1 &
    PID=$!
    until healthy "$p"; do sleep 0.001; done
    STARTUP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}

# load SCENARIO CONCURRENCY [loadgen flags…]; a page of orders is read as a user with 1,000.
load() {
    local extra=(); case "$1" in list | pages) extra=(--orders 1000) ;; esac
    "$LG" --url "$BASE" --scenario "$1" --concurrency "$2" --duration "$DURATION" "${extra[@]}" "${@:3}"
}

# outbox_drained SCENARIO: waits (up to 120 s) until the server's outbox has nothing pending and
# prints its counts: every notification the scenario caused was delivered.
outbox_drained() {
    local t0 m pending; t0="$(date +%s%N)"
    while :; do
        m="$(curl -fsS "${BASE}/metrics" | grep '^som_notifications{' || true)"
        pending="$(echo "$m" | awk '/status="pending"/ {print $2}')"
        if [ "${pending:-0}" = 0 ] || [ $(( ($(date +%s%N) - t0) / 1000000000 )) -ge 120 ]; then break; fi
        sleep 0.2
    done
    echo "outbox after $1: $(echo "$m" | sed -E 's/som_notifications\{status="([a-z]+)"\} /\1=/' | tr '\n' ' ')(waited $(( ($(date +%s%N) - t0) / 1000000 )) ms)"
}

# console_pages: the staff console's order list (50 of everyone's orders) and an order page,
# signed in as staff, beside /healthz and the API's page of 50 orders in the same run (c=16
# and 64).
console_pages() {
    printf 'correct horse battery\n' | SOM_DATABASE_URL="$1" SOM_LOG=warn "$SOM" users create "benchstaff$$" --staff --password-stdin -q 2> /dev/null || true
    echo "console pages beside /healthz:"
    for c in 16 64; do
        load healthz "$c"
        load list "$c"
        load console-list "$c" --staff "benchstaff$$" --orders 200
        load console-order "$c" --staff "benchstaff$$" --orders 10
    done
}

bench_backend() {
    local name="$1" url="$2"
    echo "### ${name}"
    # The first start migrates the empty database; the one measured is a restart on it.
    start_server "$url"
    local first="$STARTUP_MS"
    kill "$PID"; wait "$PID" 2>/dev/null || true
    start_server "$url"
    echo "start to first 200 on /healthz: ${STARTUP_MS} ms (the first start, which migrated the empty database: ${first} ms)"
    sleep 1
    echo "RSS idle: $(rss_kb "$PID") kB"
    rm -f "$work/peak"
    ( peak=0; while kill -0 "$PID" 2>/dev/null; do r=$(rss_kb "$PID"); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "$work/peak"; sleep 0.2; done ) &
    local all_loads=$!
    for c in 16 64; do
        for s in healthz latest detail list create flow; do
            load "$s" "$c"
            case "$s" in create | flow) outbox_drained "$s c=$c" ;; esac
        done
    done
    kill "$all_loads" 2>/dev/null || true
    echo "RSS peak through the healthz, read, create and flow loads: $(cat "$work/peak") kB"
    console_pages "$url"
    sleep 5
    echo "RSS idle 5 s after the loads: $(rss_kb "$PID") kB"
    sleep 10
    echo "RSS idle 15 s after the loads: $(rss_kb "$PID") kB"
    echo "reads alone, then under a steady write load of 1,000 orders/s (c=64):"
    for s in latest list; do
        load "$s" 64
        load "$s" 64 --write-rate 1000
    done
    outbox_drained "the write load"
    echo "latest p99 alone, then during a login storm (8 concurrent logins):"
    load latest 16
    "$LG" --url "$BASE" --scenario login --concurrency 8 --duration "$DURATION" > "$work/storm" &
    storm=$!
    sleep 0.5
    load latest 16
    wait "$storm"; cat "$work/storm"
    outbox_drained "the login storm"
    kill "$PID"; wait "$PID" 2>/dev/null || true
}

# login_storm URL: a fresh server's RSS before, at its peak during 64 concurrent logins, and 2, 5
# and 10 s after the storm ends (argon2id takes 19 MiB per hash in flight).
login_storm() {
    start_server "$1"
    sleep 1
    echo "login storm (c=64): RSS before $(rss_kb "$PID") kB"
    rm -f "$work/lpeak"
    ( peak=0; while kill -0 "$PID" 2>/dev/null; do r=$(rss_kb "$PID"); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "$work/lpeak"; sleep 0.1; done ) &
    local sampler=$!
    "$LG" --url "$BASE" --scenario login --concurrency 64 --duration "$DURATION"
    kill "$sampler" 2>/dev/null || true
    echo "login storm (c=64): RSS peak $(cat "$work/lpeak") kB"
    sleep 2; echo "login storm: RSS 2 s after $(rss_kb "$PID") kB"
    sleep 3; echo "login storm: RSS 5 s after $(rss_kb "$PID") kB"
    sleep 5; echo "login storm: RSS 10 s after $(rss_kb "$PID") kB"
    kill "$PID"; wait "$PID" 2>/dev/null || true
}

# nats_delete_stream NAME: deletes a JetStream stream over NATS's own protocol (no client needed).
nats_delete_stream() {
    { exec 4<> /dev/tcp/127.0.0.1/4222; } 2> /dev/null || return 0
    printf 'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.%s 0\r\n\r\nPING\r\n' "$1" >&4
    timeout 2 head -c 200 <&4 > /dev/null 2>&1 || true
    exec 4<&-
}

# stream_orders NAME URL: order creation (c=16 and 64) beside /healthz with the event stream off,
# to NATS JetStream and to RabbitMQ, each on a fresh database, with the outbox drained after.
stream_orders() {
    local name="$1" url="$2" mode
    echo "### ${name}: order creation with the event stream off and on"
    for mode in off nats amqp; do
        case "$mode" in
            off) SERVER_ENV=() ;;
            nats) nats_delete_stream SOM_BENCH
                  SERVER_ENV=(SOM_EVENT_STREAM=nats://127.0.0.1:4222 SOM_EVENT_STREAM_NAME=SOM_BENCH) ;;
            amqp) target/release/examples/amqp_queue "$AMQP" SOM_BENCH som-bench
                  SERVER_ENV=(SOM_EVENT_STREAM="$AMQP" SOM_EVENT_STREAM_NAME=SOM_BENCH) ;;
        esac
        "$3" "$url" "$mode"
        start_server "$STREAM_DB"
        echo "stream ${mode}:"
        load healthz 16
        for c in 16 64; do
            load create "$c"
            outbox_drained "create c=$c, stream ${mode}"
        done
        kill "$PID"; wait "$PID" 2>/dev/null || true
    done
    SERVER_ENV=()
    nats_delete_stream SOM_BENCH
    target/release/examples/amqp_queue "$AMQP" SOM_BENCH som-bench --delete
}
AMQP=amqp://guest:guest@127.0.0.1:5672/%2f

# fresh_sqlite URL MODE / fresh_postgres URL MODE: a fresh database for each mode (sets STREAM_DB).
fresh_sqlite() { STREAM_DB="sqlite://${work}/stream-$2.db"; }
fresh_postgres() {
    local db="som_stream_$$_$2"
    psql "$SOM_TEST_POSTGRES_URL" -qc "CREATE DATABASE ${db}" > /dev/null
    STREAM_DB="${SOM_TEST_POSTGRES_URL%/*}/${db}"
}

# pages_reads NAME URL: a 1,000-order user's whole list, five pages of 200 following the Link
# header (lists/s), beside /healthz and the single-order reads, c=16 and 64.
pages_reads() {
    echo "### $1: whole lists at limit=200 beside /healthz"
    start_server "$2"
    for c in 16 64; do
        load healthz "$c"
        load pages "$c"
        load latest "$c"
        load detail "$c"
    done
    echo "RSS after the page loads: $(rss_kb "$PID") kB"
    kill "$PID"; wait "$PID" 2>/dev/null || true
}

# export_orders NAME URL N: exports the N orders in URL's database as CSV and NDJSON through
# the API, with the server's RSS before and at its peak.
export_orders() {
    start_server "$2"
    printf 'correct horse battery\n' | SOM_DATABASE_URL="$2" SOM_LOG=warn "$SOM" users create "exporter$$" --staff --password-stdin -q 2> /dev/null || true
    local token
    token="$(curl -fsS -X POST "${BASE}/api/v1/token/" -H 'content-type: application/json' \
        -d "{\"username\":\"exporter$$\",\"password\":\"correct horse battery\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access"])')"
    echo "### $1: export of $3 orders; RSS before: $(rss_kb "$PID") kB"
    for format in csv ndjson; do
        rm -f "$work/epeak"
        ( peak=0; while kill -0 "$PID" 2>/dev/null; do r=$(rss_kb "$PID"); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "$work/epeak"; sleep 0.1; done ) &
        local sampler=$! t0; t0="$(date +%s%N)"
        curl -fsS -H "authorization: Bearer ${token}" "${BASE}/api/v1/orders/export/?format=${format}" -o "$work/export.${format}"
        local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
        kill "$sampler" 2>/dev/null || true
        local lines; lines="$(wc -l < "$work/export.${format}")"
        echo "export ${format}: ${lines} lines, $(du -m "$work/export.${format}" | cut -f1) MB in ${ms} ms = $(( lines * 1000 / (ms + 1) )) lines/s; server RSS peak $(cat "$work/epeak") kB"
        rm -f "$work/export.${format}"
    done
    kill "$PID"; wait "$PID" 2>/dev/null || true
}

# seed_postgres URL N: N orders (two items each) for 1,000 users, straight in SQL.
seed_postgres() {
    psql -q "$1" > /dev/null <<SQL
INSERT INTO users (username, email, password_hash, created_at)
    SELECT 'seed' || g, 'seed' || g || '@example.com', 'x', now() FROM generate_series(1, 1000) g;
INSERT INTO orders (user_id, status, currency, total_minor, created_at, updated_at,
        item_names, item_quantities, item_prices)
    SELECT (SELECT min(id) FROM users) + g % 1000, 'CREATED', 'USD', 25000,
        now() - (($2 - g) || ' ms')::interval, now() - (($2 - g) || ' ms')::interval,
        '{Widget,Gadget}', '{2,1}', '{10000,5000}'
    FROM generate_series(1, $2) g;
VACUUM ANALYZE;
SQL
}

# mixed_rss NAME URL N: the server's RSS idle over a database of N orders, then its peak through
# logins, single-order reads, whole lists, order creation and an export of every order, each
# load at c=16, sampled every 100 ms.
mixed_rss() {
    start_server "$2"
    sleep 2
    echo "### $1: RSS through a mixed run over $3 orders"
    echo "idle after start: $(rss_kb "$PID") kB ($(awk '/RssAnon/ {print $2}' "/proc/$PID/status") kB anonymous)"
    ( peak=0; while kill -0 "$PID" 2>/dev/null; do r=$(rss_kb "$PID"); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "$work/mpeak"; sleep 0.1; done ) &
    local sampler=$!
    for scenario in login latest detail pages create; do
        load "$scenario" 16 > "$work/mixed.out"
        echo "after ${scenario}: $(rss_kb "$PID") kB; $(cut -d' ' -f1,6 "$work/mixed.out" | head -1)"
    done
    printf 'correct horse battery\n' | SOM_DATABASE_URL="$2" SOM_LOG=warn "$SOM" users create "exporter$$" --staff --password-stdin -q 2> /dev/null || true
    local token
    token="$(curl -fsS -X POST "${BASE}/api/v1/token/" -H 'content-type: application/json' \
        -d "{\"username\":\"exporter$$\",\"password\":\"correct horse battery\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access"])')"
    # The login's password hash buffer goes back to the system about ten seconds after it is
    # freed (the allocator's decay); the export is measured after that.
    sleep 12
    echo "before the export: $(rss_kb "$PID") kB"
    curl -fsS -H "authorization: Bearer ${token}" "${BASE}/api/v1/orders/export/?format=ndjson" -o /dev/null
    echo "after the export: $(rss_kb "$PID") kB"
    kill "$sampler" 2>/dev/null || true
    echo "peak through the run: $(cat "$work/mpeak") kB"
    kill "$PID"; wait "$PID" 2>/dev/null || true
}

if [ -n "${PAGES_ONLY:-}" ]; then
    [ "${ONLY:-sqlite}" = sqlite ] && pages_reads "SQLite (file, WAL, synchronous=FULL)" "sqlite://${work}/pages.db"
    if [ -n "${SOM_TEST_POSTGRES_URL:-}" ] && [ "${ONLY:-postgres}" = postgres ]; then
        db="som_pages_$$"
        psql "$SOM_TEST_POSTGRES_URL" -qc "CREATE DATABASE ${db}" > /dev/null
        pages_reads "PostgreSQL 15 (local)" "${SOM_TEST_POSTGRES_URL%/*}/${db}"
        psql "$SOM_TEST_POSTGRES_URL" -qc "DROP DATABASE ${db} WITH (FORCE)" > /dev/null
    fi
    exit 0
fi

if [ -n "${EXPORT_ONLY:-}" ]; then
    n="${EXPORT_ORDERS:-1000000}"
    if [ "${ONLY:-sqlite}" = sqlite ]; then
        "$SOM" migrate --database-url "sqlite://${work}/export.db" > /dev/null
        target/release/examples/seed "sqlite://${work}/export.db" "$n"
        sync; sleep 2
        export_orders "SQLite (file, WAL, synchronous=FULL)" "sqlite://${work}/export.db" "$n"
        rm -f "${work}/export.db"*
    fi
    if [ -n "${SOM_TEST_POSTGRES_URL:-}" ] && [ "${ONLY:-postgres}" = postgres ]; then
        db="som_export_$$"
        psql "$SOM_TEST_POSTGRES_URL" -qc "CREATE DATABASE ${db}" > /dev/null
        url="${SOM_TEST_POSTGRES_URL%/*}/${db}"
        "$SOM" migrate --database-url "$url" > /dev/null
        seed_postgres "$url" "$n"
        export_orders "PostgreSQL 15 (local)" "$url" "$n"
        psql "$SOM_TEST_POSTGRES_URL" -qc "DROP DATABASE ${db} WITH (FORCE)" > /dev/null
    fi
    exit 0
fi

if [ -n "${RSS_ONLY:-}" ]; then
    n="${EXPORT_ORDERS:-1000000}"
    "$SOM" migrate --database-url "sqlite://${work}/rss.db" > /dev/null
    target/release/examples/seed "sqlite://${work}/rss.db" "$n"
    sync; sleep 2
    # The default (one password hash at a time), then two at once (each takes 19 MiB while it
    # runs).
    mixed_rss "SQLite (file, WAL, synchronous=FULL)" "sqlite://${work}/rss.db" "$n"
    SERVER_ENV=(SOM_PASSWORD_HASH_CONCURRENCY=2)
    mixed_rss "SQLite, SOM_PASSWORD_HASH_CONCURRENCY=2" "sqlite://${work}/rss.db" "$n"
    SERVER_ENV=()
    rm -f "${work}/rss.db"*
    exit 0
fi

if [ -n "${STREAM_ONLY:-}" ]; then
    [ "${ONLY:-sqlite}" = sqlite ] && stream_orders "SQLite (file, WAL, synchronous=FULL)" sqlite fresh_sqlite
    if [ -n "${SOM_TEST_POSTGRES_URL:-}" ] && [ "${ONLY:-postgres}" = postgres ]; then
        stream_orders "PostgreSQL 15 (local)" postgres fresh_postgres
        for mode in off nats amqp; do
            psql "$SOM_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS som_stream_$$_${mode} WITH (FORCE)" > /dev/null
        done
    fi
    exit 0
fi

if [ -n "${CONSOLE_ONLY:-}" ]; then
    if [ "${ONLY:-sqlite}" = sqlite ]; then
        echo "### SQLite (file, WAL, synchronous=FULL)"
        start_server "sqlite://${work}/console.db"
        console_pages "sqlite://${work}/console.db"
        kill "$PID"; wait "$PID" 2>/dev/null || true
    fi
    if [ -n "${SOM_TEST_POSTGRES_URL:-}" ] && [ "${ONLY:-postgres}" = postgres ]; then
        db="som_bench_$$"
        psql "$SOM_TEST_POSTGRES_URL" -qc "CREATE DATABASE ${db}" > /dev/null
        pg_url="${SOM_TEST_POSTGRES_URL%/*}/${db}"
        echo "### PostgreSQL 15 (local)"
        start_server "$pg_url"
        console_pages "$pg_url"
        kill "$PID"; wait "$PID" 2>/dev/null || true
        psql "$SOM_TEST_POSTGRES_URL" -qc "DROP DATABASE ${db} WITH (FORCE)" > /dev/null
    fi
    exit 0
fi

# cpu_snapshot: "pid ticks" of the server and of every PostgreSQL process on the machine (user +
# system time, threads included, in clock ticks).
cpu_snapshot() {
    local p
    for p in "$PID" $(pgrep -x postgres || true); do
        awk -v p="$p" '{ print p, $14 + $15 }' "/proc/$p/stat" 2> /dev/null || true
    done
}

# cpu_report BEFORE: the CPU seconds the server and PostgreSQL's processes (its backends and its
# background processes together) used since the snapshot BEFORE. A process that ended in between
# is not counted.
cpu_report() {
    local hz; hz="$(getconf CLK_TCK)"
    cpu_snapshot | awk -v som="$PID" -v hz="$hz" -v before="$1" '
        BEGIN { n = split(before, l, "\n"); for (i = 1; i <= n; i++) { split(l[i], f, " "); b[f[1]] = f[2] } }
        { d = $2 - b[$1]; if ($1 == som) s += d; else pg += d }
        END { printf "CPU: som %.2f s, PostgreSQL %.2f s\n", s / hz, pg / hz }'
}

# flows URL: /healthz, then create → initiate → confirm flows (c=64), then /healthz again.
flows() {
    start_server "$1"
    load healthz 64
    local before; before="$(cpu_snapshot)"
    TIMEFORMAT="CPU: load generator %U s user + %S s system"
    { time load flow 64; } 2>&1
    cpu_report "$before"
    outbox_drained "flow c=64"
    load healthz 64
    kill "$PID"; wait "$PID" 2>/dev/null || true
}

if [ -n "${FLOW_ONLY:-}" ]; then
    if [ "${ONLY:-sqlite}" = sqlite ]; then
        echo "### SQLite (file, WAL, synchronous=FULL)"
        flows "sqlite://${work}/flows.db"
    fi
    if [ -n "${SOM_TEST_POSTGRES_URL:-}" ] && [ "${ONLY:-postgres}" = postgres ]; then
        echo "### PostgreSQL 15 (local)"
        db="som_flows_$$"
        psql "$SOM_TEST_POSTGRES_URL" -qc "CREATE DATABASE ${db}" > /dev/null
        flows "${SOM_TEST_POSTGRES_URL%/*}/${db}"
        psql "$SOM_TEST_POSTGRES_URL" -qc "DROP DATABASE ${db} WITH (FORCE)" > /dev/null
    fi
    exit 0
fi

# as_postgres CMD…: runs a server tool as the postgres user when this script runs as root.
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# replica_reads: a private primary and its streaming replica on this machine; the reads at c=64
# beside /healthz against the primary alone, then with the replica configured.
replica_reads() {
    local bin cdir pp rp primary replica
    bin="$(pg_config --bindir)"
    cdir="$(mktemp -d /tmp/som-bench-cluster.XXXXXX)"
    chmod 755 "$cdir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$cdir"
    pp="$(port)"; rp="$(port)"
    as_postgres "$bin/initdb" -D "$cdir/primary" -A trust -U postgres --no-sync > /dev/null
    echo "host replication all 127.0.0.1/32 trust" >> "$cdir/primary/pg_hba.conf"
    as_postgres "$bin/pg_ctl" -D "$cdir/primary" -l "$cdir/primary.log" -w \
        -o "-p $pp -k $cdir -c listen_addresses=127.0.0.1" start > /dev/null
    as_postgres "$bin/pg_basebackup" -h 127.0.0.1 -p "$pp" -U postgres -D "$cdir/replica" -R -X stream
    as_postgres "$bin/pg_ctl" -D "$cdir/replica" -l "$cdir/replica.log" -w \
        -o "-p $rp -k $cdir -c listen_addresses=127.0.0.1" start > /dev/null
    primary="postgres://postgres@127.0.0.1:${pp}/postgres"
    replica="postgres://postgres@127.0.0.1:${rp}/postgres"
    for mode in alone replica; do
        if [ "$mode" = replica ]; then
            SERVER_ENV=(SOM_DATABASE_READ_URLS="$replica")
            echo "### the primary with its streaming replica (SOM_DATABASE_READ_URLS)"
        else
            echo "### the primary alone"
        fi
        start_server "$primary"
        sleep 1
        for s in healthz latest detail list pages; do load "$s" 64; done
        [ "$mode" = replica ] && echo "readyz: $(curl -fsS "${BASE}/readyz")"
        kill "$PID"; wait "$PID" 2>/dev/null || true
    done
    SERVER_ENV=()
    as_postgres "$bin/pg_ctl" -D "$cdir/replica" -m fast -w stop > /dev/null
    as_postgres "$bin/pg_ctl" -D "$cdir/primary" -m fast -w stop > /dev/null
    rm -rf "$cdir"
}

if [ -n "${REPLICA_ONLY:-}" ]; then
    replica_reads
    exit 0
fi

if [ -z "${SCALE_ONLY:-}" ]; then
if [ "${ONLY:-sqlite}" = sqlite ]; then
    echo "### SQLite"
    login_storm "sqlite://${work}/storm.db"
    bench_backend "SQLite (file, WAL, synchronous=FULL)" "sqlite://${work}/bench.db"
fi

if [ -n "${SOM_TEST_POSTGRES_URL:-}" ] && [ "${ONLY:-postgres}" = postgres ]; then
    db="som_bench_$$"
    psql "$SOM_TEST_POSTGRES_URL" -qc "CREATE DATABASE ${db}" > /dev/null
    pg_url="${SOM_TEST_POSTGRES_URL%/*}/${db}"
    bench_backend "PostgreSQL 15 (local)" "$pg_url"
    psql "$SOM_TEST_POSTGRES_URL" -qc "DROP DATABASE ${db} WITH (FORCE)" > /dev/null
fi
fi

[ -n "${SKIP_SCALE:-}" ] && exit 0
# scale_reads: /healthz, then the reads as `scale`, who owns 1,000 orders spread through the table.
scale_reads() {
    load healthz 64
    for s in latest detail list; do
        echo -n "orders=$1 "; "$LG" --url "$BASE" --scenario "$s" --concurrency 64 --duration "$DURATION" --user scale --orders 0
    done
}

echo "### Scale: the same reads with 10 k and 1 M orders in the table (SQLite)"
for n in 10000 1000000; do
    "$SOM" migrate --database-url "sqlite://${work}/scale-${n}.db" > /dev/null
    target/release/examples/seed "sqlite://${work}/scale-${n}.db" "$n"
    # The seed's writes are flushed before measuring, so that write-back does not share the CPU.
    sync; sleep 2
    start_server "sqlite://${work}/scale-${n}.db"
    scale_reads "$n"
    kill "$PID"; wait "$PID" 2>/dev/null || true
    rm -f "${work}/scale-${n}.db"*
done

if [ -n "${SOM_TEST_POSTGRES_URL:-}" ]; then
    echo "### Scale: the same reads with 10 k and 1 M orders in the table (PostgreSQL)"
    for n in 10000 1000000; do
        db="som_scale_$$_${n}"
        psql "$SOM_TEST_POSTGRES_URL" -qc "CREATE DATABASE ${db}" > /dev/null
        url="${SOM_TEST_POSTGRES_URL%/*}/${db}"
        "$SOM" migrate --database-url "$url" > /dev/null
        start_server "$url"
        curl -fsS -o /dev/null -H 'content-type: application/json' "${BASE}/api/v1/accounts/register/" \
            -d '{"username": "scale", "email": "scale@example.com", "password": "correct horse battery"}'
        t0="$(date +%s%N)"
        psql "$url" -q > /dev/null <<SQL
INSERT INTO users (username, password_hash, is_staff, created_at)
    SELECT 'seed' || g, 'x', false, now() FROM generate_series(1, 1000) g;
INSERT INTO orders (user_id, status, currency, total_minor, created_at, updated_at,
        item_names, item_quantities, item_prices)
    SELECT u.first + (g % 1000), 'CREATED', 'USD', 25000, now(), now(),
        '{Widget,Gadget}', '{2,1}', '{10000,5000}'
    FROM generate_series(1, ${n}) g, (SELECT min(id) AS first FROM users WHERE username LIKE 'seed%') u;
-- 1,000 of them, spread evenly through the table, are the reader's.
UPDATE orders SET user_id = (SELECT id FROM users WHERE username = 'scale') WHERE id % (${n} / 1000) = 0;
ANALYZE;
CHECKPOINT;
SQL
        sync; sleep 2
        echo "seeded ${n} orders in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
        scale_reads "$n"
        kill "$PID"; wait "$PID" 2>/dev/null || true
        psql "$SOM_TEST_POSTGRES_URL" -qc "DROP DATABASE ${db} WITH (FORCE)" > /dev/null
    done
fi
