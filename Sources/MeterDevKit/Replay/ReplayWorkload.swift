// ReplayWorkload.swift
//
// The deterministic workload of `meterctl replay`: the same (days, customers, seed) always gives
// the same events, byte for byte. Everything the run sends is first written to NDJSON, so anyone
// can recompute the expected totals independently of meter's code.
//
// Shape: six meters (count, sum, max, unique_count; ai_tokens, a sum with the dimensions model and
// direction, priced per model; disk_gb, a gauge billed in GB-hours), a daily rhythm (quiet nights,
// busy afternoons) with bursts, ≥ 5 % duplicate deliveries, out-of-order batches (some held back and
// sent after the next day's), cancellations, a few invalid events, and late events: some for a
// period that is already closed when they arrive ("late-after-close"), which must land as
// adjustments on the next invoice.

import Foundation
import MeterWire

public struct ReplayEvent: Sendable {
    public enum Kind: String, Sendable { case event, cancel, invalid }
    public var kind: Kind
    public var customer: String
    public var meter: String
    public var key: String
    /// Unix microseconds.
    public var at: Int64
    public var value: String
    public var user: String?
    /// Further properties (the ai_tokens meter's model and direction), in this order.
    public var properties: [(String, String)] = []
    /// Sent after the close of its period.
    public var afterClose = false
    /// How many times it is delivered (duplicates are redeliveries of the same JSON).
    public var deliveries = 1
    /// For invalid events: the error code the API must answer.
    public var expectedError: String?

    /// The API's JSON for this event (or cancellation).
    public var apiJSON: String {
        switch kind {
        case .cancel:
            return #"{"customer":\#(JSONWriter.quote(customer)),"idempotency_key":\#(JSONWriter.quote(key)),"reason":"replay"}"#
        default:
            let t = RFC3339Timestamp(epochMicroseconds: at).iso8601
            var fields = properties
            if let user { fields.insert(("user", user), at: 0) }
            let props = fields.isEmpty ? "" : #","properties":{"# + fields.map { #"\#(JSONWriter.quote($0.0)):\#(JSONWriter.quote($0.1))"# }
                .joined(separator: ",") + "}"
            return #"{"customer":\#(JSONWriter.quote(customer)),"meter":\#(JSONWriter.quote(meter)),"idempotency_key":\#(JSONWriter.quote(key)),"occurred_at":"\#(t)","value":\#(value.hasPrefix("-") ? value : "\"" + value + "\"")\#(props)}"#
        }
    }

    /// One NDJSON line: what was generated, for independent recomputation.
    public var ndjson: String {
        var s = #"{"kind":"\#(kind.rawValue)","customer":\#(JSONWriter.quote(customer))"#
        if kind != .cancel { s += #","meter":\#(JSONWriter.quote(meter))"# }
        s += #","idempotency_key":\#(JSONWriter.quote(key))"#
        if kind != .cancel {
            s += #","occurred_at":"\#(RFC3339Timestamp(epochMicroseconds: at).iso8601)","value":"\#(value)""#
            if let user { s += #","user":\#(JSONWriter.quote(user))"# }
            if !properties.isEmpty {
                s += #","properties":{"# + properties.map { #"\#(JSONWriter.quote($0.0)):\#(JSONWriter.quote($0.1))"# }
                    .joined(separator: ",") + "}"
            }
            s += #","deliveries":\#(deliveries)"#
        }
        if afterClose { s += #","after_close":true"# }
        if let expectedError { s += #","expected_error":"\#(expectedError)""# }
        return s + "}"
    }
}

public struct ReplayWorkload: Sendable {
    public static let meters: [(code: String, aggregation: String, unique: String?)] = [
        ("api_calls", "count", nil), ("storage_gb", "sum", nil), ("peak_seats", "max", nil), ("active_users", "unique_count", "user"),
        ("ai_tokens", "sum", nil), ("disk_gb", "time_weighted_sum", nil),
    ]
    /// The meters' dimensions (meter_upsert's last argument).
    public static let dimensions: [String: [String]] = ["ai_tokens": ["model", "direction"]]
    /// The AI API's models, with their share of its calls (per cent); a call without a model
    /// (5 %) rolls up under "none" and is billed at the plan's default token price.
    package static let models: [(name: String, share: Int)] = [("gpt-4o", 30), ("gpt-4o-mini", 45), ("embed-3", 20)]
    public let days: Int
    public let customers: Int
    public let seed: UInt64
    /// Unix seconds of the window's first day (00:00 UTC).
    public let start: Int64
    /// Mean events per customer and day (before duplicates).
    public let eventsPerCustomerDay: Int

    /// Share of a day's events cancelled during that day (some before the event itself arrives:
    /// 10 % of deliveries are held back to the next day).
    public let cancelShare: Double
    /// Share of a closed period's events cancelled after its close.
    public let lateCancelShare: Double

    public init(days: Int, customers: Int, seed: UInt64, start: Int64, eventsPerCustomerDay: Int,
                cancelShare: Double = 0.01, lateCancelShare: Double = 0.002) {
        self.days = days; self.customers = customers; self.seed = seed; self.start = start
        self.eventsPerCustomerDay = eventsPerCustomerDay
        self.cancelShare = cancelShare; self.lateCancelShare = lateCancelShare
    }

    /// The plan of customer number `i` (0-based): the replay's plans in turn.
    public static func planIndex(customer i: Int, plans: Int) -> Int { i % plans }

    public func customerID(_ i: Int) -> String { Self.customerID(i) }
    public static func customerID(_ i: Int) -> String { String(format: "replay-%05d", i + 1) }

    /// Relative weight of each UTC hour: quiet nights, a busy afternoon.
    package static let hourWeights: [Int] = [2, 1, 1, 1, 1, 2, 3, 5, 8, 10, 11, 12, 12, 12, 13, 13, 12, 11, 9, 7, 6, 5, 4, 3]

    /// The events of day `d` (0-based) in the order they are first sent, already out of order.
    public func day(_ d: Int) -> [ReplayEvent] {
        var rng = SeededRandom(seed: seed &+ UInt64(d) &* 1_000_003)
        let dayStart = start + Int64(d) * 86_400
        let totalWeight = Self.hourWeights.reduce(0, +)
        var out: [ReplayEvent] = []
        // The AI API's calls and the disk gauge's readings: a stream of their own, so that adding
        // them left the four original meters' events as they were.
        var ai = SeededRandom(seed: seed &+ 313 &+ UInt64(d) &* 7919)
        for c in 0..<customers {
            let customer = customerID(c)
            // each customer has its own size; some days burst
            let size = 1 + (c * 7919) % 5
            var n = eventsPerCustomerDay * size / 3
            let burstHour = rng.chance(0.1) ? rng.below(24) : -1
            n = max(1, n + rng.below(max(n / 5, 1)) - n / 10)
            for i in 0..<n {
                // hour by the daily rhythm (a burst hour takes a third of the day's events)
                var pick = rng.below(totalWeight), hour = 0
                while pick >= Self.hourWeights[hour] { pick -= Self.hourWeights[hour]; hour += 1 }
                if burstHour >= 0 && i % 3 == 0 { hour = burstHour }
                let at = (dayStart + Int64(hour) * 3600 + Int64(rng.below(3600))) * 1_000_000 + Int64(rng.below(1_000_000))
                let m = Self.meters[rng.below(100) < 55 ? 0 : rng.below(3) + 1]
                let key = "d\(d)-c\(c)-\(i)"
                var e = ReplayEvent(kind: .event, customer: customer, meter: m.code, key: key, at: at, value: "1")
                switch m.aggregation {
                case "sum": e.value = String(format: "%d.%03d", rng.below(50), rng.below(1000))
                case "max": e.value = String(1 + rng.below(40 + c % 30))
                case "unique_count": e.user = "u\(rng.below(60 + c % 50))"
                default: break
                }
                if rng.chance(0.06) { e.deliveries = 2 + rng.below(2) }  // duplicate deliveries
                out.append(e)
            }
            // AI API calls: tokens (whole), per model and direction.
            for i in 0..<max(1, eventsPerCustomerDay / 4 + ai.below(5) - 2) {
                var pick = ai.below(100), model: String?
                for m in Self.models { if pick < m.share { model = m.name; break }; pick -= m.share }
                var hour = 0, w = ai.below(totalWeight)
                while w >= Self.hourWeights[hour] { w -= Self.hourWeights[hour]; hour += 1 }
                let at = (dayStart + Int64(hour) * 3600 + Int64(ai.below(3600))) * 1_000_000 + Int64(ai.below(1_000_000))
                var e = ReplayEvent(kind: .event, customer: customer, meter: "ai_tokens", key: "ai-d\(d)-c\(c)-\(i)", at: at,
                                    value: String(1 + ai.below(model == "embed-3" ? 800 : 6000)))
                if let model { e.properties.append(("model", model)) }
                e.properties.append(("direction", ai.chance(0.6) ? "input" : "output"))
                if ai.chance(0.06) { e.deliveries = 2 }
                out.append(e)
            }
            // Disk in use (GB, a gauge): one to three readings a day, each held until the next.
            for i in 0..<(1 + ai.below(3)) {
                let at = (dayStart + Int64(ai.below(86_400))) * 1_000_000 + Int64(ai.below(1_000_000))
                out.append(ReplayEvent(kind: .event, customer: customer, meter: "disk_gb", key: "disk-d\(d)-c\(c)-\(i)", at: at,
                                       value: String(format: "%d.%02d", 20 + (c * 37) % 200 + ai.below(40), ai.below(100))))
            }
            // A few invalid events, each with the error the API must give.
            if rng.chance(0.3) {
                let bad = rng.below(3)
                var e = ReplayEvent(kind: .invalid, customer: customer, meter: "api_calls", key: "bad-d\(d)-c\(c)",
                                    at: (dayStart + 3600) * 1_000_000, value: "1")
                switch bad {
                case 0: e.value = "-5"; e.meter = "storage_gb"; e.expectedError = "negative_value"
                case 1: e.meter = "no_such_meter"; e.expectedError = "unknown_meter"
                default: e.customer = "replay-nobody"; e.expectedError = "unknown_customer"
                }
                out.append(e)
            }
        }
        // Out of order within the day.
        for i in stride(from: out.count - 1, to: 0, by: -1) { out.swapAt(i, rng.below(i + 1)) }
        return out
    }

    /// Cancellations made during day `d`: `cancelShare` of that day's events (1 % by default).
    public func cancellations(_ events: [ReplayEvent], day d: Int) -> [ReplayEvent] {
        var rng = SeededRandom(seed: seed &+ 77 &+ UInt64(d) &* 31)
        return events.filter { $0.kind == .event && rng.chance(cancelShare) }.map {
            ReplayEvent(kind: .cancel, customer: $0.customer, meter: $0.meter, key: $0.key, at: $0.at, value: $0.value)
        }
    }

    /// Late events for a period, sent after its close: for about 30 % of the customers one or two
    /// events in its last day, plus cancellations of `lateCancelShare` of the period's events.
    public func lateAfterClose(periodEnd: Int64, periodEvents: [ReplayEvent], index: Int) -> [ReplayEvent] {
        var rng = SeededRandom(seed: seed &+ 999 &+ UInt64(index))
        var out: [ReplayEvent] = []
        for c in 0..<customers where rng.chance(0.3) {
            let at = (periodEnd - 1 - Int64(rng.below(86_000))) * 1_000_000
            var e = ReplayEvent(kind: .event, customer: customerID(c), meter: "api_calls", key: "late-p\(index)-c\(c)", at: at, value: "1")
            e.afterClose = true
            out.append(e)
            if rng.chance(0.5) {
                var g = ReplayEvent(kind: .event, customer: customerID(c), meter: "storage_gb", key: "late-gb-p\(index)-c\(c)",
                                    at: at, value: "\(1 + rng.below(9)).5")
                g.afterClose = true
                out.append(g)
            }
            if rng.chance(0.5) {
                // a late AI call of the most expensive model: an adjustment of that price's line only
                var t = ReplayEvent(kind: .event, customer: customerID(c), meter: "ai_tokens", key: "late-ai-p\(index)-c\(c)",
                                    at: at, value: "\(100 + rng.below(5000))")
                t.properties = [("model", "gpt-4o"), ("direction", "output")]
                t.afterClose = true
                out.append(t)
            }
        }
        for e in periodEvents where e.kind == .event && rng.chance(lateCancelShare) {
            var x = ReplayEvent(kind: .cancel, customer: e.customer, meter: e.meter, key: e.key, at: e.at, value: e.value)
            x.afterClose = true
            out.append(x)
        }
        return out
    }
}
