import ArgumentParser
import Foundation
import Logging
import BillingMock

/// `meterctl billing-mock`: the Stripe-compatible mock billing engine, as its own process.
struct BillingMockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "billing-mock",
        abstract: "Run the mock billing engine (a Stripe-compatible subset) on its own port.",
        discussion: """
            Its state lives in the schema billing_mock (of the database given by --database-url or the \
            embedded Postgres); the product never reads it and talks to it over HTTP only. Faults can be \
            set here and changed at run time: curl -X POST localhost:12111/admin/faults -d '{"outage":true}'. \
            See docs/billing-mock.md.
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Listen address (env BILLING_MOCK_HOST). Default: 127.0.0.1") var host: String?
    @Option(help: "Listen port, 0 = any free port (env BILLING_MOCK_PORT). Default: 12111") var port: Int?
    @Option(name: .customLong("error-rate"), help: "Share of API calls answered 500/503 without effect (0-1). Default: 0")
    var errorRate: Double = 0
    @Option(name: .customLong("error-status"), help: "Status of injected errors: 500 or 503. Default: 503")
    var errorStatus: Int = 503
    @Option(name: .customLong("latency-seconds"), help: "Latency added to each API call, decimals allowed. Default: 0") var latencySeconds: Double = 0
    @Flag(help: "Start in a full outage (every API call 503).") var outage = false
    @Option(name: .customLong("drop-rate"), help: "Share of API calls applied, then answered by closing the connection (0-1). Default: 0")
    var dropRate: Double = 0
    @Option(name: .customLong("webhook-duplicate-rate"), help: "Share of webhook deliveries sent twice (0-1). Default: 0")
    var webhookDuplicateRate: Double = 0
    @Flag(name: .customLong("webhook-shuffle"), help: "Deliver webhooks in random order.") var webhookShuffle = false
    @Option(name: .customLong("webhook-retry-base-seconds"), help: "First webhook retry delay, doubled per attempt, decimals allowed. Default: 1")
    var webhookRetryBaseSeconds: Double = 1

    func validate() throws {
        for (v, flag) in [(errorRate, "error-rate"), (dropRate, "drop-rate"), (webhookDuplicateRate, "webhook-duplicate-rate")]
        where !(0...1).contains(v) {
            throw ValidationError("--\(flag) must be between 0 and 1; got \(v)")
        }
        guard errorStatus == 500 || errorStatus == 503 else { throw ValidationError("--error-status must be 500 or 503") }
        guard latencySeconds >= 0 else { throw ValidationError("--latency-seconds must be at least 0") }
        guard webhookRetryBaseSeconds >= 0.001 else { throw ValidationError("--webhook-retry-base-seconds must be at least 0.001") }
    }

    func run() async throws {
        let logger = global.bootstrapLogging()
        let sqlDir = try global.target.locateSQL()
        let conninfo = try global.conninfo(migrate: global.target.isEmbedded)
        let env = GlobalOptions.env
        var config = BillingMockConfiguration()
        config.host = host ?? env["BILLING_MOCK_HOST"] ?? "127.0.0.1"
        config.port = port ?? env["BILLING_MOCK_PORT"].flatMap(Int.init) ?? 12111
        config.faults.errorRate = errorRate
        config.faults.errorStatus = errorStatus
        config.faults.latencyMs = Int((latencySeconds * 1000).rounded())
        config.faults.outage = outage
        config.faults.dropRate = dropRate
        config.faults.webhookDuplicateRate = webhookDuplicateRate
        config.faults.webhookShuffle = webhookShuffle
        config.webhookRetryBase = .milliseconds(Int64((webhookRetryBaseSeconds * 1000).rounded()))
        try await BillingMockServer.run(config: config, conninfo: conninfo, sqlDirectory: sqlDir, logger: logger)
    }
}
