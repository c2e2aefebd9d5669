import Foundation
import Synchronization
import Logging
import ServiceLifecycle
import PGClient

/// The rollup loop of `meterctl serve`: calls `meter.rollup_run()` every `interval`, and early
/// when this process committed events or cancellations (`wakeUp()`, EventsNotifier) or another
/// one NOTIFYs `meter_events`.
///
/// NOTIFY is only a latency hint (lost while the listener is disconnected): the interval is the
/// guarantee. Correctness does not depend on this loop at all: every run is one transaction of
/// `meter.rollup_run()`, which may run in several processes at once (the advisory lock lets one
/// through) and may be killed at any instant (its transaction rolls back).
///
/// Rollup shards (decision 125): `workers` loops run at once, loop i folding the shards s with
/// s % workers == i of the current shard count (read before every pass, so `meterctl rollup shards
/// --set N` takes effect without a restart); with one shard, one loop works and the others wait.
/// The loops share their own pool (one connection each, plus one for the lag gauges), so a
/// saturated ingest pool never delays rollups.
public final class RollupWorker: Service, @unchecked Sendable {
    public struct Configuration: Sendable {
        /// Longest wait between runs when nothing wakes the loop.
        public var interval: Duration = .seconds(1)
        /// Shortest gap between two runs: notifications arriving during a gap fold into one run.
        public var minGap: Duration = .milliseconds(50)
        public var maxEvents = Rollup.defaultMaxEvents
        /// How often the lag gauges are refreshed from `meter.rollup_lag`.
        public var lagRefresh: Duration = .seconds(1)
        /// The loop counts as stalled when it has finished no run attempt for this long
        /// (LoopWatchdog: a metric, an error log line, /readyz's body).
        public var stallAfter: Duration = .seconds(120)
        /// Loops folding shards at once (at most one per shard is ever busy).
        public var workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
        public init() {}
    }

    public let configuration: Configuration
    private let conninfo: String
    private let pool: PGPool
    private let metrics: MeterMetrics
    private let logger: Logger
    private let wakes: [WakeSignal]
    /// The loops that finished an attempt since the watchdog's last beat.
    private let beats = Mutex(Beats())
    private struct Beats { var done = Set<Int>() }
    /// The loop's liveness, on the monotonic clock (read by /readyz).
    public let watchdog: LoopWatchdog

    public init(conninfo: String, configuration: Configuration = .init(), metrics: MeterMetrics, logger: Logger) {
        self.conninfo = conninfo
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.watchdog = LoopWatchdog(name: "rollup", stallAfter: configuration.stallAfter, metrics: metrics, logger: logger)
        let workers = max(1, configuration.workers)
        self.wakes = (0..<workers).map { _ in WakeSignal() }
        // Runs are bounded by max_events, but a large backlog can make one take seconds.
        self.pool = PGPool(conninfo: conninfo, maxConnections: workers + 1, acquireTimeout: .seconds(30),
                           statementTimeout: "300s", applicationName: "meter-rollup", logger: logger)
    }

    /// Runs the loop now (or right after the current run): this process committed events or
    /// cancellations (EventsNotifier). Cheap; repeated calls fold into one run.
    public func wakeUp() { for w in wakes { w.signal() } }

    public func run() async throws {
        let listener = PGListener(conninfo: conninfo, channels: ["meter_events"], logger: logger)
        listener.start()
        let wakes = self.wakes
        let relay = Task {
            // Every notification (and every reconnect, after which some may have been missed)
            // wakes the loops; repeated wakes before a loop runs collapse into one.
            for await _ in listener.events { for w in wakes { w.signal() } }
        }
        logger.info("rollup.worker.started", metadata: [
            "interval_ms": "\(configuration.interval.milliseconds)", "max_events": "\(configuration.maxEvents)",
            "stall_after_ms": "\(configuration.stallAfter.milliseconds)", "workers": "\(wakes.count)",
        ])
        watchdog.start()
        await cancelWhenGracefulShutdown { [self] in
            await withTaskGroup(of: Void.self) { group in
                for worker in 0..<wakes.count {
                    group.addTask { [self] in await loop(worker: worker) }
                }
            }
        }
        watchdog.stop()
        listener.stop()
        relay.cancel()
        await pool.shutdown()
        logger.info("rollup.worker.stopped")
    }

    /// The watchdog hears a beat once every loop has finished an attempt since the last one: a
    /// loop that hangs stalls the whole worker (metric, log line, /readyz), whatever the others do.
    private func beat(worker: Int) {
        let all: Bool = beats.withLock { b in
            b.done.insert(worker)
            guard b.done.count == wakes.count else { return false }
            b.done.removeAll()
            return true
        }
        if all { watchdog.beat() }
    }

    /// Loop `worker`: a run of each of its shards (those s with s % workers == worker of the
    /// current count), then a wait (none while one has more pending). A shard that fails does not
    /// keep the loop's other shards from running.
    private func loop(worker: Int) async {
        let wake = wakes[worker], workers = wakes.count
        var lastLag = ContinuousClock.now - configuration.lagRefresh
        var failures = 0
        while !Task.isCancelled {
            var more = false
            var failed = false
            let maxEvents = configuration.maxEvents
            do {
                let shardCount = try await pool.withConnection { conn in try Rollup.shardCount(conn) }
                for shard in stride(from: worker, to: shardCount, by: workers) {
                    let started = ContinuousClock.now
                    do {
                        let r = try await pool.withConnection { conn in try Rollup.run(conn, maxEvents: maxEvents, shard: shard) }
                        metrics.rollupRun(r, duration: ContinuousClock.now - started)
                        if r.ran && (r.eventsFolded > 0 || r.cancellationsFolded > 0) {
                            logger.debug("rollup.run", metadata: [
                                "shard": "\(shard)", "events": "\(r.eventsFolded)", "cancellations": "\(r.cancellationsFolded)",
                                "hours": "\(r.hoursTouched)", "position": "\(r.position ?? "")", "ms": "\(r.durationMs)",
                            ])
                        }
                        more = more || r.morePending
                    } catch {
                        failed = true
                        metrics.rollupFailed()
                        logger.warning("rollup.run_failed", metadata: [
                            "shard": "\(shard)", "error": "\(error)", "consecutive": "\(failures + 1)",
                        ])
                    }
                }
            } catch {
                failed = true
                metrics.rollupFailed()
                logger.warning("rollup.run_failed", metadata: ["error": "\(error)", "consecutive": "\(failures + 1)"])
            }
            failures = failed ? failures + 1 : 0
            beat(worker: worker)
            // The lag gauges, by the loop of shard 0 and, should it be busy or stuck, by none: the
            // watchdog then says so. While catching up a backlog, ten times less often (the next
            // run matters more), but never stale: the lag alert must see a backlog that lasts.
            let refreshEvery = more ? configuration.lagRefresh * 10 : configuration.lagRefresh
            if worker == 0 && ContinuousClock.now - lastLag >= refreshEvery {
                lastLag = ContinuousClock.now
                if let lag = try? await pool.withConnection({ conn in try Rollup.lag(conn) }) {
                    metrics.rollupLag(lag)
                    if lag.waitingOnHorizon > 0, let pid = lag.horizonHeldByPID, lag.lagSeconds > 60 {
                        logger.warning("rollup.horizon_held", metadata: [
                            "pid": "\(pid)", "state": "\(lag.horizonState ?? "")",
                            "xact_start": "\(lag.horizonXactStart ?? "")", "lag_seconds": "\(lag.lagSeconds)",
                        ])
                    }
                }
            }
            if more && !failed { continue }
            // After a failure, wait the full interval (at most 30 s with repeated failures).
            let wait = failures > 0
                ? min(configuration.interval * min(failures, 30), .seconds(30))
                : configuration.interval
            try? await Task.sleep(for: configuration.minGap)
            await wake.wait(timeout: wait - configuration.minGap)
        }
    }
}

/// A wake-up flag a task can wait on with a timeout. Signals that arrive while nobody waits are
/// remembered (once), so a notification arriving during a run triggers the next one at once.
package final class WakeSignal: Sendable {
    private struct State {
        var pending = false
        var waiter: (id: Int, continuation: CheckedContinuation<Bool, Never>)?
        var nextID = 0
        /// A timeout that fired before its wait registered.
        var fired = 0
    }
    private let state = Mutex(State())

    package init() {}

    package func signal() {
        let w: CheckedContinuation<Bool, Never>? = state.withLock { s in
            if let w = s.waiter { s.waiter = nil; return w.continuation }
            s.pending = true
            return nil
        }
        w?.resume(returning: true)
    }

    /// Returns on a signal (true), after `timeout` or when the calling task is cancelled (false).
    @discardableResult
    package func wait(timeout: Duration) async -> Bool {
        let id = state.withLock { s in s.nextID += 1; return s.nextID }
        return await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                try? await Task.sleep(for: max(timeout, .zero))  // throws at once when cancelled
                fire(id)
            }
            let signalled = await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                let now: Bool? = state.withLock { s in
                    if s.pending { s.pending = false; return true }
                    if s.fired == id { return false }
                    s.waiter = (id, c)
                    return nil
                }
                if let now { c.resume(returning: now) }
            }
            group.cancelAll()
            return signalled
        }
    }

    /// Ends wait number `id` if it is still waiting (the timeout of an earlier wait is ignored).
    private func fire(_ id: Int) {
        let w: CheckedContinuation<Bool, Never>? = state.withLock { s in
            guard let w = s.waiter, w.id == id else { s.fired = id; return nil }
            s.waiter = nil
            return w.continuation
        }
        w?.resume(returning: false)
    }
}
