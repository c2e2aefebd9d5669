#!/usr/bin/env bash
# The main job on the embedded default Postgres: installs what is missing, builds meterctl,
# starts (or reuses) .meter/pg, migrates it, starts the service and ingests a sample over HTTP,
# then prints what was stored. Extra arguments go to `meterctl demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== build (first build fetches and compiles dependencies: a few minutes)"
swift build --product meterctl 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]|^warning: .swift-distributed-tracing' || true
exec .build/debug/meterctl demo "$@"
