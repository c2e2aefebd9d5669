// MockMeterStream.swift
//
// API v2 of Billing Meters: POST /v2/billing/meter_event_session (a token valid 15 minutes),
// POST /v2/billing/meter_event_stream (up to 100 events per call, JSON, authenticated by that
// token, answered 200 {} at once and validated "asynchronously": each refused event is reported
// by a v1.billing.meter.error_report_triggered event per meter, or v1.billing.meter.no_meter_found
// for an unknown event name), POST /v2/billing/meter_events (one event, validated synchronously)
// and GET /v2/core/events/{id} (a v2 event with its data).

import Foundation
import PGClient
import MeterWire

extension MockEngine {
    package static let meterEventsPerStreamCall = 100
    package static let meterEventSessionLifetime: Int64 = 15 * 60

    package static func rfc3339(_ seconds: Int64) -> String {
        RFC3339Timestamp(epochMicroseconds: seconds * 1_000_000).iso8601
    }

    /// Routes one v2 call; `path` is split on "/" without the leading "v2".
    package static func handleV2(_ c: PGConnection, method: String, path: [String], body: JSONValue?,
                                 apiKey: String) throws -> (Int, JSONValue) {
        let now = Int64(Date().timeIntervalSince1970)
        switch (method, path) {
        case ("POST", ["billing", "meter_event_session"]):
            return (200, try createSession(c, apiKey: apiKey, now: now))
        case ("POST", ["billing", "meter_event_stream"]):
            return (200, try stream(c, body, now: now))
        case ("POST", ["billing", "meter_events"]):
            let e = try v2Event(body ?? .object([]), index: nil)
            do {
                let v1 = try acceptMeterEvent(c, e, via: "v2")
                return (200, .obj([
                    "object": "v2.billing.meter_event", "created": .string(rfc3339(v1["created"]?.int64Value ?? now)),
                    "event_name": v1["event_name"] ?? .null, "identifier": v1["identifier"] ?? .null, "livemode": .bool(false),
                    "payload": v1["payload"] ?? .null, "timestamp": .string(rfc3339(v1["timestamp"]?.int64Value ?? now)),
                ]))
            } catch var error as MockAPIError {
                // v2 names two of the codes differently.
                if error.code == "meter_event_no_customer_defined" { error.code = "payload_no_customer_defined" }
                if error.code == "meter_event_invalid_value" { error.code = "payload_invalid_value" }
                throw error
            }
        case ("GET", let p) where p.count == 3 && p[0] == "core" && p[1] == "events":
            return (200, try require(c, p[2], "v2.core.event", what: "event", param: "id"))
        default:
            throw MockAPIError(status: 404, type: "invalid_request_error", code: "not_found",
                               message: "Unrecognized request URL (\(method): /v2/\(path.joined(separator: "/"))).", param: nil)
        }
    }

    package static func createSession(_ c: PGConnection, apiKey: String, now: Int64) throws -> JSONValue {
        let id = try newID(c, "mes")
        let token = "mest_" + (try c.execute("select pg_catalog.md5(pg_catalog.gen_random_uuid()::text) || pg_catalog.md5(pg_catalog.gen_random_uuid()::text) as t")
            .single().string("t"))
        _ = try c.execute("""
            insert into billing_mock.meter_event_sessions (token, id, api_key, expires_at)
            values ($1, $2, $3, pg_catalog.now() + make_interval(secs => $4::int))
            """, [token, id, apiKey, meterEventSessionLifetime])
        return .obj([
            "id": .string(id), "object": "v2.billing.meter_event_session", "authentication_token": .string(token),
            "created": .string(rfc3339(now)), "expires_at": .string(rfc3339(now + meterEventSessionLifetime)),
            "livemode": .bool(false),
        ])
    }

    /// The bearer of a stream call: a live session token, else Stripe's 401s.
    package static func authorizeStream(_ c: PGConnection, token: String) throws {
        let row = try c.execute("select expires_at <= pg_catalog.now() as expired from billing_mock.meter_event_sessions where token = $1",
                                [token]).rows.first
        guard let row else {
            throw MockAPIError(status: 401, type: "invalid_request_error", code: nil,
                               message: "Invalid meter event session token: create one with POST /v2/billing/meter_event_session.", param: nil)
        }
        if try row.string("expired") == "t" {
            throw MockAPIError(status: 401, type: "temporary_session_expired", code: "billing_meter_event_session_expired",
                               message: "The temporary session token has expired.", param: nil)
        }
    }

    /// One v2 event object: event_name, payload (string values), identifier, timestamp (RFC 3339).
    package static func v2Event(_ v: JSONValue, index: Int?) throws -> MeterEventInput {
        let at = index.map { "events[\($0)]." } ?? ""
        guard v.objectValue != nil else { throw MockAPIError.invalid("\(at.isEmpty ? "body" : String(at.dropLast())) must be an object") }
        var e = MeterEventInput(v2: true)
        if let n = v["event_name"] {
            guard let s = n.stringValue else { throw MockAPIError.invalid("\(at)event_name must be a string", param: at + "event_name") }
            e.eventName = s
        }
        if let p = v["payload"] {
            guard let members = p.objectValue else { throw MockAPIError.invalid("\(at)payload must be an object", param: at + "payload") }
            var payload: [String: String] = [:]
            for (k, value) in members {
                guard let s = value.stringValue else {
                    throw MockAPIError.invalid("\(at)payload.\(k) must be a string", param: at + "payload." + k)
                }
                payload[k] = s
            }
            e.payload = payload
        }
        if let i = v["identifier"] {
            guard let s = i.stringValue else { throw MockAPIError.invalid("\(at)identifier must be a string", param: at + "identifier") }
            e.identifier = s
        }
        if let t = v["timestamp"] {
            guard let s = t.stringValue, let ts = try? RFC3339Timestamp(parsing: s) else {
                throw MockAPIError.invalid("\(at)timestamp must be an RFC 3339 date-time", param: at + "timestamp")
            }
            e.timestamp = ts.epochMicroseconds >= 0 ? ts.epochMicroseconds / 1_000_000 : (ts.epochMicroseconds - 999_999) / 1_000_000
        }
        return e
    }

    /// Stores the valid events of a stream call; the refused ones are reported by events, never
    /// in the answer (200 {}). A repeated identifier is dropped silently (deduplication).
    package static func stream(_ c: PGConnection, _ body: JSONValue?, now: Int64) throws -> JSONValue {
        guard let events = body?["events"]?.arrayValue else { throw MockAPIError.missing("events") }
        guard !events.isEmpty else { throw MockAPIError.invalid("events must hold at least one event", param: "events") }
        guard events.count <= meterEventsPerStreamCall else {
            throw MockAPIError.invalid("events holds \(events.count) events; at most \(meterEventsPerStreamCall) per request",
                                       param: "events")
        }
        let inputs = try events.enumerated().map { try v2Event($0.element, index: $0.offset) }
        struct Refused { let meter: String?; let name: String?; let identifier: String?; let code: String; let message: String }
        // Judged one by one (shared lookups), stored in one statement; a repeated identifier is
        // dropped silently (deduplication).
        var refused: [Refused] = []
        var valid: [MeterEventRow] = []
        let lookups = MeterEventLookups()
        for e in inputs {
            do {
                valid.append(try judgeMeterEvent(c, e, lookups))
            } catch let error as MockAPIError {
                let meter = try e.eventName.flatMap { try lookups.meter(c, $0) }?["id"]?.stringValue
                refused.append(Refused(meter: error.code == "no_meter" ? nil : meter, name: e.eventName, identifier: e.identifier,
                                       code: error.code ?? "invalid_request", message: error.message))
            }
        }
        _ = try storeMeterEvents(c, valid, via: "v2_stream")
        // One report per meter (and one for events naming no meter), like Stripe's error
        // reports for a validation window (here: this call).
        let groups = Dictionary(grouping: refused) { $0.meter ?? "" }
        for key in groups.keys.sorted() {
            let group = groups[key]!
            let byCode = Dictionary(grouping: group) { $0.code }
            let types: [JSONValue] = byCode.keys.sorted().map { code in
                let samples = byCode[code]!.prefix(5).map { r in
                    JSONValue.obj(["error_message": .string(r.message), "request": .obj(["identifier": .str(r.identifier)])])
                }
                return .obj(["code": .string(code), "error_count": .int(Int64(byCode[code]!.count)), "sample_errors": .array(Array(samples))])
            }
            let data = JSONValue.obj([
                "developer_message_summary": .string(group.count == 1 ? "There is 1 invalid event" : "There are \(group.count) invalid events"),
                "validation_start": .string(rfc3339(now)), "validation_end": .string(rfc3339(now)),
                "reason": .obj(["error_count": .int(Int64(group.count)), "error_types": .array(types)]),
            ])
            let related: JSONValue = key.isEmpty ? .null
                : .obj(["id": .string(key), "type": "billing.meter", "url": .string("/v1/billing/meters/\(key)")])
            let type = key.isEmpty ? "v1.billing.meter.no_meter_found" : "v1.billing.meter.error_report_triggered"
            let report = try c.execute("select billing_mock.emit_thin_event($1, $2::jsonb, $3::jsonb, $4) as id",
                                       [type, related.text, data.text, now]).single().string("id")
            for r in group {
                _ = try c.execute("""
                    insert into billing_mock.meter_event_errors (meter_id, event_name, identifier, code, message, report_id)
                    values ($1, $2, $3, $4, $5, $6)
                    """, [r.meter, r.name, r.identifier, r.code, r.message, report])
            }
        }
        return .object([])
    }
}
