import Foundation
import Logging
import PGClient
import MeterCore
import MeterAPI
import MeterDevKit

/// The tests' real Postgres: the same embedded mechanism as `meterctl` (EmbeddedPostgres), in its
/// own directory and on its own port (scripts/test.sh exports both; defaults below), with a
/// fresh database per test process, migrated from the repository's sql/.
enum TestDatabase {
    /// Tests/MeterCoreTests/Support/TestDatabase.swift → the repository.
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let sqlDir = repoRoot + "/sql"
    static let env = ProcessInfo.processInfo.environment

    static let cluster = EmbeddedPostgres(
        dataDir: env["METER_TEST_DATA_DIR"] ?? repoRoot + "/.meter/test-pg",
        port: env["METER_TEST_PG_PORT"].flatMap(Int.init) ?? 54339)

    /// A migrated database for this test process.
    static let shared: Result<String, any Error> = Result {
        try cluster.start()
        let name = "meter_xctest_\(getpid())"
        let admin = try PGConnection(conninfo: cluster.conninfo(database: "postgres"))
        defer { admin.close() }
        try admin.execute("drop database if exists \(name)")
        try admin.execute("create database \(name)")
        let info = cluster.conninfo(database: name)
        let conn = try PGConnection(conninfo: info)
        defer { conn.close() }
        try Migrator(sqlDirectory: sqlDir).migrate(conn)
        return info
    }

    static func conninfo() throws -> String { try shared.get() }

    /// A brand-new, empty (unmigrated) database, for migration tests.
    static func freshDatabase(_ tag: String) throws -> String {
        _ = try shared.get()
        let name = "meter_xctest_\(getpid())_\(tag)"
        let admin = try PGConnection(conninfo: cluster.conninfo(database: "postgres"))
        defer { admin.close() }
        try admin.execute("drop database if exists \(name) with (force)")
        try admin.execute("create database \(name)")
        return cluster.conninfo(database: name)
    }

    static func connect() throws -> PGConnection { try PGConnection(conninfo: try conninfo()) }

    /// A unique prefix so tests sharing the database never see each other's rows.
    static func unique(_ tag: String) -> String { "\(tag)-\(UInt32.random(in: 0...UInt32.max))" }

    static var logger: Logger {
        var l = Logger(label: "meter.test")
        l.logLevel = .warning
        return l
    }
}

/// `MeterServer.run` in a task of its own, on a free port, stopped through its handle (what the
/// service does between SIGTERM and exit).
struct RunningServer {
    struct DidNotStart: Error, CustomStringConvertible { var description: String { "server did not start" } }
    let port: Int
    let handle: ServerHandle
    let task: Task<Void, Error>

    static func start(_ config: ServeConfiguration, conninfo: String, poolSize: Int,
                      logger: Logger = TestDatabase.logger) async throws -> RunningServer {
        var config = config
        config.port = 0
        let handle = ServerHandle()
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        let task = Task {
            try await MeterServer.run(config: config, conninfo: conninfo, poolSize: poolSize, logger: logger,
                                      handleSignals: false, onGroup: handle.attach, onRunning: { portSink.yield($0) })
        }
        var it = ports.makeAsyncIterator()
        guard let port = await it.next() else { throw DidNotStart() }
        return RunningServer(port: port, handle: handle, task: task)
    }

    /// Graceful shutdown, and the run's own error if it failed.
    func stop() async throws {
        await handle.stop()
        try await task.value
    }
}
