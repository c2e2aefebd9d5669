#!/usr/bin/env bash
# Migration 0021 (partitioned events, the key table) tested on a database that holds events:
#   1. a fresh database migrated with the sql/ of the commit just before 0021 (git archive of
#      BASE: the product as it was, functions included);
#   2. events, redeliveries, cancellations and a rollup made by that product's own functions,
#      and copies of them kept in schema conv (seed_before_0021.sql);
#   3. `meterctl migrate` with today's sql/ (0021 and every function and view);
#   4. conversion.test.sql (pgTAP): everything kept, verdicts, the rollup going on.
# Usage: Tests/migration/conversion_test.sh <conninfo of a cluster where databases can be created>
# Needs the repository's git history (a clone; CI clones main).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
base=7d467f7   # the last commit before migration 0021
conninfo=$1
db=meter_conversion_$$
old=$(mktemp -d)
trap 'rm -rf "$old"; psql -X -q "$conninfo" -c "drop database if exists $db" >/dev/null 2>&1 || true' EXIT
git -C "$root" archive "$base" sql | tar -x -C "$old"
test -f "$old/sql/migrations/0020_line_figures.sql" && ! test -f "$old/sql/migrations/0021_events_partitioned.sql"
psql -X -q "$conninfo" -c "drop database if exists $db" -c "create database $db"
dbci="${conninfo/dbname=meter/dbname=$db}"
echo "# migrate with the sql/ of $base (before 0021)"
DATABASE_URL="$dbci" .build/debug/meterctl migrate --sql-dir "$old/sql" --log-level warning >/dev/null
echo "# seed it with that product's functions"
psql -X -q -A -t "$dbci" -f Tests/migration/seed_before_0021.sql >/dev/null
echo "# migrate with today's sql/"
DATABASE_URL="$dbci" .build/debug/meterctl migrate --log-level warning >/dev/null
psql -X -q "$dbci" -c "create extension if not exists pgtap schema public"
pg_prove --failures --dbname "$db" --host "$(sed -n 's/.*host=\([^ ]*\).*/\1/p' <<<"$conninfo")" \
  --port "$(sed -n 's/.*port=\([0-9]*\).*/\1/p' <<<"$conninfo")" --username meter Tests/migration/conversion.test.sql
