import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import XCTest
import PGClient
import MeterWire
import MeterCore

/// API key scopes over HTTP: outside its scopes a key gets 403 insufficient_scope before anything
/// is stored; restricted to customers, its events and cancellations for others are rejected one by
/// one (customer_not_allowed; 403 for a single one) and its usage reads of others are 403.
final class APIKeyScopeTests: XCTestCase {
    typealias T = APIHarness

    func testScopesAndCustomersAreEnforcedByEveryEndpoint() async throws {
        try await T.withApp { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            defer { c.close() }
            let readOnly = APIKeys.generate(), firstOnly = APIKeys.generate()
            try APIKeys.register(c, name: "read-only", token: readOnly, scopes: ["read"])
            try APIKeys.register(c, name: "first-only", token: firstOnly, customers: [fx.customers[0]])
            func send(_ path: String, _ body: String, _ token: String) async throws -> (Int, JSONValue) {
                let r = try await client.execute(uri: path, method: .post,
                                                 headers: [.authorization: "Bearer \(token)", .contentType: "application/json"],
                                                 body: ByteBuffer(string: body))
                return (Int(r.status.code), (try? JSONParser.parse(Array(buffer: r.body))) ?? .null)
            }
            func usage(_ customer: String, _ token: String) async throws -> (Int, JSONValue) {
                let r = try await client.execute(uri: "/v1/usage?customer=\(customer)", method: .get,
                                                 headers: [.authorization: "Bearer \(token)"])
                return (Int(r.status.code), (try? JSONParser.parse(Array(buffer: r.body))) ?? .null)
            }

            // A read-only key: 403 to ingest and to cancel, nothing stored; usage is fine.
            var (status, json) = try await send("/v1/events", T.event(fx, key: "ro-1"), readOnly)
            XCTAssertEqual(status, 403)
            XCTAssertEqual(json["error"]?["code"]?.stringValue, "insufficient_scope")
            (status, json) = try await send("/v1/events", "[" + T.event(fx, key: "ro-2", occurredAt: "nonsense") + "]", readOnly)
            XCTAssertEqual(status, 403, "a batch of only invalid events is refused for the scope too")
            (status, json) = try await send("/v1/events/cancel", #"{"customer":\#(JSONWriter.quote(fx.customers[0])),"idempotency_key":"x"}"#, readOnly)
            XCTAssertEqual(status, 403)
            XCTAssertEqual(json["error"]?["code"]?.stringValue, "insufficient_scope")
            (status, _) = try await usage(fx.customers[2], readOnly)
            XCTAssertEqual(status, 200)
            XCTAssertEqual(try T.count(fx), 0)

            // A key for the first customer only.
            (status, json) = try await send("/v1/events", T.event(fx, key: "fo-1", customer: 2), firstOnly)
            XCTAssertEqual(status, 403)
            XCTAssertEqual(json["error"]?["code"]?.stringValue, "customer_not_allowed")
            XCTAssertEqual(json["error"]?["field"]?.stringValue, "customer")
            (status, json) = try await send("/v1/events", "[" + T.event(fx, key: "fo-2", customer: 0) + "," + T.event(fx, key: "fo-3", customer: 1) + "]", firstOnly)
            XCTAssertEqual(status, 207)
            XCTAssertEqual(json["results"]?.arrayValue?.map { $0["status"]?.stringValue }, ["accepted", "rejected"])
            XCTAssertEqual(json["results"]?.arrayValue?.last?["error"]?["code"]?.stringValue, "customer_not_allowed")
            XCTAssertEqual(try T.count(fx), 1)
            // Another key stores an event of the second customer; the restricted key cannot cancel it.
            (status, _) = try await send("/v1/events", T.event(fx, key: "other-1", customer: 1), fx.token)
            XCTAssertEqual(status, 201)
            (status, json) = try await send("/v1/events/cancel", #"{"customer":\#(JSONWriter.quote(fx.customers[1])),"idempotency_key":"other-1"}"#, firstOnly)
            XCTAssertEqual(status, 403)
            XCTAssertEqual(json["error"]?["code"]?.stringValue, "customer_not_allowed")
            XCTAssertEqual(try T.count(fx, "exists (select 1 from meter.event_cancellations x where x.event_id = e.id)"), 0)
            (status, json) = try await usage(fx.customers[1], firstOnly)
            XCTAssertEqual(status, 403)
            XCTAssertEqual(json["error"]?["code"]?.stringValue, "customer_not_allowed")
            (status, _) = try await usage(fx.customers[0], firstOnly)
            XCTAssertEqual(status, 200)
        }
    }
}
