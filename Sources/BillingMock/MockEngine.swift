// MockEngine.swift
//
// The resources of the mock billing engine (`meterctl billing-mock`): a Stripe-compatible subset
// for usage-based subscriptions. Every request runs in one Postgres transaction on the engine's
// own schema (billing_mock); the HTTP layer (BillingMockServer) adds authentication,
// idempotency keys and fault injection around it. Shapes follow Stripe's API (id, object,
// list envelopes, error envelope); see docs/billing-mock.md for what is and is not modelled.

import Foundation
import PGClient
import MeterWire

/// A Stripe error: {"error":{"type","code","message","param"}} with an HTTP status.
public struct MockAPIError: Error, Sendable {
    public var status: Int
    public var type: String
    public var code: String?
    public var message: String
    public var param: String?

    package static func invalid(_ message: String, param: String? = nil, code: String? = "parameter_invalid") -> MockAPIError {
        MockAPIError(status: 400, type: "invalid_request_error", code: code, message: message, param: param)
    }
    package static func missing(_ param: String) -> MockAPIError {
        MockAPIError(status: 400, type: "invalid_request_error", code: "parameter_missing",
                     message: "Missing required param: \(param).", param: param)
    }
    package static func notFound(_ what: String, _ id: String, param: String = "id") -> MockAPIError {
        MockAPIError(status: 404, type: "invalid_request_error", code: "resource_missing",
                     message: "No such \(what): '\(id)'", param: param)
    }

    package var json: JSONValue {
        .obj(["error": .obj(["type": .string(type), "code": .str(code), "message": .string(message),
                             "param": .str(param)])])
    }
}

package struct MockEngine: Sendable {
    /// Usage records may carry timestamps up to this far past the engine's clock (Stripe: 5 min).
    package static let futureTolerance: Int64 = 300

    // MARK: storage

    package static func load(_ c: PGConnection, _ id: String, _ object: String) throws -> JSONValue? {
        guard let row = try c.execute("select data::text as d from billing_mock.objects where id = $1 and object = $2",
                                      [id, object]).rows.first else { return nil }
        return try JSONParser.parse(try row.string("d"))
    }

    package static func require(_ c: PGConnection, _ id: String?, _ object: String, what: String, param: String) throws -> JSONValue {
        guard let id, !id.isEmpty else { throw MockAPIError.missing(param) }
        guard let v = try load(c, id, object) else { throw MockAPIError.notFound(what, id, param: param) }
        return v
    }

    package static func insert(_ c: PGConnection, _ id: String, _ object: String, _ data: JSONValue) throws {
        _ = try c.execute("insert into billing_mock.objects (id, object, data) values ($1, $2, $3::jsonb)",
                          [id, object, data.text])
    }

    package static func update(_ c: PGConnection, _ id: String, _ data: JSONValue) throws {
        _ = try c.execute("update billing_mock.objects set data = $2::jsonb where id = $1", [id, data.text])
    }

    package static func newID(_ c: PGConnection, _ prefix: String) throws -> String {
        try c.execute("select billing_mock.new_id($1) as id", [prefix]).single().string("id")
    }

    package static func emit(_ c: PGConnection, _ type: String, _ object: JSONValue, at: Int64) throws {
        _ = try c.execute("select billing_mock.emit_event($1, $2::jsonb, $3)", [type, object.text, at])
    }

    package static func list(_ data: [JSONValue], url: String) -> JSONValue {
        .obj(["object": "list", "data": .array(data), "has_more": .bool(false), "url": .string(url)])
    }

    // MARK: parameters

    package static func metadata(_ form: FormNode) -> JSONValue {
        .object(form["metadata"]?.dictionary.sorted { $0.key < $1.key }.map { ($0.key, .str($0.value.string)) } ?? [])
    }

    package static func integer(_ form: FormNode?, _ param: String) throws -> Int64? {
        guard let s = form?.string, !s.isEmpty else { return nil }
        guard let v = Int64(s) else { throw MockAPIError.invalid("Invalid integer: \(s)", param: param) }
        return v
    }

    /// A non-negative exact decimal ("12", "0.5"), normalized for numeric.
    package static func decimal(_ s: String?, _ param: String) throws -> String? {
        guard let s, !s.isEmpty else { return nil }
        guard s.range(of: #"^[0-9]{1,20}(\.[0-9]{1,12})?$"#, options: .regularExpression) != nil else {
            throw MockAPIError.invalid("Invalid decimal: \(s)", param: param)
        }
        return s
    }

    /// The engine's current time for a customer: its test clock's frozen time, or the real time.
    package static func now(_ c: PGConnection, clock: String?) throws -> Int64 {
        if let clock, let v = try load(c, clock, "test_helpers.test_clock"), let t = v["frozen_time"]?.int64Value {
            return t
        }
        return Int64(Date().timeIntervalSince1970)
    }

    // MARK: dispatch

    /// Routes one API call. `path` is split on "/" without the leading "v1".
    package static let routeWords: Set<String> = [
        "customers", "products", "prices", "subscriptions", "subscription_items", "usage_records",
        "usage_record_summaries", "invoices", "test_helpers", "test_clocks", "advance", "webhook_endpoints", "events",
        "billing", "meters", "meter_events", "meter_event_adjustments", "event_summaries", "deactivate", "reactivate",
    ]

    /// `version` is the request's Stripe-Version (the account default when absent): from
    /// 2025-03-31.basil on, usage records and metered prices without a meter are gone.
    package static func handle(_ c: PGConnection, method: String, path: [String], form: FormNode,
                               version: String = accountDefaultVersion) throws -> (Int, JSONValue) {
        let realNow = Int64(Date().timeIntervalSince1970)
        // Path segments that are not resource names are object ids: "subscription_items/si_1/usage_records"
        // becomes the route "subscription_items/:id/usage_records" with id "si_1".
        var id = ""
        let route = method + " " + path.map { seg -> String in
            if routeWords.contains(seg) { return seg }
            id = seg
            return ":id"
        }.joined(separator: "/")
        switch route {
        case "POST customers": return (200, try createCustomer(c, form, realNow))
        case "GET customers/:id": return (200, try require(c, id, "customer", what: "customer", param: "id"))
        case "POST products": return (200, try createProduct(c, form, realNow))
        case "GET products/:id": return (200, try require(c, id, "product", what: "product", param: "id"))
        case "POST prices": return (200, try createPrice(c, form, realNow, version: version))
        case "GET prices/:id": return (200, try require(c, id, "price", what: "price", param: "id"))
        case "POST subscriptions": return (200, try createSubscription(c, form))
        case "GET subscriptions/:id":
            return (200, try render(c, try require(c, id, "subscription", what: "subscription", param: "id")))
        case "POST subscription_items": return (200, try createItem(c, form))
        case "GET subscription_items/:id":
            return (200, try require(c, id, "subscription_item", what: "subscription item", param: "id"))
        case "POST subscription_items/:id/usage_records", "GET subscription_items/:id/usage_record_summaries":
            guard !isBasilOrLater(version) else {
                throw MockAPIError(status: 404, type: "invalid_request_error", code: nil,
                                   message: "Unrecognized request URL (\(method): /v1/\(path.joined(separator: "/"))). Usage records were removed in API version \(basil): record usage with Billing Meters (POST /v1/billing/meter_events).",
                                   param: nil)
            }
            return method == "POST" ? (200, try usageRecord(c, id, form)) : (200, try summaries(c, id))
        case "POST billing/meters": return (200, try createMeter(c, form, realNow))
        case "GET billing/meters": return (200, try listMeters(c, form))
        case "GET billing/meters/:id": return (200, try require(c, id, "billing.meter", what: "billing meter", param: "id"))
        case "POST billing/meters/:id": return (200, try updateMeter(c, id, form, realNow))
        case "POST billing/meters/:id/deactivate": return (200, try setMeterStatus(c, id, active: false, realNow))
        case "POST billing/meters/:id/reactivate": return (200, try setMeterStatus(c, id, active: true, realNow))
        case "GET billing/meters/:id/event_summaries": return (200, try eventSummaries(c, id, form))
        case "POST billing/meter_events": return (200, try createMeterEvent(c, form))
        case "POST billing/meter_event_adjustments": return (200, try createAdjustment(c, form))
        case "GET invoices": return (200, try listInvoices(c, form))
        case "GET invoices/:id": return (200, try require(c, id, "invoice", what: "invoice", param: "id"))
        case "POST test_helpers/test_clocks": return (200, try createClock(c, form, realNow))
        case "GET test_helpers/test_clocks/:id":
            return (200, try require(c, id, "test_helpers.test_clock", what: "test clock", param: "id"))
        case "POST test_helpers/test_clocks/:id/advance": return (200, try advanceClock(c, id, form))
        case "POST webhook_endpoints": return (200, try createEndpoint(c, form, realNow))
        case "GET webhook_endpoints":
            let rows = try c.execute("select data::text as d from billing_mock.objects where object = 'webhook_endpoint' order by created_at")
            return (200, list(try rows.rows.map { try JSONParser.parse(try $0.string("d")).removing("secret") },
                              url: "/v1/webhook_endpoints"))
        case "GET events":
            let limit = min(max(try integer(form["limit"], "limit") ?? 10, 1), 100)
            let rows = try c.execute("""
                select data::text as d from billing_mock.objects
                where object = 'event' and ($1::text is null or data ->> 'type' = $1)
                order by created_at desc, id limit $2
                """, [form["type"]?.string, limit])
            return (200, list(try rows.rows.map { try JSONParser.parse(try $0.string("d")) }, url: "/v1/events"))
        case "GET events/:id": return (200, try require(c, id, "event", what: "event", param: "id"))
        default:
            throw MockAPIError(status: 404, type: "invalid_request_error", code: nil,
                               message: "Unrecognized request URL (\(method): /v1/\(path.joined(separator: "/"))).",
                               param: nil)
        }
    }

    // MARK: customers, products, prices

    package static func createCustomer(_ c: PGConnection, _ form: FormNode, _ now: Int64) throws -> JSONValue {
        var clock: String?
        if let id = form["test_clock"]?.string, !id.isEmpty {
            _ = try require(c, id, "test_helpers.test_clock", what: "test clock", param: "test_clock")
            clock = id
        }
        let id = try newID(c, "cus")
        let v = JSONValue.obj([
            "id": .string(id), "object": "customer", "name": .str(form["name"]?.string),
            "email": .str(form["email"]?.string), "description": .str(form["description"]?.string),
            "metadata": metadata(form), "test_clock": .str(clock), "created": .int(now), "livemode": .bool(false),
        ])
        try insert(c, id, "customer", v)
        return v
    }

    package static func createProduct(_ c: PGConnection, _ form: FormNode, _ now: Int64) throws -> JSONValue {
        guard let name = form["name"]?.string, !name.isEmpty else { throw MockAPIError.missing("name") }
        let id = try form["id"]?.string ?? newID(c, "prod")
        if try load(c, id, "product") != nil {
            throw MockAPIError.invalid("Product already exists.", param: "id", code: "resource_already_exists")
        }
        let v = JSONValue.obj([
            "id": .string(id), "object": "product", "name": .string(name), "active": .bool(true),
            "metadata": metadata(form), "created": .int(now), "livemode": .bool(false),
        ])
        try insert(c, id, "product", v)
        return v
    }

    package static func createPrice(_ c: PGConnection, _ form: FormNode, _ now: Int64,
                                    version: String = accountDefaultVersion) throws -> JSONValue {
        guard let currency = form["currency"]?.string?.lowercased(), !currency.isEmpty else { throw MockAPIError.missing("currency") }
        guard currency.range(of: "^[a-z]{3}$", options: .regularExpression) != nil else {
            throw MockAPIError.invalid("Invalid currency: \(currency)", param: "currency")
        }
        var product = form["product"]?.string
        if product == nil, let name = form["product_data"]?["name"]?.string {
            product = try createProduct(c, .map(["name": .value(name)]), now)["id"]?.stringValue
        }
        guard let product else { throw MockAPIError.missing("product") }
        _ = try require(c, product, "product", what: "product", param: "product")

        let scheme = form["billing_scheme"]?.string ?? "per_unit"
        guard scheme == "per_unit" || scheme == "tiered" else {
            throw MockAPIError.invalid("Invalid billing_scheme: must be one of per_unit or tiered", param: "billing_scheme")
        }
        let unitAmount = try integer(form["unit_amount"], "unit_amount")
        let unitAmountDecimal = try decimal(form["unit_amount_decimal"]?.string, "unit_amount_decimal")
            ?? unitAmount.map { String($0) }
        var tiers: [JSONValue] = []
        var tiersMode: String?
        if scheme == "tiered" {
            guard let mode = form["tiers_mode"]?.string else { throw MockAPIError.missing("tiers_mode") }
            guard mode == "graduated" || mode == "volume" else {
                throw MockAPIError.invalid("Invalid tiers_mode: must be one of graduated or volume", param: "tiers_mode")
            }
            tiersMode = mode
            let given = form["tiers"]?.list ?? []
            guard !given.isEmpty else { throw MockAPIError.missing("tiers") }
            var previous: Int64 = 0
            for (i, t) in given.enumerated() {
                let upTo = t["up_to"]?.string
                let bound: Int64?
                if upTo == "inf" { bound = nil } else {
                    guard let s = upTo, let b = Int64(s), b > previous else {
                        throw MockAPIError.invalid("tiers[\(i)][up_to] must be an increasing integer or 'inf'", param: "tiers[\(i)][up_to]")
                    }
                    bound = b; previous = b
                }
                if bound == nil && i != given.count - 1 {
                    throw MockAPIError.invalid("Only the last tier may have up_to=inf", param: "tiers[\(i)][up_to]")
                }
                if bound != nil && i == given.count - 1 {
                    throw MockAPIError.invalid("The last tier must have up_to=inf", param: "tiers[\(i)][up_to]")
                }
                let ua = try integer(t["unit_amount"], "tiers[\(i)][unit_amount]")
                let uad = try decimal(t["unit_amount_decimal"]?.string, "tiers[\(i)][unit_amount_decimal]") ?? ua.map { String($0) }
                let fa = try integer(t["flat_amount"], "tiers[\(i)][flat_amount]")
                let fad = try decimal(t["flat_amount_decimal"]?.string, "tiers[\(i)][flat_amount_decimal]") ?? fa.map { String($0) }
                tiers.append(.obj([
                    "up_to": bound.map { .int($0) } ?? .null,
                    "unit_amount": ua.map { .int($0) } ?? .null, "unit_amount_decimal": .str(uad),
                    "flat_amount": fa.map { .int($0) } ?? .null, "flat_amount_decimal": .str(fad),
                ]))
            }
        } else if unitAmountDecimal == nil {
            throw MockAPIError.missing("unit_amount")
        }

        var recurring: JSONValue = .null
        var type = "one_time"
        if let r = form["recurring"] {
            type = "recurring"
            let interval = r["interval"]?.string ?? ""
            guard interval == "month" else {
                throw MockAPIError.invalid("This engine bills monthly: recurring[interval] must be month", param: "recurring[interval]")
            }
            let usage = r["usage_type"]?.string ?? "licensed"
            guard usage == "metered" || usage == "licensed" else {
                throw MockAPIError.invalid("Invalid recurring[usage_type]", param: "recurring[usage_type]")
            }
            // A metered price bills a Billing Meter (recurring[meter]); before basil it could
            // instead aggregate legacy usage records (aggregate_usage).
            let meterID = r["meter"]?.string
            if let meterID {
                guard usage == "metered" else {
                    throw MockAPIError.invalid("recurring[meter] can only be set on a metered price (recurring[usage_type]=metered)",
                                               param: "recurring[meter]")
                }
                let meter = try require(c, meterID, "billing.meter", what: "billing meter", param: "recurring[meter]")
                guard meter["status"]?.stringValue == "active" else {
                    throw MockAPIError.invalid("The meter \(meterID) is inactive: a deactivated meter cannot be attached to a price.",
                                               param: "recurring[meter]")
                }
                if r["aggregate_usage"] != nil {
                    throw MockAPIError.invalid("recurring[aggregate_usage] cannot be used with recurring[meter]: the meter's formula aggregates.",
                                               param: "recurring[aggregate_usage]")
                }
            } else if isBasilOrLater(version) {
                if r["aggregate_usage"] != nil {
                    throw MockAPIError.invalid("Received unknown parameter: recurring[aggregate_usage] (removed in API version \(basil)).",
                                               param: "recurring[aggregate_usage]", code: "parameter_unknown")
                }
                if usage == "metered" {
                    throw MockAPIError.invalid("A metered price needs a meter: set recurring[meter] (API version \(basil) and later).",
                                               param: "recurring[meter]", code: "parameter_missing")
                }
            }
            let agg = meterID != nil ? nil : r["aggregate_usage"]?.string ?? (usage == "metered" ? "sum" : nil)
            if let agg, !["sum", "max", "last_during_period", "last_ever"].contains(agg) {
                throw MockAPIError.invalid("Invalid recurring[aggregate_usage]", param: "recurring[aggregate_usage]")
            }
            recurring = .obj(["interval": "month", "interval_count": .int(1), "usage_type": .string(usage),
                              "aggregate_usage": .str(agg), "meter": .str(meterID)])
        }
        var transform: JSONValue = .null
        if let t = form["transform_quantity"] {
            guard let d = try integer(t["divide_by"], "transform_quantity[divide_by]"), d > 0 else {
                throw MockAPIError.invalid("transform_quantity[divide_by] must be a positive integer", param: "transform_quantity[divide_by]")
            }
            let round = t["round"]?.string ?? "up"
            guard round == "up" || round == "down" else {
                throw MockAPIError.invalid("transform_quantity[round] must be up or down", param: "transform_quantity[round]")
            }
            guard scheme == "per_unit" else {
                throw MockAPIError.invalid("transform_quantity is only for per_unit prices", param: "transform_quantity")
            }
            transform = .obj(["divide_by": .int(d), "round": .string(round)])
        }
        let id = try newID(c, "price")
        let v = JSONValue.obj([
            "id": .string(id), "object": "price", "active": .bool(true), "billing_scheme": .string(scheme),
            "currency": .string(currency), "product": .string(product), "type": .string(type),
            "unit_amount": unitAmount.map { .int($0) } ?? .null, "unit_amount_decimal": .str(scheme == "per_unit" ? unitAmountDecimal : nil),
            "recurring": recurring, "tiers_mode": .str(tiersMode), "tiers": tiersMode == nil ? .null : .array(tiers),
            "transform_quantity": transform, "nickname": .str(form["nickname"]?.string),
            "lookup_key": .str(form["lookup_key"]?.string), "metadata": metadata(form),
            "created": .int(now), "livemode": .bool(false),
        ])
        try insert(c, id, "price", v)
        return v
    }

    // MARK: subscriptions

    /// Unix time of `t` moved by `months` calendar months in UTC (Postgres does the calendar).
    package static func addMonths(_ c: PGConnection, _ t: Int64, _ months: Int) throws -> Int64 {
        try c.execute("select extract(epoch from (pg_catalog.to_timestamp($1::bigint) at time zone 'UTC' + make_interval(months => $2::int)) at time zone 'UTC')::bigint as t",
                      [t, months]).single().int("t")
    }

    package static func createItemObject(_ c: PGConnection, subscription: String, priceID: String, param: String, now: Int64) throws -> JSONValue {
        let price = try require(c, priceID, "price", what: "price", param: param)
        guard price["recurring"]?.objectValue != nil else {
            throw MockAPIError.invalid("The price \(priceID) is not recurring: a subscription needs a recurring price", param: param)
        }
        let id = try newID(c, "si")
        let v = JSONValue.obj([
            "id": .string(id), "object": "subscription_item", "subscription": .string(subscription), "price": price,
            "quantity": price["recurring"]?["usage_type"]?.stringValue == "metered" ? .null : .int(1),
            "metadata": .object([]), "created": .int(now),
        ])
        try insert(c, id, "subscription_item", v)
        return v
    }

    package static func render(_ c: PGConnection, _ sub: JSONValue) throws -> JSONValue {
        let id = sub["id"]?.stringValue ?? ""
        let rows = try c.execute("""
            select data::text as d from billing_mock.objects
            where object = 'subscription_item' and data ->> 'subscription' = $1 order by created_at, id
            """, [id])
        let items = try rows.rows.map { try JSONParser.parse(try $0.string("d")) }
        return sub.setting("items", .obj([
            "object": "list", "data": .array(items), "has_more": .bool(false), "total_count": .int(Int64(items.count)),
            "url": .string("/v1/subscription_items?subscription=\(id)"),
        ]))
    }

    package static func createSubscription(_ c: PGConnection, _ form: FormNode) throws -> JSONValue {
        let customer = try require(c, form["customer"]?.string, "customer", what: "customer", param: "customer")
        let customerID = customer["id"]!.stringValue!
        let clock = customer["test_clock"]?.stringValue
        let now = try now(c, clock: clock)
        let items = form["items"]?.list ?? []
        guard !items.isEmpty else { throw MockAPIError.missing("items") }
        let start = try integer(form["backdate_start_date"], "backdate_start_date") ?? now
        guard start <= now else { throw MockAPIError.invalid("backdate_start_date must be in the past", param: "backdate_start_date") }
        let anchor = try integer(form["billing_cycle_anchor"], "billing_cycle_anchor") ?? start
        guard anchor >= start else {
            throw MockAPIError.invalid("billing_cycle_anchor cannot be before the start date", param: "billing_cycle_anchor")
        }
        // The current period: [start, anchor) when the anchor is still ahead, then months from it.
        var periodStart = start, periodEnd = anchor
        if anchor <= now {
            var k = 0
            periodStart = anchor
            periodEnd = try addMonths(c, anchor, 1)
            while periodEnd <= now {
                k += 1
                periodStart = periodEnd
                periodEnd = try addMonths(c, anchor, k + 1)
            }
        }
        let id = try newID(c, "sub")
        for (i, item) in items.enumerated() {
            guard let price = item["price"]?.string else { throw MockAPIError.missing("items[\(i)][price]") }
            _ = try createItemObject(c, subscription: id, priceID: price, param: "items[\(i)][price]", now: now)
        }
        let v = JSONValue.obj([
            "id": .string(id), "object": "subscription", "customer": .string(customerID), "status": "active",
            "current_period_start": .int(periodStart), "current_period_end": .int(periodEnd),
            "billing_cycle_anchor": .int(anchor), "start_date": .int(start), "created": .int(now),
            "collection_method": "charge_automatically", "cancel_at_period_end": .bool(false),
            "latest_invoice": .null, "test_clock": .str(clock), "metadata": metadata(form), "livemode": .bool(false),
        ])
        try insert(c, id, "subscription", v)
        let rendered = try render(c, v)
        try emit(c, "customer.subscription.created", rendered, at: now)
        return rendered
    }

    package static func createItem(_ c: PGConnection, _ form: FormNode) throws -> JSONValue {
        let sub = try require(c, form["subscription"]?.string, "subscription", what: "subscription", param: "subscription")
        guard let price = form["price"]?.string else { throw MockAPIError.missing("price") }
        let now = try now(c, clock: sub["test_clock"]?.stringValue)
        let item = try createItemObject(c, subscription: sub["id"]!.stringValue!, priceID: price, param: "price", now: now)
        try emit(c, "customer.subscription.updated", try render(c, sub), at: now)
        return item
    }

    // MARK: usage

    package static func usageRecord(_ c: PGConnection, _ itemID: String, _ form: FormNode) throws -> JSONValue {
        let item = try require(c, itemID, "subscription_item", what: "subscription item", param: "subscription_item")
        guard item["price"]?["recurring"]?["usage_type"]?.stringValue == "metered" else {
            throw MockAPIError.invalid("Usage records are only for metered prices", param: "subscription_item")
        }
        guard item["price"]?["recurring"]?["meter"]?.stringValue == nil else {
            throw MockAPIError.invalid("This item's price bills a Billing Meter: record usage with meter events (POST /v1/billing/meter_events), not usage records.",
                                       param: "subscription_item")
        }
        guard let q = form["quantity"]?.string else { throw MockAPIError.missing("quantity") }
        let quantity = try decimal(q, "quantity")!
        let action = form["action"]?.string ?? "increment"
        guard action == "increment" || action == "set" else {
            throw MockAPIError.invalid("Invalid action: must be one of increment or set", param: "action")
        }
        let sub = try require(c, item["subscription"]?.stringValue, "subscription", what: "subscription", param: "subscription")
        let now = try now(c, clock: sub["test_clock"]?.stringValue)
        let ts: Int64
        if let t = form["timestamp"]?.string, t != "now" {
            guard let v = Int64(t) else { throw MockAPIError.invalid("Invalid timestamp: \(t)", param: "timestamp") }
            ts = v
        } else { ts = now }
        let periodStart = sub["current_period_start"]?.int64Value ?? 0
        guard ts >= periodStart else {
            throw MockAPIError.invalid("Cannot create the usage record with this timestamp because timestamps must be after the subscription's last invoice period (or current period start time).", param: "timestamp", code: "timestamp_too_early")
        }
        guard ts <= now + futureTolerance else {
            throw MockAPIError.invalid("Cannot create the usage record with this timestamp because timestamps must be before the current time (or at most 5 minutes in the future).", param: "timestamp", code: "timestamp_in_future")
        }
        let row = try c.execute("""
            insert into billing_mock.usage_records as u (subscription_item, ts, quantity, id)
            values ($1, $2, $3::numeric, billing_mock.new_id('mbur'))
            on conflict (subscription_item, ts) do update
                set quantity = case when $4 = 'set' then excluded.quantity else u.quantity + excluded.quantity end,
                    updated_at = pg_catalog.now(), writes = u.writes + 1
            returning id
            """, [itemID, ts, quantity, action]).single()
        _ = try c.execute("""
            insert into billing_mock.usage_record_log (subscription_item, ts, quantity, action, idempotency_key)
            values ($1, $2, $3::numeric, $4, nullif(pg_catalog.current_setting('billing_mock.idempotency_key', true), ''))
            """, [itemID, ts, quantity, action])
        return .obj([
            "id": .string(try row.string("id")), "object": "usage_record", "livemode": .bool(false),
            "quantity": .number(quantity), "subscription_item": .string(itemID), "timestamp": .int(ts),
        ])
    }

    package static func summaries(_ c: PGConnection, _ itemID: String) throws -> JSONValue {
        let item = try require(c, itemID, "subscription_item", what: "subscription item", param: "subscription_item")
        let sub = try require(c, item["subscription"]?.stringValue, "subscription", what: "subscription", param: "subscription")
        let agg = item["price"]?["recurring"]?["aggregate_usage"]?.stringValue
        // the current period first, then the invoiced ones, newest first
        var periods: [(invoice: String?, start: Int64, end: Int64)] = [
            (nil, sub["current_period_start"]?.int64Value ?? 0, sub["current_period_end"]?.int64Value ?? 0),
        ]
        let invoices = try c.execute("""
            select id, (data ->> 'period_start')::bigint as s, (data ->> 'period_end')::bigint as e
            from billing_mock.objects where object = 'invoice' and data ->> 'subscription' = $1
            order by (data ->> 'period_start')::bigint desc
            """, [sub["id"]!.stringValue!])
        for r in invoices.rows { periods.append((try r.string("id"), try r.int("s"), try r.int("e"))) }
        var data: [JSONValue] = []
        for p in periods {
            let total = try c.execute("select trim_scale(billing_mock.item_usage($1, $2, $3, $4))::text as q",
                                      [itemID, p.start, p.end, agg]).single().string("q")
            data.append(.obj([
                "id": .string("sis_\(itemID.dropFirst(3))_\(p.start)"), "object": "usage_record_summary",
                "invoice": .str(p.invoice), "livemode": .bool(false),
                "period": .obj(["start": .int(p.start), "end": .int(p.end)]),
                "subscription_item": .string(itemID), "total_usage": .number(total),
            ]))
        }
        return list(data, url: "/v1/subscription_items/\(itemID)/usage_record_summaries")
    }

    // MARK: invoices, clocks, webhook endpoints

    package static func listInvoices(_ c: PGConnection, _ form: FormNode) throws -> JSONValue {
        let limit = min(max(try integer(form["limit"], "limit") ?? 10, 1), 100)
        let rows = try c.execute("""
            select data::text as d from billing_mock.objects
            where object = 'invoice'
              and ($1::text is null or data ->> 'customer' = $1)
              and ($2::text is null or data ->> 'subscription' = $2)
            order by (data ->> 'period_start')::bigint desc, id limit $3
            """, [form["customer"]?.string, form["subscription"]?.string, limit])
        return list(try rows.rows.map { try JSONParser.parse(try $0.string("d")) }, url: "/v1/invoices")
    }

    package static func createClock(_ c: PGConnection, _ form: FormNode, _ now: Int64) throws -> JSONValue {
        guard let frozen = try integer(form["frozen_time"], "frozen_time") else { throw MockAPIError.missing("frozen_time") }
        let id = try newID(c, "clock")
        let v = JSONValue.obj([
            "id": .string(id), "object": "test_helpers.test_clock", "frozen_time": .int(frozen),
            "name": .str(form["name"]?.string), "status": "ready", "status_details": .object([]),
            "deletes_after": .int(frozen + 30 * 86400), "created": .int(now), "livemode": .bool(false),
        ])
        try insert(c, id, "test_helpers.test_clock", v)
        return v
    }

    /// Moves a test clock forward and bills every period of its customers that ended by then.
    package static func advanceClock(_ c: PGConnection, _ id: String, _ form: FormNode) throws -> JSONValue {
        let clock = try require(c, id, "test_helpers.test_clock", what: "test clock", param: "test_clock")
        guard let frozen = try integer(form["frozen_time"], "frozen_time") else { throw MockAPIError.missing("frozen_time") }
        let current = clock["frozen_time"]?.int64Value ?? 0
        guard frozen > current else {
            throw MockAPIError.invalid("The test clock's frozen_time can only move forward (now \(current)).", param: "frozen_time")
        }
        _ = try c.execute("select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext($1))", ["billing_mock.clock." + id])
        let v = clock.setting("frozen_time", .int(frozen)).setting("status", "ready")
        try update(c, id, v)
        _ = try c.execute("select billing_mock.close_periods($1, $2)", [id, frozen])
        return v
    }

    package static func createEndpoint(_ c: PGConnection, _ form: FormNode, _ now: Int64) throws -> JSONValue {
        guard let url = form["url"]?.string, !url.isEmpty else { throw MockAPIError.missing("url") }
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw MockAPIError.invalid("Invalid URL: must start with http:// or https://", param: "url")
        }
        let events = form["enabled_events"]?.list.compactMap { $0.string } ?? []
        guard !events.isEmpty else { throw MockAPIError.missing("enabled_events") }
        let id = try newID(c, "we")
        let secret = "whsec_" + (try c.execute("select pg_catalog.md5(pg_catalog.gen_random_uuid()::text) as s").single().string("s"))
        let v = JSONValue.obj([
            "id": .string(id), "object": "webhook_endpoint", "url": .string(url),
            "enabled_events": .array(events.map(JSONValue.string)), "status": "enabled", "secret": .string(secret),
            "api_version": "2024-06-20", "metadata": metadata(form), "created": .int(now), "livemode": .bool(false),
        ])
        try insert(c, id, "webhook_endpoint", v)
        return v
    }
}
