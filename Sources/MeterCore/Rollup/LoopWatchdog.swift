import Foundation
import Synchronization
import Logging

/// Says loudly when a background loop stops turning.
///
/// The loop calls `beat()` each time it finishes an attempt (a run, a skipped run, a failure).
/// A watchdog on a dedicated OS thread, sleeping with `nanosleep` (a relative, monotonic wait that
/// owes nothing to the Swift concurrency runtime's timers, the thing most likely to be wedged when
/// the loop is), checks once a second how long ago that was, on the monotonic clock only
/// (`ContinuousClock`: an NTP step or a wrong wall clock moves nothing here). Past `stallAfter`:
///   * the gauges `meter_rollup_loop_stalled` = 1 and `meter_rollup_loop_idle_seconds` (refreshed
///     by `check()`: each second by the watchdog, and at every scrape);
///   * an `error` log line `rollup.loop_stalled`, repeated every `stallAfter` while it lasts, and
///     `rollup.loop_resumed` when the loop finishes an attempt again;
///   * `/readyz` reports it in its body (`"rollup_loop":"stalled"`), without turning the instance
///     unready: ingest does not depend on the loop (docs/decisions.md 77).
/// A run blocked longer than the bound (a lock held by another session, up to the statement
/// timeout) is reported too: the loop is not turning, whatever the reason.
public final class LoopWatchdog: Sendable {
    public let name: String
    public let stallAfter: Duration
    private let metrics: MeterMetrics?
    private let logger: Logger
    private struct State {
        var lastBeat = ContinuousClock.now
        var stalledSince: ContinuousClock.Instant?
        var lastAlarm: ContinuousClock.Instant?
        var stopped = false
    }
    private let state = Mutex(State())

    public init(name: String, stallAfter: Duration, metrics: MeterMetrics?, logger: Logger) {
        self.name = name
        self.stallAfter = stallAfter
        self.metrics = metrics
        self.logger = logger
    }

    /// The loop finished an attempt.
    public func beat() {
        let now = ContinuousClock.now
        let stalledFor: Duration? = state.withLock { s in
            s.lastBeat = now
            defer { s.stalledSince = nil; s.lastAlarm = nil }
            guard let since = s.stalledSince else { return nil }
            // (under the lock: a watchdog look in between cannot set it back to 1 afterwards)
            metrics?.rollupLoopStalled.set(0.0)
            metrics?.rollupLoopIdleSeconds.set(0.0)
            return now - since
        }
        if let stalledFor {
            logger.warning("\(name).loop_resumed", metadata: ["stalled_ms": "\(stalledFor.milliseconds)"])
        }
    }

    public struct Status: Sendable {
        public let idle: Duration
        public let stalled: Bool
    }

    public var status: Status {
        let idle = ContinuousClock.now - state.withLock { $0.lastBeat }
        return Status(idle: idle, stalled: idle > stallAfter)
    }

    /// Starts the watchdog thread (until `stop()`).
    public func start() {
        state.withLock { $0.lastBeat = ContinuousClock.now }
        let t = Thread { [self] in
            while !state.withLock({ $0.stopped }) {
                check()
                var pause = timespec(tv_sec: 0, tv_nsec: 250_000_000)
                for _ in 0..<4 where !state.withLock({ $0.stopped }) { nanosleep(&pause, nil) }
            }
        }
        t.name = "meter-\(name)-watchdog"
        t.start()
    }

    public func stop() { state.withLock { $0.stopped = true } }

    /// One look: gauges refreshed, an alarm logged when due. Called every second by the
    /// watchdog thread and at every scrape of /metrics.
    public func check() {
        let now = ContinuousClock.now
        let (idle, alarm): (Duration, Bool) = state.withLock { s in
            let idle = now - s.lastBeat
            metrics?.rollupLoopIdleSeconds.set(idle.seconds)
            metrics?.rollupLoopStalled.set(idle > stallAfter ? 1.0 : 0.0)
            guard idle > stallAfter else { return (idle, false) }
            if s.stalledSince == nil { s.stalledSince = s.lastBeat }
            if let last = s.lastAlarm, now - last < stallAfter { return (idle, false) }
            s.lastAlarm = now
            return (idle, true)
        }
        if alarm {
            logger.error("\(name).loop_stalled", metadata: [
                "idle_ms": "\(idle.milliseconds)", "stall_after_ms": "\(stallAfter.milliseconds)",
                "hint": "no \(name) run attempt has finished; see docs/runbook.md (MeterRollupLoopStalled)",
            ])
        }
    }
}
