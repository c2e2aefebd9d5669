import Foundation
import Logging
import PGClient

/// Applies `sql/migrations/NNNN_name.sql` (forward-only, each once, each in its own transaction,
/// recorded with its SHA-256 in `meter.schema_migrations`), then re-applies every
/// `sql/functions/*.sql` then `sql/views/*.sql` (CREATE OR REPLACE) in name order in one transaction.
///
/// Every transaction first takes the transaction-scoped advisory lock
/// `pg_advisory_xact_lock(hashtext('meter.migrate'))`, so concurrent runs serialize (a second
/// runner waits, then finds nothing left to do), and then sets `lock_timeout`, so DDL never sits
/// in the lock queue behind a long transaction while blocking all traffic behind itself.
///
/// It refuses to run when an applied migration's file has changed or disappeared: migrations are
/// history, and history is not edited (add a new migration instead).
public struct Migrator: Sendable {
    public struct File: Sendable {
        public let version: Int
        public let name: String
        public let path: String
        public let sql: String
    }

    public struct StatusEntry: Sendable {
        public enum State: String, Sendable { case applied, pending, changed, missingFile = "missing-file" }
        public let version: Int
        public let name: String
        public let state: State
        public let appliedAt: String?
        public let checksum: String
    }

    public struct Report: Sendable {
        public var applied: [String] = []
        public var functions: Int = 0
        /// Monthly partitions of meter.events this run created.
        public var partitionsCreated: Int = 0
    }

    public struct MigrationError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static let lockSQL = "select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.migrate'))"

    public let sqlDirectory: String
    public let lockTimeout: String
    public let logger: Logger

    public init(sqlDirectory: String, lockTimeout: String = "10s", logger: Logger = Logger(label: "meter.migrate")) {
        self.sqlDirectory = sqlDirectory
        self.lockTimeout = lockTimeout
        self.logger = logger
    }

    // MARK: files

    public func migrationFiles() throws -> [File] {
        let dir = sqlDirectory + "/migrations"
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".sql") }.sorted()
        var seen: [Int: String] = [:]
        return try names.map { name in
            guard name.range(of: #"^[0-9]{4}_[a-z0-9_]+\.sql$"#, options: .regularExpression) != nil,
                  let version = Int(name.prefix(4)) else {
                throw MigrationError(description: "bad migration file name \(name): expected NNNN_lower_snake.sql")
            }
            if let other = seen[version] {
                throw MigrationError(description: "two migrations share version \(version): \(other) and \(name)")
            }
            seen[version] = name
            let path = dir + "/" + name
            return File(version: version, name: name, path: path, sql: try String(contentsOfFile: path, encoding: .utf8))
        }
    }

    /// `sql/functions/*.sql`, then `sql/views/*.sql` (a view may call a function), each folder in
    /// name order; a file is named by its path under sql/ (`functions/event_ingest.sql`).
    public func functionFiles() throws -> [File] {
        try ["functions", "views"].flatMap { folder in
            let dir = sqlDirectory + "/" + folder
            let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".sql") }.sorted()
            return try names.map { name in
                let path = dir + "/" + name
                return File(version: 0, name: folder + "/" + name, path: path, sql: try String(contentsOfFile: path, encoding: .utf8))
            }
        }
    }

    // MARK: database

    /// Creates the schema and the ledger tables when missing (under the lock).
    package func bootstrap(_ conn: PGConnection) throws {
        try conn.transaction { c in
            try c.execute(Self.lockSQL)
            try c.executeScript("""
                create schema if not exists meter;
                create table if not exists meter.schema_migrations (
                    version      integer primary key,
                    name         text not null,
                    checksum     text not null,
                    applied_at   timestamptz not null default now(),
                    applied_by   text not null default current_user,
                    execution_ms integer not null
                );
                comment on table meter.schema_migrations is
                    'Ledger of applied sql/migrations files (meterctl migrate); checksum = SHA-256 hex of the file.';
                create table if not exists meter.schema_functions (
                    name       text primary key,
                    checksum   text not null,
                    applied_at timestamptz not null default now()
                );
                comment on table meter.schema_functions is
                    'Last applied version of each sql/functions and sql/views file (re-applied on every migrate), by path under sql/.';
                """)
        }
    }

    /// SHA-256 (hex) of a file's text, computed by the server: the one definition of a checksum.
    package static func checksum(_ conn: PGConnection, _ text: String) throws -> String {
        try conn.execute("select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to($1, 'UTF8')), 'hex') as h",
                         [text]).single().string("h")
    }

    public func status(_ conn: PGConnection) throws -> [StatusEntry] {
        try bootstrap(conn)
        let files = try migrationFiles()
        let rows = try conn.execute("""
            select version, name, checksum, to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS TZ') as applied_at
            from meter.schema_migrations order by version
            """).rows
        var applied: [Int: (name: String, checksum: String, at: String)] = [:]
        for r in rows {
            applied[Int(try r.int("version"))] = (try r.string("name"), try r.string("checksum"), try r.string("applied_at"))
        }
        var out: [StatusEntry] = []
        for f in files {
            let sum = try Self.checksum(conn, f.sql)
            if let a = applied.removeValue(forKey: f.version) {
                out.append(StatusEntry(version: f.version, name: f.name, state: a.checksum == sum ? .applied : .changed,
                                       appliedAt: a.at, checksum: sum))
            } else {
                out.append(StatusEntry(version: f.version, name: f.name, state: .pending, appliedAt: nil, checksum: sum))
            }
        }
        for (v, a) in applied.sorted(by: { $0.key < $1.key }) {
            out.append(StatusEntry(version: v, name: a.name, state: .missingFile, appliedAt: a.at, checksum: a.checksum))
        }
        return out.sorted { $0.version < $1.version }
    }

    /// Brings the database up to date. Throws before changing anything when history was edited.
    @discardableResult
    public func migrate(_ conn: PGConnection) throws -> Report {
        var report = Report()
        let entries = try status(conn)
        let broken = entries.filter { $0.state == .changed || $0.state == .missingFile }
        if !broken.isEmpty {
            let list = broken.map { e in
                e.state == .changed
                    ? "\(e.name) was applied on \(e.appliedAt ?? "?") but the file has changed since"
                    : "\(e.name) (version \(e.version)) is applied but its file is missing"
            }.joined(separator: "; ")
            throw MigrationError(description: """
                refusing to migrate: \(list). Applied migrations are history: restore the original \
                file and put the change in a new migration.
                """)
        }
        let files = try migrationFiles()
        for f in files where entries.first(where: { $0.version == f.version })?.state == .pending {
            let start = ContinuousClock.now
            let done: Bool = try conn.transaction { c in
                try c.execute(Self.lockSQL)
                try c.execute("select pg_catalog.set_config('lock_timeout', $1, true)", [lockTimeout])
                // Another runner may have applied it while we waited for the lock.
                if try c.execute("select 1 from meter.schema_migrations where version = $1", [f.version]).rows.count > 0 {
                    return false
                }
                do {
                    try c.executeScript(f.sql)
                } catch let e as PGError {
                    throw MigrationError(description: "migration \(f.name) failed and was rolled back: \(e)")
                }
                let ms = Int((ContinuousClock.now - start).components.seconds * 1000
                             + (ContinuousClock.now - start).components.attoseconds / 1_000_000_000_000_000)
                try c.execute("""
                    insert into meter.schema_migrations (version, name, checksum, execution_ms)
                    values ($1, $2, $3, $4)
                    """, [f.version, f.name, try Self.checksum(c, f.sql), ms])
                return true
            }
            if done {
                report.applied.append(f.name)
                logger.info("migrate.applied", metadata: ["file": "\(f.name)"])
            }
        }
        let functions = try functionFiles()
        try conn.transaction { c in
            try c.execute(Self.lockSQL)
            try c.execute("select pg_catalog.set_config('lock_timeout', $1, true)", [lockTimeout])
            for f in functions {
                do {
                    try c.executeScript(f.sql)
                } catch let e as PGError {
                    throw MigrationError(description: "function file \(f.name) failed (nothing applied): \(e)")
                }
                try c.execute("""
                    insert into meter.schema_functions (name, checksum) values ($1, $2)
                    on conflict (name) do update set checksum = excluded.checksum, applied_at = now()
                    """, [f.name, try Self.checksum(c, f.sql)])
            }
            // The ledger names only files that exist: a renamed or removed file's row goes (its
            // object is dropped by the migration that renamed it).
            try c.execute("delete from meter.schema_functions where name <> all($1::text[])", [functions.map(\.name)])
        }
        report.functions = functions.count
        logger.info("migrate.functions", metadata: ["count": "\(functions.count)"])
        // The monthly partitions of meter.events, 35 days back to three months ahead (serve keeps
        // them going from its own window; meter.events_partitions_ensure).
        if try conn.execute("select to_regprocedure('meter.events_partitions_ensure(timestamptz, timestamptz)') is not null as present")
            .rows.first?.bool("present") == true {
            let created = try conn.execute(
                "select count(*) filter (where created) as created from meter.events_partitions_ensure()"
            ).rows.first?.int("created") ?? 0
            report.partitionsCreated = Int(created)
            if created > 0 { logger.info("migrate.partitions", metadata: ["created": "\(created)"]) }
        }
        return report
    }

    /// True when every migration file is applied with its current checksum (for /readyz).
    public static func isCurrent(_ conn: PGConnection, expected: [Int: String]) throws -> Bool {
        let rows = try conn.executePrepared("select version, checksum from meter.schema_migrations").rows
        var applied: [Int: String] = [:]
        for r in rows { applied[Int(try r.int("version"))] = try r.string("checksum") }
        return applied == expected
    }

    /// The expected ledger (version → checksum) for the files on disk.
    public func expectedLedger(_ conn: PGConnection) throws -> [Int: String] {
        var out: [Int: String] = [:]
        for f in try migrationFiles() { out[f.version] = try Self.checksum(conn, f.sql) }
        return out
    }

    /// Finds the `sql` directory: $METER_SQL_DIR, else the nearest `sql/migrations` above the
    /// working directory or above the executable.
    public static func locateSQLDirectory(explicit: String? = nil) -> String? {
        if let explicit, !explicit.isEmpty { return explicit }
        if let env = ProcessInfo.processInfo.environment["METER_SQL_DIR"], !env.isEmpty { return env }
        let starts = [FileManager.default.currentDirectoryPath,
                      URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
                          .deletingLastPathComponent().path]
        for start in starts {
            var dir = URL(fileURLWithPath: start)
            for _ in 0..<8 {
                if FileManager.default.fileExists(atPath: dir.appendingPathComponent("sql/migrations").path) {
                    return dir.appendingPathComponent("sql").path
                }
                dir.deleteLastPathComponent()
            }
        }
        return nil
    }
}
