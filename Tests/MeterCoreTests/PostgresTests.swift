import XCTest
import PGClient

/// The libpq wrapper against a real server: parameters, types, errors, transactions, COPY,
/// LISTEN/NOTIFY, and the pool's handling of dropped connections and exhaustion.
final class PostgresTests: XCTestCase {
    func testParametersAreNeverSplicedAndTypesDecode() throws {
        let c = try TestDatabase.connect()
        let evil = "x'); drop table meter.events; --"
        let r = try c.execute("select $1::text as s, $2::bigint as n, $3::boolean as b, $4::text as missing",
                              [evil, Int64(9_007_199_254_740_993), true, String?.none]).single()
        XCTAssertEqual(try r.string("s"), evil)
        XCTAssertEqual(try r.int("n"), 9_007_199_254_740_993)
        XCTAssertTrue(try r.bool("b"))
        XCTAssertNil(try r.optionalString("missing"))
        XCTAssertThrowsError(try r.string("missing"))
        XCTAssertThrowsError(try r.string("no_such_column"))
        XCTAssertEqual(try c.execute("select count(*) as n from meter.events where false").single().int("n"), 0)
    }

    func testServerErrorsCarrySQLSTATE() throws {
        let c = try TestDatabase.connect()
        XCTAssertThrowsError(try c.execute("select 1 / $1::int", [0])) { e in
            let pg = e as? PGError
            XCTAssertEqual(pg?.kind, .server)
            XCTAssertEqual(pg?.sqlState, "22012")
            XCTAssertEqual(pg?.message, "division by zero")
        }
        XCTAssertThrowsError(try c.execute("select * from meter.no_such_table")) { e in
            XCTAssertEqual((e as? PGError)?.sqlState, "42P01")
        }
        // The connection stays usable after an error.
        XCTAssertEqual(try c.execute("select 2 as v").single().int("v"), 2)
    }

    func testTransactionRollsBackOnError() throws {
        let c = try TestDatabase.connect()
        let ext = TestDatabase.unique("tx")
        XCTAssertThrowsError(try c.transaction { c in
            try c.execute("select meter.customer_upsert($1)", [ext])
            try c.execute("select 1 / 0")
        })
        XCTAssertTrue(c.isIdle)
        XCTAssertEqual(try c.execute("select count(*) as n from meter.customers where external_id = $1", [ext]).single().int("n"), 0)
        _ = try c.transaction { c in try c.execute("select meter.customer_upsert($1)", [ext]) }
        XCTAssertEqual(try c.execute("select count(*) as n from meter.customers where external_id = $1", [ext]).single().int("n"), 1)
    }

    func testPreparedStatementsAreReused() throws {
        let c = try TestDatabase.connect()
        for i in 0..<5 {
            XCTAssertEqual(try c.executePrepared("select $1::int + 1 as v", [i]).single().int("v"), Int64(i + 1))
        }
        XCTAssertEqual(try c.execute("select count(*) as n from pg_prepared_statements").single().int("n"), 1)
    }

    func testCopyInStoresRowsAndReportsErrors() throws {
        let c = try TestDatabase.connect()
        try c.execute("create temp table copy_t (id int, note text)")
        let note = "tab\there, newline\nthere, backslash \\ and ünïcödé"
        let n = try c.copyIn("copy copy_t (id, note) from stdin",
                             chunks: ["1\t\(PGConnection.copyEscape(note))\n2\t\\N\n", "3\tthree\n"])
        XCTAssertEqual(n, 3)
        XCTAssertEqual(try c.execute("select note from copy_t where id = 1").single().string("note"), note)
        XCTAssertNil(try c.execute("select note from copy_t where id = 2").single().optionalString("note"))
        XCTAssertThrowsError(try c.copyIn("copy copy_t (id, note) from stdin", chunks: ["not-a-number\tx\n"])) { e in
            XCTAssertEqual((e as? PGError)?.sqlState, "22P02")
        }
        XCTAssertEqual(try c.execute("select count(*) as n from copy_t").single().int("n"), 3)
    }

    func testListenerReceivesNotificationsAndReconnects() async throws {
        let info = try TestDatabase.conninfo()
        let channel = "meter_test_\(UInt32.random(in: 0...UInt32.max))"
        let listener = PGListener(conninfo: info, channels: [channel], logger: TestDatabase.logger)
        listener.start()
        defer { listener.stop() }
        var it = listener.events.makeAsyncIterator()
        let first = await it.next()
        XCTAssertEqual(first, .reconnected)
        let sender = try PGConnection(conninfo: info)
        try sender.execute("select pg_notify($1, $2)", [channel, "hello"])
        guard case .notification(let n)? = await it.next() else { return XCTFail("no notification") }
        XCTAssertEqual(n.channel, channel)
        XCTAssertEqual(n.payload, "hello")
        // Kill the listener's backend: it must reconnect, say so, and keep receiving.
        try sender.execute("""
            select pg_terminate_backend(pid) from pg_stat_activity
            where pid <> pg_backend_pid() and query ilike $1
            """, ["listen%\(channel)%"])
        var sawReconnect = false
        while let e = await it.next() {
            if e == .reconnected { sawReconnect = true; break }
        }
        XCTAssertTrue(sawReconnect)
        try sender.execute("select pg_notify($1, $2)", [channel, "again"])
        guard case .notification(let m)? = await it.next() else { return XCTFail("no notification after reconnect") }
        XCTAssertEqual(m.payload, "again")
    }

    func testPoolReplacesAConnectionTheServerDropped() async throws {
        let pool = PGPool(conninfo: try TestDatabase.conninfo(), maxConnections: 2, logger: TestDatabase.logger)
        let pid1 = try await pool.withConnection { Int64($0.backendPID) }
        let admin = try TestDatabase.connect()
        XCTAssertTrue(try admin.execute("select pg_terminate_backend($1::int) as ok", [pid1]).single().bool("ok"))
        try await Task.sleep(for: .milliseconds(200))
        // The idle connection is dead; the pool notices on first use and retries on a fresh one.
        let pid2 = try await pool.withConnection { try $0.execute("select pg_backend_pid() as p").single().int("p") }
        XCTAssertNotEqual(pid1, pid2)
        let v = try await pool.withConnection { try $0.execute("select 41 + 1 as v").single().int("v") }
        XCTAssertEqual(v, 42)
        let stats = pool.stats
        XCTAssertLessThanOrEqual(stats.open, 2)
        await pool.shutdown()
    }

    func testPoolIsBoundedAndTimesOutWhenExhausted() async throws {
        let pool = PGPool(conninfo: try TestDatabase.conninfo(), maxConnections: 2, acquireTimeout: .milliseconds(300),
                          logger: TestDatabase.logger)
        // Hold both connections for 1.5 s; a third caller must fail with poolExhausted, not hang.
        async let a: Void = pool.withConnection { _ = try $0.execute("select pg_sleep(1.5)") }
        async let b: Void = pool.withConnection { _ = try $0.execute("select pg_sleep(1.5)") }
        try await Task.sleep(for: .milliseconds(300))
        let stats = pool.stats
        XCTAssertEqual(stats.open, 2)
        XCTAssertEqual(stats.inUse, 2)
        do {
            _ = try await pool.withConnection { try $0.execute("select 1") }
            XCTFail("expected poolExhausted")
        } catch let e as PGError {
            XCTAssertEqual(e.kind, .poolExhausted)
        }
        _ = try await (a, b)
        // Freed connections are reused.
        let v = try await pool.withConnection { try $0.execute("select 1 as v").single().int("v") }
        XCTAssertEqual(v, 1)
        await pool.shutdown()
    }

    func testPoolRollsBackAnAbandonedTransaction() async throws {
        let pool = PGPool(conninfo: try TestDatabase.conninfo(), maxConnections: 1, logger: TestDatabase.logger)
        let ext = TestDatabase.unique("abandoned")
        _ = try await pool.withConnection { c in
            try c.execute("begin")
            try c.execute("select meter.customer_upsert($1)", [ext])
        }
        let n = try await pool.withConnection { c in
            (try c.execute("select count(*) as n from meter.customers where external_id = $1", [ext]).single().int("n"), c.isIdle)
        }
        XCTAssertEqual(n.0, 0)
        XCTAssertTrue(n.1)
        await pool.shutdown()
    }

    func testConnectsWithAPostgresURLAsWellAsConninfo() throws {
        let pg = TestDatabase.cluster
        let db = try TestDatabase.connect().execute("select current_database() as d").single().string("d")
        let socket = pg.socketDir.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? pg.socketDir
        let url = "postgresql://\(pg.superuser)@/\(db)?host=\(socket)&port=\(pg.port)"
        let c = try PGConnection(conninfo: url)
        XCTAssertEqual(try c.execute("select current_database() as d").single().string("d"), db)
        XCTAssertEqual(try c.execute("show synchronous_commit").single().string("synchronous_commit"), "on")
        XCTAssertEqual(try c.execute("show timezone").single().string("TimeZone"), "UTC")
        XCTAssertThrowsError(try PGConnection(conninfo: "postgresql://nobody@/\(db)?host=/nonexistent&port=1")) { e in
            XCTAssertEqual((e as? PGError)?.kind, .connection)
        }
    }
}
