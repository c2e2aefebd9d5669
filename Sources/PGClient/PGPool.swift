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
/// Connections are opened lazily up to `maxConnections`, each with the pool's `statement_timeout`
/// (so a statement stuck behind someone's open transaction frees its connection). A connection
/// the server closed while it sat idle (restart, terminate, idle timeout) is detected at checkout
/// without a round trip (`isAliveWithoutRoundTrip`) and replaced; one that fails during work is
/// discarded on return, and then every idle connection is checked the same way. Work is never
/// retried here: after a connection failure the outcome of a statement may be unknown, so the
/// error goes to the caller (HTTP answers 503; clients retry with the same idempotency keys).
/// A connection left inside a transaction is rolled back before reuse.
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
    public let statementTimeout: String?
    private let threads: NIOThreadPool
    private let logger: Logger

    private let lock = NSLock()
    // All below guarded by `lock`.
    private var idle: [PGConnection] = []
    private var open = 0
    private var waiters: [(id: Int, continuation: CheckedContinuation<PGConnection?, any Error>)] = []
    private var nextWaiterID = 0
    private var closed = false

    /// Connections report `applicationName` to the server unless the conninfo sets one.
    public let applicationName: String

    public init(conninfo: String, maxConnections: Int = 16, acquireTimeout: Duration = .seconds(5),
                statementTimeout: String? = "30s", applicationName: String = "meter",
                logger: Logger = Logger(label: "meter.pg")) {
        self.applicationName = applicationName
        precondition(maxConnections > 0)
        self.conninfo = conninfo
        self.statementTimeout = statementTimeout
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
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        let conn = try await acquire()
        do {
            let value: T = try await threads.runIfActive { try body(conn) }
            await release(conn)
            return value
        } catch {
            await release(conn)
            throw error
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
            var dead = 0
            let decision: Checkout = lock.withLock {
                if closed { return .closed }
                while let c = idle.popLast() {
                    if c.isAliveWithoutRoundTrip() { return .ready(c) }
                    c.close()
                    open -= 1
                    dead += 1
                }
                if open < maxConnections { open += 1; return .connect }
                return .wait
            }
            if dead > 0 { discarded(dead, reason: "dead while idle") }
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
            // Decide again under the lock: a connection may have been released, or a slot freed,
            // between the first look and now; waiting then would sleep next to a free connection.
            enum Now { case closed, take(PGConnection), retry, wait }
            let now: Now = lock.withLock {
                if closed { return .closed }
                if let c = idle.popLast() { return .take(c) }
                if open < maxConnections { return .retry }
                waiters.append((id, cont))
                return .wait
            }
            switch now {
            case .closed: cont.resume(throwing: PGError(kind: .poolClosed, message: "pool is shut down"))
            case .take(let c):
                if c.isAliveWithoutRoundTrip() {
                    cont.resume(returning: c)
                } else {
                    c.close()
                    lock.withLock { open -= 1 }
                    discarded(1, reason: "dead while idle")
                    cont.resume(returning: nil)
                }
            case .retry: cont.resume(returning: nil)
            case .wait: break
            }
        }
    }

    private func connect() async throws -> PGConnection {
        let info = conninfo, timeout = statementTimeout, name = applicationName
        return try await threads.runIfActive { try PGConnection(conninfo: info, statementTimeout: timeout, applicationName: name) }
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
            discarded(1, reason: "unhealthy")
            w?.resume(returning: nil)
            // One connection died: its siblings likely did too (server restart). Weed them out now
            // rather than failing one request per dead connection.
            let dead: [PGConnection] = lock.withLock {
                let d = idle.filter { !$0.isAliveWithoutRoundTrip() }
                idle.removeAll { c in d.contains { $0 === c } }
                open -= d.count
                return d
            }
            for c in dead { c.close() }
            if !dead.isEmpty { discarded(dead.count, reason: "dead while idle") }
        }
    }

    /// Every connection the pool closes because it is broken is logged, whether it failed in use
    /// (`unhealthy`) or was found dead while idle (a reset, a server restart): one line per
    /// occasion, with how many. (The chaos db-network scenario counts these lines; a reset that
    /// hit only idle connections used to close them without a word.)
    private func discarded(_ n: Int, reason: String) {
        logger.warning("pg.connection.discarded", metadata: ["reason": "\(reason)", "connections": "\(n)"])
    }
}
