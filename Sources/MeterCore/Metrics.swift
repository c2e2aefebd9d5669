import Foundation
import Prometheus
import PGClient

/// The service's Prometheus metrics, on a registry of its own (no global bootstrap, so tests can
/// build many applications in one process). Exposed at GET /metrics.
public final class MeterMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    package let accepted, duplicate, conflict, rejected: Counter
    package let poolOpen, poolInUse, poolWaiting: Gauge
    /// Requests stored per COMMIT by the group-commit coalescer (1 = alone).
    package let requestsPerCommit: ValueHistogram
    /// Groups whose shared statement failed for a non-transient reason, stored again request by request.
    package let groupsRetriedAlone: Counter
    package let rollupRuns, rollupSkipped, rollupFailures, rollupEvents, rollupCancellations: Counter
    package let rollupDuration: DurationHistogram
    package let rollupLagSeconds, rollupPendingEvents, rollupWaitingOnHorizon, rollupPendingCancellations: Gauge
    /// The rollup loop's liveness (RollupWorker's watchdog): seconds since it last finished an
    /// attempt, and 1 while that exceeds the stall bound.
    package let rollupLoopIdleSeconds, rollupLoopStalled: Gauge
    package let cancelled, alreadyCancelled, cancelRejected: Counter
    public let sync: SyncMetrics

    public init() {
        let registry = self.registry
        sync = SyncMetrics(registry: registry)
        func events(_ s: String) -> Counter {
            registry.meterCounter(name: "meter_ingest_events_total", labels: [("status", s)],
                                 help: "Events by ingest verdict")
        }
        accepted = events("accepted")
        duplicate = events("duplicate")
        conflict = events("conflict")
        rejected = events("rejected")
        poolOpen = registry.meterGauge(name: "meter_db_pool_connections", labels: [("state", "open")],
                                      help: "Database pool connections")
        poolInUse = registry.meterGauge(name: "meter_db_pool_connections", labels: [("state", "in_use")],
                                       help: "Database pool connections")
        poolWaiting = registry.meterGauge(name: "meter_db_pool_waiters",
                                         help: "Requests waiting for a database connection")
        requestsPerCommit = registry.meterValueHistogram(name: "meter_ingest_requests_per_commit",
                                                        buckets: [1, 2, 4, 8, 16, 32, 64, 128],
                                                        help: "Ingest requests stored together in one COMMIT (group commit)")
        groupsRetriedAlone = registry.meterCounter(name: "meter_ingest_groups_split_total",
                                                   help: "Group commits whose statement failed for a non-transient reason and were stored request by request")
        func runs(_ r: String) -> Counter {
            registry.meterCounter(name: "meter_rollup_runs_total", labels: [("result", r)],
                                 help: "Rollup runs: ran, skipped (another run held the lock), failed")
        }
        rollupRuns = runs("ran")
        rollupSkipped = runs("skipped")
        rollupFailures = runs("failed")
        rollupEvents = registry.meterCounter(name: "meter_rollup_events_total", help: "Events folded into the hourly rollups")
        rollupCancellations = registry.meterCounter(name: "meter_rollup_cancellations_total",
                                                   help: "Cancellations subtracted from the hourly rollups")
        rollupDuration = registry.meterDurationHistogram(
            name: "meter_rollup_run_duration_seconds",
            buckets: [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50), .milliseconds(100),
                      .milliseconds(500), .seconds(1), .seconds(5), .seconds(30)],
            help: "Duration of one rollup run (round trip)")
        rollupLagSeconds = registry.meterGauge(name: "meter_rollup_lag_seconds",
                                              help: "Age of the oldest committed event or cancellation not yet rolled up (0 = none)")
        rollupPendingEvents = registry.meterGauge(name: "meter_rollup_pending_events",
                                                 help: "Committed events past the rollup watermark")
        rollupWaitingOnHorizon = registry.meterGauge(name: "meter_rollup_waiting_on_horizon_events",
                                                    help: "Pending events held back by an older open transaction")
        rollupPendingCancellations = registry.meterGauge(name: "meter_rollup_pending_cancellations",
                                                        help: "Cancellations not yet subtracted")
        rollupLoopIdleSeconds = registry.meterGauge(
            name: "meter_rollup_loop_idle_seconds",
            help: "Seconds (monotonic clock) since the rollup loop last finished a run attempt (ran, skipped or failed)")
        rollupLoopStalled = registry.meterGauge(
            name: "meter_rollup_loop_stalled",
            help: "1 while the rollup loop has finished no run attempt for longer than its stall bound (--rollup-stall-after-seconds)")
        func cancels(_ s: String) -> Counter {
            registry.meterCounter(name: "meter_cancel_events_total", labels: [("status", s)],
                                 help: "Event cancellations by verdict")
        }
        cancelled = cancels("cancelled")
        alreadyCancelled = cancels("already_cancelled")
        cancelRejected = cancels("rejected")
    }

    package func rollupRun(_ r: Rollup.RunResult, duration: Duration) {
        if r.ran {
            rollupRuns.increment()
            rollupEvents.increment(by: r.eventsFolded)
            rollupCancellations.increment(by: r.cancellationsFolded)
            rollupDuration.record(duration)
        } else {
            rollupSkipped.increment()
        }
    }

    package func rollupFailed() { rollupFailures.increment() }

    package func rollupLag(_ lag: Rollup.Lag) {
        rollupLagSeconds.set(lag.lagSeconds)
        rollupPendingEvents.set(Double(lag.pendingEvents))
        rollupWaitingOnHorizon.set(Double(lag.waitingOnHorizon))
        rollupPendingCancellations.set(Double(lag.pendingCancellations))
    }

    package func events(_ status: IngestVerdict.Status) -> Counter {
        switch status {
        case .accepted: accepted
        case .duplicate: duplicate
        case .conflict: conflict
        case .rejected: rejected
        }
    }

    private let lock = NSLock()
    nonisolated(unsafe) private var counters: [String: Counter] = [:]
    nonisolated(unsafe) private var histograms: [String: DurationHistogram] = [:]

    /// Requests by route and status code (created once per label set, then cached).
    public func request(route: String, status: Int) -> Counter {
        let key = "\(route) \(status)"
        if let c = lock.withLock({ counters[key] }) { return c }
        let c = registry.meterCounter(name: "meter_http_requests_total", labels: [("route", route), ("status", String(status))],
                                     help: "HTTP requests by route and status")
        lock.withLock { counters[key] = c }
        return c
    }

    /// Requests refused 429 by the per-key limits, by reason: concurrency or rate.
    public func throttled(_ reason: String) -> Counter {
        let key = "throttled \(reason)"
        if let c = lock.withLock({ counters[key] }) { return c }
        let c = registry.meterCounter(name: "meter_http_throttled_total", labels: [("reason", reason)],
                                      help: "Requests refused 429 by the per-key limits, by reason (concurrency, rate)")
        lock.withLock { counters[key] = c }
        return c
    }

    public func latency(route: String) -> DurationHistogram {
        if let h = lock.withLock({ histograms[route] }) { return h }
        let h = makeLatency(route: route)
        lock.withLock { histograms[route] = h }
        return h
    }

    private func makeLatency(route: String) -> DurationHistogram {
        registry.meterDurationHistogram(
            name: "meter_http_request_duration_seconds", labels: [("route", route)],
            buckets: [.microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
                      .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                      .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5)],
            help: "HTTP request latency")
    }

    public func update(pool: PGPool.Stats) {
        poolOpen.set(Double(pool.open))
        poolInUse.set(Double(pool.inUse))
        poolWaiting.set(Double(pool.waiting))
    }
}
