import Foundation
import XCTest
@testable import MeterCore

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
        let sql = "select status, event_id from meter.ingest_events($1::jsonb)"
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
        let sql = "select status from meter.ingest_events($1::jsonb)"
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
}

/// Runs one ingest call on a connection of its own and returns the statuses in order.
func ingestStatuses(_ info: String, _ sql: String, _ body: String) throws -> [String] {
    let c = try PGConnection(conninfo: info)
    defer { c.close() }
    var out: [String] = []
    for r in try c.execute(sql, [body]).rows { out.append(try r.string("status")) }
    return out
}
