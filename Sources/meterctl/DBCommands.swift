import ArgumentParser
import Foundation
import MeterCore

struct DB: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the embedded Postgres (.meter/pg).",
        subcommands: [Start.self, Stop.self, Status.self, Psql.self])

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start (or reuse) the embedded cluster and migrate it.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let t = global.target
            _ = global.bootstrapLogging()
            try t.embedded.start(log: { print($0) })
            try t.runMigrations(conninfo: t.embedded.conninfo, logger: global.bootstrapLogging())
            print("embedded Postgres running; open it with: \(t.embedded.psqlCommand)")
            print("conninfo: \(t.embedded.conninfo)")
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the embedded cluster (fast shutdown).")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            try global.target.embedded.stop()
            print("embedded Postgres stopped")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Say whether the embedded cluster runs, and where.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let pg = global.target.embedded
            let running = try pg.isRunning()
            print("embedded Postgres: \(running ? "running" : "stopped")")
            print("data directory:    \(pg.dataDir)")
            print("socket:            \(pg.socketDir) port \(pg.port)")
            if running { print("open with:         \(pg.psqlCommand)") }
            if !running { throw ExitCode(3) }
        }
    }

    struct Psql: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Open psql on the database (embedded or DATABASE_URL).")
        @OptionGroup var global: GlobalOptions
        @Argument(parsing: .captureForPassthrough, help: "Extra psql arguments")
        var psqlArgs: [String] = []
        func run() async throws {
            let info = try global.conninfo()
            let args = ["psql", info] + psqlArgs
            var cargs = args.map { strdup($0) } + [nil]
            execvp("psql", &cargs)
            throw ValidationFailure(description: "could not exec psql (install postgresql-client-15)")
        }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply pending sql/migrations, then re-apply sql/functions and sql/views.",
        discussion: """
            Each migration runs once, in its own transaction, under a transaction-scoped advisory lock \
            (concurrent runs serialize) with lock_timeout set; its SHA-256 goes to meter.schema_migrations. \
            Refuses to run when an applied file has changed.
            """)
    @OptionGroup var global: GlobalOptions
    @Flag(name: .customLong("status"), help: "List applied and pending files; change nothing.")
    var status = false
    @Option(name: .customLong("lock-timeout-seconds"), help: "lock_timeout for DDL (env METER_LOCK_TIMEOUT_SECONDS). Default: 10")
    var lockTimeoutSeconds: Int?

    func run() async throws {
        let logger = global.bootstrapLogging()
        let sqlDir = try global.target.locateSQL()
        let migrator = Migrator(sqlDirectory: sqlDir,
                                lockTimeout: "\(try GlobalOptions.number(lockTimeoutSeconds.map(Double.init), "lock-timeout-seconds", "METER_LOCK_TIMEOUT_SECONDS", min: 1, whole: true).map { Int($0) } ?? 10)s",
                                logger: logger)
        try global.withConnection { conn in
            if status {
                let entries = try migrator.status(conn)
                printTable(["version", "file", "state", "applied at", "sha256"],
                           entries.map { [String(format: "%04d", $0.version), $0.name, $0.state.rawValue,
                                          $0.appliedAt ?? "-", String($0.checksum.prefix(12))] })
                let pending = entries.filter { $0.state == .pending }.count
                let broken = entries.filter { $0.state == .changed || $0.state == .missingFile }.count
                print("\(entries.count - pending - broken) applied, \(pending) pending, \(broken) changed/missing")
                if broken > 0 { throw ExitCode(2) }
                return
            }
            do {
                let report = try migrator.migrate(conn)
                print(report.applied.isEmpty ? "migrations: up to date"
                      : "migrations applied: \(report.applied.joined(separator: ", "))")
                print("functions re-applied: \(report.functions)")
            } catch let e as Migrator.MigrationError {
                FileHandle.standardError.write("error: \(e.description)\n".data(using: .utf8)!)
                throw ExitCode(2)
            }
        }
    }
}
