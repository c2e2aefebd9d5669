import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import PGClient
import MeterCore

/// Runs the HTTP service: a pool, the application, and graceful shutdown. SIGTERM/SIGINT (when
/// `handleSignals`) or a graceful shutdown of the group handed to `onGroup` stops accepting
/// connections, lets in-flight requests finish (their events are committed or not, never half),
/// then closes the pool.
public enum MeterServer {
    public static func run(config: ServeConfiguration, conninfo: String, poolSize: Int,
                           logger: Logger, handleSignals: Bool = true,
                           onGroup: @Sendable (ServiceGroup) async -> Void = { _ in },
                           onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let pool = PGPool(conninfo: conninfo, maxConnections: poolSize, logger: logger)
        let metrics = MeterMetrics()
        let webhooks = config.processWebhooks
            ? WebhookProcessor(conninfo: conninfo, logger: logger, metrics: metrics.sync, client: config.sync.map { BillingClient($0.api) })
            : nil
        let rollupWorker = config.rollup.map { RollupWorker(conninfo: conninfo, configuration: $0, metrics: metrics, logger: logger) }
        // Ingest's wake-up of the rollup, off the commit path: this process's loop directly, the
        // others by a NOTIFY at most every 100 ms (EventsNotifier).
        var wakeLocal: (@Sendable () -> Void)?
        if let w = rollupWorker { wakeLocal = { w.wakeUp() } }
        let notifier = EventsNotifier(conninfo: conninfo, local: wakeLocal, logger: logger)
        let app = MeterApplication.buildApplication(
            config: config, pool: pool, metrics: metrics, logger: logger, webhooks: webhooks, rollupWatchdog: rollupWorker?.watchdog,
            notifier: notifier,
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? config.port
                logger.info("serve.listening", metadata: ["host": "\(config.host)", "port": "\(port)"])
                await onRunning(port)
            })
        // The monthly partitions of meter.events for this service's whole ingest window, before
        // it listens (an event whose month has no partition cannot be stored), then hourly.
        let partitions = PartitionWorker(conninfo: conninfo, pastSeconds: config.limits.maxPastSeconds,
                                         metrics: metrics, logger: logger)
        do { try await partitions.pass() } catch {
            logger.warning("partitions.failed", metadata: ["error": "\(error)"])
        }
        // Services stop in reverse order: the HTTP server first (drains requests), then the
        // rollup loop (its current run commits or rolls back).
        var services: [any Service] = [partitions]
        if let rollupWorker { services.append(rollupWorker) }
        if let sync = config.sync {
            services.append(SyncWorker(conninfo: conninfo, config: sync, metrics: metrics.sync, logger: logger))
        }
        if let webhooks { services.append(webhooks) }
        if let delivery = config.webhookDelivery {
            services.append(WebhookDeliveryWorker(conninfo: conninfo, config: delivery, metrics: metrics, logger: logger))
        }
        if let policy = config.retention {
            services.append(RetentionWorker(conninfo: conninfo, policy: policy, metrics: metrics, logger: logger))
        }
        services.append(notifier)
        services.append(app)
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
            logger: logger))
        await onGroup(group)  // an embedding program (demo, tests) may stop it gracefully
        do {
            try await group.run()
        } catch {
            await pool.shutdown()
            throw error
        }
        logger.info("serve.stopped", metadata: ["reason": "graceful shutdown"])
        await pool.shutdown()
    }

    /// The checksums /readyz compares the database's ledger with.
    public static func expectedLedger(conninfo: String, sqlDir: String) throws -> [Int: String] {
        let conn = try PGConnection(conninfo: conninfo)
        defer { conn.close() }
        return try Migrator(sqlDirectory: sqlDir).expectedLedger(conn)
    }
}
