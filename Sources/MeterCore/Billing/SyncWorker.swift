// SyncWorker.swift: the billing sync loop of `meterctl serve`, and the webhook processor.
//
// Like the rollup loop: LISTEN is a latency hint (meter_sync is NOTIFied by every rollup run
// that changed a billed hour), the interval is the guarantee (notifications are lost while the
// listener is disconnected). A billing outage only slows this loop (backoff per hour); ingest and
// rollups do not wait for it.

import Foundation
import Logging

import Prometheus
import ServiceLifecycle
import PGClient

public final class SyncMetrics: Sendable {
    package let sendsByResult: @Sendable (String) -> Counter
    package let sendDuration: DurationHistogram
    package let deadLettered: Counter
    package let pending, inFlight, dead, oldestUnsynced, webhooksUnprocessed: Gauge
    package let webhooks: @Sendable (String) -> Counter
    package let webhooksRejected: @Sendable (String) -> Counter

    public init(registry: PrometheusCollectorRegistry) {
        sendsByResult = { r in registry.meterCounter(name: "meter_sync_sends_total", labels: [("result", r)],
                                                    help: "Usage sends to the billing engine: ok, failed (unknown outcome, repeated), rejected (definitive 4xx)") }
        sendDuration = registry.meterDurationHistogram(
            name: "meter_sync_send_duration_seconds",
            buckets: [.milliseconds(5), .milliseconds(20), .milliseconds(100), .milliseconds(500), .seconds(2), .seconds(10)],
            help: "Round trip of one usage send")
        deadLettered = registry.meterCounter(name: "meter_sync_dead_lettered_total", help: "Hours parked as dead after exhausting their attempts")
        pending = registry.meterGauge(name: "meter_sync_pending_hours", help: "Outbox hours waiting to be sent")
        inFlight = registry.meterGauge(name: "meter_sync_in_flight_hours", help: "Outbox hours being sent")
        dead = registry.meterGauge(name: "meter_sync_dead_hours", help: "Outbox hours parked as dead (meterctl sync retry)")
        oldestUnsynced = registry.meterGauge(name: "meter_sync_lag_seconds", help: "Age of the oldest unsynced hour change (0 = none)")
        webhooksUnprocessed = registry.meterGauge(name: "meter_webhooks_unprocessed", help: "Billing webhooks stored, not yet applied")
        webhooks = { r in registry.meterCounter(name: "meter_webhooks_received_total", labels: [("result", r)],
                                               help: "POST /webhooks/billing by result: stored, duplicate, rejected") }
        webhooksRejected = { r in registry.meterCounter(name: "meter_webhooks_rejected_total", labels: [("reason", r)],
                                                       help: "POST /webhooks/billing refused, by reason: size, unconfigured, signature_missing, signature_malformed, signature_mismatch, signature_expired, payload") }
    }

    package func sends(_ r: String) -> Counter { sendsByResult(r) }
}

public final class SyncWorker: Service, @unchecked Sendable {
    package let config: SyncConfiguration
    package let conninfo: String
    package let metrics: SyncMetrics
    package let logger: Logger
    package let pool: PGPool

    public init(conninfo: String, config: SyncConfiguration, metrics: SyncMetrics, logger: Logger) {
        self.conninfo = conninfo; self.config = config; self.metrics = metrics; self.logger = logger
        pool = PGPool(conninfo: conninfo, maxConnections: config.concurrency * config.passes + 1, acquireTimeout: .seconds(30),
                      statementTimeout: "60s", applicationName: "meter-sync", logger: logger)
    }

    public func run() async throws {
        let client = BillingClient(config.api)
        let listener = PGListener(conninfo: conninfo, channels: ["meter_sync"], logger: logger)
        listener.start()
        // One wake-up per pass loop: a NOTIFY wakes them all (each claims what is left).
        let wakes = (0..<config.passes).map { _ in WakeSignal() }
        let relay = Task { for await _ in listener.events { for w in wakes { w.signal() } } }
        logger.info("sync.worker.started", metadata: ["engine": "\(config.api.baseURL)", "batch": "\(config.batch)",
                                                       "concurrency": "\(config.concurrency)", "passes": "\(config.passes)"])
        await cancelWhenGracefulShutdown { [self] in
            await withTaskGroup(of: Void.self) { group in
                for (i, wake) in wakes.enumerated() {
                    group.addTask { await self.loop(index: i, wake: wake, client: client) }
                }
            }
        }
        listener.stop()
        relay.cancel()
        await pool.shutdown()
        logger.info("sync.worker.stopped")
    }

    /// One pass loop. `config.passes` of them run side by side, so that one claims and reports
    /// while another's sends are in flight (claims skip each other's rows: SKIP LOCKED); the
    /// first also provisions links and refreshes the gauges.
    package func loop(index: Int, wake: WakeSignal, client: BillingClient) async {
        var lastGauges = ContinuousClock.now - .seconds(10)
        var failures = 0
        while !Task.isCancelled {
            var busy = false
            do {
                let r = try await BillingSync.pass(pool: pool, client: client, config: config, metrics: metrics, logger: logger,
                                                   link: index == 0)
                busy = r.claimed >= config.batch
                failures = 0
            } catch {
                failures += 1
                logger.warning("sync.pass_failed", metadata: ["error": "\(error)", "consecutive": "\(failures)", "loop": "\(index)"])
            }
            if index == 0 && ContinuousClock.now - lastGauges >= .seconds(1) {
                lastGauges = ContinuousClock.now
                await refreshGauges()
            }
            if busy { continue }
            await wake.wait(timeout: failures > 0 ? min(config.interval * min(failures, 30), .seconds(30)) : config.interval)
        }
    }

    package func refreshGauges() async {
        guard let r = try? await pool.withConnection({ c in
            try c.execute("select pending, in_flight, dead, oldest_unsynced_seconds::text as lag from meter.sync_backlog").single()
        }) else { return }
        if let v = try? r.int("pending") { metrics.pending.record(v) }
        if let v = try? r.int("in_flight") { metrics.inFlight.record(v) }
        if let v = try? r.int("dead") { metrics.dead.record(v) }
        if let v = try? r.string("lag"), let d = Double(v) { metrics.oldestUnsynced.record(d) }
        // (meter_webhooks_unprocessed is the webhook processor's: it is recorded after each of its passes)
    }
}

/// Applies stored webhooks (meter.webhook_process) as they arrive: woken by the receiving
/// handler in this process and by NOTIFY meter_webhooks from any other, polled every second.
public final class WebhookProcessor: Service, @unchecked Sendable {
    package let conninfo: String
    package let logger: Logger
    package let wake = WakeSignal()
    package let pool: PGPool

    package let gauge: Gauge?
    /// The engine, to fetch the meter error reports (thin events) in full; nil: they wait.
    package let client: BillingClient?

    public init(conninfo: String, logger: Logger, metrics: SyncMetrics? = nil, client: BillingClient? = nil) {
        self.conninfo = conninfo; self.logger = logger; self.gauge = metrics?.webhooksUnprocessed; self.client = client
        pool = PGPool(conninfo: conninfo, maxConnections: 1, acquireTimeout: .seconds(30), statementTimeout: "60s",
                      applicationName: "meter-webhooks", logger: logger)
    }

    public func signal() { wake.signal() }

    public func run() async throws {
        let listener = PGListener(conninfo: conninfo, channels: ["meter_webhooks"], logger: logger)
        listener.start()
        let wake = self.wake
        let relay = Task { for await _ in listener.events { wake.signal() } }
        await cancelWhenGracefulShutdown { [self] in
            while !Task.isCancelled {
                var n: Int64 = 0
                if let client { await applyMeterErrorReports(client) }
                do {
                    let (processed, left) = try await pool.withConnection { c in
                        let p = try c.execute("select meter.webhook_process(100) as n").single().int("n")
                        let l = try c.execute("select count(*) as n from meter.webhook_events where processed_at is null").single().int("n")
                        return (p, l)
                    }
                    n = processed
                    gauge?.record(left)
                    if n > 0 { logger.debug("webhooks.processed", metadata: ["events": "\(n)"]) }
                } catch {
                    logger.warning("webhooks.process_failed", metadata: ["error": "\(error)"])
                }
                if n >= 100 { continue }
                await wake.wait(timeout: .seconds(1))
            }
        }
        listener.stop()
        relay.cancel()
        await pool.shutdown()
    }

    /// The v2 stream's refusals: each stored error report is fetched in full (GET
    /// /v2/core/events/{id}) and its refused events' hours parked dead (meter.sync_refused).
    package func applyMeterErrorReports(_ client: BillingClient) async {
        do {
            let ids = try await pool.withConnection { c in
                try c.execute("""
                    select event_id from meter.webhook_events
                    where processed_at is null and type like 'v1.billing.meter.%' order by received_at limit 20
                    """).rows.map { try $0.string("event_id") }
            }
            for id in ids {
                let event = try await client.get("/v2/core/events/\(id)", version: client.configuration.apiVersion)
                let dead = try await pool.withConnection { c in
                    try c.execute("select meter.sync_refused($1, $2::jsonb) as n", [id, event.text]).single().int("n")
                }
                logger.warning("sync.refused_by_engine", metadata: ["event": "\(id)", "hours_dead": "\(dead)",
                                                                    "type": "\(event["type"]?.stringValue ?? "?")"])
            }
        } catch {
            logger.warning("webhooks.meter_error_report_failed", metadata: ["error": "\(error)"])
        }
    }
}
