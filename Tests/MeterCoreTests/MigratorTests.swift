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
