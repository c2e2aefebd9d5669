import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import XCTest
import PGClient
import MeterWire
import MeterCore
import MeterAPI

/// POST /v1/events end to end: HTTP in, real Postgres behind, every verdict checked both in the
/// response and in the database.
final class IngestAPITests: XCTestCase {
    typealias T = APIHarness
    // MARK: idempotency

    func testSameBatchSentThreeTimesIsStoredOnce() async throws {
        try await T.withApp { client, fx in
            let batch = "[" + (0..<50).map { T.event(fx, key: "k\($0)", customer: $0 % 3, meter: $0 % 2 == 0 ? "calls" : "gb", value: "\"\($0).5\"") }
                .joined(separator: ",") + "]"
            let first = try await T.post(client, batch, token: fx.token)
            XCTAssertEqual(first.status, 200)
            XCTAssertEqual(first.summary("accepted"), 50)
            let ids = first.results().map { $0["id"]?.numberLexeme }
            XCTAssertEqual(Set(ids.compactMap { $0 }).count, 50)
            for _ in 0..<2 {
                let again = try await T.post(client, batch, token: fx.token)
                XCTAssertEqual(again.status, 200)
                XCTAssertEqual(again.summary("duplicate"), 50)
                XCTAssertEqual(again.summary("accepted"), 0)
                XCTAssertEqual(again.results().map { $0["id"]?.numberLexeme }, ids, "duplicates carry the original ids")
            }
            XCTAssertEqual(try T.count(fx), 50)
            let c = try PGConnection(conninfo: fx.conninfo)
            let redeliveries = try c.execute("""
                select count(*) as n from meter.event_redeliveries r join meter.events e on e.id = r.event_id
                join meter.customers c on c.id = e.customer_id where c.external_id like $1 and r.verdict = 'duplicate'
                """, [fx.prefix + "%"]).single().int("n")
            XCTAssertEqual(redeliveries, 100)
        }
    }

    func testConflictChangesNothing() async throws {
        try await T.withApp { client, fx in
            let t = T.now(offsetSeconds: -60)
            let original = try await T.post(client, T.event(fx, key: "c1", value: "2", occurredAt: t), token: fx.token)
            XCTAssertEqual(original.status, 201)
            XCTAssertEqual(original.json["status"]?.stringValue, "accepted")
            let id = original.json["id"]?.numberLexeme
            let dup = try await T.post(client, T.event(fx, key: "c1", value: "2.000", occurredAt: t), token: fx.token)
            XCTAssertEqual(dup.status, 200, "2 and 2.000 are the same value")
            XCTAssertEqual(dup.json["status"]?.stringValue, "duplicate")
            XCTAssertEqual(dup.json["id"]?.numberLexeme, id)
            for variant in [T.event(fx, key: "c1", value: "3", occurredAt: t),
                            T.event(fx, key: "c1", value: "2", occurredAt: T.now()),
                            T.event(fx, key: "c1", meter: "gb", value: "2", occurredAt: t),
                            T.event(fx, key: "c1", value: "2", occurredAt: t, properties: #"{"a":1}"#)] {
                let r = try await T.post(client, variant, token: fx.token)
                XCTAssertEqual(r.status, 409)
                XCTAssertEqual(r.json["status"]?.stringValue, "conflict")
                XCTAssertEqual(r.code, "idempotency_key_conflict")
                XCTAssertEqual(r.field, "idempotency_key")
                XCTAssertEqual(r.json["id"]?.numberLexeme, id)
            }
            XCTAssertEqual(try T.count(fx), 1)
            XCTAssertEqual(try T.count(fx, "e.value = 2"), 1)
        }
    }

    func testIdenticalRequestsRacingGiveExactlyOneAccepted() async throws {
        try await T.withApp { client, fx in
            let body = T.event(fx, key: "race", value: "7")
            let replies = try await withThrowingTaskGroup(of: T.Reply.self) { g in
                for _ in 0..<24 { g.addTask { try await T.post(client, body, token: fx.token) } }
                var all: [T.Reply] = []
                for try await r in g { all.append(r) }
                return all
            }
            XCTAssertEqual(replies.filter { $0.status == 201 }.count, 1)
            XCTAssertEqual(replies.filter { $0.status == 200 }.count, 23)
            XCTAssertEqual(Set(replies.map { $0.json["id"]?.numberLexeme }).count, 1, "all point at the same event")
            XCTAssertEqual(try T.count(fx), 1)

            // Racing overlapping batches: every key stored once, accepted exactly once overall.
            let batches = (0..<6).map { b in
                "[" + (0..<40).map { T.event(fx, key: "rb\(($0 + b * 10) % 60)", value: "1") }.joined(separator: ",") + "]"
            }
            let batchReplies = try await withThrowingTaskGroup(of: T.Reply.self) { g in
                for b in batches { g.addTask { try await T.post(client, b, token: fx.token) } }
                var all: [T.Reply] = []
                for try await r in g { all.append(r) }
                return all
            }
            XCTAssertEqual(batchReplies.map { $0.summary("accepted") }.reduce(0, +), 60)
            XCTAssertEqual(try T.count(fx, "e.idempotency_key like 'rb%'"), 60)
        }
    }

    func testKeyRepeatedInsideOneBatch() async throws {
        try await T.withApp { client, fx in
            let t = T.now(offsetSeconds: -5)
            let batch = "[" + [T.event(fx, key: "r", value: "1", occurredAt: t),
                               T.event(fx, key: "r", value: "1", occurredAt: t),
                               T.event(fx, key: "r", value: "5", occurredAt: t)].joined(separator: ",") + "]"
            let r = try await T.post(client, batch, token: fx.token)
            XCTAssertEqual(r.status, 207)
            XCTAssertEqual(r.results().map { $0["status"]?.stringValue }, ["accepted", "duplicate", "conflict"])
            XCTAssertEqual(Set(r.results().map { $0["id"]?.numberLexeme }).count, 1)
            XCTAssertEqual(try T.count(fx, "e.value = 1"), 1)
            XCTAssertEqual(try T.count(fx), 1)
        }
    }
}

/// Shared by the API test classes: a fixture per test and an application on the test database.
enum APIHarness {
    struct Fixture: Sendable {
        let prefix: String
        let token: String
        let customers: [String]
        let conninfo: String
    }

    /// Fresh customers, meters and key for one test, so tests never see each other's rows.
    static func makeFixture() throws -> Fixture {
        let info = try TestDatabase.conninfo()
        let c = try PGConnection(conninfo: info)
        let prefix = TestDatabase.unique("t")
        let customers = ["\(prefix)-acme", "\(prefix)-zoë-ünïcode", "\(prefix)-globex"]
        for cu in customers { try c.execute("select meter.customer_upsert($1)", [cu]) }
        try c.execute("select meter.meter_upsert($1, 'count')", ["\(prefix).calls"])
        try c.execute("select meter.meter_upsert($1, 'sum')", ["\(prefix).gb"])
        let token = APIKeys.generate()
        try APIKeys.register(c, name: prefix, token: token)
        return Fixture(prefix: prefix, token: token, customers: customers, conninfo: info)
    }

    static func withApp(_ configure: (inout ServeConfiguration) -> Void = { _ in }, poolSize: Int = 8,
                 _ test: @escaping @Sendable (any TestClientProtocol, Fixture) async throws -> Void) async throws {
        let fx = try makeFixture()
        var config = ServeConfiguration()
        config.openAPIPath = TestDatabase.repoRoot + "/docs/openapi.yaml"
        config.expectedLedger = try {
            let c = try PGConnection(conninfo: fx.conninfo)
            return try Migrator(sqlDirectory: TestDatabase.sqlDir).expectedLedger(c)
        }()
        configure(&config)
        let pool = PGPool(conninfo: fx.conninfo, maxConnections: poolSize, logger: TestDatabase.logger)
        let router = MeterApplication.buildRouter(config: config, pool: pool, metrics: MeterMetrics(), logger: TestDatabase.logger)
        let app = Application(router: router, logger: TestDatabase.logger)
        do {
            try await app.test(.router) { client in try await test(client, fx) }
        } catch {
            await pool.shutdown()
            throw error
        }
        await pool.shutdown()
    }

    struct Reply {
        let status: Int
        let json: JSONValue
        let headers: HTTPFields
        var code: String? { json["error"]?["code"]?.stringValue }
        var field: String? { json["error"]?["field"]?.stringValue }
        func results() -> [JSONValue] { json["results"]?.arrayValue ?? [] }
        func summary(_ k: String) -> Int { Int(json["summary"]?[k]?.numberLexeme ?? "-1") ?? -1 }
    }

    static func post(_ client: any TestClientProtocol, _ body: String, token: String?,
                     contentType: String? = "application/json", extra: HTTPFields = [:]) async throws -> Reply {
        var headers = extra
        if let token { headers[.authorization] = "Bearer \(token)" }
        if let contentType { headers[.contentType] = contentType }
        let r = try await client.execute(uri: "/v1/events", method: .post, headers: headers, body: ByteBuffer(string: body))
        let text = String(buffer: r.body)
        let json = (try? JSONParser.parse(text)) ?? .string(text)
        return Reply(status: Int(r.status.code), json: json, headers: r.headers)
    }

    static func event(_ fx: Fixture, key: String, customer: Int = 0, meter: String = "calls", value: String? = nil,
                      occurredAt: String? = nil, properties: String? = nil) -> String {
        var s = #"{"customer":\#(JSONWriter.quote(fx.customers[customer])),"meter":"\#(fx.prefix).\#(meter)","idempotency_key":\#(JSONWriter.quote(key)),"occurred_at":"\#(occurredAt ?? now())""#
        if let value { s += #","value":\#(value)"# }
        if let properties { s += #","properties":\#(properties)"# }
        return s + "}"
    }

    static func now(offsetSeconds: Double = 0) -> String {
        RFC3339Timestamp(epochMicroseconds: Int64((Date().timeIntervalSince1970 + offsetSeconds) * 1_000_000)).iso8601
    }

    static func count(_ fx: Fixture, _ whereSQL: String = "true") throws -> Int64 {
        let c = try PGConnection(conninfo: fx.conninfo)
        return try c.execute("""
            select count(*) as n from meter.events e join meter.customers c on c.id = e.customer_id
            where c.external_id like $1 and (\(whereSQL))
            """, [fx.prefix + "%"]).single().int("n")
    }

}
