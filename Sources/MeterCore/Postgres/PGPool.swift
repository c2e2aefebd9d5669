import Foundation
import Logging
import NIOCore
import NIOPosix

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
///
/// Bookkeeping is a few lines under a lock (no actor hop on the hot path); only a caller that
/// must wait for a connection suspends.
public final class PGPool: @unchecked Sendable {
    public struct Stats: Sendable {
        public var open: Int
        public var inUse: Int
        public var waiting: Int
        public var max: Int
    }

    public let conninfo: String
    public let maxConnections: Int
    public let acquireTimeout: Duration
    private let threads: NIOThreadPool
    private let logger: Logger

    private let lock = NSLock()
    // All below guarded by `lock`.
    private var idle: [PGConnection] = []
    private var open = 0
    private var waiters: [(id: Int, continuation: CheckedContinuation<PGConnection?, any Error>)] = []
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
        lock.withLock { Stats(open: open, inUse: open - idle.count, waiting: waiters.count, max: maxConnections) }
    }

    /// Runs `body` with a pooled connection on a pool thread.
    public func withConnection<T: Sendable>(
        retryStaleConnection: Bool = true,
        _ body: @escaping @Sendable (PGConnection) throws -> T
    ) async throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            let conn = try await acquire()
            do {
                let value: T = try await threads.runIfActive {
                    conn.statementsSinceCheckout = 0
                    return try body(conn)
                }
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

    /// Closes every connection and stops the threads; waiting callers get `poolClosed`.
    public func shutdown() async {
        let (toClose, toFail) = lock.withLock { () -> ([PGConnection], [CheckedContinuation<PGConnection?, any Error>]) in
            closed = true
            let c = idle, w = waiters.map(\.continuation)
            open -= idle.count
            idle.removeAll()
            waiters.removeAll()
            return (c, w)
        }
        for w in toFail { w.resume(throwing: PGError(kind: .poolClosed, message: "pool is shut down")) }
        for c in toClose { c.close() }
        try? await threads.shutdownGracefully()
    }

    // MARK: internals

    private enum Checkout {
        case ready(PGConnection)
        case connect
        case wait
        case closed
    }

    private func acquire() async throws -> PGConnection {
        while true {
            let decision: Checkout = lock.withLock {
                if closed { return .closed }
                while let c = idle.popLast() {
                    if c.isHealthy { return .ready(c) }
                    open -= 1
                }
                if open < maxConnections { open += 1; return .connect }
                return .wait
            }
            switch decision {
            case .ready(let c): return c
            case .closed: throw PGError(kind: .poolClosed, message: "pool is shut down")
            case .connect:
                do {
                    return try await connect()
                } catch {
                    lock.withLock { open -= 1 }
                    throw error
                }
            case .wait:
                // nil = a slot was freed by a discarded connection: loop and open one.
                if let c = try await waitForConnection() { return c }
            }
        }
    }

    private func waitForConnection() async throws -> PGConnection? {
        let id = lock.withLock { () -> Int in nextWaiterID += 1; return nextWaiterID }
        let timeout = acquireTimeout
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            self?.expire(waiter: id)
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { cont in
            let stillOpen = lock.withLock { () -> Bool in
                if closed { return false }
                waiters.append((id, cont))
                return true
            }
            if !stillOpen { cont.resume(throwing: PGError(kind: .poolClosed, message: "pool is shut down")) }
        }
    }

    private func connect() async throws -> PGConnection {
        let info = conninfo
        return try await threads.runIfActive { try PGConnection(conninfo: info) }
    }

    private func expire(waiter id: Int) {
        let w = lock.withLock { () -> CheckedContinuation<PGConnection?, any Error>? in
            guard let i = waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return waiters.remove(at: i).continuation
        }
        w?.resume(throwing: PGError(
            kind: .poolExhausted,
            message: "no database connection free within \(acquireTimeout) (pool of \(maxConnections))"))
    }

    private func release(_ conn: PGConnection) async {
        var usable = conn.isHealthy
        if usable && !conn.isIdle {
            // Left inside a (possibly failed) transaction: roll back before reuse.
            usable = (try? await threads.runIfActive { try conn.execute("rollback") }) != nil && conn.isIdle
        }
        enum Next { case handTo(CheckedContinuation<PGConnection?, any Error>), keep, close, closeAndWake(CheckedContinuation<PGConnection?, any Error>?) }
        let next: Next = lock.withLock {
            if closed { open -= 1; return .close }
            if usable {
                if !waiters.isEmpty { return .handTo(waiters.removeFirst().continuation) }
                idle.append(conn)
                return .keep
            }
            open -= 1
            // A slot is free: wake one waiter so that it opens a replacement itself.
            return .closeAndWake(waiters.isEmpty ? nil : waiters.removeFirst().continuation)
        }
        switch next {
        case .handTo(let w): w.resume(returning: conn)
        case .keep: break
        case .close: conn.close()
        case .closeAndWake(let w):
            conn.close()
            logger.warning("pg.connection.discarded", metadata: ["reason": "unhealthy"])
            w?.resume(returning: nil)
        }
    }
}
