import Foundation
import XCTest
import PGClient
import MeterWire
import MeterDevKit

/// The replay end to end (HTTP ingest with duplicates and out-of-order batches, rollups, the sync to
/// the mock engine on a test clock, its invoices and webhooks, our closes, late events after a
/// close), then every closed period's figures recomputed from the NDJSON alone, here, without
/// meter's SQL: event counts and quantities per aggregation, net of cancellations. The run is small
/// but forced (issue 18) to contain cancellations sent after their period's close (they must land
/// as negative adjustments) and cancellations that reach the service before their event (refused
/// with event_not_found, re-sent after it, applied).
final class ReplayTests: XCTestCase {
    func testReplayFiguresMatchAnIndependentRecomputationFromTheNDJSON() async throws {
        let (s, info, o) = try await replay(days: 3, customers: 5, seed: 11, eventsPerCustomerDay: 15, cancelShare: 0.25, lateCancelShare: 0.1)
        XCTAssertEqual(s.periods.count, 2, "the window's month and the month after it were closed")

        // The NDJSON, read back.
        struct E { let customer, meter, key: String; let at: Int64; let value: Decimal; let user: String? }
        var events: [String: E] = [:]
        var cancelled = Set<String>()
        var invalid = 0, deliveries = 0, cancelRows = 0, lateCancelRows = 0
        let text = try String(contentsOfFile: s.ndjsonPath, encoding: .utf8)
        for line in text.split(separator: "\n") {
            let j = try JSONParser.parse(String(line))
            let customer = j["customer"]!.stringValue!, key = j["idempotency_key"]!.stringValue!
            switch j["kind"]!.stringValue! {
            case "event":
                let at = try RFC3339Timestamp(parsing: j["occurred_at"]!.stringValue!).epochMicroseconds
                events[customer + "/" + key] = E(customer: customer, meter: j["meter"]!.stringValue!, key: key, at: at,
                                                 value: Decimal(string: j["value"]!.stringValue!)!, user: j["user"]?.stringValue)
                deliveries += Int(j["deliveries"]?.numberLexeme ?? "1")!
            case "cancel":
                cancelled.insert(customer + "/" + key)
                cancelRows += 1
                if j["after_close"]?.boolValue == true { lateCancelRows += 1 }
            default: invalid += 1
            }
        }
        XCTAssertGreaterThan(invalid, 0)
        XCTAssertEqual(s.rejected, invalid, "every invalid event was rejected, nothing else")
        XCTAssertEqual(s.accepted, events.count, "every valid event accepted once")
        XCTAssertGreaterThanOrEqual(Double(s.duplicates), 0.05 * Double(deliveries), "≥ 5 % duplicate deliveries")
        // Every cancellation delivered and applied: the first of each event cancelled, the rest
        // (a late one of an event cancelled that day) already cancelled; none lost.
        XCTAssertGreaterThan(lateCancelRows, 0, "the run contains cancellations after a close")
        XCTAssertGreaterThan(s.cancellationsResent, 0, "the run contains cancellations that reached the service before their event")
        XCTAssertEqual(s.cancelled, cancelled.count, "every cancelled event cancelled once")
        XCTAssertEqual(s.cancelled + s.alreadyCancelled, cancelRows, "every cancellation row got a final verdict")
        XCTAssertEqual(s.cancellationsRefused, [:], "no cancellation lost")
        XCTAssertGreaterThan(s.lateCancelled, 0)
        // The replay's own check (the NDJSON's expectation against meter's invoices) agrees, on
        // every line meter has, and saw the negative adjustments.
        let check = try XCTUnwrap(s.check)
        XCTAssertEqual(check.differences, [])
        XCTAssertGreaterThan(check.negativeAdjustmentLines, 0, "late cancellations became negative adjustment lines")

        let c = try PGConnection(conninfo: info)
        defer { c.close() }
        for p in s.periods {
            let b = try c.execute("""
                select extract(epoch from to_timestamp($1 || '-01', 'YYYY-MM-DD') at time zone 'UTC')::bigint * 1000000 as s,
                       extract(epoch from (to_timestamp($1 || '-01', 'YYYY-MM-DD') at time zone 'UTC') + interval '1 month')::bigint * 1000000 as e
                """, [p]).single()
            let (from, to) = (try b.int("s"), try b.int("e"))
            var expected: [String: (n: Int, q: Decimal)] = [:]
            let alive = events.filter { !cancelled.contains($0.key) }.map(\.value)
            let live = alive.filter { $0.at >= from && $0.at < to }
            for group in Dictionary(grouping: live, by: { $0.customer + "|" + $0.meter }) {
                let q: Decimal = switch group.value[0].meter {
                case "api_calls": Decimal(group.value.count)
                // (every plan has a default token price: the meter's lines together bill every token)
                case "storage_gb", "ai_tokens": group.value.reduce(0) { $0 + $1.value }
                case "peak_seats": group.value.map(\.value).max()!
                case "disk_gb":
                    // GB-hours: every reading up to the period's end, the last before it carried in
                    GaugeIntegral.timeWeighted(alive.filter { $0.customer == group.value[0].customer && $0.meter == "disk_gb" && $0.at < to }
                        .map { GaugeIntegral.Reading(at: $0.at, key: $0.key, value: $0.value) }, from: from, to: to)
                default: Decimal(Set(group.value.compactMap(\.user)).count)
                }
                expected[group.key] = (group.value.count, q)
            }
            // A gauge's line is there without readings in the period too: the last one before it holds.
            for customer in Set(alive.map(\.customer)) where expected[customer + "|disk_gb"] == nil {
                expected[customer + "|disk_gb"] = (0, GaugeIntegral.timeWeighted(
                    alive.filter { $0.customer == customer && $0.meter == "disk_gb" && $0.at < to }
                        .map { GaugeIntegral.Reading(at: $0.at, key: $0.key, value: $0.value) }, from: from, to: to))
            }
            // Ours: the period's usage line plus every adjustment made for it later.
            let rows = try c.execute("""
                select x.external_id || '|' || m.code as k,
                       sum(l.event_count) filter (where l.kind = 'usage' and i.period = $1 or l.adjusts_period = $1) as n,
                       sum(l.quantity) filter (where l.kind = 'usage' and i.period = $1 or l.adjusts_period = $1)::text as q
                from meter.invoice_lines l join meter.invoices i on i.id = l.invoice_id
                join meter.customers x on x.id = i.customer_id join meter.meters m on m.id = l.meter_id
                group by 1
                """, [p]).rows
            var checked = 0
            for r in rows {
                let k = try r.string("k")
                let want = expected[k] ?? (0, 0)
                XCTAssertEqual(try r.optionalInt("n") ?? 0, Int64(want.n), "\(p) \(k): events")
                XCTAssertEqual(Decimal(string: try r.optionalString("q") ?? "0"), want.q, "\(p) \(k): quantity")
                checked += 1
            }
            XCTAssertEqual(checked, 5 * 6, "every customer and meter has a line in \(p)")
            // one reconciliation row per price of the customer's plan (ai_tokens: one per filter)
            let priced = (0..<5).map { ReplayRunner.plans[ReplayWorkload.planIndex(customer: $0, plans: ReplayRunner.plans.count)].prices.count }
                .reduce(0, +)
            let statuses = try c.execute("select status, count(*) as n from meter.reconciliation where period = $1 group by 1", [p])
                .rows.map { "\(try $0.string("status"))=\(try $0.int("n"))" }
            XCTAssertEqual(statuses, ["MATCH=\(priced)"], "\(p)")
        }
        XCTAssertEqual(Int64(check.linesCompared), try c.execute("select count(*) as n from meter.invoice_lines").single().int("n"),
                       "the check compared every invoice line")
        // The reconciliation's cancelled events: every event the NDJSON cancels (in its period or
        // after the close), each counted once, on its own line.
        let cancelledOnLines = try c.execute("select coalesce(sum(cancelled_events), 0)::bigint as n from meter.reconciliation").single().int("n")
        XCTAssertEqual(cancelledOnLines, Int64(cancelled.count), "cancelled events on the reconciliation's lines")
        XCTAssertGreaterThan(cancelledOnLines, 0)
        let negative = try c.execute("select count(*) as n from meter.invoice_lines where kind = 'adjustment' and amount < 0").single().int("n")
        XCTAssertGreaterThan(negative, 0, "meter invoiced negative adjustments")
        // The check bites: one negative adjustment line altered by one minor unit, one invoice's
        // total by five (triggers bypassed, as only a superuser can), and one verdict fewer, are
        // each reported.
        let expectation = try ReplayExpectation(ndjsonPath: s.ndjsonPath, customers: o.customers, periods: s.periods)
        try c.execute("set session_replication_role = replica")
        let altered = try c.execute("""
            update meter.invoice_lines set amount = amount + 1
            where (invoice_id, line_no) = (select invoice_id, line_no from meter.invoice_lines
                                           where kind = 'adjustment' and amount < 0 order by invoice_id, line_no limit 1)
            returning adjusts_period
            """).single().string("adjusts_period")
        try c.execute("update meter.invoices set total = total + 5 where id = (select min(id) from meter.invoices)")
        try c.execute("reset session_replication_role")
        var fewer = s.received
        fewer.cancelled -= 1
        let bitten = try expectation.compare(received: fewer, c)
        XCTAssertEqual(bitten.differences.count, 3, "\(bitten.differences)")
        XCTAssertTrue(bitten.differences.contains { $0.hasPrefix("verdicts:") }, "\(bitten.differences)")
        XCTAssertTrue(bitten.differences.contains { $0.contains("adjustment") && $0.contains("for \(altered)") }, "\(bitten.differences)")
        XCTAssertTrue(bitten.differences.contains { $0.hasPrefix("invoice ") && $0.contains("expected total") },
                      "an invoice's total that is not the sum of its expected lines: \(bitten.differences)")

        let late = try c.execute("select count(*) as n, count(adjusted_on) as adjusted from meter.late_after_close").single()
        XCTAssertGreaterThan(try late.int("n"), 0, "some events arrived after their period's close")
        XCTAssertEqual(try late.int("adjusted"), try late.int("n"), "and all were adjusted on the next invoice")
    }

    /// A window across a month boundary (33 days always span one): a close in the middle of the
    /// run, after flushing what the client held back and the cancellations it must re-send, late
    /// rows after each close, and a third close that must find nothing new for the first month.
    /// The replay's own check compares every line and total.
    func testReplayAcrossAMonthBoundaryMatchesItsIndependentExpectation() async throws {
        let (s, info, _) = try await replay(days: 33, customers: 3, seed: 5, eventsPerCustomerDay: 4, cancelShare: 0.3, lateCancelShare: 0.2)
        XCTAssertEqual(s.periods.count, 3, "two months of the window and the month after: \(s.periods)")
        XCTAssertGreaterThan(s.cancellationsResent, 0)
        XCTAssertGreaterThan(s.lateCancelled, 0)
        XCTAssertEqual(s.cancellationsRefused, [:])
        let check = try XCTUnwrap(s.check)
        XCTAssertEqual(check.differences, [])
        XCTAssertEqual(check.invoicesFound, 3 * 3)
        let c = try PGConnection(conninfo: info)
        defer { c.close() }
        // Adjustments landed on the invoice after each closed window month, and only there.
        let on = try c.execute("""
            select distinct i.period || '<-' || l.adjusts_period as p from meter.invoice_lines l
            join meter.invoices i on i.id = l.invoice_id where l.kind = 'adjustment' order by 1
            """).rows.map { try $0.string("p") }
        XCTAssertEqual(on, ["\(s.periods[1])<-\(s.periods[0])", "\(s.periods[2])<-\(s.periods[1])"])
        XCTAssertEqual(Int64(check.linesCompared), try c.execute("select count(*) as n from meter.invoice_lines").single().int("n"))
    }

    /// A replay in a fresh database, its NDJSON in a temporary directory removed after the test.
    private func replay(days: Int, customers: Int, seed: UInt64, eventsPerCustomerDay: Int, cancelShare: Double,
                        lateCancelShare: Double) async throws -> (ReplaySummary, String, ReplayOptions) {
        let info = try TestDatabase.freshDatabase("replay_\(UInt16.random(in: 0...UInt16.max))")
        let dir = NSTemporaryDirectory() + "meter-replay-\(UUID().uuidString)"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        var o = ReplayOptions()
        o.days = days
        o.customers = customers
        o.seed = seed
        o.eventsPerCustomerDay = eventsPerCustomerDay
        o.cancelShare = cancelShare
        o.lateCancelShare = lateCancelShare
        o.outputDir = dir
        let s = try await ReplayRunner.run(conninfo: info, sqlDir: TestDatabase.sqlDir, options: o, logger: TestDatabase.logger) { _ in }
        return (s, info, o)
    }
}
