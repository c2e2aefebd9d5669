#!/usr/bin/env bash
# Installs what meter needs on a fresh Debian 12 machine, idempotently: it runs apt-get only when a
# package is missing (and then `apt-get update` first). Called by scripts/run.sh and scripts/test.sh.
set -euo pipefail

packages=(
  postgresql-15                          # server binaries: initdb, pg_ctl, postgres
  postgresql-client-15                   # psql
  libpq-dev                              # libpq headers + pkg-config file for Sources/CLibpq
  pkg-config
  curl                                   # the service smoke test in scripts/test.sh
  postgresql-15-pgtap                    # pgTAP, SQL unit tests
  libtap-parser-sourcehandler-pgtap-perl # pg_prove
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's postgresql-common may auto-create and start a "main" cluster on port 5432; meter never
# uses it (it runs its own cluster under .meter/), so it is left alone.
command -v swift >/dev/null || { echo "setup: swift is not on PATH (expected /opt/swift)" >&2; exit 1; }
