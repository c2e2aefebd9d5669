import Foundation
import XCTest
import PGClient
import MeterWire
import MeterCore
import BillingMock
import MeterDevKit

/// The sync through Billing Meters (issue 14): each changed hour is one meter event on an hourly
/// pre-aggregated meter, its total times 10^value_scale; the engine's hourly summaries (read
/// back through its API) then equal our rollups, whatever revisions, faults and repeats happened.
final class BillingMetersSyncTests: XCTestCase {
    func testEachHoursTotalIsAMeterEventAndALateRevisionOverwritesIt() async throws {
        let env = try await BillingEnv.start("mev_late", meterEventsScale: 2)
        defer { Task { await env.stop() } }
        let c = try PGConnection(conninfo: env.db.info)
        let h = env.hours.last!
        try env.db.ingest(c, key: "l1", hour: h, value: "10")
        try env.db.ingest(c, key: "l2", hour: h, value: "2.25")
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)
        let first = try await env.engineTotals()[env.epoch(h)]
        XCTAssertEqual(first.flatMap { Decimal(string: $0) }, Decimal(string: "12.25"))

        try env.db.ingest(c, key: "l3", hour: h, value: "0.5")  // late: its hour was synced
        try env.db.cancel(c, keys: ["l1"])
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)
        let second = try await env.engineTotals()[env.epoch(h)]
        XCTAssertEqual(second.flatMap { Decimal(string: $0) }, Decimal(string: "2.75"), "the newest revision's event is the hour's value")
        // What the engine holds: one event per revision sent, each identified by it, the value
        // scaled, the timestamp inside the hour carrying the revision.
        let sent = try c.execute("""
            select e.identifier, e.value::text as v, e.ts - $1::bigint as offset_s from billing_mock.meter_events e order by e.seq
            """, [env.epoch(h)]).rows.map { (try $0.string("identifier"), try $0.string("v"), try $0.int("offset_s")) }
        let revision = try c.execute("select revision from meter.sync_outbox").single().int("revision")
        XCTAssertEqual(sent.count, 2, "\(sent)")
        XCTAssertEqual(sent.last?.1, "275", "2.75 at value scale 2")
        XCTAssertEqual(sent.last?.2, min(revision, 3599), "the revision in the timestamp's seconds")
        XCTAssertTrue(sent.last?.0.hasSuffix("-r\(revision)") ?? false, "\(sent)")
        try await env.assertEngineEqualsRollups(c)
    }

    func testApplyThenDropOn30PercentOfCallsBillsNoHourTwice() async throws {
        let env = try await BillingEnv.start("mev_drop", meterEventsScale: 1)
        defer { Task { await env.stop() } }
        let c = try PGConnection(conninfo: env.db.info)
        try env.db.ingest(c, key: "seed", hour: env.hours[0], value: "1")
        _ = try Rollup.drain(c)
        _ = try await BillingSync.drain(pool: env.pool, client: env.client, config: env.sync, logger: TestDatabase.logger)
        try await env.faults(#"{"drop_rate":0.3,"error_rate":0.1,"error_status":500}"#)
        var n = 0
        for round in 0..<6 {
            for _ in 0..<15 {
                try env.db.ingest(c, key: "d\(n)", hour: env.hours[(n * 7 + round) % env.hours.count], value: "\(n % 9 + 1).5")
                n += 1
            }
            _ = try Rollup.drain(c)
            _ = try await BillingSync.pass(pool: env.pool, client: env.client, config: env.sync, metrics: nil, logger: TestDatabase.logger)
        }
        let dropped = try await env.mockMetric("billing_mock_faults_injected_total{kind=\"drop\"}")
        XCTAssertGreaterThan(dropped, 0, "some responses were dropped after the call was applied")
        try await env.faults(#"{"drop_rate":0,"error_rate":0}"#)
        try await env.drainUntilSynced(c)
        try await env.assertEngineEqualsRollups(c)
        let doubled = try c.execute("""
            select count(*) - count(distinct identifier) as n from billing_mock.meter_events
            """).single().int("n")
        XCTAssertEqual(doubled, 0, "an identifier stored twice")
    }

    func testATotalWithMoreDecimalsThanTheScaleIsDeadWithTheReasonAndNothingIsSent() async throws {
        let env = try await BillingEnv.start("mev_scale", meterEventsScale: 0)
        defer { Task { await env.stop() } }
        env.sync.maxAttempts = 1  // a definitive refusal parks the hour at once
        let c = try PGConnection(conninfo: env.db.info)
        try env.db.ingest(c, key: "f1", hour: env.hours[0], value: "1.5")
        _ = try Rollup.drain(c)
        _ = try await BillingSync.drain(pool: env.pool, client: env.client, config: env.sync, logger: TestDatabase.logger)
        let r = try c.execute("select state, last_error from meter.sync_outbox").single()
        XCTAssertEqual(try r.string("state"), "dead")
        let lastError = try r.string("last_error")
        XCTAssertTrue(lastError.contains("meter_value_not_whole"), lastError)
        XCTAssertTrue(lastError.contains("--value-scale 1"), lastError)
        XCTAssertEqual(try c.execute("select count(*) as n from billing_mock.meter_events").single().int("n"), 0)
    }

    func testValuesAreScaledExactly() throws {
        XCTAssertEqual(try MeterEventValue.scaled("12.25", scale: 2), "1225")
        XCTAssertEqual(try MeterEventValue.scaled("12.250000", scale: 3), "12250")
        XCTAssertEqual(try MeterEventValue.scaled("0", scale: 4), "0")
        XCTAssertEqual(try MeterEventValue.scaled("0.001", scale: 3), "1")
        XCTAssertEqual(try MeterEventValue.scaled("-2.5", scale: 1), "-25")
        XCTAssertThrowsError(try MeterEventValue.scaled("0.0001", scale: 3))
        XCTAssertThrowsError(try MeterEventValue.scaled("1234567890123456", scale: 0))
        XCTAssertEqual(BillingMeters.perScaledUnit("0.5", scale: 3), "0.0005")
        XCTAssertEqual(BillingMeters.perScaledUnit("12", scale: 1), "1.2")
        XCTAssertEqual(BillingMeters.perScaledUnit("100", scale: 2), "1")
        XCTAssertEqual(BillingMeters.perScaledUnit("1.5", scale: 0), "1.5")
    }
}
