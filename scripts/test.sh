#!/usr/bin/env bash
# Runs every test of meter against a real, throwaway Postgres:
#   1. installs what is missing (scripts/setup.sh), builds meterctl and the Swift tests;
#   2. starts a private test cluster (.meter/test-pg, socket only, port 54339) with the same
#      mechanism as the embedded default (`meterctl db start`), creates a fresh database;
#   3. migrates it and runs the SQL tests (Tests/sql/*.sql, pgTAP via pg_prove), CLI smoke tests,
#      the official Stripe Python SDK against the mock billing engine, and a serve smoke test;
#   4. runs the Swift tests (XCTest): libpq wrapper, migrator, HTTP API end to end;
#   5. runs every command of docs/runbook.md against a scratch instance (Tests/runbook/);
#   6. runs the five chaos scenarios (chaos/all --quick, their own cluster .meter/chaos/pg) and a
#      self-test of their verdict (a sabotaged run must FAIL).
# The cluster is left running for reuse (and stopped by `meterctl db stop --data-dir .meter/test-pg`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

./scripts/setup.sh

echo "== build"
swift build --build-tests 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]|^warning: .swift-distributed-tracing' || true
test -x .build/debug/meterctl || { echo "build failed"; exit 1; }

echo "== module boundaries"
./scripts/check-modules.sh

export METER_TEST_DATA_DIR="$root/.meter/test-pg"
export METER_TEST_PG_PORT=54339
test_pg=(--data-dir "$METER_TEST_DATA_DIR" --pg-port "$METER_TEST_PG_PORT" --log-level warning)

echo "== test Postgres"
.build/debug/meterctl db start "${test_pg[@]}" >/dev/null
conninfo=$(.build/debug/meterctl db status "${test_pg[@]}" | sed -n 's/^open with: *psql "\(.*\)"$/\1/p')
db="meter_tap_$$"
psql -X -q "$conninfo" -c "drop database if exists $db" -c "create database $db"
tap_conninfo="${conninfo/dbname=meter/dbname=$db}"
DATABASE_URL="$tap_conninfo" .build/debug/meterctl migrate --log-level warning >/dev/null
psql -X -q "$tap_conninfo" -c "create extension if not exists pgtap schema public"

echo "== SQL tests (pgTAP)"
pg_prove --failures --dbname "$db" --host "$(sed -n 's/.*host=\([^ ]*\).*/\1/p' <<<"$conninfo")" \
  --port "$METER_TEST_PG_PORT" --username meter Tests/sql/*.sql | tee .meter/pg_prove.log
sql_tests=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' .meter/pg_prove.log)

echo "== CLI smoke test: migrate --status, customers, meters and versions, keys, rollup"
m() { DATABASE_URL="$tap_conninfo" .build/debug/meterctl "$@" --log-level warning; }
m migrate --status | tail -1 | grep -q "0 pending, 0 changed/missing"
m customers add cli-smoke --name "CLI smoke" --timezone Europe/Paris | grep -q "customer cli-smoke"
m customers list | grep -q "cli-smoke .*Europe/Paris"
m meters add cli.smoke --aggregation sum | grep -q "meter cli.smoke"
m meters add cli.smoke --aggregation max | grep -q "version 2, max, from "
m meters list | grep -Eq "cli.smoke +2 +max"
if m meters add cli.smoke --aggregation count --effective-from 2020-01-01T00:00:00Z 2>/dev/null; then
  echo "a meter version starting in the past must be refused"; exit 1
fi
key_id=$(m keys create --name cli-smoke | sed -n 's/^API key \([0-9]*\) .*/\1/p')
m keys list | grep -q "cli-smoke"
m keys revoke "$key_id" | grep -q "revoked 1 key"
if m keys revoke "$key_id" 2>/dev/null; then echo "revoking twice must fail"; exit 1; fi
m rollup run | tail -1 | grep -q "^rollup: "
m rollup status | grep -q "^watermark:"
m rollup verify | grep -q "agrees with raw events"
m billing webhook-secret add whsec_cli_smoke_secret | grep -q "secret added"
m billing webhook-secret list | grep -q "whsec_cli_.*active"
secret_id=$(m billing webhook-secret list | awk '/whsec_cli_/ {print $1}')
m billing webhook-secret retire "$secret_id" | grep -q "retired"
m billing price --meter cli.smoke --price-id price_cli_smoke | grep -q "billed with price_cli_smoke"
m sync status | grep -q "^pending 0, in flight 0, dead 0"
m sync retry --meter cli.smoke | grep -q "0 dead hour(s) back to pending"
if m sync retry --meter no.such.meter 2>/dev/null; then echo "sync retry of an unknown meter must fail"; exit 1; fi
echo "CLI smoke test passed"

echo "== mock billing engine: the official Stripe Python SDK (stripe==11.6.0) against it"
mock_port=18090
DATABASE_URL="$tap_conninfo" .build/debug/meterctl billing-mock --port "$mock_port" --log-level warning 2>.meter/billing-mock.log &
mock_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$mock_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
set +e
.meter/venv/bin/python Tests/python/stripe_sdk_fidelity.py --api-base "http://127.0.0.1:$mock_port" | tee .meter/stripe-sdk.log
sdk_status=${PIPESTATUS[0]}
set -e
[[ $sdk_status == 0 ]] || { echo "Stripe SDK fidelity test failed"; kill "$mock_pid"; exit 1; }
sdk_tests=$(grep -c '^ok ' .meter/stripe-sdk.log)

echo "== CLI smoke test: billing price, link, sync run and status against the mock"
b=(--billing-api-base "http://127.0.0.1:$mock_port" --billing-api-key sk_test_smoke)
m meters add cli.billed --aggregation sum | grep -q "meter cli.billed"
m billing price --meter cli.billed --unit-amount-decimal 0.5 "${b[@]}" | grep -q "meter cli.billed billed with price_"
now_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
psql -X -q -t "$tap_conninfo" -c "select status from meter.ingest_events('[{\"customer\":\"cli-smoke\",\"meter\":\"cli.billed\",\"idempotency_key\":\"b1\",\"occurred_at\":\"$now_utc\",\"value\":\"2.5\"}]')" | grep -q accepted
m rollup run | tail -1 | grep -q "^rollup: "
m sync status | grep -Eq "^cli-smoke +cli.billed +no +1 "
m billing link "${b[@]}" | grep -q "^link: 1 pair(s) linked"
m sync run "${b[@]}" | tail -1 | grep -q "^sync: 1 hour(s) sent, 0 failed"
m sync status | grep -Eq "^cli-smoke +cli.billed +yes +0 +0 +1 +0 "
hook=http://127.0.0.1:1/webhooks/billing
m billing endpoint --url "$hook" "${b[@]}" | grep -q "secret stored (active)"
active=$(m billing webhook-secret list | grep -c " active")
m billing endpoint --url "$hook" "${b[@]}" | grep -q "secret stored (active)"   # a retry: the same endpoint
[[ $(m billing webhook-secret list | grep -c " active") == "$active" ]] || { echo "billing endpoint registered twice"; exit 1; }
m billing endpoint --rotation r1 --url "$hook" "${b[@]}" | grep -q "secret stored (active)"   # a rotation: a second one
m billing endpoint --rotation r1 --url "$hook" "${b[@]}" | grep -q "secret stored (active)"   # retried: still the second
[[ $(m billing webhook-secret list | grep -c " active") == $((active + 1)) ]] || { echo "billing endpoint --rotation added no secret, or two"; exit 1; }
echo "billing CLI smoke test passed"

echo "== CLI smoke test: plans, subscriptions, close refusals, reconcile"
m plans add cli-plan --currency EUR --name "CLI plan" | grep -q "plan cli-plan (id [0-9]*, eur)"
m plans price cli-plan --meter cli.billed --model package --unit-amount 250 --package-size 10 | grep -q "priced package"
m plans price cli-plan --meter cli.smoke --model graduated --tiers '[{"up_to":100,"unit_amount":2},{"up_to":null,"unit_amount":1}]' | grep -q "priced graduated"
if m plans price cli-plan --meter cli.smoke --model graduated --tiers '[{"up_to":100,"unit_amount":2}]' 2>/dev/null; then
  echo "tiers without a final up_to null must be refused"; exit 1
fi
m plans list | grep -Eq "^cli-plan +eur +cli.billed +package +250 +10"
m plans mirror "${b[@]}" | grep -q "^mirrored 2 plan price(s)"
m plans mirror "${b[@]}" | grep -q "^mirrored 0 plan price(s)"
this_month=$(date -u +%Y-%m)
m customers subscribe cli-smoke --plan cli-plan --from "$this_month" | grep -q "on plan cli-plan"
if m close --period "$this_month" 2>.meter/close-refusal.log; then echo "closing the current month must be refused"; exit 1; fi
grep -q "it can be closed from" .meter/close-refusal.log
if m reconcile --period "$this_month" 2>/dev/null; then echo "reconcile of an unclosed period must fail"; exit 1; fi
echo "month-close CLI smoke test passed"

echo "== service smoke test: serve (with the billing sync), readiness, SIGTERM drains and exits 0"
port=18089
DATABASE_URL="$tap_conninfo" .build/debug/meterctl serve --port "$port" --log-level info \
  --billing-api-base "http://127.0.0.1:$mock_port" --billing-api-key sk_test_smoke 2>.meter/serve-smoke.log &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz"; echo
kill -TERM "$pid"
wait "$pid" && echo "serve exited 0 after SIGTERM"
kill -TERM "$mock_pid"
wait "$mock_pid" && echo "billing-mock exited 0 after SIGTERM"
for line in serve.stopped rollup.worker.started rollup.worker.stopped sync.worker.started sync.worker.stopped; do
  grep -q "\"msg\":\"$line\"" .meter/serve-smoke.log || { echo "no $line log line"; cat .meter/serve-smoke.log; exit 1; }
done
psql -X -q "$conninfo" -c "drop database if exists $db"

echo "== Swift tests (XCTest)"
set +e
swift test --skip-build --disable-swift-testing 2>&1 | grep -vE "^\[[0-9]+/[0-9]+\]|^Test Case '.*' started" | tee .meter/swift-test.log
set -e
summary=$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" .meter/swift-test.log | tail -1)
swift_tests=$(sed -n 's/.*Executed \([0-9]*\) tests\{0,1\}, with \([0-9]*\) failures\{0,1\}.*/\1/p' <<<"$summary")
swift_failed=$(sed -n 's/.*Executed \([0-9]*\) tests\{0,1\}, with \([0-9]*\) failures\{0,1\}.*/\2/p' <<<"$summary")
[[ -n "$swift_tests" ]] || { echo "XCTest printed no summary"; exit 1; }

echo "== runbook: every command of docs/runbook.md against a scratch instance (Tests/runbook/runbook_test.sh)"
set +e
timeout -k 30 900 Tests/runbook/runbook_test.sh 2>&1 | tee .meter/runbook-test.log
runbook_status=${PIPESTATUS[0]}
set -e
runbook_passed=0; runbook_failed=0
if [[ $runbook_status == 0 ]]; then runbook_passed=$(grep -c '^ok ' .meter/runbook-test.log || true); else runbook_failed=1; fi

echo "== chaos scenarios (chaos/all --quick; the full settings are in chaos/README.md)"
set +e
# (timeout: a hung scenario fails the run instead of stalling CI; it signals the whole group,
# the scenario's service and mock included)
METER_SKIP_BUILD=1 timeout -k 30 1800 chaos/all --quick 2>&1 | tee .meter/chaos.log
set -e
chaos_passed=$(grep -c '^chaos [a-z-]* (seed [0-9]*): PASS$' .meter/chaos.log || true)
chaos_failed=$((5 - chaos_passed))

echo "== chaos verdict self-test: with one rollup hour and one engine hour altered, the verdict must FAIL"
if timeout -k 30 600 .build/debug/meterctl chaos ingest-restart --quick --events 3000 --kills 3 --sabotage >.meter/chaos-sabotage.log 2>&1; then
  echo "a sabotaged chaos run passed"; chaos_failed=$((chaos_failed + 1))
elif grep -q '^\s*\[FAIL\] rollups' .meter/chaos-sabotage.log && grep -q '^\s*\[FAIL\] engine: every hour billed exactly its rollup (2 differing' .meter/chaos-sabotage.log \
     && grep -q '^\s*\[FAIL\] meter.rollup_verify' .meter/chaos-sabotage.log && grep -q '^\s*\[FAIL\] reconciliation' .meter/chaos-sabotage.log; then
  echo "the sabotaged run FAILed on rollups, rollup_verify, engine and reconciliation, as it must"; chaos_passed=$((chaos_passed + 1))
else
  echo "the sabotaged run failed for another reason:"; tail -20 .meter/chaos-sabotage.log; chaos_failed=$((chaos_failed + 1))
fi

echo
echo "pgTAP: $sql_tests passed; Stripe SDK: $sdk_tests passed; XCTest: $((swift_tests - swift_failed)) passed, $swift_failed failed; runbook: $runbook_passed passed, $runbook_failed failed; chaos: $chaos_passed passed, $chaos_failed failed"
echo "tests: $((sql_tests + sdk_tests + swift_tests - swift_failed + runbook_passed + chaos_passed)) passed, $((swift_failed + runbook_failed + chaos_failed)) failed"
[[ "$swift_failed" == 0 && "$runbook_failed" == 0 && "$chaos_failed" == 0 ]]
