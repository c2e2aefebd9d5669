// EngineUsage.swift: the billing engine's own usage figure of a period, asked before a close and
// stored in meter.billing_usage (issue 14). The reconciliation's "synced to engine" column reads
// it: what the engine holds, not what it answered 2xx to.
//
// For each billed (customer, meter, priced filter) of the period (meter.billing_usage_targets; a
// filter's engine meter is its own, decision 110):
//   meter_events    GET /v1/billing/meters/{mtr}/event_summaries (customer, start_time, end_time:
//                   the period's bounds), the summary's aggregated_value
//   usage_records   GET /v1/subscription_items/{si}/usage_record_summaries, Σ total_usage of the
//                   summaries whose period overlaps ours (as engine invoice lines are matched)
// recorded with meter.billing_usage_record (engine value / 10^value_scale: our unit).

import Foundation
import PGClient
import MeterWire

public enum EngineUsage {
    public struct Target: Sendable {
        let customerID: Int64, meterID: Int64
        let customer: String, meter: String
        /// The priced filter (its JSON text; "{}": the meter whole): its own engine meter.
        let filter: String
        let billingCustomer: String, item: String
        let api: String, eventName: String?, scale: Int
        let start: Int64, end: Int64
    }

    public struct Fetched: Sendable {
        let target: Target
        let object: String
        let value: String
    }

    /// Asks the engine for every billed pair of `period` and records the answers; returns how many
    /// were recorded. Up to `width` requests in flight. A pair whose engine meter cannot be found
    /// is an error naming it (the reconciliation would otherwise say "not fetched" without a why).
    @discardableResult
    public static func fetch(_ c: PGConnection, client: BillingClient, period: String, width: Int = 8,
                             say: (String) -> Void) async throws -> Int {
        let targets = try c.execute("""
            select customer_id, meter_id, customer, meter, price_filter::text as filter, billing_customer_id, subscription_item_id,
                   engine_api, event_name,
                   value_scale, extract(epoch from period_start)::bigint as s, extract(epoch from period_end)::bigint as e
            from meter.billing_usage_targets($1)
            """, [period]).rows.map { r in
            Target(customerID: try r.int("customer_id"), meterID: try r.int("meter_id"), customer: try r.string("customer"),
                   meter: try r.string("meter"), filter: try r.string("filter"), billingCustomer: try r.string("billing_customer_id"),
                   item: try r.string("subscription_item_id"), api: try r.string("engine_api"),
                   eventName: try r.optionalString("event_name"), scale: Int(try r.int("value_scale")),
                   start: try r.int("s"), end: try r.int("e"))
        }
        guard !targets.isEmpty else { return 0 }
        // One engine meter per event name, looked up once.
        var meters: [String: String] = [:]
        for name in Set(targets.compactMap(\.eventName)).sorted() {
            guard let id = try await BillingMeters.find(client: client, eventName: name)?["id"]?.stringValue else {
                throw BillingAPIError(status: nil, type: nil, code: "meter_missing",
                                      message: "the engine has no Billing Meter for event name \(name)", notSent: true)
            }
            meters[name] = id
        }
        let fetched = try await withThrowingTaskGroup(of: Fetched.self, returning: [Fetched].self) { group in
            var out: [Fetched] = []
            var next = 0
            func add() {
                let t = targets[next]
                let meterID = t.eventName.flatMap { meters[$0] }
                next += 1
                group.addTask { try await one(client, t, meterID: meterID) }
            }
            while next < min(width, targets.count) { add() }
            while let f = try await group.next() {
                out.append(f)
                if next < targets.count { add() }
            }
            return out
        }
        try c.transaction { c in
            for f in fetched {
                _ = try c.execute("select meter.billing_usage_record($1, $2, to_timestamp($3::bigint), to_timestamp($4::bigint), $5, $6, $7::numeric, $8, $9::jsonb)",
                                  [f.target.customerID, f.target.meterID, f.target.start, f.target.end, f.target.api, f.object,
                                   f.value, f.target.scale, f.target.filter])
            }
        }
        say("engine: usage of \(fetched.count) billed customer/meter line(s) of \(period) fetched from its summaries (meter.billing_usage)")
        return fetched.count
    }

    static func one(_ client: BillingClient, _ t: Target, meterID: String?) async throws -> Fetched {
        if t.api == "meter_events" {
            guard let meterID else { throw BillingAPIError(status: nil, type: nil, code: nil, message: "no engine meter for \(t.meter)") }
            let page = try await client.get("/v1/billing/meters/\(meterID)/event_summaries", query: [
                ("customer", t.billingCustomer), ("start_time", String(t.start)), ("end_time", String(t.end)),
            ], version: client.configuration.apiVersion)
            // Without value_grouping_window: one summary for the whole range (none: nothing there).
            let value = page["data"]?.arrayValue?.first?["aggregated_value"]?.numberLexeme ?? "0"
            return Fetched(target: t, object: meterID, value: value)
        }
        var total = Decimal(0)
        var after: String?
        while true {
            var query = [("limit", "100")]
            if let after { query.append(("starting_after", after)) }
            let page = try await client.get("/v1/subscription_items/\(t.item)/usage_record_summaries", query: query)
            let data = page["data"]?.arrayValue ?? []
            for s in data {
                guard let ps = s["period"]?["start"]?.int64Value, let pe = s["period"]?["end"]?.int64Value,
                      ps < t.end, pe > t.start else { continue }
                guard let v = s["total_usage"]?.numberLexeme.flatMap({ Decimal(string: $0) }) else {
                    throw BillingAPIError(status: nil, type: nil, code: nil,
                                          message: "usage record summary of \(t.item) without a total_usage")
                }
                total += v
            }
            guard page["has_more"]?.boolValue == true, let last = data.last?["id"]?.stringValue else { break }
            after = last
        }
        return Fetched(target: t, object: t.item, value: "\(total)")
    }
}
