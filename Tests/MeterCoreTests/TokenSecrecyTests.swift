import Foundation
import XCTest
import PGClient
import MeterWire
import MeterCore
import MeterAPI
import MeterDevKit

/// A bearer token never reaches Postgres (issue 13: with `log_min_duration_statement` set, a slow
/// ingest's parameters, the whole token among them, were in the server log). Here every statement
/// of a database is logged with its parameters, the service is driven through every endpoint that
/// takes a key, a key is created as `meterctl keys create` does, and the server log is searched.
final class TokenSecrecyTests: XCTestCase {
    func testNoTokenReachesThePostgresLog() async throws {
        let info = try TestDatabase.freshDatabase("tokenlog")
        let setup = try PGConnection(conninfo: info)
        try Migrator(sqlDirectory: TestDatabase.sqlDir).migrate(setup)
        try setup.execute("select meter.customer_upsert('tl-acme'), meter.meter_upsert('tl.calls', 'count')")
        let database = try setup.execute("select current_database() as d").single().string("d")
        // Every statement of every later session, with its bind parameters in full.
        try setup.execute("alter database \(database) set log_min_duration_statement = 0")
        try setup.execute("alter database \(database) set log_parameter_max_length = -1")
        setup.close()

        let logPath = TestDatabase.cluster.realDataDir + "/server.log"
        let before = (try? FileManager.default.attributesOfItem(atPath: logPath)[.size] as? Int) ?? 0
        let token = APIKeys.generate()
        let keys = try PGConnection(conninfo: info)
        try APIKeys.register(keys, name: "tl", token: token)
        keys.close()

        let server = try await RunningServer.start(ServeConfiguration(), conninfo: info, poolSize: 2)
        let port = server.port
        let auth = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
        let at = RFC3339Timestamp(epochMicroseconds: Int64((Date().timeIntervalSince1970 - 60) * 1_000_000)).iso8601
        let replies = try await onDedicatedThread { () -> [Int] in
            let client = LoadClient(port: port)
            return [
                try client.request("POST", "/v1/events", headers: auth,
                                   body: #"{"customer":"tl-acme","meter":"tl.calls","idempotency_key":"tl-1","occurred_at":"\#(at)"}"#).status,
                try client.request("POST", "/v1/events/cancel", headers: auth,
                                   body: #"{"customer":"tl-acme","idempotency_key":"tl-1"}"#).status,
                try client.request("GET", "/v1/usage?customer=tl-acme", headers: auth).status,
            ]
        }
        try await server.stop()
        XCTAssertEqual(replies, [201, 200, 200])

        let log = try XCTUnwrap(FileManager.default.contents(atPath: logPath))
        let text = String(decoding: log.dropFirst(before), as: UTF8.self)
        // The log did record the statements and their parameters (so the search below can fail)...
        XCTAssertTrue(text.contains("meter.event_ingest"), "statements were not logged:\n\(text.suffix(2000))")
        XCTAssertTrue(text.contains("meter.event_cancel"))
        XCTAssertTrue(text.contains("meter.api_key_create"))
        XCTAssertTrue(text.contains("parameters: $1 = "), "parameters were not logged")
        XCTAssertTrue(text.contains(String(APIKeys.hashParameter(token).dropFirst(2))), "the key's hash was not among them")
        // ...and the token is nowhere in it, not even its secret part.
        XCTAssertFalse(text.contains(token), "the token reached the Postgres log")
        XCTAssertFalse(text.contains(String(token.dropFirst(12))), "the token's secret part reached the Postgres log")
    }

    /// The hash the service sends is the SHA-256 of the token's UTF-8 bytes, as computed outside
    /// this code (`printf %s TOKEN | sha256sum`).
    func testTheKeyHashIsTheTokensSHA256() {
        XCTAssertEqual(APIKeys.hashParameter("mk_AlphaTapKey0123456789ABCDEFGHIJKLMNOPQRS"),
                       "\\xea6a097e7903188999f14a071f18b9fd232b73db247a2e1be9594dfb989ea9bb")
    }
}
