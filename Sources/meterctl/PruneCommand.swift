import ArgumentParser
import Foundation
import MeterCore

/// The retention settings `serve` and `prune` share, each from its flag or its variable.
enum RetentionFlags {
    static func policy(_ conflictPayload: Int?, _ webhooks: Int?) throws -> Retention.Policy {
        var p = Retention.Policy()
        let year10 = 3650.0 * 86_400
        if let v = try GlobalOptions.number(conflictPayload.map(Double.init), "conflict-payload-retention-seconds",
                                            "METER_CONFLICT_PAYLOAD_RETENTION_SECONDS", min: 86_400, max: year10, whole: true) {
            p.conflictPayloadSeconds = Int(v)
        }
        if let v = try GlobalOptions.number(webhooks.map(Double.init), "webhook-retention-seconds",
                                            "METER_WEBHOOK_RETENTION_SECONDS", min: 604_800, max: year10, whole: true) {
            p.webhookSeconds = Int(v)
        }
        return p
    }
}

/// `meterctl prune`: one retention pass by hand (serve runs the same hourly).
struct Prune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply retention: clear old conflict payloads (their SHA-256 stays) and delete old processed webhooks.",
        discussion: """
            Calls meter.retention_prune until nothing is due, printing each pass. Redelivery rows stay \
            (the reconciliation counts them); unprocessed webhooks are never deleted. `serve` runs the \
            same every hour with the same flags and variables.
            """)
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("conflict-payload-retention-seconds"), help: "How long a conflict keeps what was offered (env METER_CONFLICT_PAYLOAD_RETENTION_SECONDS). Default: 7776000 (90 days), at least 86400")
    var conflictPayloadRetentionSeconds: Int?
    @Option(name: .customLong("webhook-retention-seconds"), help: "How long a processed billing webhook is kept (env METER_WEBHOOK_RETENTION_SECONDS). Default: 7776000 (90 days), at least 604800")
    var webhookRetentionSeconds: Int?
    @Option(name: .customLong("rows-per-pass"), help: "Rows of each table per statement. Default: 10000")
    var rowsPerPass = 10_000

    func validate() throws {
        _ = try RetentionFlags.policy(conflictPayloadRetentionSeconds, webhookRetentionSeconds)
        guard rowsPerPass >= 1, rowsPerPass <= Int(Int32.max) else {
            throw ValidationError("--rows-per-pass must be between 1 and \(Int32.max); got \(rowsPerPass)")
        }
    }

    func run() async throws {
        var policy = try RetentionFlags.policy(conflictPayloadRetentionSeconds, webhookRetentionSeconds)
        policy.rowsPerPass = rowsPerPass
        let started = ContinuousClock.now
        var passes = 0
        let total = try global.withConnection(migrate: global.target.isEmbedded) { conn in
            try Retention.prune(conn, policy: policy) { p in
                passes += 1
                print("pass \(passes): \(p.conflictPayloads) conflict payloads cleared, \(p.webhookEvents) webhook events deleted")
            }
        }
        print("prune: \(total.conflictPayloads) conflict payloads cleared (older than \(policy.conflictPayloadSeconds) s), "
              + "\(total.webhookEvents) processed webhook events deleted (older than \(policy.webhookSeconds) s) in "
              + String(format: "%.2f s", (ContinuousClock.now - started).seconds))
    }
}
