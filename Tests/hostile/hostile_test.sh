#!/usr/bin/env bash
# The hostile-input suite, against `meterctl serve` on a migrated scratch database (run by
# scripts/test.sh, on the pgTAP database):
#   1. Tests/hostile/hostile_input.py: the classic cases (50 MB body, 100,000 nested brackets,
#      lone surrogates, NUL, duplicate keys, 10,000-character keys, years 0001 and 9999, missing
#      Content-Type, gzip body, ...): each a 4xx with its stable code, the service up after each,
#      a valid event beside hostile ones stored;
#   2. schemathesis (PyPI, pinned in scripts/setup.sh) against the served /openapi.yaml: no 5xx,
#      every status, content type, header and body as the document says, 405 for methods a path
#      does not take. (Not its positive/negative data checks: the document cannot express hour
#      alignment or existing customers, and a batch answers per element with 207 by design.)
#   3. the service still drains and exits 0 on SIGTERM.
# TAP lines for 1 and one line per schemathesis phase verdict; the counts go to
# .meter/hostile.log for scripts/test.sh. Usage: Tests/hostile/hostile_test.sh CONNINFO
set -euo pipefail
cd "$(dirname "$0")/../.."
conninfo=${1:?usage: Tests/hostile/hostile_test.sh CONNINFO}
py=.meter/venv/bin/python
port=18093
token="mk_HostileSuite$(date +%s)0123456789abcdefghij"
psql -X -q -v ON_ERROR_STOP=1 "$conninfo" >/dev/null <<SQL
select meter.customer_upsert('hostile-acme'), meter.meter_upsert('hostile.calls', 'count');
select meter.api_key_create('hostile', left('$token', 12), sha256(convert_to('$token', 'UTF8')));
SQL
# The port must be ours: another run on this machine (a second checkout's tests) once held it,
# and every request of this suite went to that server, with its own database and keys.
Tests/support/ports_free.sh "$port" || exit 1
DATABASE_URL="$conninfo" .build/debug/meterctl serve --port "$port" --log-level warning 2>.meter/hostile-serve.log &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null || { echo "not ok - meterctl serve did not start:"; tail -5 .meter/hostile-serve.log; exit 1; }

status=0
"$py" Tests/hostile/hostile_input.py "http://127.0.0.1:$port" "$token" hostile-acme hostile.calls || status=1

echo "== schemathesis against /openapi.yaml"
if (cd .meter && ../.meter/venv/bin/schemathesis run "http://127.0.0.1:$port/openapi.yaml" \
      -H "Authorization: Bearer $token" --max-examples 100 --seed 20261203 -w 1 --no-color \
      --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,missing_required_header,allow_header_conformance,unsupported_method \
      >hostile-schemathesis.log 2>&1); then
  echo "ok - schemathesis: $(grep -E '^ *[0-9]+ generated' .meter/hostile-schemathesis.log | xargs)"
else
  echo "not ok - schemathesis found failures:"; sed -n '/FAILURES/,$p' .meter/hostile-schemathesis.log | head -60; status=1
fi

kill -TERM "$pid"
if wait "$pid"; then echo "ok - the service survived all of it and exited 0 on SIGTERM"; else echo "not ok - serve exited non-zero"; status=1; fi
trap - EXIT
grep -q '"level":"critical"\|Fatal error' .meter/hostile-serve.log && { echo "not ok - the service logged a crash"; status=1; }
exit $status
