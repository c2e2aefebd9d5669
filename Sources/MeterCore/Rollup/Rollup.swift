import Foundation
import Synchronization
import PGClient

/// The Swift side of the hourly rollup. The work (locking, the (xid, id) watermark, folding,
/// cancellations) is `meter.rollup_run()` in sql/functions/rollup_run.sql; these are thin,
/// typed calls to it and to the `meter.rollup_lag` view and `meter.rollup_verify()`.
public enum Rollup {
    /// What one `meter.rollup_run()` did.
    public struct RunResult: Sendable, Equatable {
        /// false: another run held the advisory lock, nothing was done.
        public var ran: Bool
        public var eventsFolded: Int64
        public var cancellationsFolded: Int64
        public var hoursTouched: Int64
        /// The watermark after the run, as "xid/id" (nil when the run did not happen).
        public var position: String?
        public var horizon: String?
        /// max_events stopped the run early: call again.
        public var morePending: Bool
        public var durationMs: Double
    }

    /// The `meter.rollup_lag` view.
    public struct Lag: Sendable {
        public var lagSeconds: Double
        public var pendingEvents: Int64
        public var waitingOnHorizon: Int64
        public var pendingCancellations: Int64
        public var position: String
        public var horizon: String
        public var lastRunAt: String?
        public var runsTotal: Int64
        public var eventsTotal: Int64
        public var cancellationsTotal: Int64
        /// The backend whose open transaction holds the horizon back, when one does.
        public var horizonHeldByPID: Int64?
        public var horizonState: String?
        public var horizonXactStart: String?
        public var horizonQuery: String?
        /// How many rollup shards fold at once.
        public var shards: Int64 = 1
    }

    /// One hour whose rollup differs from raw events (`meter.rollup_verify()`).
    public struct Difference: Sendable, CustomStringConvertible {
        public var customerID: Int64
        public var meterID: Int64
        public var hour: String
        public var rollupEvents: String
        public var rawEvents: String
        public var rollupQuantity: String
        public var rawQuantity: String
        public var rollupMax: String
        public var rawMax: String
        public var uniqueValuesDiffering: Int64
        public var dimensionValuesDiffering: Int64 = 0
        public var rollupLatest = "-"
        public var rawLatest = "-"
        public var description: String {
            "customer \(customerID) meter \(meterID) hour \(hour): events \(rollupEvents) vs raw \(rawEvents), "
                + "quantity \(rollupQuantity) vs raw \(rawQuantity), max \(rollupMax) vs raw \(rawMax), "
                + "latest \(rollupLatest) vs raw \(rawLatest), "
                + "unique values differing \(uniqueValuesDiffering), dimension values differing \(dimensionValuesDiffering)"
        }
    }

    public static let defaultMaxEvents = 1_000_000

    /// One pass: `select * from meter.rollup_run(maxEvents, shard)`, in its own transaction
    /// (autocommit): one rollup shard, or every shard in turn (`shard` nil; decision 125).
    public static func run(_ conn: PGConnection, maxEvents: Int = defaultMaxEvents, shard: Int? = nil) throws -> RunResult {
        let r = try conn.executePrepared("""
            select ran, events_folded, cancellations_folded, hours_touched,
                   position_xid || '/' || position_id as position, horizon_xid::text as horizon,
                   more_pending, duration_ms::float8 as duration_ms
            from meter.rollup_run($1, $2::integer)
            """, [maxEvents, shard]).single()
        return RunResult(ran: try r.bool("ran"), eventsFolded: try r.int("events_folded"),
                         cancellationsFolded: try r.int("cancellations_folded"),
                         hoursTouched: try r.int("hours_touched"),
                         position: try r.optionalString("position"), horizon: try r.optionalString("horizon"),
                         morePending: try r.bool("more_pending"),
                         durationMs: Double(try r.string("duration_ms")) ?? 0)
    }

    /// Another caller held the rollup lock for longer than `drain` was willing to wait.
    public struct LockHeld: Error, CustomStringConvertible {
        public let waitedSeconds: Double
        public var description: String {
            "another rollup has held the lock for \(Int(waitedSeconds)) s (a long run, or a session "
                + "that called meter.rollup_run() inside a transaction it has not ended): see meterctl rollup status"
        }
    }

    /// Runs until nothing is left below the horizon (or `maxRuns`); `progress` sees every run.
    /// While another caller holds the lock, retries every 50 ms, for `lockWait` seconds at most.
    /// `shard` nil: every shard (with several, one after the other, each drained in its own runs:
    /// a shard busy with the service's loop does not hold back the others).
    @discardableResult
    public static func drain(_ conn: PGConnection, maxEvents: Int = defaultMaxEvents, maxRuns: Int = .max,
                             lockWait: Double = 300, shard: Int? = nil,
                             progress: (RunResult) -> Void = { _ in }) throws -> (runs: Int, events: Int64, cancellations: Int64) {
        if shard == nil, case let shards = try shardCount(conn), shards > 1 {
            var total = (runs: 0, events: Int64(0), cancellations: Int64(0))
            for s in 0..<shards {
                let one = try drain(conn, maxEvents: maxEvents, maxRuns: maxRuns, lockWait: lockWait, shard: s, progress: progress)
                total.runs += one.runs
                total.events += one.events
                total.cancellations += one.cancellations
            }
            return total
        }
        var runs = 0, events: Int64 = 0, cancellations: Int64 = 0
        var skippedSince: ContinuousClock.Instant?
        while runs < maxRuns {
            let r = try run(conn, maxEvents: maxEvents, shard: shard)
            runs += 1
            events += r.eventsFolded
            cancellations += r.cancellationsFolded
            progress(r)
            if r.ran && !r.morePending { break }
            if r.ran {
                skippedSince = nil
            } else {
                // someone else is running: let it finish
                // (monotonic: a step of the wall clock neither shortens nor stretches the wait)
                let since = skippedSince ?? ContinuousClock.now
                skippedSince = since
                let waited = (ContinuousClock.now - since).seconds
                if waited > lockWait { throw LockHeld(waitedSeconds: waited) }
                usleep(50_000)
            }
        }
        return (runs, events, cancellations)
    }

    /// How many rollup shards there are (`meter.rollup_watermark`, decision 125).
    public static func shardCount(_ conn: PGConnection) throws -> Int {
        Int(try conn.executePrepared("select shard_count from meter.rollup_watermark where shard = 0").single().int("shard_count"))
    }

    /// Drains every shard at once, one connection and one thread per shard (what the service's
    /// loops do, for a backlog): each as `drain(shard:)`. Returns the totals; the first error, if
    /// any, after every thread has finished.
    @discardableResult
    public static func drainParallel(conninfo: String, maxEvents: Int = defaultMaxEvents, lockWait: Double = 300,
                                     progress: @escaping @Sendable (Int, RunResult) -> Void = { _, _ in })
        throws -> (runs: Int, events: Int64, cancellations: Int64) {
        let shards: Int = try {
            let conn = try PGConnection(conninfo: conninfo, statementTimeout: nil)
            defer { conn.close() }
            return try shardCount(conn)
        }()
        let results = Mutex<[Result<(runs: Int, events: Int64, cancellations: Int64), any Error>]>([])
        DispatchQueue.concurrentPerform(iterations: shards) { shard in
            let r = Result { () throws -> (runs: Int, events: Int64, cancellations: Int64) in
                let conn = try PGConnection(conninfo: conninfo, statementTimeout: nil)
                defer { conn.close() }
                return try drain(conn, maxEvents: maxEvents, lockWait: lockWait, shard: shard) { progress(shard, $0) }
            }
            results.withLock { $0.append(r) }
        }
        var total = (runs: 0, events: Int64(0), cancellations: Int64(0))
        for r in results.withLock({ $0 }) {
            let one = try r.get()
            total.runs += one.runs
            total.events += one.events
            total.cancellations += one.cancellations
        }
        return total
    }

    public static func lag(_ conn: PGConnection) throws -> Lag {
        let r = try conn.executePrepared("""
            select lag_seconds::float8 as lag_seconds, pending_events, waiting_on_horizon, pending_cancellations,
                   position_xid || '/' || position_id as position, horizon_xid::text as horizon,
                   to_char(last_run_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as last_run_at,
                   runs_total, events_total, cancellations_total,
                   horizon_held_by_pid, horizon_state,
                   to_char(horizon_xact_start at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as horizon_xact_start,
                   left(horizon_query, 200) as horizon_query, shards
            from meter.rollup_lag
            """).single()
        return Lag(lagSeconds: Double(try r.string("lag_seconds")) ?? 0,
                   pendingEvents: try r.int("pending_events"), waitingOnHorizon: try r.int("waiting_on_horizon"),
                   pendingCancellations: try r.int("pending_cancellations"),
                   position: try r.string("position"), horizon: try r.string("horizon"),
                   lastRunAt: try r.optionalString("last_run_at"), runsTotal: try r.int("runs_total"),
                   eventsTotal: try r.int("events_total"), cancellationsTotal: try r.int("cancellations_total"),
                   horizonHeldByPID: try r.optionalInt("horizon_held_by_pid"),
                   horizonState: try r.optionalString("horizon_state"),
                   horizonXactStart: try r.optionalString("horizon_xact_start"),
                   horizonQuery: try r.optionalString("horizon_query"), shards: try r.int("shards"))
    }

    /// `meter.rollup_verify(from, to)`: empty when the rollups agree with raw events.
    public static func verify(_ conn: PGConnection, from: String, to: String) throws -> [Difference] {
        try conn.execute("""
            select customer_id, meter_id,
                   to_char(hour at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as hour,
                   coalesce(rollup_events::text, '-') as rollup_events, raw_events::text as raw_events,
                   coalesce(rollup_quantity::text, '-') as rollup_quantity, raw_quantity::text as raw_quantity,
                   coalesce(rollup_max::text, '-') as rollup_max, coalesce(raw_max::text, '-') as raw_max,
                   coalesce(rollup_latest::text, '-') as rollup_latest, coalesce(raw_latest::text, '-') as raw_latest,
                   unique_values_differing, dimension_values_differing
            from meter.rollup_verify($1::timestamptz, $2::timestamptz)
            """, [from, to]).rows.map { r in
            Difference(customerID: try r.int("customer_id"), meterID: try r.int("meter_id"), hour: try r.string("hour"),
                       rollupEvents: try r.string("rollup_events"), rawEvents: try r.string("raw_events"),
                       rollupQuantity: try r.string("rollup_quantity"), rawQuantity: try r.string("raw_quantity"),
                       rollupMax: try r.string("rollup_max"), rawMax: try r.string("raw_max"),
                       uniqueValuesDiffering: try r.int("unique_values_differing"),
                       dimensionValuesDiffering: try r.int("dimension_values_differing"),
                       rollupLatest: try r.string("rollup_latest"), rawLatest: try r.string("raw_latest"))
        }
    }

    /// `meter.rollup_period_verify()` and `meter.rollup_ledger_period_verify()`: the billing period
    /// totals and the ledger's period rows that differ from their hours, one line each; empty when
    /// all is well.
    public static func periodVerify(_ conn: PGConnection) throws -> [String] {
        try conn.execute("""
            select pg_catalog.format('customer %s meter %s period from %s%s: %s events (hours: %s), quantity %s (hours: %s), max %s (hours: %s)',
                                     customer_id, meter_id, period_start, coalesce(' values ' || dims::text, ''),
                                     period_events, hourly_events, period_quantity, hourly_quantity,
                                     coalesce(period_max::text, 'none'), coalesce(hourly_max::text, 'none')) as line
            from meter.rollup_period_verify()
            union all
            select pg_catalog.format('customer %s meter %s period from %s values %s: ledger %s (hours: %s)',
                                     customer_id, meter_id, period_start, dims::text,
                                     coalesce(period::text, 'none'), coalesce(hours::text, 'none'))
            from meter.rollup_ledger_period_verify()
            """).rows.map { try $0.string("line") }
    }
}
