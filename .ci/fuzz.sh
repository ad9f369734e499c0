#!/usr/bin/env bash
# Contract fuzzing: runs schemathesis against a live `som serve` over a fresh database, with
# every check and phase, a fixed seed and a bounded number of examples. Fails on any failure and
# when no operation was tested.
#   .ci/fuzz.sh [path/to/som] [path/to/st]
set -euo pipefail
SOM="${1:-target/debug/som}"
ST="${2:-st}"
SEED="${SOM_FUZZ_SEED:-20261129}"
EXAMPLES="${SOM_FUZZ_EXAMPLES:-30}"

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:${port}"
# Webhook endpoints can be made (the webhook channel is on), but nothing is ever delivered: the
# server runs without a dispatcher, so no URL the fuzzer invents is called.
SOM_DATABASE_URL="sqlite://${work}/som.db" SOM_AUTH_RATE_LIMIT=0 SOM_LOG=warn SOM_NOTIFIER=log,webhook \
    "$SOM" serve --no-dispatcher --listen "127.0.0.1:${port}" > "${work}/serve.out" 2> "${work}/serve.err" &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for _ in $(seq 1 100); do
    curl -fsS "${base}/healthz" > /dev/null 2>&1 && break
    sleep 0.1
done

token_for() {
    curl -fsS -X POST "${base}/api/v1/accounts/register/" -H 'content-type: application/json' \
        -d "{\"username\":\"$1\",\"email\":\"$1@example.com\",\"password\":\"correct horse battery\"}" > /dev/null
    curl -fsS -X POST "${base}/api/v1/token/" -H 'content-type: application/json' \
        -d "{\"username\":\"$1\",\"password\":\"correct horse battery\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access"])'
}
token="$(token_for fuzzer)"
token_for bystander > /dev/null

# Every operation is fuzzed with one account's token, except "log out everywhere", which would
# end that token's session and leave the rest of the run nothing but 401s (tests/http.rs covers
# it).
"$ST" --config-file .ci/schemathesis.toml run "${base}/api/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --seed "$SEED" \
    --max-examples "$EXAMPLES" \
    --request-timeout 10 \
    --header "Authorization: Bearer ${token}" \
    --exclude-path /api/v1/token/revoke-all/ \
    --report junit --report-junit-path "${work}/junit.xml" \
    --no-color

# The staff operations and refunds again, as staff (the first run only sees their 403s). The
# staff account cannot disable itself or revoke its own rights, so its token lasts the run.
token_for operator > /dev/null
SOM_DATABASE_URL="sqlite://${work}/som.db" SOM_LOG=error "$SOM" users set-staff operator true > /dev/null
staff_token="$(curl -fsS -X POST "${base}/api/v1/token/" -H 'content-type: application/json' \
    -d '{"username":"operator","password":"correct horse battery"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access"])')"
"$ST" --config-file .ci/schemathesis.toml run "${base}/api/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing \
    --seed "$SEED" \
    --max-examples "$EXAMPLES" \
    --request-timeout 10 \
    --header "Authorization: Bearer ${staff_token}" \
    --include-path-regex '^/api/v1/(users|notifications|webhook-endpoints|events)/|/refunds/$|^/api/v1/orders/export/$' \
    --report junit --report-junit-path "${work}/junit-staff.xml" \
    --no-color

python3 - "${work}/junit.xml" "${work}/junit-staff.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
suites = []
for path in sys.argv[1:]:
    root = ET.parse(path).getroot()
    suites += [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = sum(int(s.get("tests", 0)) for s in suites)
failures = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
print(f"schemathesis: {tests} operations tested, {failures} failed")
if tests == 0:
    sys.exit("schemathesis tested no operation")
if failures:
    sys.exit(1)
PY
if grep -q "panicked" "${work}/serve.err"; then
    echo "the server panicked:"; grep -A5 panicked "${work}/serve.err"; exit 1
fi
