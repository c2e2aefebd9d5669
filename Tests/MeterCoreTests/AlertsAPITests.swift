import Foundation
import HummingbirdTesting
import XCTest
import PGClient
import MeterWire
import MeterCore
import MeterAPI
import MeterDevKit

/// Alerts (issue 16) with events sent through the HTTP API: an alert fires once per period, in the
/// rollup's transaction: a rollup that crashed after evaluating it (rolled back) left no firing and
/// no message, the next one (after the "restart") fires exactly once; a cancellation that drops
/// below and events that cross again fire nothing more; a late event of the previous month fires
/// for that month.
final class AlertsAPITests: XCTestCase {
    typealias T = APIHarness

    /// The fixture's first customer on a plan (since last month) pricing its calls, with an alert
    /// at 3 calls; its firings ("period=value") and alert.triggered messages.
    struct Watched {
        let c: PGConnection
        let alert: Int64
        init(_ c: PGConnection, _ fx: T.Fixture) throws {
            let p = fx.prefix, plan = "\(fx.prefix)-plan"
            try c.execute("select meter.plan_upsert($1, 'usd')", [plan])
            try c.execute("select meter.plan_price_set($1, $2, 'per_unit', 1)", [plan, "\(p).calls"])
            try c.execute("select meter.customer_subscribe($1, $2, to_char(now() at time zone 'UTC' - interval '1 month', 'YYYY-MM'))",
                          [fx.customers[0], plan])
            self.c = c
            self.alert = try c.execute("select meter.alert_set($1, null, $2, 'quantity', 3) as id",
                                       [fx.customers[0], "\(p).calls"]).single().int("id")
        }
        func fired() throws -> [String] {
            try c.execute("select period || '=' || value::text as f from meter.alert_firings where alert_id = $1 order by period",
                          [alert]).rows.map { try $0.string("f") }
        }
        func messages() throws -> Int64 {
            try c.execute("select count(*) as n from meter.webhook_messages where type = 'alert.triggered' and (payload ->> 'alert_id')::bigint = $1",
                          [alert]).single().int("n")
        }
    }

    func testAnAlertFiresOncePerPeriodAcrossACrashAndALateEvent() async throws {
        try await T.withApp({ $0.limits.maxPastSeconds = 70 * 86_400 }) { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            defer { c.close() }
            let watched = try Watched(c, fx)
            func fired() throws -> [String] { try watched.fired() }
            func messages() throws -> Int64 { try watched.messages() }
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

    /// The same rule through the running service, its own rollup loop and a real restart: the
    /// first service fires the alert once; a second one on the same database, given more events
    /// of the month and a late batch of last month, fires only last month's.
    func testAnAlertFiresOnceAcrossAServiceRestart() async throws {
        let fx = try T.makeFixture()
        let c = try PGConnection(conninfo: fx.conninfo)
        defer { c.close() }
        let customer = fx.customers[0]
        let watched = try Watched(c, fx)
        func fired() throws -> [String] { try watched.fired() }
        func messages() throws -> Int64 { try watched.messages() }
        func rolledUp() throws -> Int64 {
            try c.execute("""
                select coalesce(sum(r.event_count), 0) as n from meter.rollup_hourly r
                join meter.customers cu on cu.id = r.customer_id where cu.external_id = $1
                """, [customer]).single().int("n")
        }
        func waitFor(_ what: String, _ done: () throws -> Bool) async throws {
            let start = ContinuousClock.now
            while try !done() {
                if ContinuousClock.now - start > .seconds(30) { XCTFail("\(what): not within 30 s"); return }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        let last = try c.execute("""
            select to_char(now() at time zone 'UTC', 'YYYY-MM') as m, to_char(now() at time zone 'UTC' - interval '1 month', 'YYYY-MM') as l,
                   extract(epoch from date_trunc('month', now(), 'UTC') - interval '1 month')::bigint + 3600 as t
            """).single()
        let month = try last.string("m"), lastMonth = try last.string("l")
        let lastMonthAt = RFC3339Timestamp(epochMicroseconds: try last.int("t") * 1_000_000).iso8601
        var config = ServeConfiguration()
        config.limits.maxPastSeconds = 70 * 86_400
        let token = fx.token
        func send(_ port: Int, _ events: [String]) async throws -> Int {
            let body = "[" + events.joined(separator: ",") + "]"
            return try await onDedicatedThread {
                try LoadClient(port: port).request("POST", "/v1/events",
                                                   headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")],
                                                   body: body).status
            }
        }

        var server = try await RunningServer.start(config, conninfo: fx.conninfo, poolSize: 2)
        let first = try await send(server.port, ["a1", "a2", "a3"].map { T.event(fx, key: $0) })
        XCTAssertEqual(first, 200)
        try await waitFor("the first service's rollup fires the alert") { try fired() == ["\(month)=3"] }
        try await server.stop()
        XCTAssertEqual(try messages(), 1)

        server = try await RunningServer.start(config, conninfo: fx.conninfo, poolSize: 2)
        let second = try await send(server.port, ["a4", "a5"].map { T.event(fx, key: $0) }
                                        + (1...3).map { T.event(fx, key: "late\($0)", occurredAt: lastMonthAt) })
        XCTAssertEqual(second, 200)
        try await waitFor("the second service's rollup folds all eight") { try rolledUp() == 8 }
        try await server.stop()
        XCTAssertEqual(try fired(), ["\(lastMonth)=3", "\(month)=3"], "this month's once, across the restart; last month's for the late batch")
        XCTAssertEqual(try messages(), 2)
    }
}
