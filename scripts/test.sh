#!/usr/bin/env bash
# Runs every test of meter against a real, throwaway Postgres:
#   1. installs what is missing (scripts/setup.sh), builds meterctl and the Swift tests;
#   2. starts a private test cluster (.meter/test-pg, socket only, port 54339) with the same
#      mechanism as the embedded default (`meterctl db start`), creates a fresh database;
#   3. migrates it and runs the SQL tests (Tests/sql/*.sql, pgTAP via pg_prove);
#   4. runs the Swift tests (XCTest): libpq wrapper, migrator, HTTP API end to end.
# The cluster is left running for reuse (and stopped by `meterctl db stop --data-dir .meter/test-pg`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

./scripts/setup.sh

echo "== build"
swift build --build-tests 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]|^warning: .swift-distributed-tracing' || true
test -x .build/debug/meterctl || { echo "build failed"; exit 1; }

export METER_TEST_DATA_DIR="$root/.meter/test-pg"
export METER_TEST_PG_PORT=54339
meterctl=(.build/debug/meterctl --data-dir "$METER_TEST_DATA_DIR" --pg-port "$METER_TEST_PG_PORT" --log-level warning)

echo "== test Postgres"
"${meterctl[@]}" db start >/dev/null
conninfo=$("${meterctl[@]}" db status | sed -n 's/^open with: *psql "\(.*\)"$/\1/p')
db="meter_tap_$$"
psql -X -q "$conninfo" -c "drop database if exists $db" -c "create database $db"
tap_conninfo="${conninfo/dbname=meter/dbname=$db}"
DATABASE_URL="$tap_conninfo" .build/debug/meterctl migrate --log-level warning >/dev/null
psql -X -q "$tap_conninfo" -c "create extension if not exists pgtap"

echo "== SQL tests (pgTAP)"
pg_prove --failures --dbname "$db" --host "$(sed -n 's/.*host=\([^ ]*\).*/\1/p' <<<"$conninfo")" \
  --port "$METER_TEST_PG_PORT" --username meter Tests/sql/*.sql
psql -X -q "$conninfo" -c "drop database if exists $db"

echo "== Swift tests (XCTest)"
swift test --skip-build 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' | tee .meter/swift-test.log
grep -qE "Executed [0-9]+ tests?, with 0 failures" .meter/swift-test.log
