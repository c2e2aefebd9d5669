#!/usr/bin/env bash
# Runs every test of meter against a real, throwaway Postgres:
#   1. installs what is missing (scripts/setup.sh), builds meterctl and the Swift tests;
#   2. starts a private test cluster (.meter/test-pg, socket only, port 54339) with the same
#      mechanism as the embedded default (`meterctl db start`), creates a fresh database;
#   3. migrates it and runs the SQL tests (Tests/sql/*.sql, pgTAP via pg_prove), the test of
#      migration 0021 on a database holding events (Tests/migration/) and the archive test
#      (Tests/archive/), then
#      Tests/cli/cli_test.sh: CLI smoke tests, the official Stripe Python SDK against the mock
#      billing engine, and a serve smoke test;
#      then the hostile-input suite (Tests/hostile/: the classic cases, schemathesis against the
#      served OpenAPI document);
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
# The SQL tests' events carry fixed dates from 2024 to 2027: their monthly partitions (migrate
# created only 35 days back to three months ahead, as in production).
psql -X -q -A -t "$tap_conninfo" -c "select count(*) from meter.events_partitions_ensure('2024-01-01', '2027-12-01')" >/dev/null

echo "== SQL tests (pgTAP)"
pg_prove --failures --dbname "$db" --host "$(sed -n 's/.*host=\([^ ]*\).*/\1/p' <<<"$conninfo")" \
  --port "$METER_TEST_PG_PORT" --username meter Tests/sql/*.sql | tee .meter/pg_prove.log
sql_tests=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' .meter/pg_prove.log)

echo "== migration 0021 on a database holding events, made by the product before it (Tests/migration/conversion_test.sh)"
Tests/migration/conversion_test.sh "$conninfo" 2>&1 | grep -v '^NOTICE:' | tee .meter/conversion.log
sql_tests=$((sql_tests + $(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' .meter/conversion.log)))

echo "== archiving a closed month of events: refusals, export, verification, what works after (Tests/archive/archive_test.sh)"
Tests/archive/archive_test.sh "$conninfo" 2>&1 | grep -v '^NOTICE:' | tee .meter/archive.log
archive_tests=$(grep -c '^ok ' .meter/archive.log)

echo "== CLI and service as processes, the Stripe SDK against the mock (Tests/cli/cli_test.sh)"
Tests/cli/cli_test.sh "$tap_conninfo"
sdk_tests=$(( $(grep -c '^ok ' .meter/stripe-sdk.log) + $(grep -c '^ok ' .meter/stripe-meters.log) ))
webhook_tests=$(grep -c '^ok ' .meter/webhooks-out.log)

echo "== hostile input: the classic cases and schemathesis against the served OpenAPI document (Tests/hostile/hostile_test.sh)"
set +e
timeout -k 30 900 Tests/hostile/hostile_test.sh "$tap_conninfo" 2>&1 | tee .meter/hostile.log
hostile_status=${PIPESTATUS[0]}
set -e
hostile_passed=$(grep -c '^ok ' .meter/hostile.log || true)
hostile_failed=$(grep -c '^not ok ' .meter/hostile.log || true)
if [[ $hostile_status != 0 && $hostile_failed == 0 ]]; then hostile_failed=1; fi
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

echo "== chaos verdict self-test: with one rollup hour (and its period total) and one engine hour altered, the verdict must FAIL"
if timeout -k 30 600 .build/debug/meterctl chaos ingest-restart --quick --events 3000 --kills 3 --sabotage >.meter/chaos-sabotage.log 2>&1; then
  echo "a sabotaged chaos run passed"; chaos_failed=$((chaos_failed + 1))
elif grep -q '^\s*\[FAIL\] rollups' .meter/chaos-sabotage.log && grep -q '^\s*\[FAIL\] engine: every hour billed exactly its rollup (2 differing' .meter/chaos-sabotage.log \
     && grep -q '^\s*\[FAIL\] meter.rollup_verify' .meter/chaos-sabotage.log && grep -q '^\s*\[FAIL\] reconciliation' .meter/chaos-sabotage.log; then
  echo "the sabotaged run FAILed on rollups, rollup_verify, engine and reconciliation, as it must"; chaos_passed=$((chaos_passed + 1))
else
  echo "the sabotaged run failed for another reason:"; tail -20 .meter/chaos-sabotage.log; chaos_failed=$((chaos_failed + 1))
fi

echo
echo "pgTAP: $sql_tests passed; archive: $archive_tests passed; Stripe SDK: $sdk_tests passed; Standard Webhooks: $webhook_tests passed; hostile input: $hostile_passed passed, $hostile_failed failed; XCTest: $((swift_tests - swift_failed)) passed, $swift_failed failed; runbook: $runbook_passed passed, $runbook_failed failed; chaos: $chaos_passed passed, $chaos_failed failed"
echo "tests: $((sql_tests + archive_tests + sdk_tests + webhook_tests + hostile_passed + swift_tests - swift_failed + runbook_passed + chaos_passed)) passed, $((hostile_failed + swift_failed + runbook_failed + chaos_failed)) failed"
[[ "$hostile_failed" == 0 && "$swift_failed" == 0 && "$runbook_failed" == 0 && "$chaos_failed" == 0 ]]
