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
    @Option(name: .customLong("max-events-per-request"), help: "Events per request (env METER_MAX_EVENTS_PER_REQUEST). Default: 1000")
    var maxEventsPerRequest: Int?
    @Option(name: .customLong("max-body-bytes"), help: "Request body limit (env METER_MAX_BODY_BYTES). Default: 1048576")
    var maxBodyBytes: Int?
    @Option(name: .customLong("max-properties-bytes"), help: "Serialized properties limit per event (env METER_MAX_PROPERTIES_BYTES). Default: 8192")
    var maxPropertiesBytes: Int?
    @Option(name: .customLong("future-tolerance-seconds"), help: "How far occurred_at may lead the database clock (env METER_FUTURE_TOLERANCE_SECONDS). Default: 300")
    var futureToleranceSeconds: Int?
    @Option(name: .customLong("past-tolerance-seconds"), help: "How far occurred_at may trail the database clock (env METER_PAST_TOLERANCE_SECONDS). Default: 3024000 (35 days)")
    var pastToleranceSeconds: Int?
    @Option(name: .customLong("rollup-interval-seconds"), help: "Longest pause between rollup runs, decimals allowed; ingest wakes the loop earlier (env METER_ROLLUP_INTERVAL_SECONDS). Default: 1")
    var rollupIntervalSeconds: Double?
    @Option(name: .customLong("rollup-max-events"), help: "Events folded per rollup run at most (env METER_ROLLUP_MAX_EVENTS). Default: 1000000")
    var rollupMaxEvents: Int?
    @Option(name: .customLong("rollup-stall-after-seconds"), help: "The rollup loop counts as stalled after this long without a finished run attempt: meter_rollup_loop_stalled = 1, an error log line rollup.loop_stalled, /readyz says so (env METER_ROLLUP_STALL_AFTER_SECONDS). Default: 120")
    var rollupStallAfterSeconds: Int?
    @Option(name: .customLong("rollup-workers"), help: "Rollup loops in this process, each folding its share of the rollup shards (meterctl rollup shards) at once (env METER_ROLLUP_WORKERS). Default: the number of cores")
    var rollupWorkers: Int?
    @Option(name: .customLong("http-idle-timeout-seconds"), help: "Close a connection that sends nothing for this long: idle keep-alive, or a request stalled halfway (env METER_HTTP_IDLE_TIMEOUT_SECONDS). Default: 60")
    var httpIdleTimeoutSeconds: Int?
    @Option(name: .customLong("max-connections"), help: "HTTP connections served at once; more wait in the listen backlog (env METER_MAX_CONNECTIONS). Default: 1024")
    var maxConnections: Int?
    @Option(name: .customLong("key-max-concurrent-requests"), help: "Requests of one API key in flight at once, 0 = no cap; beyond: 429 (env METER_KEY_MAX_CONCURRENT_REQUESTS). Default: 256")
    var keyMaxConcurrentRequests: Int?
    @Option(name: .customLong("key-requests-per-second"), help: "Requests of one API key per second, 0 = no cap; beyond: 429 with Retry-After (env METER_KEY_REQUESTS_PER_SECOND). Default: 10000")
    var keyRequestsPerSecond: Double?
    @Option(name: .customLong("conflict-payload-retention-seconds"), help: "How long a conflicting redelivery keeps what was offered; after, only its SHA-256 (env METER_CONFLICT_PAYLOAD_RETENTION_SECONDS). Default: 7776000 (90 days), at least 86400")
    var conflictPayloadRetentionSeconds: Int?
    @Option(name: .customLong("webhook-retention-seconds"), help: "How long a processed billing webhook is kept (its id deduplicates redeliveries) (env METER_WEBHOOK_RETENTION_SECONDS). Default: 7776000 (90 days), at least 604800")
    var webhookRetentionSeconds: Int?
    @Flag(name: .customLong("no-rollup"), help: "Do not run the rollup loop in this process (env METER_ROLLUP=off).")
    var noRollup = false
    @Flag(name: .customLong("no-webhook-delivery"), help: "Do not deliver outgoing webhooks from this process (env METER_WEBHOOK_DELIVERY=off).")
    var noWebhookDelivery = false
    @Option(name: .customLong("webhook-give-up-seconds"), help: "How long an outgoing webhook is retried before it is dead (env METER_WEBHOOK_GIVE_UP_SECONDS). Default: 259200 (3 days), at least 60")
    var webhookGiveUpSeconds: Int?
    @Option(name: .customLong("openapi"), help: "OpenAPI document to serve (env METER_OPENAPI). Default: docs/openapi.yaml beside sql/")
    var openAPI: String?

    /// Each setting from its flag, else its environment variable, checked once (validate) and
    /// read by configuration().
    struct Settings {
        var port, poolSize, maxEventsPerRequest, maxBodyBytes, maxPropertiesBytes: Int?
        var futureTolerance, pastTolerance, rollupMaxEvents, rollupStallAfter, rollupWorkers: Int?
        var idleTimeout, maxConnections, keyMaxConcurrent: Int?
        var keyPerSecond: Double?
        var rollupInterval: Double?
        var webhookGiveUp: Int?
        var retention = Retention.Policy()
    }

    func settings() throws -> Settings {
        func whole(_ v: Int?, _ flag: String, _ env: String, min: Int, max: Int = .max) throws -> Int? {
            try GlobalOptions.number(v.map(Double.init), flag, env, min: Double(min), max: Double(max), whole: true).map { Int($0) }
        }
        var s = Settings()
        s.port = try whole(port, "port", "METER_PORT", min: 0, max: 65_535)
        s.poolSize = try whole(poolSize, "pool-size", "METER_POOL_SIZE", min: 1)
        s.maxEventsPerRequest = try whole(maxEventsPerRequest, "max-events-per-request", "METER_MAX_EVENTS_PER_REQUEST", min: 1)
        s.maxBodyBytes = try whole(maxBodyBytes, "max-body-bytes", "METER_MAX_BODY_BYTES", min: 64)
        s.maxPropertiesBytes = try whole(maxPropertiesBytes, "max-properties-bytes", "METER_MAX_PROPERTIES_BYTES", min: 2)
        s.futureTolerance = try whole(futureToleranceSeconds, "future-tolerance-seconds", "METER_FUTURE_TOLERANCE_SECONDS",
                                      min: 0, max: 3650 * 86_400)
        s.pastTolerance = try whole(pastToleranceSeconds, "past-tolerance-seconds", "METER_PAST_TOLERANCE_SECONDS",
                                    min: 0, max: 3650 * 86_400)
        s.idleTimeout = try whole(httpIdleTimeoutSeconds, "http-idle-timeout-seconds", "METER_HTTP_IDLE_TIMEOUT_SECONDS", min: 1, max: 86_400)
        s.maxConnections = try whole(maxConnections, "max-connections", "METER_MAX_CONNECTIONS", min: 1, max: 1_000_000)
        s.keyMaxConcurrent = try whole(keyMaxConcurrentRequests, "key-max-concurrent-requests", "METER_KEY_MAX_CONCURRENT_REQUESTS", min: 0)
        s.keyPerSecond = try GlobalOptions.number(keyRequestsPerSecond, "key-requests-per-second", "METER_KEY_REQUESTS_PER_SECOND", min: 0)
        s.rollupMaxEvents = try whole(rollupMaxEvents, "rollup-max-events", "METER_ROLLUP_MAX_EVENTS", min: 1, max: Int(Int32.max))
        s.rollupStallAfter = try whole(rollupStallAfterSeconds, "rollup-stall-after-seconds", "METER_ROLLUP_STALL_AFTER_SECONDS", min: 1)
        s.rollupWorkers = try whole(rollupWorkers, "rollup-workers", "METER_ROLLUP_WORKERS", min: 1, max: 64)
        s.retention = try RetentionFlags.policy(conflictPayloadRetentionSeconds, webhookRetentionSeconds)
        // At least a minute: the delivery backoff is derived from it (a quarter, a twentieth).
        s.webhookGiveUp = try whole(webhookGiveUpSeconds, "webhook-give-up-seconds", "METER_WEBHOOK_GIVE_UP_SECONDS", min: 60)
        s.rollupInterval = try GlobalOptions.number(rollupIntervalSeconds, "rollup-interval-seconds", "METER_ROLLUP_INTERVAL_SECONDS", min: 0.01)
        // An idle loop finishes an attempt once per interval: a bound within three intervals
        // would report a healthy loop as stalled.
        let interval = s.rollupInterval ?? 1
        if let stall = s.rollupStallAfter, Double(stall) < 3 * interval {
            throw ValidationError("--rollup-stall-after-seconds (METER_ROLLUP_STALL_AFTER_SECONDS) must be at least 3 × "
                                  + "--rollup-interval-seconds (\(interval) s); got \(stall) s")
        }
        return s
    }

    mutating func validate() throws {
        _ = try settings()
        if let v = GlobalOptions.env["METER_ROLLUP"], !["on", "off"].contains(v) {
            throw ValidationError("METER_ROLLUP must be on or off; got \(v)")
        }
        if let v = GlobalOptions.env["METER_WEBHOOK_DELIVERY"], !["on", "off"].contains(v) {
            throw ValidationError("METER_WEBHOOK_DELIVERY must be on or off; got \(v)")
        }
    }

    func configuration(sqlDir: String) -> ServeConfiguration {
        let env = GlobalOptions.env
        let s = (try? settings()) ?? Settings()  // validated before run
        var c = ServeConfiguration()
        c.host = host ?? env["METER_HOST"] ?? "127.0.0.1"
        c.port = s.port ?? 8080
        if let v = s.maxEventsPerRequest { c.limits.maxBatchEvents = v }
        if let v = s.maxBodyBytes { c.limits.maxBodyBytes = v }
        if let v = s.maxPropertiesBytes { c.limits.maxPropertiesBytes = v }
        if let v = s.futureTolerance { c.limits.maxFutureSeconds = v }
        if let v = s.pastTolerance { c.limits.maxPastSeconds = v }
        if let v = s.idleTimeout { c.idleTimeoutSeconds = v }
        if let v = s.maxConnections { c.maxConnections = v }
        if let v = s.keyMaxConcurrent { c.keyMaxConcurrentRequests = v }
        if let v = s.keyPerSecond { c.keyRequestsPerSecond = v }
        c.retention = s.retention
        if noWebhookDelivery || env["METER_WEBHOOK_DELIVERY"] == "off" {
            c.webhookDelivery = nil
        } else if let v = s.webhookGiveUp {
            c.webhookDelivery?.giveUpAfter = .seconds(v)
            c.webhookDelivery?.backoffCap = min(.seconds(3_600), .seconds(max(1, v / 4)))
            c.webhookDelivery?.backoffBase = min(.seconds(5), .seconds(max(1, v / 20)))
        }
        if noRollup || env["METER_ROLLUP"] == "off" {
            c.rollup = nil
        } else {
            var r = RollupWorker.Configuration()
            if let v = s.rollupInterval {
                r.interval = .milliseconds(Int64((v * 1000).rounded()))
                r.minGap = min(r.minGap, r.interval)
            }
            if let v = s.rollupMaxEvents { r.maxEvents = v }
            if let v = s.rollupStallAfter { r.stallAfter = .seconds(v) }
            if let v = s.rollupWorkers { r.workers = v }
            c.rollup = r
        }
        c.openAPIPath = openAPI ?? env["METER_OPENAPI"]
            ?? URL(fileURLWithPath: sqlDir).deletingLastPathComponent().appendingPathComponent("docs/openapi.yaml").path
        return c
    }

    var pool: Int { ((try? settings()) ?? Settings()).poolSize ?? 16 }
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
    @OptionGroup var sync: SyncOptions
    @Flag(help: "Apply migrations before serving (always done for the embedded Postgres).") var migrate = false

    func run() async throws {
        let logger = global.bootstrapLogging()
        let sqlDir = try global.target.locateSQL()
        let conninfo = try global.conninfo(migrate: migrate || global.target.isEmbedded)
        var config = service.configuration(sqlDir: sqlDir)
        // The billing sync runs when an engine is configured (--billing-api-base).
        if billing.configured { config.sync = try sync.apply(to: billing.sync()) }
        config.expectedLedger = try MeterServer.expectedLedger(conninfo: conninfo, sqlDir: sqlDir)
        try await MeterServer.run(config: config, conninfo: conninfo, poolSize: service.pool, logger: logger)
    }
}
