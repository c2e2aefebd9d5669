import Logging
import NIOPosix
import NIOCore

/// A bounded pool of libpq connections with its own threads.
///
/// libpq blocks, so every call runs on this pool's `NIOThreadPool` (one thread per connection,
/// so a slow statement never stalls the others and never touches a SwiftNIO event loop).
/// `withConnection` hands the body a connection on such a thread; the body is synchronous.
///
/// Connections are opened lazily up to `maxConnections`. A connection that the server or the
/// network dropped is detected on return (`PQstatus`) and replaced by a new one on the next
/// checkout; a connection left inside a transaction is rolled back. When the first statement
/// on a reused connection fails at the connection level (the server restarted while it idled),
/// the work is retried once on a fresh connection; callers opt out for non-idempotent work.
public actor PGPool {
    public struct Stats: Sendable {
        public var open: Int
        public var inUse: Int
        public var waiting: Int
        public var max: Int
    }

    public nonisolated let conninfo: String
    public nonisolated let maxConnections: Int
    public nonisolated let acquireTimeout: Duration
    private nonisolated let threads: NIOThreadPool
    private let logger: Logger

    private var idle: [PGConnection] = []
    private var open = 0
    private var waiters: [(id: Int, continuation: CheckedContinuation<PGConnection, any Error>)] = []
    private var nextWaiterID = 0
    private var closed = false

    public init(conninfo: String, maxConnections: Int = 16, acquireTimeout: Duration = .seconds(5),
                logger: Logger = Logger(label: "meter.pg")) {
        precondition(maxConnections > 0)
        self.conninfo = conninfo
        self.maxConnections = maxConnections
        self.acquireTimeout = acquireTimeout
        self.logger = logger
        self.threads = NIOThreadPool(numberOfThreads: maxConnections)
        self.threads.start()
    }

    public var stats: Stats {
        Stats(open: open, inUse: open - idle.count, waiting: waiters.count, max: maxConnections)
    }

    /// Runs `body` with a pooled connection on a pool thread.
    public nonisolated func withConnection<T: Sendable>(
        retryStaleConnection: Bool = true,
        _ body: @escaping @Sendable (PGConnection) throws -> T
    ) async throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            let conn = try await acquire()
            conn.statementsSinceCheckout = 0
            do {
                let value = try await threads.runIfActive { try body(conn) }
                await release(conn)
                return value
            } catch let error as PGError {
                let staleOnFirstStatement = error.isConnectionLevel && conn.statementsSinceCheckout <= 1
                    && !conn.isHealthy
                await release(conn)
                if retryStaleConnection, staleOnFirstStatement, attempt == 1 {
                    logger.warning("pg.connection.stale_retry", metadata: ["error": "\(error)"])
                    continue
                }
                throw error
            } catch {
                await release(conn)
                throw error
            }
        }
    }

    /// Runs a blocking closure on the pool's threads without a connection (e.g. `connect`).
    public nonisolated func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await threads.runIfActive(body)
    }

    /// Closes every connection and stops the threads; waiting callers get `poolClosed`.
    public func shutdown() async {
        closed = true
        for w in waiters { w.continuation.resume(throwing: PGError(kind: .poolClosed, message: "pool is shut down")) }
        waiters.removeAll()
        for c in idle { c.close() }
        open -= idle.count
        idle.removeAll()
        try? await threads.shutdownGracefully()
    }

    // MARK: internals

    private func acquire() async throws -> PGConnection {
        if closed { throw PGError(kind: .poolClosed, message: "pool is shut down") }
        while let c = idle.popLast() {
            if c.isHealthy { return c }
            open -= 1
            logger.warning("pg.connection.dropped", metadata: ["pid": "\(c.backendPID)"])
        }
        if open < maxConnections {
            open += 1
            do {
                return try await connect()
            } catch {
                open -= 1
                throw error
            }
        }
        let id = nextWaiterID
        nextWaiterID += 1
        let timeout = acquireTimeout
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            await self?.expire(waiter: id)
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { cont in
            waiters.append((id, cont))
        }
    }

    private func connect() async throws -> PGConnection {
        let info = conninfo
        return try await threads.runIfActive { try PGConnection(conninfo: info) }
    }

    private func expire(waiter id: Int) {
        guard let i = waiters.firstIndex(where: { $0.id == id }) else { return }
        let w = waiters.remove(at: i)
        w.continuation.resume(throwing: PGError(
            kind: .poolExhausted,
            message: "no database connection free within \(acquireTimeout) (pool of \(maxConnections))"))
    }

    private func release(_ conn: PGConnection) async {
        var usable = conn.isHealthy
        if usable && !conn.isIdle {
            // Left inside a (possibly failed) transaction: roll back before reuse.
            usable = (try? await threads.runIfActive { try conn.execute("rollback") }) != nil && conn.isIdle
        }
        if closed {
            conn.close()
            open -= 1
            return
        }
        if usable {
            if !waiters.isEmpty {
                waiters.removeFirst().continuation.resume(returning: conn)
            } else {
                idle.append(conn)
            }
            return
        }
        conn.close()
        open -= 1
        logger.warning("pg.connection.discarded", metadata: ["reason": "unhealthy"])
        // Someone is waiting: open a replacement for them.
        if !waiters.isEmpty {
            open += 1
            do {
                let fresh = try await connect()
                if !waiters.isEmpty {
                    waiters.removeFirst().continuation.resume(returning: fresh)
                } else {
                    idle.append(fresh)
                }
            } catch {
                open -= 1
                if !waiters.isEmpty { waiters.removeFirst().continuation.resume(throwing: error) }
            }
        }
    }
}
