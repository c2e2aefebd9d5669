import Foundation
import HummingbirdTesting
import XCTest
import PGClient
import MeterWire
import MeterCore

/// Alerts (issue 16) with events sent through the HTTP API: an alert fires once per period, in the
/// rollup's transaction: a rollup that crashed after evaluating it (rolled back) left no firing and
/// no message, the next one (after the "restart") fires exactly once; a cancellation that drops
/// below and events that cross again fire nothing more; a late event of the previous month fires
/// for that month.
final class AlertsAPITests: XCTestCase {
    typealias T = APIHarness

    func testAnAlertFiresOncePerPeriodAcrossACrashAndALateEvent() async throws {
        try await T.withApp({ $0.limits.maxPastSeconds = 70 * 86_400 }) { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            defer { c.close() }
            let p = fx.prefix, customer = fx.customers[0]
            let plan = "\(p)-plan"
            try c.execute("select meter.plan_upsert($1, 'usd')", [plan])
            try c.execute("select meter.plan_price_set($1, $2, 'per_unit', 1)", [plan, "\(p).calls"])
            try c.execute("select meter.customer_subscribe($1, $2, to_char(now() at time zone 'UTC' - interval '1 month', 'YYYY-MM'))",
                          [customer, plan])
            let alert = try c.execute("select meter.alert_set($1, null, $2, 'quantity', 3) as id", [customer, "\(p).calls"]).single().int("id")
            func fired() throws -> [String] {
                try c.execute("""
                    select period || '=' || value::text as f from meter.alert_firings where alert_id = $1 order by period
                    """, [alert]).rows.map { try $0.string("f") }
            }
            func messages() throws -> Int64 {
                try c.execute("select count(*) as n from meter.webhook_messages where type = 'alert.triggered' and (payload ->> 'alert_id')::bigint = $1",
                              [alert]).single().int("n")
            }
            for k in ["a1", "a2", "a3"] {
                let r = try await T.post(client, T.event(fx, key: k), token: fx.token)
                XCTAssertEqual(r.status, 201)
            }
            // A rollup that evaluates the alert, then dies before its commit: nothing was fired.
            try c.execute("begin")
            _ = try c.execute("select meter.rollup_run()")
            XCTAssertEqual(try fired().count, 1, "inside the rollup's transaction the alert has fired")
            try c.execute("rollback")
            XCTAssertEqual(try fired(), [], "rolled back with the rollup: no firing")
            XCTAssertEqual(try messages(), 0, "... and no message")
            // After the restart, the next rollup fires it, once.
            _ = try Rollup.drain(c)
            let month = try c.execute("select to_char(now() at time zone 'UTC', 'YYYY-MM') as m").single().string("m")
            XCTAssertEqual(try fired(), ["\(month)=3"])
            XCTAssertEqual(try messages(), 1)
            // Below and across again: nothing more this period.
            let cancel = try await RollupAPITests.cancel(client, RollupAPITests.cancelBody(fx, "a1"), token: fx.token)
            XCTAssertEqual(cancel.status, 200)
            _ = try Rollup.drain(c)
            for k in ["a4", "a5"] { _ = try await T.post(client, T.event(fx, key: k), token: fx.token) }
            _ = try Rollup.drain(c)
            XCTAssertEqual(try fired(), ["\(month)=3"], "fired once in the period")
            XCTAssertEqual(try messages(), 1)
            // A late batch of last month (three calls): fires for last month.
            let last = try c.execute("""
                select to_char(now() at time zone 'UTC' - interval '1 month', 'YYYY-MM') as m,
                       extract(epoch from date_trunc('month', now(), 'UTC') - interval '1 month')::bigint + 3600 as t
                """).single()
            let lastMonth = try last.string("m"), t = try last.int("t")
            let at = RFC3339Timestamp(epochMicroseconds: t * 1_000_000).iso8601
            let batch = (1...3).map { T.event(fx, key: "late\($0)", occurredAt: at) }
            let r = try await T.post(client, "[" + batch.joined(separator: ",") + "]", token: fx.token)
            XCTAssertEqual(r.status, 200)
            _ = try Rollup.drain(c)
            XCTAssertEqual(try fired(), ["\(lastMonth)=3", "\(month)=3"])
            XCTAssertEqual(try messages(), 2)
        }
    }
}
