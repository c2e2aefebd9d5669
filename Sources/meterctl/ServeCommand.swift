import ArgumentParser
import Foundation
import Logging
import MeterCore
import MeterAPI

/// Options of the HTTP service, shared by serve, demo and bench.
struct ServiceOptions: ParsableArguments {
    @Option(help: "Listen address (env METER_HOST). Default: 127.0.0.1") var host: String?
    @Option(help: "Listen port, 0 = any free port (env METER_PORT). Default: 8080") var port: Int?
    @Option(name: .customLong("pool-size"), help: "Database connections (env METER_POOL_SIZE). Default: 16")
    var poolSize: Int?
    @Option(name: .customLong("max-batch"), help: "Events per request (env METER_MAX_BATCH). Default: 1000")
    var maxBatch: Int?
    @Option(name: .customLong("max-body-bytes"), help: "Request body limit (env METER_MAX_BODY_BYTES). Default: 1048576")
    var maxBodyBytes: Int?
    @Option(name: .customLong("max-properties-bytes"), help: "Serialized properties limit per event (env METER_MAX_PROPERTIES_BYTES). Default: 8192")
    var maxPropertiesBytes: Int?
    @Option(name: .customLong("future-tolerance"), help: "Seconds occurred_at may lead the database clock (env METER_FUTURE_TOLERANCE). Default: 300")
    var futureTolerance: Int?
    @Option(name: .customLong("past-tolerance"), help: "Seconds occurred_at may trail the database clock (env METER_PAST_TOLERANCE). Default: 3024000 (35 days)")
    var pastTolerance: Int?
    @Option(name: .customLong("rollup-interval-ms"), help: "Longest pause between rollup runs; ingest wakes the loop earlier via NOTIFY (env METER_ROLLUP_INTERVAL_MS). Default: 1000")
    var rollupIntervalMs: Int?
    @Option(name: .customLong("rollup-max-events"), help: "Events folded per rollup run at most (env METER_ROLLUP_MAX_EVENTS). Default: 1000000")
    var rollupMaxEvents: Int?
    @Option(name: .customLong("rollup-stall-after-s"), help: "The rollup loop counts as stalled after this many seconds without a finished run attempt: meter_rollup_loop_stalled = 1, an error log line rollup.loop_stalled, /readyz says so (env METER_ROLLUP_STALL_AFTER_S). Default: 120")
    var rollupStallAfterS: Int?
    @Flag(name: .customLong("no-rollup"), help: "Do not run the rollup loop in this process (env METER_ROLLUP=off).")
    var noRollup = false
    @Option(name: .customLong("openapi"), help: "OpenAPI document to serve (env METER_OPENAPI). Default: docs/openapi.yaml beside sql/")
    var openAPI: String?

    mutating func validate() throws {
        let env = GlobalOptions.env
        func positive(_ v: Int?, _ envName: String, _ flag: String, min: Int = 1) throws {
            if let n = v ?? env[envName].flatMap(Int.init), n < min {
                throw ValidationError("--\(flag) (\(envName)) must be at least \(min); got \(n)")
            }
            if v == nil, let raw = env[envName], Int(raw) == nil {
                throw ValidationError("\(envName) must be a whole number; got \(raw)")
            }
        }
        try positive(port, "METER_PORT", "port", min: 0)
        try positive(poolSize, "METER_POOL_SIZE", "pool-size")
        try positive(maxBatch, "METER_MAX_BATCH", "max-batch")
        try positive(maxBodyBytes, "METER_MAX_BODY_BYTES", "max-body-bytes", min: 64)
        try positive(maxPropertiesBytes, "METER_MAX_PROPERTIES_BYTES", "max-properties-bytes", min: 2)
        try positive(futureTolerance, "METER_FUTURE_TOLERANCE", "future-tolerance", min: 0)
        try positive(pastTolerance, "METER_PAST_TOLERANCE", "past-tolerance", min: 0)
        try positive(rollupIntervalMs, "METER_ROLLUP_INTERVAL_MS", "rollup-interval-ms", min: 10)
        try positive(rollupMaxEvents, "METER_ROLLUP_MAX_EVENTS", "rollup-max-events")
        try positive(rollupStallAfterS, "METER_ROLLUP_STALL_AFTER_S", "rollup-stall-after-s")
        // An idle loop finishes an attempt once per interval: a bound within three intervals
        // would report a healthy loop as stalled.
        let intervalMs = rollupIntervalMs ?? env["METER_ROLLUP_INTERVAL_MS"].flatMap(Int.init) ?? 1000
        if let s = rollupStallAfterS ?? env["METER_ROLLUP_STALL_AFTER_S"].flatMap(Int.init), s * 1000 < 3 * intervalMs {
            throw ValidationError("--rollup-stall-after-s (METER_ROLLUP_STALL_AFTER_S) must be at least 3 × --rollup-interval-ms "
                                  + "(\(intervalMs) ms); got \(s) s")
        }
        if let n = rollupMaxEvents ?? env["METER_ROLLUP_MAX_EVENTS"].flatMap(Int.init), n > Int(Int32.max) {
            throw ValidationError("--rollup-max-events (METER_ROLLUP_MAX_EVENTS) must be at most \(Int32.max); got \(n)")
        }
        if let v = env["METER_ROLLUP"], !["on", "off"].contains(v) {
            throw ValidationError("METER_ROLLUP must be on or off; got \(v)")
        }
        for (v, envName, flag) in [(futureTolerance, "METER_FUTURE_TOLERANCE", "future-tolerance"),
                                   (pastTolerance, "METER_PAST_TOLERANCE", "past-tolerance")] {
            if let n = v ?? env[envName].flatMap(Int.init), n > 3650 * 86_400 {
                throw ValidationError("--\(flag) (\(envName)) must be at most 315360000 seconds (10 years); got \(n)")
            }
        }
    }

    func configuration(sqlDir: String) -> ServeConfiguration {
        let env = GlobalOptions.env
        var c = ServeConfiguration()
        c.host = host ?? env["METER_HOST"] ?? "127.0.0.1"
        c.port = port ?? env["METER_PORT"].flatMap(Int.init) ?? 8080
        if let v = maxBatch ?? env["METER_MAX_BATCH"].flatMap(Int.init) { c.limits.maxBatchEvents = v }
        if let v = maxBodyBytes ?? env["METER_MAX_BODY_BYTES"].flatMap(Int.init) { c.limits.maxBodyBytes = v }
        if let v = maxPropertiesBytes ?? env["METER_MAX_PROPERTIES_BYTES"].flatMap(Int.init) { c.limits.maxPropertiesBytes = v }
        if let v = futureTolerance ?? env["METER_FUTURE_TOLERANCE"].flatMap(Int.init) { c.limits.maxFutureSeconds = v }
        if let v = pastTolerance ?? env["METER_PAST_TOLERANCE"].flatMap(Int.init) { c.limits.maxPastSeconds = v }
        if noRollup || env["METER_ROLLUP"] == "off" {
            c.rollup = nil
        } else {
            var r = RollupWorker.Configuration()
            if let v = rollupIntervalMs ?? env["METER_ROLLUP_INTERVAL_MS"].flatMap(Int.init) {
                r.interval = .milliseconds(v)
                r.minGap = min(r.minGap, .milliseconds(v))
            }
            if let v = rollupMaxEvents ?? env["METER_ROLLUP_MAX_EVENTS"].flatMap(Int.init) { r.maxEvents = v }
            if let v = rollupStallAfterS ?? env["METER_ROLLUP_STALL_AFTER_S"].flatMap(Int.init) { r.stallAfter = .seconds(v) }
            c.rollup = r
        }
        c.openAPIPath = openAPI ?? env["METER_OPENAPI"]
            ?? URL(fileURLWithPath: sqlDir).deletingLastPathComponent().appendingPathComponent("docs/openapi.yaml").path
        return c
    }

    var pool: Int { poolSize ?? GlobalOptions.env["METER_POOL_SIZE"].flatMap(Int.init) ?? 16 }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the service: the HTTP API (events, cancellations, usage, health, metrics) and the rollup loop.",
        discussion: """
            SIGTERM or SIGINT: stop accepting, finish in-flight requests, close the pool. With the \
            embedded Postgres, migrations are applied at start; with DATABASE_URL only with --migrate \
            (deploys run `meterctl migrate` first; /readyz stays 503 while the schema is behind).
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var service: ServiceOptions
    @OptionGroup var billing: BillingAPIOptions
    @Flag(help: "Apply migrations before serving (always done for the embedded Postgres).") var migrate = false

    func run() async throws {
        let logger = global.bootstrapLogging()
        let sqlDir = try global.target.locateSQL()
        let conninfo = try global.conninfo(migrate: migrate || global.target.isEmbedded)
        var config = service.configuration(sqlDir: sqlDir)
        // The billing sync runs when an engine is configured (--billing-api-base).
        if billing.configured { config.sync = try billing.sync() }
        config.expectedLedger = try MeterServer.expectedLedger(conninfo: conninfo, sqlDir: sqlDir)
        try await MeterServer.run(config: config, conninfo: conninfo, poolSize: service.pool, logger: logger)
    }
}
