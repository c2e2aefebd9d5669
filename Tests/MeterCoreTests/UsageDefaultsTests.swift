import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import XCTest
import PGClient
import MeterWire
import MeterCore

/// GET /v1/usage without from/to covers the customer's current billing month in its own timezone,
/// on the database clock (it was the host's clock and the UTC month, so a customer in Auckland saw
/// the wrong month for thirteen hours of each month's first day).
final class UsageDefaultsTests: XCTestCase {
    func testTheDefaultRangeIsTheCustomersBillingMonthOnTheDatabaseClock() async throws {
        try await APIHarness.withApp { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            defer { c.close() }
            var expected: [String: (String, String)] = [:]
            for tz in ["Pacific/Auckland", "America/Los_Angeles", "UTC"] {
                let customer = "\(fx.prefix)-\(tz.replacingOccurrences(of: "/", with: "-"))"
                try c.execute("select meter.customer_upsert($1, null, $2)", [customer, tz])
                // Recomputed here from the definition, independently of the service's query.
                let row = try c.execute("""
                    select to_char((date_trunc('month', now() at time zone $1) at time zone $1) at time zone 'UTC',
                                   'YYYY-MM-DD"T"HH24:MI:SS"Z"') as f,
                           to_char(date_trunc('hour', now() at time zone 'UTC') + interval '1 hour', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as t
                    """, [tz]).single()
                expected[customer] = (try row.string("f"), try row.string("t"))
            }
            for (customer, (from, to)) in expected {
                let r = try await client.execute(uri: "/v1/usage?customer=\(customer)", method: .get,
                                                 headers: [.authorization: "Bearer \(fx.token)"])
                XCTAssertEqual(r.status, .ok, String(buffer: r.body))
                let json = try JSONParser.parse(Array(buffer: r.body))
                XCTAssertEqual(json["from"]?.stringValue, from, customer)
                XCTAssertEqual(json["to"]?.stringValue, to, customer)
            }
            // Explicit bounds are kept as given, and still checked.
            let bad = try await client.execute(uri: "/v1/usage?customer=\(fx.customers[0])&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
                                               method: .get, headers: [.authorization: "Bearer \(fx.token)"])
            XCTAssertEqual(bad.status, .unprocessableContent)
            XCTAssertTrue(String(buffer: bad.body).contains("invalid_range"), String(buffer: bad.body))
        }
    }
}
