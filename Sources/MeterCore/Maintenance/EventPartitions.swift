import Foundation
import Logging
import Prometheus
import ServiceLifecycle
import PGClient
import MeterWire

/// The monthly partitions of `meter.events` (migration 0021, decision 121): created ahead of time
/// by `meter.events_partitions_ensure`, watched through `meter.events_partition_runway`.
/// `meterctl migrate` creates 35 days back to three months ahead; `serve` creates its own ingest
/// window (max past) to three months ahead before it listens, then hourly (`PartitionWorker`);
/// docs/runbook.md ("Capacity") shows and extends them by hand from psql.
public enum EventPartitions {
    /// Below this, serve logs `partitions.runway_short` on every pass (creation must be failing).
    public static let shortRunwaySeconds: Int64 = 31 * 86_400

    public struct Runway: Sendable, Equatable {
        /// End of the contiguous run of monthly partitions from the current month (ISO 8601, UTC); nil when the current month has none.
        public var coveredUntil: String?
        public var runwaySeconds: Int64
        public var partitions: Int64
        public var oldestMonth: String?
        public var archivedMonths: Int64
    }

    /// Creates the missing months covering [now - pastSeconds, now + aheadMonths]; returns how many it created.
    @discardableResult
    public static func ensure(_ conn: PGConnection, pastSeconds: Int, aheadMonths: Int = 3) throws -> Int {
        let row = try conn.execute("""
            select count(*) filter (where created) as created
            from meter.events_partitions_ensure(now() - make_interval(secs => $1::bigint),
                                                now() + make_interval(months => $2::integer))
            """, [String(pastSeconds), String(aheadMonths)]).rows.first
        return Int(try row?.int("created") ?? 0)
    }

    public static func runway(_ conn: PGConnection) throws -> Runway {
        guard let r = try conn.execute("""
            select to_char(covered_until at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as covered_until,
                   runway_seconds, partitions,
                   to_char(oldest_month at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as oldest_month,
                   archived_months
            from meter.events_partition_runway
            """).rows.first else {
            return Runway(coveredUntil: nil, runwaySeconds: 0, partitions: 0, oldestMonth: nil, archivedMonths: 0)
        }
        return Runway(coveredUntil: try r.optionalString("covered_until"), runwaySeconds: try r.int("runway_seconds"),
                      partitions: try r.int("partitions"), oldestMonth: try r.optionalString("oldest_month"),
                      archivedMonths: try r.int("archived_months"))
    }
}

/// Keeps `meter.events` partitioned ahead of ingest: one pass at start (serve runs it before it
/// listens, `EventPartitions.ensure`) and then every `interval`, on a connection of its own.
/// Exports `meter_events_partition_runway_seconds` and counts created partitions; logs a warning
/// while the runway is under 31 days (passes are failing: a lock timeout behind a long
/// transaction, or privileges; the error is in the `partitions.failed` line).
public final class PartitionWorker: Service, Sendable {
    package let pool: PGPool
    package let pastSeconds: Int
    package let interval: Duration
    package let logger: Logger
    package let runwayGauge: Gauge
    package let created: Counter

    public init(conninfo: String, pastSeconds: Int, interval: Duration = .seconds(3600),
                metrics: MeterMetrics, logger: Logger) {
        self.pastSeconds = pastSeconds; self.interval = interval; self.logger = logger
        runwayGauge = metrics.registry.meterGauge(
            name: "meter_events_partition_runway_seconds",
            help: "How far ahead meter.events has monthly partitions (an event past it cannot be stored)")
        created = metrics.registry.meterCounter(
            name: "meter_events_partitions_created_total", help: "Monthly partitions of meter.events created by serve")
        pool = PGPool(conninfo: conninfo, maxConnections: 1, acquireTimeout: .seconds(30), statementTimeout: "60s",
                      applicationName: "meter-partitions", logger: logger)
    }

    /// One pass: create what is missing, then read and export the runway.
    public func pass() async throws {
        let past = pastSeconds
        let (n, runway) = try await pool.withConnection { c in
            (try EventPartitions.ensure(c, pastSeconds: past), try EventPartitions.runway(c))
        }
        created.increment(by: Int64(n))
        runwayGauge.set(Double(runway.runwaySeconds))
        var meta: Logger.Metadata = ["created": "\(n)", "runway_seconds": "\(runway.runwaySeconds)",
                                     "covered_until": "\(runway.coveredUntil ?? "none")", "partitions": "\(runway.partitions)"]
        if runway.runwaySeconds < EventPartitions.shortRunwaySeconds {
            meta["hint"] = "psql: select * from meter.events_partitions_ensure(now(), now() + interval '3 months') (docs/runbook.md, Capacity)"
            logger.warning("partitions.runway_short", metadata: meta)
        } else if n > 0 {
            logger.info("partitions.created", metadata: meta)
        }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if Task.isCancelled { break }
                do { try await pass() } catch {
                    logger.warning("partitions.failed", metadata: ["error": "\(error)"])
                }
            }
        }
        await pool.shutdown()
    }
}
