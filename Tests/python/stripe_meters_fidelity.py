#!/usr/bin/env python3
"""Drives the mock billing engine's Billing Meters with the newest official Stripe SDK.

Usage:
    .meter/venv-stripe16/bin/python Tests/python/stripe_meters_fidelity.py --api-base http://127.0.0.1:PORT

The venv is made by scripts/setup.sh and holds stripe==16.1.0, which pins API version
2026-10-28.endive: usage records and metered prices without a meter are gone there (Stripe removed
them in 2025-03-31.basil), so everything metered goes through Billing Meters. The script uses the
SDK's StripeClient, as new integrations do, for: meters (create, retrieve, list, update, deactivate,
reactivate), meter events with Stripe's refusals, hourly pre-aggregation (a newer event for the same
hour overwrites), the sum, count and last formulas, cancellations (meter event adjustments), event
summaries, a metered price on a meter, a subscription on a test clock and the invoice its period end
produces, the v2 meter event session and stream (with its asynchronous error reports delivered as
signed thin events, parsed by client.parse_event_notification and fetched with fetch_event), and
the signed invoice webhooks (stripe.Webhook.construct_event).

Every expected figure is computed here from what the script sent, never read back from the mock.
It prints TAP ("ok N - ...", "not ok N - ..." with "# " detail lines, then "1..N") and exits 1 if
any check failed. Checks run in order and share state through `ctx`; a check whose prerequisite
failed is reported "not ok" without calling the mock.
"""

import argparse
import calendar
import datetime
import json
import sys
import types
import uuid
from decimal import ROUND_HALF_UP, Decimal

import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fidelity import CheckFailed, Checks, WebhookReceiver, expect, expect_equal, run_checks  # noqa: E402

try:
    import stripe
except ImportError:
    sys.exit("stripe is not installed: run scripts/setup.sh, then use .meter/venv-stripe16/bin/python")

SDK_VERSION = "16.1.0"
API_KEY = "sk_test_meter_meters"
UNIT_AMOUNT_DECIMAL = "0.25"  # cents per unit of the metered price
WEBHOOK_TIMEOUT_S = 30
THIN_EVENTS = ["v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"]
INVOICE_EVENTS = ["invoice.created", "invoice.finalized", "invoice.paid"]

# The test clock: 10 days into March 2026 (UTC); the subscription bills calendar months.
PERIOD_START = calendar.timegm((2026, 3, 1, 0, 0, 0))
PERIOD_END = calendar.timegm((2026, 4, 1, 0, 0, 0))
CLOCK_T0 = calendar.timegm((2026, 3, 11, 0, 0, 0))
HOUR_A = CLOCK_T0 - 5 * 3600  # 2026-03-10T19:00Z
HOUR_B = CLOCK_T0 - 3 * 3600  # 2026-03-10T21:00Z


def refused(call, status, code, what, param=None):
    """call() must fail with this HTTP status and error code (and param, when given)."""
    try:
        result = call()
    except stripe.APIConnectionError:
        raise
    except stripe.StripeError as e:
        error = e.error or {}
        got_code = getattr(error, "code", None) if not isinstance(error, dict) else error.get("code")
        expect(e.http_status == status and got_code == code,
               f"{what}: expected HTTP {status} {code}, got HTTP {e.http_status} {got_code}: {e.user_message or e}")
        if param is not None:
            got_param = getattr(error, "param", None) if not isinstance(error, dict) else error.get("param")
            expect_equal(got_param, param, f"{what}: param")
        return e
    raise CheckFailed(f"{what}: expected HTTP {status} {code}, the call succeeded: {result!r}"[:500])


def hourly_summaries(ctx, meter, start, end):
    page = ctx.client.v1.billing.meters.event_summaries.list(
        meter, {"customer": ctx.customer, "start_time": start, "end_time": end, "value_grouping_window": "hour", "limit": 100})
    return [(s.start_time, Decimal(str(s.aggregated_value))) for s in page.data]


def total(ctx, meter, start=PERIOD_START, end=PERIOD_END):
    page = ctx.client.v1.billing.meters.event_summaries.list(
        meter, {"customer": ctx.customer, "start_time": start, "end_time": end})
    expect_equal(len(page.data), 1, "summaries without a grouping window")
    s = page.data[0]
    expect_equal((s.object, s.meter, s.start_time, s.end_time), ("billing.meter_event_summary", meter, start, end), "summary")
    return Decimal(str(s.aggregated_value))


def event(ctx, meter_event_name, value, ts, identifier=None, customer=None):
    params = {"event_name": meter_event_name, "payload": {"stripe_customer_id": customer or ctx.customer, "value": value},
              "timestamp": ts}
    if identifier:
        params["identifier"] = identifier
    return ctx.client.v1.billing.meter_events.create(params)


checks = Checks()
check = checks.add


@check("the SDK pins an API version after 2025-03-31.basil (no usage records there)")
def _(ctx):
    expect(stripe.api_version >= "2025-03-31", f"pinned version {stripe.api_version}")


@check("a test clock, a customer on it, and a webhook endpoint for invoices and meter error reports")
def _(ctx):
    clock = ctx.client.v1.test_helpers.test_clocks.create({"frozen_time": CLOCK_T0})
    customer = ctx.client.v1.customers.create({"name": "Meters fidelity", "test_clock": clock.id})
    endpoint = ctx.client.v1.webhook_endpoints.create({"url": ctx.receiver.url, "enabled_events": INVOICE_EVENTS + THIN_EVENTS})
    expect(endpoint.secret.startswith("whsec_"), f"endpoint secret {endpoint.secret!r}")
    ctx.clock, ctx.customer, ctx.secret = clock.id, customer.id, endpoint.secret


@check("a meter: sum, hourly pre-aggregated, with Stripe's defaults for the payload keys", needs=("customer",))
def _(ctx):
    ctx.event_name = "api_tokens_" + uuid.uuid4().hex[:8]
    m = ctx.client.v1.billing.meters.create({"display_name": "API tokens", "event_name": ctx.event_name,
                                             "default_aggregation": {"formula": "sum"}, "event_time_window": "hour"})
    expect(m.id.startswith("mtr_"), f"meter id {m.id}")
    expect_equal((m.object, m.status, m.event_time_window, m.default_aggregation.formula),
                 ("billing.meter", "active", "hour", "sum"), "meter")
    expect_equal((m.customer_mapping.type, m.customer_mapping.event_payload_key, m.value_settings.event_payload_key),
                 ("by_id", "stripe_customer_id", "value"), "default payload keys")
    expect_equal(m.status_transitions.deactivated_at, None, "deactivated_at")
    ctx.meter = m.id


@check("meters: an event name is one meter's; max is not a formula; retrieve, list, update display_name only", needs=("meter",))
def _(ctx):
    refused(lambda: ctx.client.v1.billing.meters.create({"display_name": "again", "event_name": ctx.event_name,
                                                         "default_aggregation": {"formula": "sum"}}),
            400, "resource_already_exists", "a second meter for the event name", param="event_name")
    refused(lambda: ctx.client.v1.billing.meters.create({"display_name": "peak", "event_name": "x_" + uuid.uuid4().hex[:6],
                                                         "default_aggregation": {"formula": "max"}}),
            400, "parameter_invalid", "formula max", param="default_aggregation[formula]")
    expect_equal(ctx.client.v1.billing.meters.retrieve(ctx.meter).event_name, ctx.event_name, "retrieve")
    listed = ctx.client.v1.billing.meters.list({"status": "active", "limit": 100})
    expect(ctx.meter in [m.id for m in listed.data], "list(status=active) lacks the meter")
    updated = ctx.client.v1.billing.meters.update(ctx.meter, {"display_name": "API tokens (renamed)"})
    expect_equal(updated.display_name, "API tokens (renamed)", "display_name after update")
    refused(lambda: ctx.client.raw_request("post", f"/v1/billing/meters/{ctx.meter}", event_name="other"),
            400, "parameter_unknown", "updating event_name")


@check("a metered price needs a meter under this API version; aggregate_usage is gone", needs=("meter",))
def _(ctx):
    base = {"currency": "usd", "product_data": {"name": "tokens"}, "unit_amount_decimal": UNIT_AMOUNT_DECIMAL}
    refused(lambda: ctx.client.v1.prices.create({**base, "recurring": {"interval": "month", "usage_type": "metered"}}),
            400, "parameter_missing", "metered without a meter", param="recurring[meter]")
    price = ctx.client.v1.prices.create({**base, "recurring": {"interval": "month", "usage_type": "metered", "meter": ctx.meter}})
    expect_equal((price.recurring.usage_type, price.recurring.meter), ("metered", ctx.meter), "price.recurring")
    ctx.price = price.id


@check("a subscription to the metered price, for calendar months", needs=("price",))
def _(ctx):
    sub = ctx.client.v1.subscriptions.create({"customer": ctx.customer, "items": [{"price": ctx.price}],
                                             "backdate_start_date": PERIOD_START, "billing_cycle_anchor": PERIOD_END})
    expect_equal((sub.status, sub["items"]["data"][0]["price"]["id"]), ("active", ctx.price), "subscription")
    ctx.subscription = sub.id


@check("meter events: accepted with identifier and timestamp, echoed as sent", needs=("meter",))
def _(ctx):
    ev = event(ctx, ctx.event_name, "10", HOUR_A + 60, identifier=ctx.run + "-a-rev1")
    expect_equal((ev.object, ev.event_name, ev.identifier, ev.timestamp, ev.payload["value"]),
                 ("billing.meter_event", ctx.event_name, ctx.run + "-a-rev1", HOUR_A + 60, "10"), "meter event")
    ctx.sent = True


@check("meter events refused as Stripe does: duplicate identifier, decimals, 16 digits, no or unknown customer, "
       "35 days back, 5 minutes ahead, no meter", needs=("sent",))
def _(ctx):
    refused(lambda: event(ctx, ctx.event_name, "11", HOUR_A + 120, identifier=ctx.run + "-a-rev1"), 400, "duplicate_meter_event", "duplicate")
    refused(lambda: event(ctx, ctx.event_name, "1.5", HOUR_A), 400, "meter_event_invalid_value", "a decimal value")
    refused(lambda: event(ctx, ctx.event_name, "1" * 16, HOUR_A), 400, "meter_event_value_too_many_digits", "16 digits")
    refused(lambda: ctx.client.v1.billing.meter_events.create({"event_name": ctx.event_name, "payload": {"value": "1"}}),
            400, "meter_event_no_customer_defined", "no customer")
    refused(lambda: event(ctx, ctx.event_name, "1", HOUR_A, customer="cus_nobody"), 400, "meter_event_customer_not_found",
            "unknown customer")
    refused(lambda: event(ctx, ctx.event_name, "1", CLOCK_T0 - 35 * 86400 - 1), 400, "timestamp_too_far_in_past", "36 days back")
    refused(lambda: event(ctx, ctx.event_name, "1", CLOCK_T0 + 301), 400, "timestamp_in_future", "5 minutes ahead")
    refused(lambda: event(ctx, "no_such_event_" + uuid.uuid4().hex[:6], "1", HOUR_A), 400, "no_meter", "unknown event name")


@check("hourly pre-aggregation: a newer event for the hour overwrites; summaries by hour and in total", needs=("sent",))
def _(ctx):
    event(ctx, ctx.event_name, "7", HOUR_A + 180, identifier=ctx.run + "-a-rev2")   # hour A: 10, then 7 (newer)
    event(ctx, ctx.event_name, "5", HOUR_B + 60, identifier=ctx.run + "-b-rev1")    # hour B: 5
    expect_equal(hourly_summaries(ctx, ctx.meter, HOUR_A, HOUR_B + 3600),
                 [(HOUR_A, Decimal(7)), (HOUR_B, Decimal(5))], "hourly summaries")
    expect_equal(total(ctx, ctx.meter), Decimal(12), "the period's total")
    refused(lambda: ctx.client.v1.billing.meters.event_summaries.list(
        ctx.meter, {"customer": ctx.customer, "start_time": HOUR_A + 60, "end_time": HOUR_B, "value_grouping_window": "hour"}),
        400, "parameter_invalid", "hourly summaries not aligned to the hour")


@check("a cancellation (meter event adjustment) takes an event out; an unknown identifier is refused", needs=("sent",))
def _(ctx):
    adj = ctx.client.v1.billing.meter_event_adjustments.create(
        {"event_name": ctx.event_name, "type": "cancel", "cancel": {"identifier": ctx.run + "-b-rev1"}})
    expect_equal((adj.object, adj.type, adj.cancel.identifier), ("billing.meter_event_adjustment", "cancel", ctx.run + "-b-rev1"), "adjustment")
    expect_equal(total(ctx, ctx.meter), Decimal(7), "the total after cancelling hour B's 5")
    refused(lambda: ctx.client.v1.billing.meter_event_adjustments.create(
        {"event_name": ctx.event_name, "type": "cancel", "cancel": {"identifier": ctx.run + "-never-sent"}}),
        400, "resource_missing", "cancelling an unknown identifier")
    ctx.expected_quantity = Decimal(7)


@check("formulas count and last (no window): every event counts; last is the latest timestamp's value", needs=("customer",))
def _(ctx):
    for formula, values, expected in (("count", ["4", "9", "2"], Decimal(3)), ("last", ["4", "9", "2"], Decimal(9))):
        name = f"{formula}_{uuid.uuid4().hex[:8]}"
        m = ctx.client.v1.billing.meters.create({"display_name": formula, "event_name": name,
                                                 "default_aggregation": {"formula": formula}})
        # timestamps: the second value is the latest, sent in the middle
        for value, ts in zip(values, (HOUR_A, HOUR_B + 600, HOUR_B)):
            event(ctx, name, value, ts)
        expect_equal(total(ctx, m.id), expected, f"{formula} meter")


@check("deactivate: events refused (archived_meter), no price may use it; reactivate: accepted again", needs=("meter",))
def _(ctx):
    m = ctx.client.v1.billing.meters.deactivate(ctx.meter)
    expect_equal(m.status, "inactive", "status after deactivate")
    expect(m.status_transitions.deactivated_at is not None, "deactivated_at not set")
    refused(lambda: event(ctx, ctx.event_name, "1", HOUR_B), 400, "archived_meter", "an event for an inactive meter")
    refused(lambda: ctx.client.v1.prices.create({"currency": "usd", "product_data": {"name": "x"}, "unit_amount": 1,
                                                 "recurring": {"interval": "month", "usage_type": "metered", "meter": ctx.meter}}),
            400, "parameter_invalid", "a price on an inactive meter", param="recurring[meter]")
    expect_equal(ctx.client.v1.billing.meters.reactivate(ctx.meter).status, "active", "status after reactivate")


@check("usage records are gone under this API version (404)", needs=("subscription",))
def _(ctx):
    refused(lambda: ctx.client.raw_request("post", "/v1/subscription_items/si_any/usage_records", quantity=1),
            404, None, "POST usage_records")


@check("v2: a meter event session, then the stream takes a batch and answers at once", needs=("meter",))
def _(ctx):
    session = ctx.client.v2.billing.meter_event_session.create()
    expect_equal(session.object, "v2.billing.meter_event_session", "session object")
    expect(session.authentication_token, "no authentication_token")
    ctx.token = session.authentication_token
    at = datetime.datetime.fromtimestamp(HOUR_B + 900, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    events = [
        {"event_name": ctx.event_name, "identifier": ctx.run + "-stream-b-rev2", "timestamp": at,
         "payload": {"stripe_customer_id": ctx.customer, "value": "30"}},
        {"event_name": ctx.event_name, "identifier": ctx.run + "-stream-bad-customer", "timestamp": at,
         "payload": {"stripe_customer_id": "cus_nobody", "value": "1"}},
        {"event_name": "no_meter_" + uuid.uuid4().hex[:6], "identifier": ctx.run + "-stream-no-meter", "timestamp": at,
         "payload": {"stripe_customer_id": ctx.customer, "value": "1"}},
    ]
    result = ctx.client.v2.billing.meter_event_stream.create({"events": events}, {"api_key": ctx.token})
    expect_equal(result, None, "the stream's answer")
    ctx.expected_quantity += 30   # hour B again: 30 (its 5 was cancelled)
    expect_equal(total(ctx, ctx.meter), ctx.expected_quantity, "the total with the stream's valid event")
    ctx.streamed = True


@check("v2: at most 100 events per call; a token that is not a session's is refused", needs=("streamed",))
def _(ctx):
    many = [{"event_name": ctx.event_name, "payload": {"stripe_customer_id": ctx.customer, "value": "1"}}] * 101
    refused(lambda: ctx.client.v2.billing.meter_event_stream.create({"events": many}, {"api_key": ctx.token}),
            400, "parameter_invalid", "101 events")
    refused(lambda: ctx.client.v2.billing.meter_event_stream.create({"events": many[:1]}, {"api_key": "mest_not_a_session"}),
            401, None, "an unknown session token")


@check("v2: refused stream events are reported by signed thin events, parsed and fetched with the SDK", needs=("streamed",))
def _(ctx):
    found = {}
    for event_type, code in (("v1.billing.meter.error_report_triggered", "meter_event_customer_not_found"),
                             ("v1.billing.meter.no_meter_found", "no_meter")):
        delivery = ctx.receiver.wait_for(lambda e, t=event_type: e.get("type") == t, WEBHOOK_TIMEOUT_S)
        expect(delivery is not None, f"no {event_type} delivered within {WEBHOOK_TIMEOUT_S} s")
        body, signature = delivery
        expect("data" not in json.loads(body), "a thin event must not carry data")
        notification = ctx.client.parse_event_notification(body, signature, ctx.secret)
        expect_equal(notification.type, event_type, "notification type")
        full = notification.fetch_event()
        types_ = full.data.reason.error_types
        expect_equal([t.code for t in types_], [code], f"{event_type}: error codes")
        expect_equal(types_[0].sample_errors[0].request.identifier,
                     ctx.run + "-stream-bad-customer" if code != "no_meter" else ctx.run + "-stream-no-meter", "sample identifier")
        found[event_type] = notification
    related = found["v1.billing.meter.error_report_triggered"].related_object
    expect_equal((related.id, related.type), (ctx.meter, "billing.meter"), "the report's related object")
    try:
        ctx.client.parse_event_notification(body, signature, "whsec_wrong_secret_123")
        raise CheckFailed("a notification signed with another secret was accepted")
    except stripe.SignatureVerificationError:
        pass


@check("v2 meter_events (one, synchronous) stores and refuses like v1", needs=("streamed",))
def _(ctx):
    at = datetime.datetime.fromtimestamp(HOUR_A + 1200, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    ev = ctx.client.v2.billing.meter_events.create({"event_name": ctx.event_name, "identifier": ctx.run + "-v2-a-rev3", "timestamp": at,
                                                    "payload": {"stripe_customer_id": ctx.customer, "value": "8"}})
    expect_equal((ev.object, ev.identifier), ("v2.billing.meter_event", ctx.run + "-v2-a-rev3"), "v2 meter event")
    ctx.expected_quantity += 8 - 7   # hour A: 8 overwrites 7
    expect_equal(total(ctx, ctx.meter), ctx.expected_quantity, "total after the v2 event")
    refused(lambda: ctx.client.v2.billing.meter_events.create({"event_name": ctx.event_name, "identifier": ctx.run + "-v2-a-rev3",
                                                               "payload": {"stripe_customer_id": ctx.customer, "value": "9"}}),
            400, "duplicate_meter_event", "a v2 duplicate")


@check("the period end bills the meter's value: one invoice line, amount = quantity x unit price, "
       "invoice.paid signed (stripe.Webhook.construct_event)", needs=("subscription", "streamed"))
def _(ctx):
    target = PERIOD_END + 3600
    ctx.client.v1.test_helpers.test_clocks.advance(ctx.clock, {"frozen_time": target})
    invoices = ctx.client.v1.invoices.list({"customer": ctx.customer}).data
    expect_equal(len(invoices), 1, "invoices after the period end")
    inv = invoices[0]
    lines = inv.lines.data
    expect_equal(len(lines), 1, "invoice lines")
    expected_amount = int((ctx.expected_quantity * Decimal(UNIT_AMOUNT_DECIMAL)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    expect_equal(Decimal(str(lines[0].quantity)), ctx.expected_quantity, "line quantity")
    expect_equal((lines[0].amount, inv.total), (expected_amount, expected_amount), "line amount and total")
    delivery = ctx.receiver.wait_for(lambda e: e.get("type") == "invoice.paid" and e["data"]["object"]["id"] == inv.id,
                                      WEBHOOK_TIMEOUT_S)
    expect(delivery is not None, "no invoice.paid delivered")
    verified = stripe.Webhook.construct_event(delivery[0], delivery[1], ctx.secret)
    expect_equal((verified.type, verified.data.object.total), ("invoice.paid", expected_amount), "verified webhook")


def run(api_base):
    base = api_base.rstrip("/")
    stripe.api_key = API_KEY
    ctx = types.SimpleNamespace()
    ctx.client = stripe.StripeClient(API_KEY, base_addresses={"api": base, "meter_events": base}, max_network_retries=0,
                                     http_client=stripe.RequestsClient(timeout=20))
    ctx.receiver = WebhookReceiver()
    ctx.run = uuid.uuid4().hex[:10]   # identifiers are unique per run: the script may run twice on one mock
    status = run_checks(checks, ctx, __file__, stripe.APIConnectionError, f"cannot connect to {base}")
    ctx.receiver.server.shutdown()
    return status


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-base", required=True)
    args = parser.parse_args()
    if stripe.VERSION != SDK_VERSION:
        print(f"Bail out! stripe {stripe.VERSION} is installed, this test is written for {SDK_VERSION}")
        return 2
    return run(args.api_base)


if __name__ == "__main__":
    sys.exit(main())
