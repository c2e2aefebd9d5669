import ArgumentParser
import Foundation
import Logging
import PGClient
import MeterCore

/// The entry point. Swift's CommandLine.arguments comes out empty when the process runs under an
/// LD_PRELOADed library such as chaos/realtime-shift.c (chaos/clock-skew runs `meterctl serve` that way),
/// so the arguments are read from /proc/self/cmdline then.
@main
enum MeterctlMain {
    static func main() async {
        var args = Array(CommandLine.arguments.dropFirst())
        if CommandLine.arguments.isEmpty, let raw = FileManager.default.contents(atPath: "/proc/self/cmdline") {
            args = raw.split(separator: 0, omittingEmptySubsequences: false).dropFirst().map { String(decoding: $0, as: UTF8.self) }
            if args.last == "" { args.removeLast() }
        }
        await Meterctl.main(args)
    }
}

/// meterctl: the one executable of meter: service (`serve`) and operator CLI.
struct Meterctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meterctl",
        abstract: "meter: exact, idempotent usage metering on Postgres.",
        discussion: """
            Without DATABASE_URL every command uses the embedded Postgres under .meter/pg (started and \
            migrated on demand). Every option can also be set through the environment variable named \
            in its help.
            """,
        // What an operator runs, then the developer tools (Sources/meterctl/Developer/, the only
        // files that import the dev kit and the mock engine: scripts/check-modules.sh).
        groupedSubcommands: [
            CommandGroup(name: "Operator", subcommands: [
                Serve.self, DB.self, Migrate.self, Customers.self, Meters.self, Keys.self, Seed.self, Plans.self,
                RollupCommand.self, BillingCommand.self, SyncCommand.self, WebhooksCommand.self, AlertsCommand.self, Close.self, Reconcile.self, Signoff.self, EventsCommand.self, Prune.self,
            ]),
            CommandGroup(name: "Developer", subcommands: [
                Replay.self, Demo.self, Bench.self, Chaos.self, BillingMockCommand.self,
            ]),
        ]
    )
}

/// Options shared by every command that talks to the database.
struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("database-url"),
            help: "libpq conninfo or postgres:// URL (env DATABASE_URL). Default: the embedded Postgres.")
    var databaseURL: String?

    @Option(name: .customLong("data-dir"), help: "Embedded Postgres directory (env METER_DATA_DIR). Default: .meter/pg")
    var dataDir: String?

    @Option(name: .customLong("pg-port"), help: "Embedded Postgres port, socket only (env METER_PG_PORT). Default: 54329")
    var pgPort: Int?

    @Option(name: .customLong("sql-dir"), help: "The sql/ directory (env METER_SQL_DIR). Default: found above the working directory")
    var sqlDir: String?

    @Option(name: .customLong("log-level"), help: "trace|debug|info|notice|warning|error|critical (env LOG_LEVEL). Default: info")
    var logLevel: String?

    @Option(name: .customLong("log-format"), help: "json|text (env METER_LOG_FORMAT). Default: json")
    var logFormat: String?

    static let env = ProcessInfo.processInfo.environment

    /// A number from its flag, else from its environment variable; nil when neither is set. Refused,
    /// naming both, when the variable is not a number, below `min`, above `max`, or (with `whole`)
    /// not a whole number. Durations are seconds everywhere (`--…-seconds`, decimals where allowed).
    static func number(_ flagValue: Double?, _ flag: String, _ envName: String, min: Double,
                       max: Double = .greatestFiniteMagnitude, whole: Bool = false) throws -> Double? {
        var value = flagValue
        if value == nil, let raw = env[envName] {
            guard let n = Double(raw), n.isFinite, !whole || n == n.rounded() else {
                throw ValidationError("\(envName) must be \(whole ? "a whole number" : "a number"); got \(raw)")
            }
            value = n
        }
        guard let v = value else { return nil }
        guard v >= min, v <= max else {
            let bound = v < min ? "at least \(Self.show(min))" : "at most \(Self.show(max))"
            throw ValidationError("--\(flag) (\(envName)) must be \(bound); got \(Self.show(v))")
        }
        return v
    }

    private static func show(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v) }

    /// Environment variables renamed when every duration became `…_SECONDS` and "batch" got one
    /// meaning (docs/decisions.md, "Flags and environment"): a deployment still setting an old
    /// name is refused at start, never silently run with the default.
    static let retiredEnvironment: [String: String] = [
        "METER_MAX_BATCH": "METER_MAX_EVENTS_PER_REQUEST",
        "METER_FUTURE_TOLERANCE": "METER_FUTURE_TOLERANCE_SECONDS",
        "METER_PAST_TOLERANCE": "METER_PAST_TOLERANCE_SECONDS",
        "METER_ROLLUP_INTERVAL_MS": "METER_ROLLUP_INTERVAL_SECONDS",
        "METER_ROLLUP_STALL_AFTER_S": "METER_ROLLUP_STALL_AFTER_SECONDS",
        "METER_BILLING_TIMEOUT_MS": "METER_BILLING_TIMEOUT_SECONDS",
        "METER_SYNC_BATCH": "METER_SYNC_CLAIM_HOURS",
        "METER_SYNC_BACKOFF_CAP_S": "METER_SYNC_BACKOFF_CAP_SECONDS",
        "METER_SYNC_LEASE_S": "METER_SYNC_LEASE_SECONDS",
        "METER_SYNC_GIVE_UP_AFTER_S": "METER_SYNC_GIVE_UP_AFTER_SECONDS",
        "METER_LOCK_TIMEOUT": "METER_LOCK_TIMEOUT_SECONDS",
    ]

    func validate() throws {
        for (old, new) in Self.retiredEnvironment.sorted(by: { $0.key < $1.key }) where Self.env[old] != nil {
            throw ValidationError("\(old) is no longer read: set \(new) instead (durations are in seconds)")
        }
    }

    var target: DatabaseTarget {
        DatabaseTarget(databaseURL: databaseURL ?? Self.env["DATABASE_URL"],
                       dataDir: dataDir ?? Self.env["METER_DATA_DIR"] ?? ".meter/pg",
                       port: pgPort ?? Self.env["METER_PG_PORT"].flatMap(Int.init) ?? 54329,
                       sqlDir: sqlDir)
    }

    /// `defaultLevel` applies when neither --log-level nor LOG_LEVEL is set (commands that print
    /// their own output, such as demo and bench, keep the log to warnings).
    func bootstrapLogging(defaultLevel: Logger.Level = .info) -> Logger {
        let level = (logLevel ?? Self.env["LOG_LEVEL"]).flatMap { Logger.Level(rawValue: $0) } ?? defaultLevel
        LoggingBootstrap.once(format: logFormat ?? Self.env["METER_LOG_FORMAT"] ?? "json", level: level)
        return Logger(label: "meter")
    }

    /// A conninfo for the database, starting/migrating the embedded one when needed.
    func conninfo(migrate: Bool = false) throws -> String {
        let logger = bootstrapLogging()
        return try target.resolve(migrate: migrate, logger: logger, say: { FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!) })
    }

    /// Runs `body` on a fresh connection off the main thread's executor... CLI commands are short
    /// and synchronous, so a plain blocking connection is right here.
    func withConnection<T>(migrate: Bool = false, _ body: (PGConnection) throws -> T) throws -> T {
        let conn = try PGConnection(conninfo: try conninfo(migrate: migrate))
        defer { conn.close() }
        return try body(conn)
    }
}

enum LoggingBootstrap {
    nonisolated(unsafe) static var done = false
    static func once(format: String, level: Logger.Level) {
        if done { return }
        done = true
        JSONLogHandler.bootstrap(format: format, level: level)
    }
}

/// Prints rows as an aligned text table.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    print(line(header))
    print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
    for r in rows { print(line(r)) }
}

struct ValidationFailure: Error, CustomStringConvertible { let description: String }

/// The same server and credentials, another database: for libpq key/value strings (the last
/// dbname wins) and for postgres:// URLs (the path is the database).
func databaseConninfo(_ conninfo: String, database: String) -> String {
    if conninfo.hasPrefix("postgres://") || conninfo.hasPrefix("postgresql://"),
       var url = URLComponents(string: conninfo) {
        url.path = "/" + database
        return url.string ?? conninfo
    }
    return conninfo + " dbname=" + database
}
