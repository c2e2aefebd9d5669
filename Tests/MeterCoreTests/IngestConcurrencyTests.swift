import Foundation
import XCTest
import PGClient
import MeterWire
import MeterCore

/// Interleavings of concurrent ingest against the real database, session by session.
final class IngestConcurrencyTests: XCTestCase {
    /// One fixed occurred_at per test run, so that repeated keys carry the same content.
    static let occurredAt = RFC3339Timestamp(epochMicroseconds: Int64((Date().timeIntervalSince1970 - 10) * 1_000_000)).utcString

    static func batch(_ customer: String, _ meter: String, _ keys: [String]) -> String {
        "[" + keys.map {
            #"{"customer":\#(JSONWriter.quote(customer)),"meter":\#(JSONWriter.quote(meter)),"idempotency_key":"\#($0)","occurred_at":"\#(occurredAt)","value":"1"}"#
        }.joined(separator: ",") + "]"
    }

    /// Two batches with overlapping keys in opposite orders, one of them stuck behind a third
    /// transaction: keys are inserted in one global order, so no deadlock (40P01), and every key
    /// ends up stored exactly once.
    func testOverlappingBatchesInOppositeOrdersDoNotDeadlock() async throws {
        let fx = try APIHarness.makeFixture()
        let customer = fx.customers[0], meter = "\(fx.prefix).calls"
        let sql = "select status, event_id from meter.event_ingest($1::jsonb)"
        let holder = try PGConnection(conninfo: fx.conninfo)
        try holder.execute("begin")
        try holder.execute(sql, [Self.batch(customer, meter, ["Z"])])

        let info = fx.conninfo
        let secondBody = Self.batch(customer, meter, ["B", "Z", "A"])
        let second = Task { try await onDedicatedThread { try ingestStatuses(info, sql, secondBody) } }
        try await Task.sleep(for: .milliseconds(400))  // second holds its first keys, waits on Z
        let firstBody = Self.batch(customer, meter, ["A", "B"])
        let first = Task { try await onDedicatedThread { try ingestStatuses(info, sql, firstBody) } }
        try await Task.sleep(for: .milliseconds(400))
        try holder.execute("rollback")  // Z is free again: second takes it, then first proceeds

        let secondVerdicts = try await second.value
        let firstVerdicts = try await first.value
        XCTAssertEqual(secondVerdicts, ["accepted", "accepted", "accepted"])
        XCTAssertEqual(firstVerdicts, ["duplicate", "duplicate"])
        XCTAssertEqual(try APIHarness.count(fx), 3)
    }

    /// The race the issue names: the same event sent by two sessions, the first still open when
    /// the second arrives. The second waits for the first's outcome: duplicate if it commits,
    /// accepted (and stored) if it rolls back. Never two rows, never a lost event.
    func testSecondDeliveryWaitsForTheFirstTransaction() async throws {
        let fx = try APIHarness.makeFixture()
        let customer = fx.customers[1], meter = "\(fx.prefix).calls"
        let sql = "select status from meter.event_ingest($1::jsonb)"
        for outcome in ["commit", "rollback"] {
            let key = "w-\(outcome)"
            let body = Self.batch(customer, meter, [key])
            let a = try PGConnection(conninfo: fx.conninfo)
            try a.execute("begin")
            XCTAssertEqual(try a.execute(sql, [body]).single().string("status"), "accepted")
            let info = fx.conninfo
            let b = Task { try await onDedicatedThread { try ingestStatuses(info, sql, body).first ?? "none" } }
            try await Task.sleep(for: .milliseconds(300))
            try a.execute(outcome)
            let verdict = try await b.value
            XCTAssertEqual(verdict, outcome == "commit" ? "duplicate" : "accepted", outcome)
            XCTAssertEqual(try APIHarness.count(fx, "e.idempotency_key = '\(key)'"), 1, outcome)
        }
    }

    /// Group commit: with a pool of 2 and 60 concurrent single-event requests, requests are stored
    /// in shared statements; every caller still gets the verdict and id of its own event, a
    /// revoked key among them is refused alone, and identical events are accepted once.
    func testGroupedRequestsEachGetTheirOwnVerdict() async throws {
        try await APIHarness.withApp(poolSize: 2) { client, fx in
            let other = APIKeys.generate()
            let c = try PGConnection(conninfo: fx.conninfo)
            try APIKeys.register(c, name: "revoked", token: other)
            try c.execute("select meter.api_key_revoke(left($1, 12))", [other])
            let t = APIHarness.now(offsetSeconds: -30)
            let results = try await withThrowingTaskGroup(of: (Int, APIHarness.Reply).self) { g in
                for i in 0..<60 {
                    g.addTask {
                        // 0..<50: distinct events; 50..<55: one identical event five times; 55..<60: revoked key
                        let key = i < 50 ? "g\(i)" : (i < 55 ? "same" : "revoked\(i)")
                        let value = i < 50 ? "\(i).25" : "7"
                        let body = APIHarness.event(fx, key: key, customer: i < 50 ? i % 3 : 0, value: value, occurredAt: t)
                        return (i, try await APIHarness.post(client, body, token: i < 55 ? fx.token : other))
                    }
                }
                var all: [(Int, APIHarness.Reply)] = []
                for try await r in g { all.append(r) }
                return all.sorted { $0.0 < $1.0 }
            }
            for (i, r) in results where i < 50 {
                XCTAssertEqual(r.status, 201, "request \(i)")
                let id = try XCTUnwrap(r.json["id"]?.numberLexeme.flatMap { Int64($0) })
                let row = try c.execute("select idempotency_key, value::text as v from meter.events where id = $1", [id]).single()
                XCTAssertEqual(try row.string("idempotency_key"), "g\(i)", "request \(i) got another request's id")
                XCTAssertEqual(try row.string("v"), "\(i).25")
            }
            let same = results.filter { (50..<55).contains($0.0) }.map(\.1)
            XCTAssertEqual(same.filter { $0.status == 201 }.count, 1)
            XCTAssertEqual(same.filter { $0.status == 200 }.count, 4)
            XCTAssertEqual(Set(same.map { $0.json["id"]?.numberLexeme }).count, 1)
            XCTAssertTrue(results.filter { $0.0 >= 55 }.allSatisfy { $0.1.status == 401 })
            XCTAssertEqual(try APIHarness.count(fx), 51)
            // And requests really were grouped: some COMMIT held more than one request.
            let m = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            let single = m.split(separator: "\n").first { $0.hasPrefix(#"meter_ingest_requests_per_commit_bucket{le="1.0"}"#) }
            let total = m.split(separator: "\n").first { $0.hasPrefix("meter_ingest_requests_per_commit_count") }
            let alone = Int(single?.split(separator: " ").last ?? "") ?? -1
            let commits = Int(total?.split(separator: " ").last ?? "") ?? -1
            XCTAssertGreaterThan(commits, 0, m)
            XCTAssertLessThan(alone, commits, "no COMMIT grouped requests: \(single ?? "") / \(total ?? "")")
        }
    }
}


/// Group commit isolates a request whose statement fails for a reason of its own: held behind a
/// busy one-connection pool, three requests of one key are taken as one group; the middle one
/// carries a number Postgres refuses (display scale 16,384: SQLSTATE 22003, not transient). Only
/// that request gets the error; the other two get their verdicts and their events are stored.
final class GroupCommitIsolationTests: XCTestCase {
    func testAFailingRequestFailsAloneNotItsGroup() async throws {
        let fx = try APIHarness.makeFixture()
        let pool = PGPool(conninfo: fx.conninfo, maxConnections: 1, logger: TestDatabase.logger)
        let metrics = MeterMetrics()
        let coalescer = IngestCoalescer(pool: pool, sql: IngestService.ingestSQL, params: [300, 3_024_000],
                                        maxEvents: 1000, metrics: metrics)
        let t = RFC3339Timestamp(epochMicroseconds: Int64((Date().timeIntervalSince1970 - 30) * 1_000_000))
        func item(_ key: String, properties: String = "{}") throws -> NormalizedEvent {
            NormalizedEvent(customer: fx.customers[0], meter: "\(fx.prefix).calls", idempotencyKey: key, occurredAt: t,
                            value: try ExactDecimal(parsing: "1"), properties: try JSONParser.parse(properties))
        }
        // A number Postgres refuses in jsonb (display scale 16,384) that our parser keeps as written.
        let poison = #"{"n":1."# + String(repeating: "0", count: 6_384) + "e-10000}"
        let (itemA, itemB, itemC) = (try item("iso-a"), try item("iso-b", properties: poison), try item("iso-c"))
        // The pool's only connection is busy until the three requests are queued.
        let (held, release) = AsyncStream.makeStream(of: Void.self)
        let (holding, holdingSink) = AsyncStream.makeStream(of: Void.self)
        let holder = Task {
            try await pool.withConnection { _ in
                holdingSink.yield()
                let sem = DispatchSemaphore(value: 0)
                Task { for await _ in held {}; sem.signal() }
                sem.wait()
            }
        }
        for await _ in holding { break }
        async let a = Result(catching: { try await coalescer.submit(token: APIKeys.hashParameter(fx.token), items: [itemA]) })
        try await Task.sleep(for: .milliseconds(100))
        async let b = Result(catching: { try await coalescer.submit(token: APIKeys.hashParameter(fx.token), items: [itemB]) })
        try await Task.sleep(for: .milliseconds(100))
        async let c = Result(catching: { try await coalescer.submit(token: APIKeys.hashParameter(fx.token), items: [itemC]) })
        try await Task.sleep(for: .milliseconds(100))
        release.finish()
        let (ra, rb, rc) = await (a, b, c)
        try await holder.value
        for (name, r) in [("a", ra), ("c", rc)] {
            let rows = try r.get()
            XCTAssertEqual(rows.count, 1, name)
            XCTAssertEqual(try rows.first?.row.string("status"), "accepted", name)
        }
        switch rb {
        case .success(let rows): XCTFail("the poisoned request was stored: \(rows.map(\.row))")
        case .failure(let e): XCTAssertEqual((e as? PGError)?.sqlState, "22003", "\(e)")
        }
        XCTAssertEqual(try APIHarness.count(fx), 2)
        let text = String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self)
        XCTAssertTrue(text.contains("meter_ingest_groups_split_total 1"), "the three were not one group:\n\(text)")
        await pool.shutdown()
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

/// Runs one ingest call on a connection of its own and returns the statuses in order.
func ingestStatuses(_ info: String, _ sql: String, _ body: String) throws -> [String] {
    let c = try PGConnection(conninfo: info)
    defer { c.close() }
    var out: [String] = []
    for r in try c.execute(sql, [body]).rows { out.append(try r.string("status")) }
    return out
}