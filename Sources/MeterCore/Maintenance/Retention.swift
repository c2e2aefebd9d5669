import Foundation
import Logging
import Prometheus
import ServiceLifecycle
import PGClient
import MeterWire

/// Retention of what is kept only for tracing (meter.retention_prune): a conflict's offered
/// payload (its SHA-256 stays) and processed billing webhooks. `meterctl prune` runs it by hand;
/// `serve` runs `RetentionWorker` hourly.
public enum Retention {
    public struct Policy: Sendable, Equatable {
        /// How long a conflicting redelivery keeps what was offered (at least 1 day).
        public var conflictPayloadSeconds = 90 * 86_400
        /// How long a processed billing webhook is kept for dedup and audit (at least 7 days).
        public var webhookSeconds = 90 * 86_400
        /// Rows of each table per statement: short transactions, no long lock on either table.
        public var rowsPerPass = 10_000
        public init() {}
    }

    /// What one pass or a whole prune removed, by target (`event_redeliveries.offered`, `webhook_events`).
    public struct Pruned: Sendable, Equatable {
        public var conflictPayloads: Int64 = 0
        public var webhookEvents: Int64 = 0
        public var total: Int64 { conflictPayloads + webhookEvents }
        public init() {}
    }

    /// One call of meter.retention_prune: at most `rowsPerPass` rows of each table.
    public static func pass(_ conn: PGConnection, policy: Policy) throws -> Pruned {
        let rows = try conn.execute("""
            select target, pruned from meter.retention_prune(
                make_interval(secs => $1::bigint), make_interval(secs => $2::bigint), $3::integer)
            """, [String(policy.conflictPayloadSeconds), String(policy.webhookSeconds), String(policy.rowsPerPass)])
        var p = Pruned()
        for r in rows.rows {
            switch try r.string("target") {
            case "event_redeliveries.offered": p.conflictPayloads = try r.int("pruned")
            case "webhook_events": p.webhookEvents = try r.int("pruned")
            default: break
            }
        }
        return p
    }

    /// Passes until one leaves nothing due in either table; `progress` sees each pass.
    public static func prune(_ conn: PGConnection, policy: Policy,
                             progress: (Pruned) -> Void = { _ in }) throws -> Pruned {
        var total = Pruned()
        while true {
            let p = try pass(conn, policy: policy)
            total.conflictPayloads += p.conflictPayloads
            total.webhookEvents += p.webhookEvents
            progress(p)
            if p.conflictPayloads < Int64(policy.rowsPerPass) && p.webhookEvents < Int64(policy.rowsPerPass) {
                return total
            }
        }
    }
}

/// Runs `Retention.prune` once shortly after start and then every `interval`, on a connection of
/// its own. A failure is logged and retried at the next interval (nothing it does is urgent).
public final class RetentionWorker: Service, Sendable {
    package let pool: PGPool
    package let policy: Retention.Policy
    package let interval: Duration
    package let logger: Logger
    package let pruned: @Sendable (String) -> Counter

    public init(conninfo: String, policy: Retention.Policy, interval: Duration = .seconds(3600),
                metrics: MeterMetrics, logger: Logger) {
        self.policy = policy; self.interval = interval; self.logger = logger
        let registry = metrics.registry
        pruned = { target in
            registry.meterCounter(name: "meter_retention_pruned_total", labels: [("target", target)],
                                  help: "Rows pruned by retention: conflict payloads cleared, processed webhooks deleted")
        }
        pool = PGPool(conninfo: conninfo, maxConnections: 1, acquireTimeout: .seconds(30), statementTimeout: "300s",
                      applicationName: "meter-retention", logger: logger)
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            var delay: Duration = .seconds(60)  // not in the way of a service's start
            while !Task.isCancelled {
                try? await Task.sleep(for: delay)
                if Task.isCancelled { break }
                delay = interval
                do {
                    let policy = self.policy
                    let p = try await pool.withConnection { c in try Retention.prune(c, policy: policy) }
                    pruned("event_redeliveries.offered").increment(by: p.conflictPayloads)
                    pruned("webhook_events").increment(by: p.webhookEvents)
                    logger.info("retention.pruned", metadata: [
                        "conflict_payloads": "\(p.conflictPayloads)", "webhook_events": "\(p.webhookEvents)"])
                } catch {
                    logger.warning("retention.failed", metadata: ["error": "\(error)"])
                }
            }
        }
        await pool.shutdown()
    }
}
