import Logging
import ServiceLifecycle
import PGClient

/// The rollup's wake-up after ingest, off the commit path.
///
/// `meter.event_ingest_arrays` and `meter.event_cancel` send no NOTIFY: a NOTIFY holds the cluster's
/// notify-queue lock from its pre-commit step until the commit's WAL flush, so with one in every
/// ingest transaction commits went out one fsync at a time and throughput fell as clients were
/// added (docs/benchmarks.md, "Ingest commit path"). Instead, after a commit that stored events or
/// cancellations, the service calls `committed()`, which
///   * wakes this process's own rollup loop at once (no round trip), and
///   * NOTIFYs `meter_events` for other processes (a rollup-only instance beside `--no-rollup`
///     ingest instances) at most once per `interval`, from a connection of its own, outside every
///     ingest transaction.
/// NOTIFY stays a hint: every rollup loop polls (1 s by default), which is also how a direct SQL
/// caller of the functions is picked up.
public final class EventsNotifier: Service, @unchecked Sendable {
    private let local: (@Sendable () -> Void)?
    private let interval: Duration
    private let pool: PGPool
    private let logger: Logger
    /// Set by commits, remembered while a NOTIFY or the pause between two is under way.
    private let pending = WakeSignal()

    /// - Parameter local: wakes this process's rollup loop (nil when it runs none).
    public init(conninfo: String, interval: Duration = .milliseconds(100), local: (@Sendable () -> Void)?, logger: Logger) {
        self.local = local
        self.interval = interval
        self.logger = logger
        self.pool = PGPool(conninfo: conninfo, maxConnections: 1, acquireTimeout: .seconds(5),
                           statementTimeout: "5s", applicationName: "meter-notify", logger: logger)
    }

    /// A commit stored events or cancellations. Cheap: no I/O on the caller's task.
    public func committed() {
        local?()
        pending.signal()
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { [self] in await loop() }
        await pool.shutdown()
    }

    private func loop() async {
        var failures = 0
        while !Task.isCancelled {
            guard await pending.wait(timeout: .seconds(1)) else { continue }
            do {
                try await pool.withConnection { c in _ = try c.execute("select pg_catalog.pg_notify('meter_events', '')") }
                failures = 0
            } catch {
                // A shutdown cancels the NOTIFY under way: the loop ends, no failure to report.
                if Task.isCancelled || error is CancellationError { break }
                failures += 1
                // The other processes poll; say it once in a while, not per commit.
                if failures == 1 || failures % 100 == 0 {
                    logger.warning("ingest.notify_failed", metadata: ["error": "\(error)", "consecutive": "\(failures)"])
                }
            }
            // Commits during the pause fold into the next NOTIFY.
            try? await Task.sleep(for: interval)
        }
    }
}
