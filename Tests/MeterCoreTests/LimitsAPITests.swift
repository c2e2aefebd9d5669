import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import XCTest
import PGClient
import MeterWire
import MeterCore

/// GET /v1/customers/{customer}/limits/{meter} (issue 16): a check right after an ingest or a
/// cancellation sees it, before and after the rollup; limits on a filter apply to the events of
/// their dimension values; refusals name field and reason.
final class LimitsAPITests: XCTestCase {
    typealias T = APIHarness

    static func check(_ client: any TestClientProtocol, _ customer: String, _ meter: String, _ query: String = "",
                      token: String?) async throws -> T.Reply {
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        let r = try await client.execute(uri: "/v1/customers/\(customer)/limits/\(meter)" + (query.isEmpty ? "" : "?" + query),
                                         method: .get, headers: headers)
        let text = String(buffer: r.body)
        return T.Reply(status: Int(r.status.code), json: (try? JSONParser.parse(text)) ?? .string(text), headers: r.headers)
    }

    static func summary(_ r: T.Reply) -> String {
        "allowed=\(r.json["allowed"]?.boolValue.map(String.init) ?? "?") "
            + (r.json["limits"]?.arrayValue ?? []).map {
                "\($0["filter"]?.text ?? "?") \($0["used"]?.stringValue ?? "?")/\($0["limit"]?.stringValue ?? "?") "
                    + "left \($0["remaining"]?.stringValue ?? "?") applies=\($0["applies"]?.boolValue ?? false) allowed=\($0["allowed"]?.boolValue ?? false)"
            }.joined(separator: "; ")
    }

    func testACheckRightAfterAnIngestSeesItWhateverTheRollup() async throws {
        try await T.withApp { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            defer { c.close() }
            let p = fx.prefix, customer = fx.customers[0]
            try c.execute("select meter.meter_upsert($1, 'sum', null, null, null, null, array['model'])", ["\(p).tokens"])
            let plan = "\(p)-plan"
            try c.execute("select meter.plan_upsert($1, 'usd')", [plan])
            try c.execute("select meter.customer_subscribe($1, $2, to_char(now() at time zone 'UTC', 'YYYY-MM'))", [customer, plan])
            try c.execute("select meter.plan_limit_set($1, $2, 3)", [plan, "\(p).calls"])
            try c.execute("select meter.plan_limit_set($1, $2, 1000)", [plan, "\(p).tokens"])
            try c.execute("select meter.plan_limit_set($1, $2, 100, $3::jsonb)", [plan, "\(p).tokens", #"{"model":"big"}"#])

            var r = try await Self.check(client, customer, "\(p).calls", token: fx.token)
            XCTAssertEqual(r.status, 200, "\(r.json)")
            XCTAssertEqual(Self.summary(r), "allowed=true {} 0/3 left 3 applies=true allowed=true")
            for k in ["k1", "k2"] {
                let sent = try await T.post(client, T.event(fx, key: k), token: fx.token)
                XCTAssertEqual(sent.status, 201)
            }
            // Not rolled up yet (no rollup ran): counted all the same.
            r = try await Self.check(client, customer, "\(p).calls", token: fx.token)
            XCTAssertEqual(Self.summary(r), "allowed=true {} 2/3 left 1 applies=true allowed=true")
            _ = try await T.post(client, T.event(fx, key: "k3"), token: fx.token)
            r = try await Self.check(client, customer, "\(p).calls", token: fx.token)
            XCTAssertEqual(Self.summary(r), "allowed=false {} 3/3 left 0 applies=true allowed=false")
            _ = try Rollup.drain(c)
            r = try await Self.check(client, customer, "\(p).calls", token: fx.token)
            XCTAssertEqual(Self.summary(r), "allowed=false {} 3/3 left 0 applies=true allowed=false", "the same once rolled up")
            // A cancellation counts at once, before the rollup subtracts it.
            let cancel = try await RollupAPITests.cancel(client, RollupAPITests.cancelBody(fx, "k2"), token: fx.token)
            XCTAssertEqual(cancel.status, 200)
            r = try await Self.check(client, customer, "\(p).calls", token: fx.token)
            XCTAssertEqual(Self.summary(r), "allowed=true {} 2/3 left 1 applies=true allowed=true")

            // Per model: 90 big tokens; the next 20 of a big call exceed its limit, not a small call's.
            _ = try await T.post(client, T.event(fx, key: "t1", meter: "tokens", value: "90", properties: #"{"model":"big"}"#), token: fx.token)
            r = try await Self.check(client, customer, "\(p).tokens", "quantity=20&properties%5Bmodel%5D=big", token: fx.token)
            XCTAssertEqual(Self.summary(r), #"allowed=false {} 90/1000 left 910 applies=true allowed=true; {"model":["big"]} 90/100 left 10 applies=true allowed=false"#)
            r = try await Self.check(client, customer, "\(p).tokens", "quantity=20&properties[model]=small", token: fx.token)
            XCTAssertEqual(Self.summary(r), #"allowed=true {} 90/1000 left 910 applies=true allowed=true; {"model":["big"]} 90/100 left 10 applies=false allowed=false"#)

            // Refusals.
            r = try await Self.check(client, customer, "\(p).calls", "quantity=0", token: fx.token)
            XCTAssertEqual(r.status, 422); XCTAssertEqual(r.field, "quantity")
            for bad in ["1.", ".5", "1.2.3", "1e3", "-1", "123456789012345678901", "1.1234567890123"] {
                r = try await Self.check(client, customer, "\(p).calls", "quantity=\(bad)", token: fx.token)
                XCTAssertEqual(r.status, 422, bad); XCTAssertEqual(r.field, "quantity", bad)
            }
            r = try await Self.check(client, customer, "\(p).calls", "quantity=12345678901234567890.123456789012", token: fx.token)
            XCTAssertEqual(r.status, 200, "20 digits and 12 decimals are a quantity")
            r = try await Self.check(client, customer, "\(p).tokens", "properties%5Bmo%20del%5D=big", token: fx.token)
            XCTAssertEqual(r.status, 422); XCTAssertEqual(r.field, "properties[mo del]")
            r = try await Self.check(client, customer, "\(p).calls", "colour=red", token: fx.token)
            XCTAssertEqual(r.status, 422); XCTAssertEqual(r.code, "unknown_parameter")
            r = try await Self.check(client, customer, "\(p).nothing", token: fx.token)
            XCTAssertEqual(r.status, 404); XCTAssertEqual(r.code, "meter_not_found")
            r = try await Self.check(client, fx.customers[2], "\(p).calls", token: fx.token)
            XCTAssertEqual(r.status, 404); XCTAssertEqual(r.code, "no_plan")
            r = try await Self.check(client, customer, "\(p).calls", token: nil)
            XCTAssertEqual(r.status, 401)

            // The key, checked in the same statement as the limits: unknown, without the read
            // scope, or for other customers only, nothing of the customer's usage is returned; a
            // bad key is told before a bad parameter.
            let ingestOnly = APIKeys.generate(), otherOnly = APIKeys.generate()
            try APIKeys.register(c, name: "ingest-only", token: ingestOnly, scopes: ["ingest"])
            try APIKeys.register(c, name: "other-only", token: otherOnly, customers: [fx.customers[1]])
            r = try await Self.check(client, customer, "\(p).calls", token: APIKeys.generate())
            XCTAssertEqual(r.status, 401); XCTAssertEqual(r.code, "unauthorized"); XCTAssertNil(r.json["limits"])
            r = try await Self.check(client, customer, "\(p).calls", "quantity=0", token: APIKeys.generate())
            XCTAssertEqual(r.status, 401, "a bad key before a bad parameter")
            r = try await Self.check(client, customer, "\(p).calls", token: ingestOnly)
            XCTAssertEqual(r.status, 403); XCTAssertEqual(r.code, "insufficient_scope"); XCTAssertNil(r.json["limits"])
            r = try await Self.check(client, customer, "\(p).calls", token: otherOnly)
            XCTAssertEqual(r.status, 403); XCTAssertEqual(r.code, "customer_not_allowed"); XCTAssertNil(r.json["limits"])
            r = try await Self.check(client, customer, "\(p).nothing", token: otherOnly)
            XCTAssertEqual(r.status, 403, "an unknown meter of a customer the key may not read: 403, not 404")
        }
    }
}
