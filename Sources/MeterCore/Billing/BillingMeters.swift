// BillingMeters.swift: the engine's Billing Meters as the product uses them (issue 14): one
// engine meter per billed meter of ours, summing hourly totals and pre-aggregated by hour (the
// newest event of an hour is its total, as action=set was), and prices per its unit.

import Crypto
import Foundation
import MeterWire

public enum BillingMeters {
    /// The engine formula for one of our aggregations: a max meter sends running maxima and a
    /// latest meter running last values, and the engine takes the last (decision 102); every
    /// other sends hourly totals to sum.
    public static func formula(forAggregation aggregation: String) -> String {
        aggregation == "max" || aggregation == "latest" ? "last" : "sum"
    }

    /// The id of the engine's meter for `eventName`: created (`formula`, hourly window), or the
    /// existing one when the event name is already taken (an event name is one meter's).
    public static func ensure(client: BillingClient, eventName: String, displayName: String,
                              formula: String = "sum") async throws -> String {
        do {
            let m = try await client.post("/v1/billing/meters", [
                ("display_name", displayName), ("event_name", eventName), ("default_aggregation[formula]", formula),
                ("event_time_window", "hour"),
            ], idempotencyKey: "meter-billing-meter-\(eventName)", version: client.configuration.apiVersion)
            if let id = m["id"]?.stringValue { return id }
        } catch {
            guard error.code == "resource_already_exists" else { throw error }
        }
        if let m = try await find(client: client, eventName: eventName), let id = m["id"]?.stringValue {
            guard m["default_aggregation"]?["formula"]?.stringValue == formula,
                  m["event_time_window"]?.stringValue == "hour" else {
                throw BillingAPIError(status: nil, type: nil, code: "meter_mismatch",
                                      message: "the engine's meter \(id) for event name \(eventName) is not formula \(formula) with event_time_window hour; choose another --event-name",
                                      notSent: true)
            }
            return id
        }
        throw BillingAPIError(status: nil, type: nil, code: nil, message: "the engine neither created nor listed a meter for \(eventName)")
    }

    /// The engine's meter of `eventName` (active or not), or nil: its meters listed page by page.
    public static func find(client: BillingClient, eventName: String) async throws -> JSONValue? {
        var after: String?
        while true {
            var query = [("limit", "100")]
            if let after { query.append(("starting_after", after)) }
            let page = try await client.get("/v1/billing/meters", query: query, version: client.configuration.apiVersion)
            let meters = page["data"]?.arrayValue ?? []
            if let m = meters.first(where: { $0["event_name"]?.stringValue == eventName }) { return m }
            guard page["has_more"]?.boolValue == true, let last = meters.last?["id"]?.stringValue else { return nil }
            after = last
        }
    }

    /// A price per unit of the meter, as a price per unit of 10^-scale of it: the decimal point
    /// moved `scale` places left, exactly ("0.5", 3 -> "0.0005").
    public static func perScaledUnit(_ unit: String, scale: Int) -> String {
        guard scale > 0 else { return unit }
        let parts = unit.split(separator: ".", omittingEmptySubsequences: false)
        var whole = String(parts.first ?? "0")
        let fraction = parts.count > 1 ? String(parts[1]) : ""
        if whole.count <= scale { whole = String(repeating: "0", count: scale - whole.count + 1) + whole }
        let cut = whole.index(whole.endIndex, offsetBy: -scale)
        var out = String(whole[..<cut]) + "." + String(whole[cut...]) + fraction
        while out.hasSuffix("0") { out.removeLast() }
        if out.hasSuffix(".") { out.removeLast() }
        while out.hasPrefix("0") && out.count > 1 && !out.hasPrefix("0.") { out.removeFirst() }
        return out
    }

    /// An Idempotency-Key that is the same for the same parameters in every process.
    public static func key(_ prefix: String, _ params: [(String, String)]) -> String {
        let digest = SHA256.hash(data: Array(params.map { $0.0 + "=" + $0.1 }.joined(separator: "&").utf8))
        return prefix + "-" + digest.prefix(8).map { Hex.byte($0) }.joined()
    }
}
