#!/usr/bin/env bash
# The main job on the embedded default Postgres: installs what is missing, builds meterctl,
# starts (or reuses) .meter/pg, and runs the 30-day replay end to end (`meterctl replay`, in its own
# database meter_replay): a deterministic workload sent over HTTP, rolled up, synced to the mock
# billing engine, closed month by month, reconciled. It ends by printing where the reports are
# (.meter/replay/reconciliation-<period>.{md,csv,html}). Extra arguments go to `meterctl replay`
# (e.g. --days 10 --customers 20). `meterctl demo` is the shorter tour of the HTTP API.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== build (first build fetches and compiles dependencies: a few minutes)"
swift build --product meterctl 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]|^warning: .swift-distributed-tracing' || true
exec .build/debug/meterctl replay "$@"
