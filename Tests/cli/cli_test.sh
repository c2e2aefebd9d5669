#!/usr/bin/env bash
# The operator CLI and the service as processes, against a migrated scratch database (run by
# scripts/test.sh after the pgTAP files, on the same database):
#   - CLI smoke tests: migrate --status, customers, meters and versions, keys, rollup, prune, billing
#     secrets and prices, sync status and retry;
#   - the mock billing engine as a process, and the official Stripe Python SDK against it:
#     stripe==11.6.0 on the legacy usage records (Tests/python/stripe_sdk_fidelity.py, ok lines in
#     .meter/stripe-sdk.log) and stripe==16.1.0 on Billing Meters and the v2 meter event stream
#     (Tests/python/stripe_meters_fidelity.py, .meter/stripe-meters.log);
#   - billing CLI against the mock: price, link, sync run and status, endpoint registration;
#   - plans, subscriptions, close refusals, reconcile of an unclosed period;
#   - outgoing webhooks verified by the official standardwebhooks library (Tests/python/
#     webhooks_out_check.py, .meter/webhooks-out.log): retry after a 500, dead letter, re-drive, rotation;
#   - serve with the billing sync: readiness, SIGTERM drains and exits 0, its lifecycle log lines.
# Usage: Tests/cli/cli_test.sh CONNINFO   (a libpq conninfo of the migrated database)
# Exits non-zero at the first failed assertion, naming it.
set -euo pipefail
cd "$(dirname "$0")/../.."
tap_conninfo=${1:?usage: Tests/cli/cli_test.sh CONNINFO}
mkdir -p .meter

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
m meters add cli.tokens --aggregation sum --dimension model --dimension region | grep -q "version 1, sum by model, region"
m meters list | grep -Eq "cli.tokens +1 +sum +model, region"
if m meters add cli.bad --dimension "no spaces" 2>/dev/null; then echo "a dimension that is no property name must be refused"; exit 1; fi
key_id=$(m keys create --name cli-smoke | sed -n 's/^API key \([0-9]*\) .*/\1/p')
m keys list | grep -q "cli-smoke"
m keys create --name cli-scoped --scope read --customer cli-smoke | grep -q "scopes read, customers cli-smoke"
m keys list | grep -Eq "cli-scoped .* read +cli-smoke"
if m keys create --name cli-bad --scope write 2>/dev/null; then echo "an unknown scope must be refused"; exit 1; fi
if m keys create --name cli-bad --customer nobody-at-all 2>/dev/null; then echo "an unknown customer must be refused"; exit 1; fi
m keys revoke "$key_id" | grep -q "revoked 1 key"
if m keys revoke "$key_id" 2>/dev/null; then echo "revoking twice must fail"; exit 1; fi
m rollup run | tail -1 | grep -q "^rollup: "
m rollup status | grep -q "^watermark:"
m rollup verify | grep -q "agrees with raw events"
m prune | tail -1 | grep -Eq "^prune: [0-9]+ conflict payloads cleared .* [0-9]+ processed webhook events deleted"
if m prune --webhook-retention-seconds 3600 2>/dev/null; then echo "a webhook retention under 7 days must be refused"; exit 1; fi
m billing webhook-secret add whsec_cli_smoke_secret | grep -q "secret added"
m billing webhook-secret list | grep -q "whsec_cli_.*active"
secret_id=$(m billing webhook-secret list | awk '/whsec_cli_/ {print $1}')
m billing webhook-secret retire "$secret_id" | grep -q "retired"
m billing price --meter cli.smoke --price-id price_cli_smoke --engine-api usage-records | grep -q "billed with price_cli_smoke (usage records)"
if m billing price --meter cli.smoke --price-id price_cli_smoke --engine-api meter-events 2>/dev/null; then echo "a meter mixing max and sum versions must be refused for Billing Meters"; exit 1; fi
m sync status | grep -q "^pending 0, in flight 0, dead 0"
m sync retry --meter cli.smoke | grep -q "0 dead hour(s) back to pending"
if m sync retry --meter no.such.meter 2>/dev/null; then echo "sync retry of an unknown meter must fail"; exit 1; fi
# A setting under a retired name is refused, naming the new one, never silently ignored.
if METER_ROLLUP_INTERVAL_MS=500 m migrate --status >/dev/null 2>.meter/retired-env.log; then
  echo "a retired environment variable must be refused"; exit 1
fi
grep -q "METER_ROLLUP_INTERVAL_MS is no longer read: set METER_ROLLUP_INTERVAL_SECONDS instead" .meter/retired-env.log
if m serve --rollup-interval-seconds 1 --rollup-stall-after-seconds 2 2>.meter/stall-bound.log; then
  echo "a stall bound under 3 intervals must be refused"; exit 1
fi
grep -q "rollup-stall-after-seconds (METER_ROLLUP_STALL_AFTER_SECONDS) must be at least 3" .meter/stall-bound.log
# The outgoing webhooks' settings are checked like the others (they were read without a check).
if m serve --webhook-give-up-seconds 0 2>.meter/give-up.log; then echo "a give-up time of 0 s must be refused"; exit 1; fi
grep -q "webhook-give-up-seconds (METER_WEBHOOK_GIVE_UP_SECONDS) must be at least 60; got 0" .meter/give-up.log
if METER_WEBHOOK_DELIVERY=maybe m serve 2>.meter/delivery-env.log; then echo "METER_WEBHOOK_DELIVERY=maybe must be refused"; exit 1; fi
grep -q "METER_WEBHOOK_DELIVERY must be on or off; got maybe" .meter/delivery-env.log
echo "CLI smoke test passed"

echo "== mock billing engine: the official Stripe Python SDK (stripe==11.6.0) against it"
mock_port=18090
Tests/support/ports_free.sh "$mock_port" 18089 || exit 1
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

echo "== mock billing engine: Billing Meters and the v2 meter event stream with the newest Stripe SDK (stripe==16.1.0)"
set +e
.meter/venv-stripe16/bin/python Tests/python/stripe_meters_fidelity.py --api-base "http://127.0.0.1:$mock_port" | tee .meter/stripe-meters.log
meters_status=${PIPESTATUS[0]}
set -e
[[ $meters_status == 0 ]] || { echo "Stripe SDK (Billing Meters) fidelity test failed"; kill "$mock_pid"; exit 1; }

echo "== CLI smoke test: billing price, link, sync run and status against the mock"
b=(--billing-api-base "http://127.0.0.1:$mock_port" --billing-api-key sk_test_smoke)
m meters add cli.billed --aggregation sum | grep -q "meter cli.billed"
m billing price --meter cli.billed --unit-amount-decimal 0.5 --value-scale 1 "${b[@]}" | grep -q "meter cli.billed billed with price_.* (meter events cli.billed, value scale 1)"
if m billing price --meter cli.billed --unit-amount-decimal 0.5 --aggregate-usage max "${b[@]}" 2>/dev/null; then
  echo "--aggregate-usage must be refused for Billing Meters"; exit 1
fi
now_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
psql -X -q -t "$tap_conninfo" -c "select status from meter.event_ingest('[{\"customer\":\"cli-smoke\",\"meter\":\"cli.billed\",\"idempotency_key\":\"b1\",\"occurred_at\":\"$now_utc\",\"value\":\"2.5\"}]')" | grep -q accepted
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
m plans list | grep -Eq "^cli-plan +eur +cli.billed +\{\} +package +250 +10"
m plans mirror "${b[@]}" | grep -q "^mirrored 2 plan price(s)"
m plans mirror "${b[@]}" | grep -q "^mirrored 0 plan price(s)"
# A price per filter of a meter's dimensions, named on its line; an overlapping one is refused.
m plans price cli-plan --meter cli.tokens --model per_unit --unit-amount 2 --filter '{"model":"a"}' | grep -q "cli.tokens \[model=a\] priced per_unit"
if m plans price cli-plan --meter cli.tokens --model per_unit --unit-amount 3 --filter '{"region":"eu"}' 2>/dev/null; then
  echo "a filter overlapping another of the plan and meter must be refused"; exit 1
fi
m plans list | grep -Eq 'cli.tokens +\{"model": \["a"\]\} +per_unit +2'
m plans limit cli-plan --meter cli.tokens --quantity 5000 --filter '{"model":"a"}' | grep -q 'cli.tokens {"model": \["a"\]} limited to 5000 per period'
m plans limit cli-plan --meter cli.tokens --remove --filter '{"model":"a"}' | grep -q "removed"
if m plans limit cli-plan --meter cli.tokens --quantity 0 2>/dev/null; then echo "a limit of 0 must be refused"; exit 1; fi

this_month=$(date -u +%Y-%m)
m customers subscribe cli-smoke --plan cli-plan --from "$this_month" | grep -q "on plan cli-plan"
if m close --period "$this_month" 2>.meter/close-refusal.log; then echo "closing the current month must be refused"; exit 1; fi
grep -q "it can be closed from" .meter/close-refusal.log
if m reconcile --period "$this_month" 2>/dev/null; then echo "reconcile of an unclosed period must fail"; exit 1; fi
echo "month-close CLI smoke test passed"

echo "== outgoing webhooks, verified by the official standardwebhooks library (Tests/python/webhooks_out_check.py)"
.meter/venv/bin/python Tests/python/webhooks_out_check.py .build/debug/meterctl "$tap_conninfo" | tee .meter/webhooks-out.log

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
for line in serve.stopped rollup.worker.started rollup.worker.stopped sync.worker.started sync.worker.stopped webhooks.delivery.started webhooks.delivery.stopped; do
  grep -q "\"msg\":\"$line\"" .meter/serve-smoke.log || { echo "no $line log line"; cat .meter/serve-smoke.log; exit 1; }
done

