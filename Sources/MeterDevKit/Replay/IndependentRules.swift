// IndependentRules.swift: two of meter's billing rules written again in Swift, from their
// documented statements and not from the SQL, for the checks that recompute invoices from what
// was sent (ReplayExpectation, the XCTests): which priced filter of a plan a usage event falls
// under, and the time-weighted integral of a gauge.

import Foundation
import MeterWire

/// A plan price's filter: dimension -> the values it takes (nil: "none", an event without the
/// property). `{}` takes everything; two filters of one plan and meter never overlap, so at most
/// one non-empty filter matches an event (decision 110).
public struct PriceFilter: Sendable, Hashable {
    public let values: [String: Set<String?>]

    /// From the JSON text of a filter (a value, null, or an array of them per dimension).
    public init(json: String) throws {
        guard case .object(let fields)? = try? JSONParser.parse(json) else {
            throw ReplayRunner.Failure(description: "filter is not a JSON object: \(json)")
        }
        var v: [String: Set<String?>] = [:]
        for (k, x) in fields {
            let list = x.arrayValue ?? [x]
            v[k] = Set(list.map { $0.stringValue })
        }
        values = v
    }

    public var isDefault: Bool { values.isEmpty }

    /// "dimension=value|value;..." sorted, "(none)" for null; "" for the default.
    public var canonical: String {
        values.keys.sorted().map { k in
            k + "=" + values[k]!.map { $0 ?? "(none)" }.sorted().joined(separator: "|")
        }.joined(separator: ";")
    }

    /// Whether an event with these properties (dimension -> text) falls under the filter.
    public func matches(_ properties: [String: String]) -> Bool {
        values.allSatisfy { k, allowed in allowed.contains(properties[k]) }
    }

    /// The filter among `filters` (one plan's prices of one meter) that prices an event: the
    /// non-empty one it matches, else the default, else nil (the plan does not bill it).
    public static func pricing(_ properties: [String: String], among filters: [PriceFilter]) -> PriceFilter? {
        filters.first { !$0.isDefault && $0.matches(properties) } ?? filters.first { $0.isDefault }
    }
}

/// A gauge's time-weighted sum (GB-hours from GB readings): each reading's value is held from its
/// time until the next reading's (readings ordered by time, then by key in byte order), the last
/// one until the end; integrated per UTC hour, each hour's integral rounded to 6 decimals (half
/// away from zero), the hours summed. Readings before the range carry their value into it.
public enum GaugeIntegral {
    public struct Reading: Sendable {
        public let at: Int64   // Unix microseconds
        public let key: String
        public let value: Decimal
        public init(at: Int64, key: String, value: Decimal) { self.at = at; self.key = key; self.value = value }
    }

    /// The integral over [from, to) (Unix microseconds, whole hours) in value × hours.
    public static func timeWeighted(_ readings: [Reading], from: Int64, to: Int64) -> Decimal {
        let hourUS: Int64 = 3_600_000_000
        let ordered = readings.sorted { a, b in
            a.at != b.at ? a.at < b.at : Array(a.key.utf8).lexicographicallyPrecedes(Array(b.key.utf8))
        }
        // value × microseconds held, per hour
        var hours: [Int64: Decimal] = [:]
        for (i, r) in ordered.enumerated() {
            var start = max(r.at, from)
            let end = min(i + 1 < ordered.count ? ordered[i + 1].at : to, to)
            while start < end {
                let hour = start - ((start % hourUS) + hourUS) % hourUS
                let stop = min(end, hour + hourUS)
                hours[hour, default: 0] += r.value * Decimal(stop - start)
                start = stop
            }
        }
        var total = Decimal(0)
        for (_, heldUS) in hours {
            var x = heldUS / Decimal(hourUS), rounded = Decimal()
            NSDecimalRound(&rounded, &x, 6, .plain)
            total += rounded
        }
        return total
    }
}
