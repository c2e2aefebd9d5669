import Foundation
import Logging
import PGClient

/// Where meter's database is: `DATABASE_URL` (any libpq conninfo or postgres:// URL) when given,
/// else the embedded cluster under `.meter/pg`, started on demand.
public struct DatabaseTarget: Sendable {
    public var databaseURL: String?
    public var dataDir: String
    public var port: Int
    public var sqlDir: String?

    public init(databaseURL: String?, dataDir: String, port: Int, sqlDir: String?) {
        self.databaseURL = databaseURL
        self.dataDir = dataDir
        self.port = port
        self.sqlDir = sqlDir
    }

    public var embedded: EmbeddedPostgres { EmbeddedPostgres(dataDir: dataDir, port: port) }
    public var isEmbedded: Bool { (databaseURL ?? "").isEmpty }

    public func locateSQL() throws -> String {
        guard let dir = Migrator.locateSQLDirectory(explicit: sqlDir) else {
            throw EmbeddedPostgres.Failure(description: "cannot find the sql/ directory; pass --sql-dir or set METER_SQL_DIR")
        }
        return dir
    }

    /// The conninfo to use. For the embedded cluster: starts it when needed and, when it had to be
    /// started or `migrate` is set, applies migrations (the embedded default is always current).
    public func resolve(migrate: Bool, logger: Logger, say: (String) -> Void = { print($0) }) throws -> String {
        if let url = databaseURL, !url.isEmpty {
            if migrate { try runMigrations(conninfo: url, logger: logger) }
            return url
        }
        let pg = embedded
        let started = try pg.start(log: say)
        if started { say("embedded Postgres ready; open it with: \(pg.psqlCommand)") }
        if migrate || started { try runMigrations(conninfo: pg.conninfo, logger: logger) }
        return pg.conninfo
    }

    @discardableResult
    public func runMigrations(conninfo: String, logger: Logger) throws -> Migrator.Report {
        let conn = try PGConnection(conninfo: conninfo)
        defer { conn.close() }
        return try Migrator(sqlDirectory: try locateSQL(), logger: logger).migrate(conn)
    }
}
