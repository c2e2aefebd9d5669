#!/usr/bin/env python3
"""Drives the Stripe-compatible billing mock (`meterctl billing-mock`) with the official SDK.

Usage:
    .meter/venv/bin/python Tests/python/stripe_sdk_fidelity.py --api-base http://127.0.0.1:PORT

The venv is made by scripts/setup.sh and holds stripe==11.6.0 (API version 2025-02-24.acacia, the
last SDK line with usage records). The script walks one metered-billing scenario end to end: test
clock, customer, prices, subscription, webhook endpoint, usage records (with idempotency keys),
usage summaries, a clock advance past the period end, the resulting invoice, the signed webhook
delivery and the error envelope. It prints TAP ("ok N - ...", "not ok N - ..." followed by "# "
detail lines, then "1..N") and exits 1 if any check failed.

Checks run in order and share state (ids, times) through `ctx`. A check whose prerequisite failed is
reported "not ok" without calling the mock; after a connection error the remaining checks are
reported "not ok" without being run, so an unreachable mock gives one short message, not a storm.

Every expectation is what real Stripe does (docs/notes/stripe-api-for-the-mock.md); the endpoints,
parameters and headers used are listed in that note, section "What Tests/python/stripe_sdk_fidelity.py
exercises".
"""

import argparse
import datetime
import json
import sys
import time
import types
from decimal import ROUND_HALF_UP, Decimal

import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fidelity import CheckFailed, Checks, WebhookReceiver, expect, expect_equal, run_checks  # noqa: E402

try:
    import stripe
except ImportError:
    sys.exit("stripe is not installed: run scripts/setup.sh, then use .meter/venv/bin/python")

SDK_VERSION = "11.6.0"
API_KEY = "sk_test_meter_mock"  # the mock accepts any sk_test_ key
UNIT_AMOUNT_DECIMAL = "0.5"  # cents per unit of the metered price
ENABLED_EVENTS = ["invoice.created", "invoice.finalized", "invoice.paid"]
CLOCK_TIMEOUT_S = 30  # a clock advance must reach status 'ready' within this
WEBHOOK_TIMEOUT_S = 30  # an invoice.* delivery must arrive within this


# --------------------------------------------------------------------------------------------------
# Small helpers


def expect_raises(exception_class, call, what):
    """Runs call(); returns the exception it raised, which must be an exception_class."""
    try:
        result = call()
    except exception_class as e:
        return e
    except stripe.error.APIConnectionError:
        raise  # the runner reports the mock unreachable
    except stripe.error.StripeError as e:
        raise CheckFailed(f"{what}: expected {exception_class.__name__}, got {describe_stripe_error(e)}")
    raise CheckFailed(f"{what}: expected {exception_class.__name__}, the call succeeded: {result!r}"[:600])


def describe_stripe_error(e):
    """One line about an SDK exception: class, HTTP status, error type/code/message, request id."""
    parts = [type(e).__name__]
    if e.http_status is not None:
        parts.append(f"HTTP {e.http_status}")
    if e.error is not None:
        parts.append(f"type={e.error.get('type')} code={e.error.get('code')}")
    parts.append(repr(e.user_message or str(e)))
    if e.request_id:
        parts.append(f"request {e.request_id}")
    return " ".join(parts)


def response_header(obj, name):
    """A header of the HTTP response an SDK object came from (None if absent).

    StripeObject.last_response is a StripeResponse whose .headers is whatever the HTTP client gave:
    a case-insensitive dict with requests (the default client), a lower-cased dict with urllib.
    The SDK itself never reads Idempotent-Replayed, so this is the only way to see it.
    """
    response = obj.last_response
    if response is None:
        return None
    for key, value in response.headers.items():
        if key.lower() == name.lower():
            return value
    return None


def add_one_month(t):
    """Unix time t plus one calendar month (t is on day 2 of a month, so the day always exists)."""
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return int(d.replace(year=year, month=month).timestamp())


def wait_clock_ready(clock_id, target_frozen_time):
    """Polls GET /v1/test_helpers/test_clocks/{id} until status 'ready'; returns the clock."""
    deadline = time.monotonic() + CLOCK_TIMEOUT_S
    while True:
        clock = stripe.test_helpers.TestClock.retrieve(clock_id)
        if clock.status == "ready":
            expect_equal(clock.frozen_time, target_frozen_time, "frozen_time once the clock is ready")
            return clock
        expect(clock.status == "advancing", f"clock status while advancing: {clock.status!r}")
        if time.monotonic() > deadline:
            raise CheckFailed(f"clock still {clock.status!r} after {CLOCK_TIMEOUT_S} s")
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------------
# The checks, in execution order. Each is registered with the TAP description and the ctx fields it
# needs from earlier checks.

checks = Checks()
check = checks.add


@check("test clock: create at the start of the month + 1 day, retrieve it 'ready'")
def check_test_clock(ctx):
    now = datetime.datetime.now(datetime.timezone.utc)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    frozen_time = int((month_start + datetime.timedelta(days=1)).timestamp())
    clock = stripe.test_helpers.TestClock.create(frozen_time=frozen_time, name="meter sdk fidelity")
    expect(clock.id.startswith("clock_"), f"clock id {clock.id!r} should start with 'clock_'")
    expect_equal(clock.object, "test_helpers.test_clock", "clock object")
    fetched = stripe.test_helpers.TestClock.retrieve(clock.id)
    expect_equal(fetched.id, clock.id, "retrieved clock id")
    expect_equal(fetched.status, "ready", "clock status")
    expect_equal(fetched.frozen_time, frozen_time, "clock frozen_time")
    ctx.clock_id, ctx.clock_time = clock.id, frozen_time


@check("customer: create on the test clock", needs=["clock_id"])
def check_customer(ctx):
    customer = stripe.Customer.create(name="SDK fidelity customer", test_clock=ctx.clock_id)
    expect(customer.id.startswith("cus_"), f"customer id {customer.id!r} should start with 'cus_'")
    expect_equal(customer.object, "customer", "customer object")
    expect_equal(customer.test_clock, ctx.clock_id, "customer test_clock")
    ctx.customer_id = customer.id


@check("price: metered, per unit, unit_amount_decimal 0.5 (USD cents)")
def check_metered_price(ctx):
    product = stripe.Product.create(name="API calls (SDK fidelity)")
    expect(product.id.startswith("prod_"), f"product id {product.id!r} should start with 'prod_'")
    expect_equal(product.object, "product", "product object")
    price = stripe.Price.create(
        currency="usd",
        product=product.id,
        unit_amount_decimal=UNIT_AMOUNT_DECIMAL,
        recurring={"interval": "month", "usage_type": "metered", "aggregate_usage": "sum"},
    )
    expect(price.id.startswith("price_"), f"price id {price.id!r} should start with 'price_'")
    expect_equal(price.object, "price", "price object")
    expect_equal(price.product, product.id, "price product")
    expect_equal(price.recurring.usage_type, "metered", "recurring.usage_type")
    expect_equal(price.recurring.interval, "month", "recurring.interval")
    expect_equal(price.recurring.aggregate_usage, "sum", "recurring.aggregate_usage")
    # Real Stripe returns the decimal as a string ("0.5") and unit_amount null.
    expect(
        price.unit_amount_decimal is not None
        and Decimal(str(price.unit_amount_decimal)) == Decimal(UNIT_AMOUNT_DECIMAL),
        f"unit_amount_decimal: expected {UNIT_AMOUNT_DECIMAL!r}, got {price.unit_amount_decimal!r}",
    )
    ctx.product_id, ctx.price_id = product.id, price.id


@check("price: tiered graduated, tiers come back (expand[]=tiers)", needs=["product_id"])
def check_tiered_price(ctx):
    # Real Stripe leaves `tiers` out of a price unless it is expanded, hence expand=["tiers"].
    price = stripe.Price.create(
        currency="usd",
        product=ctx.product_id,
        recurring={"interval": "month", "usage_type": "metered", "aggregate_usage": "sum"},
        billing_scheme="tiered",
        tiers_mode="graduated",
        tiers=[{"up_to": 100, "unit_amount": 10}, {"up_to": "inf", "unit_amount": 5}],
        expand=["tiers"],
    )
    expect_equal(price.object, "price", "price object")
    expect_equal(price.billing_scheme, "tiered", "billing_scheme")
    expect_equal(price.tiers_mode, "graduated", "tiers_mode")
    tiers = price.get("tiers")
    expect(isinstance(tiers, list) and len(tiers) == 2, f"tiers: expected 2, got {tiers!r}")
    # "inf" comes back as up_to null.
    got = [(t.up_to, t.unit_amount) for t in tiers]
    expect_equal(got, [(100, 10), (None, 5)], "tiers (up_to, unit_amount)")


@check("subscription: create with the metered price, 'active', monthly period from the clock time",
       needs=["customer_id", "price_id"])
def check_subscription(ctx):
    subscription = stripe.Subscription.create(customer=ctx.customer_id, items=[{"price": ctx.price_id}])
    expect(subscription.id.startswith("sub_"), f"subscription id {subscription.id!r} should start with 'sub_'")
    expect_equal(subscription.object, "subscription", "subscription object")
    expect_equal(subscription.status, "active", "subscription status")
    # `subscription.items` would be dict.items (StripeObject is a dict): index instead.
    items = subscription["items"]
    expect_equal(items.object, "list", "items object")
    expect(len(items.data) == 1, f"items.data: expected 1 item, got {len(items.data)}")
    item = items.data[0]
    expect(item.id.startswith("si_"), f"subscription item id {item.id!r} should start with 'si_'")
    expect_equal(item.price.id, ctx.price_id, "items.data[0].price.id")
    start, end = subscription.current_period_start, subscription.current_period_end
    expect(isinstance(start, int) and isinstance(end, int),
           f"current_period_start/end must be integers, got {start!r} / {end!r}")
    # With a test clock the subscription starts at the clock's frozen time; the period is a month.
    expect_equal(start, ctx.clock_time, "current_period_start (the clock's frozen_time)")
    expect_equal(end, add_one_month(start), "current_period_end (one month later)")
    ctx.subscription_id, ctx.item_id = subscription.id, item.id
    ctx.period_start, ctx.period_end = start, end


@check("webhook endpoint: create for invoice.created/finalized/paid, secret whsec_")
def check_webhook_endpoint(ctx):
    endpoint = stripe.WebhookEndpoint.create(url=ctx.receiver.url, enabled_events=ENABLED_EVENTS)
    expect(endpoint.id.startswith("we_"), f"endpoint id {endpoint.id!r} should start with 'we_'")
    expect_equal(endpoint.object, "webhook_endpoint", "endpoint object")
    expect_equal(endpoint.url, ctx.receiver.url, "endpoint url")
    expect_equal(list(endpoint.enabled_events), ENABLED_EVENTS, "endpoint enabled_events")
    secret = endpoint.get("secret")
    expect(isinstance(secret, str) and secret.startswith("whsec_"),
           f"secret should start with 'whsec_', got {secret!r}")
    ctx.webhook_secret = secret


@check("test clock: advance 2 h inside the period (room for usage timestamps)",
       needs=["clock_id", "period_end"])
def check_advance_within_period(ctx):
    # Usage timestamps must lie in [current_period_start, clock now]. Right after the subscription
    # is created both are the same instant, so move the clock a little first.
    target = ctx.clock_time + 2 * 3600
    expect(target < ctx.period_end, "the period is shorter than 2 h")
    clock = stripe.test_helpers.TestClock.advance(ctx.clock_id, frozen_time=target)
    expect(clock.status in ("advancing", "ready"), f"status returned by advance: {clock.status!r}")
    wait_clock_ready(ctx.clock_id, target)
    ctx.clock_time = target
    # Expected usage per timestamp, maintained with Stripe's semantics as records are accepted:
    # action=set overwrites the quantity at that timestamp, action=increment adds to it.
    ctx.usage = {}
    ctx.ts_a = ctx.clock_time - 3600 if ctx.clock_time - 3600 >= ctx.period_start else ctx.period_start
    ctx.ts_b = ctx.ts_a + 600  # another timestamp, still <= the clock's now


def create_usage_record(ctx, quantity, timestamp, action, key):
    """POST /v1/subscription_items/{si}/usage_records with an explicit Idempotency-Key."""
    return stripe.SubscriptionItem.create_usage_record(
        ctx.item_id, quantity=quantity, timestamp=timestamp, action=action, idempotency_key=key
    )


def expect_usage_record(record, ctx, quantity, timestamp):
    expect(record.id.startswith("mbur_"), f"usage record id {record.id!r} should start with 'mbur_'")
    expect_equal(record.object, "usage_record", "usage record object")
    expect_equal(record.subscription_item, ctx.item_id, "usage record subscription_item")
    expect_equal(record.timestamp, timestamp, "usage record timestamp")
    expect_equal(record.quantity, quantity, "usage record quantity")


@check("usage record: set 7 (Idempotency-Key fid-1)", needs=["item_id", "usage"])
def check_usage_set(ctx):
    record = create_usage_record(ctx, 7, ctx.ts_a, "set", "fid-1")
    expect_usage_record(record, ctx, 7, ctx.ts_a)
    replayed = response_header(record, "Idempotent-Replayed")
    expect(replayed in (None, "false"), f"first request answered with Idempotent-Replayed: {replayed!r}")
    ctx.usage[ctx.ts_a] = 7
    ctx.first_record_id = record.id


@check("usage record: same call, same key: same record, Idempotent-Replayed: true",
       needs=["first_record_id"])
def check_usage_replay(ctx):
    record = create_usage_record(ctx, 7, ctx.ts_a, "set", "fid-1")
    expect_equal(record.id, ctx.first_record_id, "replayed record id")
    expect_usage_record(record, ctx, 7, ctx.ts_a)
    expect_equal(response_header(record, "Idempotent-Replayed"), "true", "Idempotent-Replayed header")
    expect_equal(record.last_response.idempotency_key, "fid-1", "Idempotency-Key response header")
    # A replay must not apply the record again (a `set` would not show it anyway; the summary
    # check below would catch a double increment).


@check("usage record: same key, different quantity: IdempotencyError (400)", needs=["first_record_id"])
def check_usage_key_reuse(ctx):
    error = expect_raises(
        stripe.error.IdempotencyError,
        lambda: create_usage_record(ctx, 8, ctx.ts_a, "set", "fid-1"),
        "reusing fid-1 with quantity 8",
    )
    expect_equal(error.http_status, 400, "HTTP status")
    expect_equal(error.error.type, "idempotency_error", "error.type")
    # Nothing was recorded: ctx.usage stays as it is.


@check("usage record: increment 3 at the same timestamp (key fid-2)", needs=["item_id", "usage"])
def check_usage_increment(ctx):
    record = create_usage_record(ctx, 3, ctx.ts_a, "increment", "fid-2")
    expect(record.id.startswith("mbur_"), f"usage record id {record.id!r} should start with 'mbur_'")
    expect_equal(record.object, "usage_record", "usage record object")
    expect_equal(record.timestamp, ctx.ts_a, "usage record timestamp")
    ctx.usage[ctx.ts_a] = ctx.usage.get(ctx.ts_a, 0) + 3


@check("usage record: set 10 at another timestamp (key fid-3)", needs=["item_id", "usage"])
def check_usage_set_other_timestamp(ctx):
    record = create_usage_record(ctx, 10, ctx.ts_b, "set", "fid-3")
    expect_usage_record(record, ctx, 10, ctx.ts_b)
    ctx.usage[ctx.ts_b] = 10


@check("usage record summaries: current period total_usage = 7 set, +3, 10 set elsewhere = 20",
       needs=["item_id", "usage"])
def check_usage_summary(ctx):
    expected_total = sum(ctx.usage.values())
    summaries = stripe.SubscriptionItem.list_usage_record_summaries(ctx.item_id)
    expect_equal(summaries.object, "list", "summaries object")
    expect(len(summaries.data) >= 1, "no usage record summary")
    current = summaries.data[0]  # newest first: the open period
    expect_equal(current.object, "usage_record_summary", "summary object")
    expect_equal(current.subscription_item, ctx.item_id, "summary subscription_item")
    expect_equal(current.invoice, None, "summary invoice (the period is not billed yet)")
    expect_equal(current.total_usage, expected_total, f"total_usage (timestamp: quantity {ctx.usage})")


@check("test clock: advance past current_period_end, 'ready' within 30 s",
       needs=["clock_id", "period_end"])
def check_advance_past_period(ctx):
    target = ctx.period_end + 3600
    clock = stripe.test_helpers.TestClock.advance(ctx.clock_id, frozen_time=target)
    expect_equal(clock.id, ctx.clock_id, "advanced clock id")
    expect(clock.status in ("advancing", "ready"), f"status returned by advance: {clock.status!r}")
    wait_clock_ready(ctx.clock_id, target)
    ctx.clock_time = target
    ctx.period_closed = True


@check("invoice for the ended period: line quantity = usage, amount = round(usage x 0.5) cents",
       needs=["period_closed", "usage"])
def check_period_invoice(ctx):
    # Expected from the records the mock accepted (not from the summary check, which may have failed).
    period_usage = sum(ctx.usage.values())
    # Half-up rounding to whole cents; with 20 units the amount is exactly 10, no rounding involved.
    expected_amount = int((Decimal(period_usage) * Decimal(UNIT_AMOUNT_DECIMAL))
                          .quantize(Decimal(1), rounding=ROUND_HALF_UP))
    invoices = stripe.Invoice.list(customer=ctx.customer_id)
    expect_equal(invoices.object, "list", "invoice list object")
    seen = []
    for invoice in invoices.auto_paging_iter():
        expect_equal(invoice.object, "invoice", "invoice object")
        for line in invoice["lines"]["data"]:
            item = line.get("subscription_item")
            item_id = item.get("id") if isinstance(item, dict) else item
            period = line.get("period") or {}
            seen.append((invoice.id, item_id, period.get("start"), period.get("end"), line.get("quantity")))
            if (item_id == ctx.item_id and period.get("start") == ctx.period_start
                    and period.get("end") == ctx.period_end):
                expect_equal(line.object, "line_item", "line object")
                expect_equal(line.quantity, period_usage, "line quantity")
                expect_equal(line.amount, expected_amount, "line amount (cents)")
                expect_equal(invoice.customer, ctx.customer_id, "invoice customer")
                expect_equal(invoice.subscription, ctx.subscription_id, "invoice subscription")
                expect(isinstance(invoice.amount_due, int),
                       f"amount_due must be an integer, got {invoice.amount_due!r}")
                expect_equal(invoice.amount_due, expected_amount, "invoice amount_due")
                ctx.invoice_id = invoice.id
                return
    raise CheckFailed(
        f"no invoice line for {ctx.item_id} over [{ctx.period_start}, {ctx.period_end}];"
        f" lines seen (invoice, item, start, end, quantity): {seen}"
    )


@check("webhook: an invoice.* delivery within 30 s verifies with construct_event",
       needs=["webhook_secret", "period_closed"])
def check_webhook_delivery(ctx):
    delivery = ctx.receiver.wait_for(
        lambda event: str(event.get("type", "")).startswith("invoice."), WEBHOOK_TIMEOUT_S
    )
    if delivery is None:
        raise CheckFailed(f"no invoice.* delivery within {WEBHOOK_TIMEOUT_S} s;"
                          f" {len(ctx.receiver.deliveries)} POST(s) received in all")
    body, signature = delivery
    expect(signature is not None, "the delivery has no Stripe-Signature header")
    try:
        event = stripe.Webhook.construct_event(body.decode("utf-8"), signature, ctx.webhook_secret)
    except stripe.error.SignatureVerificationError as e:
        raise CheckFailed(f"construct_event refused the delivery: {e}; Stripe-Signature: {signature}")
    expect(event.id.startswith("evt_"), f"event id {event.id!r} should start with 'evt_'")
    expect_equal(event.object, "event", "event object")
    expect(event.type in ENABLED_EVENTS, f"event type {event.type!r} is not enabled")
    expect_equal(event.data.object.object, "invoice", "data.object.object")
    expect_equal(event.data.object.customer, ctx.customer_id, "data.object.customer")
    ctx.delivery = delivery


@check("webhook: a tampered payload raises SignatureVerificationError", needs=["delivery"])
def check_webhook_tampered(ctx):
    body, signature = ctx.delivery
    tampered = body.decode("utf-8") + " "  # any change to the signed bytes must be caught
    expect_raises(
        stripe.error.SignatureVerificationError,
        lambda: stripe.Webhook.construct_event(tampered, signature, ctx.webhook_secret),
        "construct_event on a tampered payload",
    )


@check("webhook: every delivery so far is of an enabled event type", needs=["delivery"])
def check_webhook_filter(ctx):
    types_seen = []
    for body, _ in list(ctx.receiver.deliveries):
        try:
            types_seen.append(json.loads(body).get("type"))
        except ValueError:
            raise CheckFailed(f"a delivery body is not JSON: {body[:200]!r}")
    unexpected = [t for t in types_seen if t not in ENABLED_EVENTS]
    expect(not unexpected, f"deliveries of types not enabled: {unexpected} (all: {types_seen})")


@check("errors: retrieving an unknown customer raises InvalidRequestError (404, resource_missing)")
def check_not_found(ctx):
    error = expect_raises(
        stripe.error.InvalidRequestError,
        lambda: stripe.Customer.retrieve("cus_does_not_exist"),
        "GET /v1/customers/cus_does_not_exist",
    )
    expect_equal(error.http_status, 404, "HTTP status")
    expect_equal(error.code, "resource_missing", "error.code")


@check("errors: a bad API key raises AuthenticationError (401), even for an existing customer")
def check_bad_key(ctx):
    customer_id = getattr(ctx, "customer_id", None) or "cus_does_not_exist"
    error = expect_raises(
        stripe.error.AuthenticationError,
        lambda: stripe.Customer.retrieve(customer_id, api_key="bad"),
        f"GET /v1/customers/{customer_id} with api key 'bad'",
    )
    # http_status None would mean the SDK refused locally, without asking the mock.
    expect_equal(error.http_status, 401, "HTTP status")


# --------------------------------------------------------------------------------------------------
# Runner


def run(api_base):
    stripe.api_key = API_KEY
    stripe.api_base = api_base.rstrip("/")  # the SDK appends "/v1/..." to it
    stripe.max_network_retries = 2
    # The default client is requests with an 80 s timeout; a hung mock should fail sooner.
    stripe.default_http_client = stripe.RequestsClient(timeout=20)

    ctx = types.SimpleNamespace()
    ctx.receiver = WebhookReceiver()
    status = run_checks(checks, ctx, __file__, stripe.error.APIConnectionError, f"cannot connect to {stripe.api_base}",
                        describe_stripe_error, stripe.error.StripeError)
    ctx.receiver.server.shutdown()
    ctx.receiver.server.server_close()
    return status


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-base", required=True, help="the mock's base URL, e.g. http://127.0.0.1:12111")
    args = parser.parse_args()
    if stripe.VERSION != SDK_VERSION:
        print(f"Bail out! stripe {stripe.VERSION} is installed, this test is written for {SDK_VERSION}")
        return 2
    return run(args.api_base)


if __name__ == "__main__":
    sys.exit(main())
