import XCTest
import PGClient
import MeterCore

/// The migrator against real, fresh databases: once-only, checksums, refusal on edited history,
/// concurrent runners, status.
final class MigratorTests: XCTestCase {
    /// A private copy of sql/ so a test may edit files.
    func copySQL() throws -> String {
        let dir = NSTemporaryDirectory() + "meter-sql-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.copyItem(atPath: TestDatabase.sqlDir, toPath: dir)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    func testAppliesEachMigrationOnceThenNothing() throws {
        let info = try TestDatabase.freshDatabase("once")
        let c = try PGConnection(conninfo: info)
        let m = Migrator(sqlDirectory: TestDatabase.sqlDir, logger: TestDatabase.logger)
        let files = try m.migrationFiles()
        XCTAssertFalse(files.isEmpty)
        XCTAssertTrue(try m.status(c).allSatisfy { $0.state == .pending })
        let first = try m.migrate(c)
        XCTAssertEqual(first.applied, files.map(\.name))
        XCTAssertEqual(first.functions, try m.functionFiles().count)
        let second = try m.migrate(c)
        XCTAssertEqual(second.applied, [])
        XCTAssertTrue(try m.status(c).allSatisfy { $0.state == .applied })
        let ledger = try c.execute("select version, checksum from meter.schema_migrations order by version").rows
        XCTAssertEqual(ledger.count, files.count)
        let sum = try c.execute("select encode(sha256(convert_to($1, 'UTF8')), 'hex') as h", [files[0].sql]).single().string("h")
        XCTAssertEqual(try ledger[0].string("checksum"), sum)
        XCTAssertTrue(try Migrator.isCurrent(c, expected: try m.expectedLedger(c)))
    }

    /// An installation from before the noun-first names (migration 0005): the old functions and
    /// their ledger rows are gone after one migrate, the new ones are there with their grants.
    func testRenamedFunctionsLeaveNothingBehind() throws {
        let info = try TestDatabase.freshDatabase("renamed")
        let dir = try copySQL()
        try FileManager.default.removeItem(atPath: dir + "/migrations/0005_function_names.sql")
        let c = try PGConnection(conninfo: info)
        try Migrator(sqlDirectory: dir, logger: TestDatabase.logger).migrate(c)
        // What 0004 left: the old names (bodies do not matter here) and their ledger rows.
        let old = ["authenticate_api_key", "create_api_key", "revoke_api_key", "ingest_events", "cancel_events",
                   "close_period", "upsert_customer", "upsert_meter"]
        for name in old {
            try c.execute("create function meter.\(name)(text) returns int language sql as 'select 1'")
            try c.execute("insert into meter.schema_functions (name, checksum) values ($1, repeat('0', 64))", [name + ".sql"])
        }
        try c.execute("insert into meter.schema_functions (name, checksum) values ('v_rollup_lag.sql', repeat('0', 64))")
        let m = Migrator(sqlDirectory: TestDatabase.sqlDir, logger: TestDatabase.logger)
        XCTAssertEqual(try m.migrate(c).applied, ["0005_function_names.sql"])
        XCTAssertEqual(try c.execute("""
            select count(*) as n from pg_catalog.pg_proc where pronamespace = 'meter'::regnamespace and proname = any($1::text[])
            """, [old]).single().int("n"), 0)
        XCTAssertEqual(try c.execute("""
            select count(*) as n from pg_catalog.pg_proc where pronamespace = 'meter'::regnamespace
              and proname in ('api_key_authenticate', 'event_ingest', 'event_cancel', 'period_close', 'customer_upsert', 'meter_upsert')
            """).single().int("n"), 6)
        XCTAssertTrue(try c.execute("select pg_catalog.has_function_privilege('meter_ingest', 'meter.event_ingest(jsonb, interval, interval, bytea)', 'execute') as ok")
            .single().bool("ok"))
        let ledger = try c.execute("select name from meter.schema_functions order by name collate \"C\"").rows.map { try $0.string("name") }
        XCTAssertEqual(ledger, try m.functionFiles().map(\.name).sorted())
    }

    func testRefusesWhenAnAppliedFileChanged() throws {
        let info = try TestDatabase.freshDatabase("changed")
        let dir = try copySQL()
        let c = try PGConnection(conninfo: info)
        let m = Migrator(sqlDirectory: dir, logger: TestDatabase.logger)
        try m.migrate(c)
        let first = try m.migrationFiles()[0]
        try (first.sql + "\n-- an innocent-looking edit\n").write(toFile: first.path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try m.migrate(c)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("refusing to migrate"), text)
            XCTAssertTrue(text.contains(first.name), text)
        }
        XCTAssertEqual(try m.status(c).first?.state, .changed)
        XCTAssertFalse(try Migrator.isCurrent(c, expected: try m.expectedLedger(c)))
    }

    func testAFailedMigrationLeavesNothingBehind() throws {
        let info = try TestDatabase.freshDatabase("failed")
        let dir = try copySQL()
        try "create table meter.half_done (id int);\nselect 1 / 0;\n"
            .write(toFile: dir + "/migrations/9999_broken.sql", atomically: true, encoding: .utf8)
        let c = try PGConnection(conninfo: info)
        let m = Migrator(sqlDirectory: dir, logger: TestDatabase.logger)
        XCTAssertThrowsError(try m.migrate(c)) { e in XCTAssertTrue("\(e)".contains("9999_broken.sql")) }
        XCTAssertNil(try c.execute("select to_regclass('meter.half_done')::text as t").single().optionalString("t"))
        XCTAssertEqual(try m.status(c).last?.state, .pending)
        XCTAssertEqual(try m.status(c).first?.state, .applied)  // earlier migrations stay applied
    }

    func testConcurrentRunnersSerializeOnTheAdvisoryLock() async throws {
        let info = try TestDatabase.freshDatabase("concurrent")
        let sqlDir = TestDatabase.sqlDir
        let reports = try await withThrowingTaskGroup(of: [String].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    try await onDedicatedThread {
                        let c = try PGConnection(conninfo: info)
                        return try Migrator(sqlDirectory: sqlDir, logger: TestDatabase.logger).migrate(c).applied
                    }
                }
            }
            var all: [[String]] = []
            for try await r in group { all.append(r) }
            return all
        }
        // Every file applied by exactly one runner; the others found it done.
        let files = try Migrator(sqlDirectory: sqlDir).migrationFiles().map(\.name)
        XCTAssertEqual(reports.flatMap { $0 }.sorted(), files.sorted())
        let c = try PGConnection(conninfo: info)
        XCTAssertEqual(try c.execute("select count(*) as n from meter.schema_migrations").single().int("n"), Int64(files.count))
    }

    func testRejectsBadFileNamesAndDuplicateVersions() throws {
        let dir = try copySQL()
        try "select 1;".write(toFile: dir + "/migrations/0001_again.sql", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Migrator(sqlDirectory: dir).migrationFiles()) { e in
            XCTAssertTrue("\(e)".contains("share version 1"), "\(e)")
        }
        try FileManager.default.removeItem(atPath: dir + "/migrations/0001_again.sql")
        try "select 1;".write(toFile: dir + "/migrations/12_Bad-Name.sql", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Migrator(sqlDirectory: dir).migrationFiles())
    }
}
