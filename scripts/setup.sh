#!/usr/bin/env bash
# Installs what meter needs on a fresh Debian 12 machine, idempotently: it runs apt-get only when a
# package is missing (and then `apt-get update` first). Called by scripts/run.sh and scripts/test.sh.
# Also keeps a Python venv at .meter/venv with the official Stripe SDK (stripe==11.6.0), which
# Tests/python/stripe_sdk_fidelity.py uses to drive `meterctl billing-mock`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  postgresql-15                          # server binaries: initdb, pg_ctl, postgres
  postgresql-client-15                   # psql
  libpq-dev                              # libpq headers + pkg-config file for Sources/CLibpq
  pkg-config
  curl                                   # the service smoke test in scripts/test.sh
  postgresql-15-pgtap                    # pgTAP, SQL unit tests
  libtap-parser-sourcehandler-pgtap-perl # pg_prove
  jq                                     # docs/runbook.md's commands (and Tests/runbook/runbook_test.sh)
  python3-yaml                           # Tests/runbook/runbook_test.sh checks deploy/alerts.yml
)

# apt_ensure PKG...: installs those of the packages that are not installed yet (nothing to do, no
# apt-get at all, when every one is).
apt_ensure() {
  local missing=() p sudo=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "setup: installing ${missing[*]}" >&2
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

apt_ensure "${packages[@]}"

# Debian's postgresql-common may auto-create and start a "main" cluster on port 5432; meter never
# uses it (it runs its own cluster under .meter/), so it is left alone.

# Python venv with the Stripe SDK pinned to 11.6.0: the last line (API version 2025-02-24.acacia)
# that still has usage records, which the mock implements. Skipped quickly when already in place.
venv="$root/.meter/venv"
stripe_version=11.6.0
if ! "$venv/bin/python" -c "import stripe; assert stripe.VERSION == '$stripe_version'" 2>/dev/null; then
  # (Re)create the venv unless it exists with a working pip (then only the package is missing or
  # has the wrong version).
  if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv"
    mkdir -p "$root/.meter"
    echo "setup: creating $venv" >&2
    # On Debian/Ubuntu, `python3 -m venv` fails (ensurepip is not available) until python3-venv is
    # installed; it leaves a half-made directory behind, hence the rm before the second attempt.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      rm -rf "$venv"
      apt_ensure python3-venv
      python3 -m venv "$venv"
    fi
  fi
  echo "setup: installing stripe==$stripe_version into $venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "stripe==$stripe_version"
  "$venv/bin/python" -c "import stripe; assert stripe.VERSION == '$stripe_version'"
fi

# A second venv with the newest Stripe SDK (16.1.0, API version 2026-10-28.endive): Billing
# Meters and the v2 meter event stream (Tests/python/stripe_meters_fidelity.py).
venv16="$root/.meter/venv-stripe16"
stripe16_version=16.1.0
if ! "$venv16/bin/python" -c "import stripe; assert stripe.VERSION == '$stripe16_version'" 2>/dev/null; then
  if ! "$venv16/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv16"
    echo "setup: creating $venv16" >&2
    python3 -m venv "$venv16"
  fi
  echo "setup: installing stripe==$stripe16_version into $venv16" >&2
  "$venv16/bin/python" -m pip install -q --disable-pip-version-check "stripe==$stripe16_version"
  "$venv16/bin/python" -c "import stripe; assert stripe.VERSION == '$stripe16_version'"
fi

# standardwebhooks (the official Standard Webhooks library) verifies meter's outgoing webhooks
# (Tests/python/webhooks_out_check.py), pinned.
standardwebhooks_version=1.1.0
if ! "$venv/bin/python" -c "import standardwebhooks, importlib.metadata as m; assert m.version('standardwebhooks') == '$standardwebhooks_version'" 2>/dev/null; then
  echo "setup: installing standardwebhooks==$standardwebhooks_version into $venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "standardwebhooks==$standardwebhooks_version"
fi

# schemathesis for the hostile-input suite (Tests/hostile/), pinned.
schemathesis_version=4.32.5
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $schemathesis_version\$"; then
  echo "setup: installing schemathesis==$schemathesis_version into $venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

command -v swift >/dev/null || { echo "setup: swift is not on PATH (expected /opt/swift)" >&2; exit 1; }
