import Foundation
import PGClient
import MeterWire

/// Customers and meters to create, from a JSON file; applying it twice changes nothing.
public struct SeedFile: Sendable {
    public struct Customer: Sendable {
        public var externalID: String; public var name: String?; public var timezone: String
        public init(externalID: String, name: String?, timezone: String) {
            self.externalID = externalID; self.name = name; self.timezone = timezone
        }
    }
    public struct Meter: Sendable {
        public var code: String; public var aggregation: String; public var uniqueProperty: String?
        public var name: String?; public var unit: String?
        public init(code: String, aggregation: String, uniqueProperty: String?, name: String?, unit: String?) {
            self.code = code; self.aggregation = aggregation; self.uniqueProperty = uniqueProperty
            self.name = name; self.unit = unit
        }
    }
    public var customers: [Customer] = []
    public var meters: [Meter] = []

    public init(customers: [Customer] = [], meters: [Meter] = []) {
        self.customers = customers
        self.meters = meters
    }

    public struct Invalid: Error, CustomStringConvertible { public let description: String }

    public static func load(path: String) throws -> SeedFile {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let json = try JSONParser.parse([UInt8](data))
        var seed = SeedFile()
        for (i, c) in (json["customers"]?.arrayValue ?? []).enumerated() {
            guard let id = c["external_id"]?.stringValue else {
                throw Invalid(description: "\(path): customers[\(i)].external_id is required")
            }
            seed.customers.append(Customer(externalID: id, name: c["name"]?.stringValue,
                                           timezone: c["billing_timezone"]?.stringValue ?? "UTC"))
        }
        for (i, m) in (json["meters"]?.arrayValue ?? []).enumerated() {
            guard let code = m["code"]?.stringValue else { throw Invalid(description: "\(path): meters[\(i)].code is required") }
            seed.meters.append(Meter(code: code, aggregation: m["aggregation"]?.stringValue ?? "count",
                                     uniqueProperty: m["unique_property"]?.stringValue,
                                     name: m["name"]?.stringValue, unit: m["unit"]?.stringValue))
        }
        return seed
    }

    /// Applies the seed in one transaction.
    @discardableResult
    public func apply(_ conn: PGConnection) throws -> (customers: Int, meters: Int) {
        try conn.transaction { c in
            for cu in customers {
                try c.execute("select meter.customer_upsert($1, $2, $3)", [cu.externalID, cu.name, cu.timezone])
            }
            for m in meters {
                try c.execute("select meter.meter_upsert($1, $2, $3, $4, $5)",
                              [m.code, m.aggregation, m.uniqueProperty, m.name, m.unit])
            }
        }
        return (customers.count, meters.count)
    }
}
