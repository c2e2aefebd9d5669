// MockMeters.swift
//
// Billing Meters, the usage-based billing Stripe has had alone since API version
// 2025-03-31.basil: meters (create, retrieve, list, update, deactivate, reactivate), meter events
// (v1, synchronous here), cancellations of them (meter_event_adjustments), event summaries, and
// the validation every path shares, including the v2 stream's (MockMeterStream). Rules and the
// deliberate deviations from Stripe: docs/billing-mock.md, "Billing Meters".

import Foundation
import PGClient
import MeterWire

extension MockEngine {
    /// The first API version without legacy usage-based billing (usage records, aggregate_usage,
    /// metered prices without a meter). Versions compare by their date prefix.
    package static let basil = "2025-03-31.basil"
    /// Requests without Stripe-Version are served as the mock account's default version, the
    /// last before basil: both the legacy and the Billing Meters APIs answer it.
    package static let accountDefaultVersion = "2025-02-24.acacia"

    package static func isBasilOrLater(_ version: String) -> Bool { version >= basil }

    /// How far back and ahead a meter event's timestamp may be (Stripe: 35 days, 5 minutes).
    package static let meterEventPastWindow: Int64 = 35 * 86_400
    package static let meterEventFutureWindow: Int64 = 300
    /// How long after receipt a meter event may be cancelled (Stripe: 24 hours).
    package static let meterEventCancelWindow: Int64 = 86_400
    /// At most this many significant digits in a meter event's value (Stripe, since 2026-04-22.dahlia).
    package static let meterEventMaxDigits = 15

    // MARK: meters

    package static func createMeter(_ c: PGConnection, _ form: FormNode, _ now: Int64) throws -> JSONValue {
        guard let display = form["display_name"]?.string, !display.isEmpty else { throw MockAPIError.missing("display_name") }
        guard display.count <= 250 else { throw MockAPIError.invalid("display_name is longer than 250 characters", param: "display_name") }
        guard let event = form["event_name"]?.string, !event.isEmpty else { throw MockAPIError.missing("event_name") }
        guard event.count <= 100 else { throw MockAPIError.invalid("event_name is longer than 100 characters", param: "event_name") }
        guard let formula = form["default_aggregation"]?["formula"]?.string else {
            throw MockAPIError.missing("default_aggregation[formula]")
        }
        guard ["sum", "count", "last"].contains(formula) else {
            throw MockAPIError.invalid("Invalid default_aggregation[formula]: must be one of count, last, or sum",
                                       param: "default_aggregation[formula]")
        }
        /// hash[event_payload_key] when the hash is sent (then required, 1-100 characters), else the default.
        func payloadKey(_ hash: String, default fallback: String) throws -> String {
            guard let h = form[hash] else { return fallback }
            let param = "\(hash)[event_payload_key]"
            guard let key = h["event_payload_key"]?.string, !key.isEmpty else { throw MockAPIError.missing(param) }
            guard key.count <= 100 else { throw MockAPIError.invalid("\(param) is longer than 100 characters", param: param) }
            return key
        }
        if let m = form["customer_mapping"] {
            guard let type = m["type"]?.string else { throw MockAPIError.missing("customer_mapping[type]") }
            guard type == "by_id" else {
                throw MockAPIError.invalid("Invalid customer_mapping[type]: must be by_id", param: "customer_mapping[type]")
            }
        }
        let customerKey = try payloadKey("customer_mapping", default: "stripe_customer_id")
        let valueKey = try payloadKey("value_settings", default: "value")
        let window = form["event_time_window"]?.string
        if let window, window != "hour" && window != "day" {
            throw MockAPIError.invalid("Invalid event_time_window: must be one of day or hour", param: "event_time_window")
        }
        // An event name belongs to one meter (active or not).
        _ = try c.execute("select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext($1))", ["billing_mock.meter_event_name." + event])
        if try meterFor(c, eventName: event) != nil {
            throw MockAPIError.invalid("A meter with event_name '\(event)' already exists; an event name can be used by one meter only.",
                                       param: "event_name", code: "resource_already_exists")
        }
        let id = try newID(c, "mtr")
        let v = JSONValue.obj([
            "id": .string(id), "object": "billing.meter", "created": .int(now), "updated": .int(now),
            "customer_mapping": .obj(["event_payload_key": .string(customerKey), "type": "by_id"]),
            "default_aggregation": .obj(["formula": .string(formula)]),
            "display_name": .string(display), "event_name": .string(event), "event_time_window": .str(window),
            "livemode": .bool(false), "status": "active", "status_transitions": .obj(["deactivated_at": .null]),
            "value_settings": .obj(["event_payload_key": .string(valueKey)]),
        ])
        try insert(c, id, "billing.meter", v)
        try emit(c, "billing.meter.created", v, at: now)
        return v
    }

    package static func meterFor(_ c: PGConnection, eventName: String) throws -> JSONValue? {
        guard let row = try c.execute("""
            select data::text as d from billing_mock.objects where object = 'billing.meter' and data ->> 'event_name' = $1
            """, [eventName]).rows.first else { return nil }
        return try JSONParser.parse(try row.string("d"))
    }

    package static func listMeters(_ c: PGConnection, _ form: FormNode) throws -> JSONValue {
        let limit = min(max(try integer(form["limit"], "limit") ?? 10, 1), 100)
        let status = form["status"]?.string
        if let status, status != "active" && status != "inactive" {
            throw MockAPIError.invalid("Invalid status: must be one of active or inactive", param: "status")
        }
        // Newest first; starting_after is the last id of the previous page.
        let rows = try c.execute("""
            select data::text as d from billing_mock.objects o
            where object = 'billing.meter' and ($1::text is null or data ->> 'status' = $1)
              and ($2::text is null or (o.created_at, o.id) < (select a.created_at, a.id from billing_mock.objects a where a.id = $2))
            order by created_at desc, id desc limit $3 + 1
            """, [status, form["starting_after"]?.string, limit]).rows
        let data = try rows.prefix(Int(limit)).map { try JSONParser.parse(try $0.string("d")) }
        return .obj(["object": "list", "data": .array(data), "has_more": .bool(rows.count > limit), "url": "/v1/billing/meters"])
    }

    package static func updateMeter(_ c: PGConnection, _ id: String, _ form: FormNode, _ now: Int64) throws -> JSONValue {
        var m = try require(c, id, "billing.meter", what: "billing meter", param: "id")
        for (key, _) in form.dictionary where key != "display_name" && key != "expand" {
            throw MockAPIError.invalid("Received unknown parameter: \(key). A meter's \(key) cannot be changed; only display_name can.",
                                       param: key, code: "parameter_unknown")
        }
        if let display = form["display_name"]?.string {
            guard !display.isEmpty, display.count <= 250 else {
                throw MockAPIError.invalid("display_name must be 1 to 250 characters", param: "display_name")
            }
            m = m.setting("display_name", .string(display)).setting("updated", .int(now))
            try update(c, id, m)
            try emit(c, "billing.meter.updated", m, at: now)
        }
        return m
    }

    package static func setMeterStatus(_ c: PGConnection, _ id: String, active: Bool, _ now: Int64) throws -> JSONValue {
        var m = try require(c, id, "billing.meter", what: "billing meter", param: "id")
        let current = m["status"]?.stringValue == "active"
        guard current != active else {
            throw MockAPIError.invalid("The meter \(id) is already \(active ? "active" : "inactive").", param: "id")
        }
        m = m.setting("status", .string(active ? "active" : "inactive")).setting("updated", .int(now))
            .setting("status_transitions", .obj(["deactivated_at": active ? .null : .int(now)]))
        try update(c, id, m)
        try emit(c, active ? "billing.meter.reactivated" : "billing.meter.deactivated", m, at: now)
        return m
    }

    // MARK: meter events

    /// One meter event as sent (v1 form, v2 JSON): what the shared validation reads.
    package struct MeterEventInput: Sendable {
        package var eventName: String?
        package var payload: [String: String]?
        package var identifier: String?
        package var timestamp: Int64?
        /// Where a field is named in errors: "payload[value]" (v1) or "payload.value" (v2).
        package var v2 = false
        package func param(_ path: [String]) -> String {
            v2 ? path.joined(separator: ".") : path[0] + path.dropFirst().map { "[\($0)]" }.joined()
        }
    }

    /// What the events of one call share, looked up once per call: meters by event name,
    /// customers by id, and the engine's time per test clock (a stream call of 100 events for
    /// one meter reads each once instead of 100 times).
    package final class MeterEventLookups {
        var meters: [String: JSONValue?] = [:]
        var customers: [String: JSONValue?] = [:]
        var times: [String: Int64] = [:]
        package init() {}

        func meter(_ c: PGConnection, _ name: String) throws -> JSONValue? {
            if let m = meters[name] { return m }
            let m = try meterFor(c, eventName: name)
            meters[name] = m
            return m
        }
        func customer(_ c: PGConnection, _ id: String) throws -> JSONValue? {
            if let v = customers[id] { return v }
            let v = try load(c, id, "customer")
            customers[id] = v
            return v
        }
        func now(_ c: PGConnection, clock: String?) throws -> Int64 {
            if let t = times[clock ?? ""] { return t }
            let t = try MockEngine.now(c, clock: clock)
            times[clock ?? ""] = t
            return t
        }
    }

    /// A meter event judged valid, ready to store.
    package struct MeterEventRow {
        let identifier: String, meterID: String, name: String, customer: String, value: String
        let ts: Int64, received: Int64, payload: [(String, String)]

        /// Its v1 representation.
        var object: JSONValue {
            .obj([
                "object": "billing.meter_event", "created": .int(received), "event_name": .string(name),
                "identifier": .string(identifier), "livemode": .bool(false),
                "payload": .object(payload.map { ($0.0, .string($0.1)) }), "timestamp": .int(ts),
            ])
        }
    }

    /// Validates one meter event and stores it; its v1 representation. Throws a MockAPIError
    /// whose code is Stripe's (no_meter, archived_meter, meter_event_no_customer_defined,
    /// duplicate_meter_event, ...).
    package static func acceptMeterEvent(_ c: PGConnection, _ e: MeterEventInput, via: String) throws -> JSONValue {
        let row = try judgeMeterEvent(c, e, MeterEventLookups())
        guard try storeMeterEvents(c, [row], via: via) == [true] else {
            throw MockAPIError.invalid("A meter event with identifier '\(row.identifier)' has already been submitted.",
                                       param: "identifier", code: "duplicate_meter_event")
        }
        return row.object
    }

    /// Stripe's checks of one meter event, in its order; stores nothing.
    package static func judgeMeterEvent(_ c: PGConnection, _ e: MeterEventInput, _ lookups: MeterEventLookups) throws -> MeterEventRow {
        guard let name = e.eventName, !name.isEmpty else { throw MockAPIError.missing("event_name") }
        guard name.count <= 100 else { throw MockAPIError.invalid("event_name is longer than 100 characters", param: "event_name") }
        guard let payload = e.payload else { throw MockAPIError.missing("payload") }
        if let id = e.identifier {
            guard !id.isEmpty, id.count <= 100 else {
                throw MockAPIError.invalid("identifier must be 1 to 100 characters", param: "identifier")
            }
        }
        guard let meter = try lookups.meter(c, name) else {
            throw MockAPIError.invalid("No meter exists for event_name '\(name)'.", param: "event_name", code: "no_meter")
        }
        let meterID = meter["id"]!.stringValue!
        guard meter["status"]?.stringValue == "active" else {
            throw MockAPIError.invalid("The meter \(meterID) for event_name '\(name)' is inactive: it accepts no events.",
                         param: "event_name", code: "archived_meter")
        }
        let customerKey = meter["customer_mapping"]?["event_payload_key"]?.stringValue ?? "stripe_customer_id"
        guard let customerID = payload[customerKey], !customerID.isEmpty else {
            throw MockAPIError.invalid("Customer mapping key \(customerKey) not found in payload.",
                         param: e.param(["payload", customerKey]), code: "meter_event_no_customer_defined")
        }
        guard let customer = try lookups.customer(c, customerID) else {
            throw MockAPIError.invalid("No such customer: '\(customerID)'", param: e.param(["payload", customerKey]), code: "meter_event_customer_not_found")
        }
        let valueKey = meter["value_settings"]?["event_payload_key"]?.stringValue ?? "value"
        let formula = meter["default_aggregation"]?["formula"]?.stringValue ?? "sum"
        let raw = payload[valueKey] ?? (formula == "count" ? "1" : nil)
        guard let raw else {
            throw MockAPIError.invalid("Value key \(valueKey) not found in payload.", param: e.param(["payload", valueKey]), code: "meter_event_invalid_value")
        }
        guard raw.range(of: #"^-?[0-9]+$"#, options: .regularExpression) != nil else {
            throw MockAPIError.invalid("The value in the event payload must be a whole number; got '\(raw.prefix(40))'.",
                         param: e.param(["payload", valueKey]), code: "meter_event_invalid_value")
        }
        let digits = raw.drop { $0 == "-" }.drop { $0 == "0" }
        guard digits.count <= meterEventMaxDigits else {
            throw MockAPIError.invalid("The value in the event payload can have at most \(meterEventMaxDigits) digits. Received \(raw.prefix(40)).",
                         param: e.param(["payload", valueKey]), code: "meter_event_value_too_many_digits")
        }
        let now = try lookups.now(c, clock: customer["test_clock"]?.stringValue)
        let ts = e.timestamp ?? now
        guard ts >= now - meterEventPastWindow else {
            throw MockAPIError.invalid("The timestamp \(ts) is more than 35 days before the current time (\(now)); meter events must be within the past 35 days.",
                         param: "timestamp", code: "timestamp_too_far_in_past")
        }
        guard ts <= now + meterEventFutureWindow else {
            throw MockAPIError.invalid("The timestamp \(ts) is more than 5 minutes after the current time (\(now)).", param: "timestamp", code: "timestamp_in_future")
        }
        return MeterEventRow(identifier: try e.identifier ?? newID(c, "mev"), meterID: meterID, name: name, customer: customerID,
                             value: raw, ts: ts, received: now, payload: payload.sorted { $0.key < $1.key })
    }

    /// Stores judged events in one statement, in order; per row, whether it was stored (false: its
    /// identifier was already taken, by an earlier call or an earlier row of the same call).
    package static func storeMeterEvents(_ c: PGConnection, _ rows: [MeterEventRow], via: String) throws -> [Bool] {
        guard !rows.isEmpty else { return [] }
        let stored = try c.execute("""
            insert into billing_mock.meter_events (identifier, meter_id, event_name, customer, value, ts, received_at, payload, via)
            select r.identifier, r.meter_id, r.event_name, r.customer, r.value::numeric, r.ts::bigint, r.received::bigint,
                   r.payload::jsonb, $2
            from rows from (jsonb_to_recordset($1::jsonb)
                            as (identifier text, meter_id text, event_name text, customer text, value text, ts text,
                                received text, payload text)) with ordinality
                 as r(identifier, meter_id, event_name, customer, value, ts, received, payload, n)
            order by r.n
            on conflict (identifier) do nothing
            returning identifier
            """, [JSONValue.array(rows.map { r in
                .obj(["identifier": .string(r.identifier), "meter_id": .string(r.meterID), "event_name": .string(r.name),
                      "customer": .string(r.customer), "value": .string(r.value), "ts": .string(String(r.ts)),
                      "received": .string(String(r.received)),
                      "payload": .string(JSONValue.object(r.payload.map { ($0.0, .string($0.1)) }).text)])
            }).text, via]).rows
        var taken = Set(try stored.map { try $0.string("identifier") })
        // The first row of an identifier is the stored one; a later repeat in the call was dropped.
        return rows.map { taken.remove($0.identifier) != nil }
    }

    package static func createMeterEvent(_ c: PGConnection, _ form: FormNode) throws -> JSONValue {
        var payload: [String: String]?
        if let p = form["payload"] {
            payload = [:]
            for (k, v) in p.dictionary {
                guard let s = v.string else { throw MockAPIError.invalid("payload[\(k)] must be a string", param: "payload[\(k)]") }
                payload![k] = s
            }
        }
        let e = MeterEventInput(eventName: form["event_name"]?.string, payload: payload, identifier: form["identifier"]?.string,
                                timestamp: try integer(form["timestamp"], "timestamp"))
        return try acceptMeterEvent(c, e, via: "v1")
    }

    /// type=cancel of an event received within the last 24 hours (engine time of its customer).
    package static func createAdjustment(_ c: PGConnection, _ form: FormNode) throws -> JSONValue {
        guard let name = form["event_name"]?.string, !name.isEmpty else { throw MockAPIError.missing("event_name") }
        guard let type = form["type"]?.string else { throw MockAPIError.missing("type") }
        guard type == "cancel" else {
            throw MockAPIError.invalid("Invalid type: must be cancel (time period cancellation is not supported)", param: "type")
        }
        guard let identifier = form["cancel"]?["identifier"]?.string, !identifier.isEmpty else {
            throw MockAPIError.missing("cancel[identifier]")
        }
        guard let row = try c.execute("""
            select e.received_at, e.cancelled_at, c.data ->> 'test_clock' as clock
            from billing_mock.meter_events e left join billing_mock.objects c on c.id = e.customer
            where e.identifier = $1 and e.event_name = $2 for update of e
            """, [identifier, name]).rows.first else {
            throw MockAPIError.invalid("No meter event with identifier '\(identifier)' for event_name '\(name)'.",
                                       param: "cancel[identifier]", code: "resource_missing")
        }
        if try row.optionalInt("cancelled_at") == nil {
            let now = try Self.now(c, clock: try row.optionalString("clock"))
            guard now - (try row.int("received_at")) <= meterEventCancelWindow else {
                throw MockAPIError.invalid("You can only cancel events within 24 hours of receiving them; '\(identifier)' was received at \(try row.int("received_at")).",
                                           param: "cancel[identifier]")
            }
            _ = try c.execute("update billing_mock.meter_events set cancelled_at = $2 where identifier = $1", [identifier, now])
        }
        return .obj([
            "object": "billing.meter_event_adjustment", "livemode": .bool(false), "status": "pending",
            "event_name": .string(name), "type": "cancel", "cancel": .obj(["identifier": .string(identifier)]),
        ])
    }

    // MARK: summaries

    /// GET /v1/billing/meters/{id}/event_summaries: one summary for [start_time, end_time), or
    /// one per hour or UTC day with value_grouping_window (windows without events are left out),
    /// oldest first, `limit` per page (starting_after: a summary id of the previous page).
    package static func eventSummaries(_ c: PGConnection, _ id: String, _ form: FormNode) throws -> JSONValue {
        _ = try require(c, id, "billing.meter", what: "billing meter", param: "id")
        guard let customer = form["customer"]?.string, !customer.isEmpty else { throw MockAPIError.missing("customer") }
        _ = try require(c, customer, "customer", what: "customer", param: "customer")
        guard let start = try integer(form["start_time"], "start_time") else { throw MockAPIError.missing("start_time") }
        guard let end = try integer(form["end_time"], "end_time") else { throw MockAPIError.missing("end_time") }
        guard start % 60 == 0 else { throw MockAPIError.invalid("start_time must be aligned with minute boundaries", param: "start_time") }
        guard end % 60 == 0 else { throw MockAPIError.invalid("end_time must be aligned with minute boundaries", param: "end_time") }
        guard end > start else { throw MockAPIError.invalid("end_time must be after start_time", param: "end_time") }
        let limit = min(max(try integer(form["limit"], "limit") ?? 10, 1), 100)
        let url = "/v1/billing/meters/\(id)/event_summaries"
        func summary(_ s: Int64, _ e: Int64, _ value: String) -> JSONValue {
            .obj(["id": .string("mtrusg_\(s)_\(e)_\(id.dropFirst(4).prefix(12))"), "object": "billing.meter_event_summary",
                  "aggregated_value": .number(value), "end_time": .int(e), "livemode": .bool(false),
                  "meter": .string(id), "start_time": .int(s)])
        }
        guard let window = form["value_grouping_window"]?.string else {
            let v = try c.execute("select trim_scale(billing_mock.meter_value($1, $2, $3, $4))::text as v",
                                  [id, customer, start, end]).single().string("v")
            return .obj(["object": "list", "data": .array([summary(start, end, v)]), "has_more": .bool(false), "url": .string(url)])
        }
        let size: Int64
        switch window {
        case "hour": size = 3600
        case "day": size = 86_400
        default: throw MockAPIError.invalid("Invalid value_grouping_window: must be one of day or hour", param: "value_grouping_window")
        }
        guard start % size == 0, end % size == 0 else {
            throw MockAPIError.invalid("With value_grouping_window=\(window), start_time and end_time must be aligned with \(window == "hour" ? "hour" : "UTC day") boundaries",
                                       param: start % size == 0 ? "end_time" : "start_time")
        }
        var after = start
        if let cursor = form["starting_after"]?.string {
            let parts = cursor.split(separator: "_")
            guard parts.count >= 3, parts[0] == "mtrusg", let s = Int64(parts[1]) else {
                throw MockAPIError.invalid("Invalid starting_after: \(cursor)", param: "starting_after")
            }
            after = s + size
        }
        let rows = try c.execute("""
            select w.s, trim_scale(billing_mock.meter_value($1, $2, w.s, w.s + $5))::text as v
            from (select distinct e.ts - e.ts % $5 as s from billing_mock.meter_events e
                  where e.meter_id = $1 and e.customer = $2 and e.ts >= $3 and e.ts < $4 and e.cancelled_at is null) w
            order by w.s limit $6
            """, [id, customer, after, end, size, limit + 1]).rows
        let data = try rows.prefix(Int(limit)).map { r in summary(try r.int("s"), try r.int("s") + size, try r.string("v")) }
        return .obj(["object": "list", "data": .array(data), "has_more": .bool(rows.count > limit), "url": .string(url)])
    }
}
