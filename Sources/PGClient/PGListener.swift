import Foundation
import Logging

/// LISTENs on channels from a dedicated thread (libpq blocks) and delivers notifications as an
/// `AsyncStream`. NOTIFY is a latency hint, never the source of truth: notifications sent while
/// the listener is disconnected are lost, so after every (re)connect the stream yields
/// `.reconnected`, telling consumers to poll for whatever they may have missed.
public final class PGListener: @unchecked Sendable {
    public enum Event: Sendable, Equatable {
        case notification(PGNotification)
        case reconnected
    }

    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let conninfo: String
    private let channels: [String]
    private let logger: Logger
    private let lock = NSLock()
    private var stopped = false
    private var droppedCount = 0
    /// Notifications dropped because the consumer fell more than 1,024 behind.
    public var dropped: Int { lock.withLock { droppedCount } }
    private var thread: Thread?

    /// Channel names must be plain identifiers (they are quoted, but keep them simple).
    public init(conninfo: String, channels: [String], logger: Logger = Logger(label: "meter.pg.listen")) {
        self.conninfo = conninfo
        self.channels = channels
        self.logger = logger
        (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(1024))
    }

    public func start() {
        let t = Thread { [self] in run() }
        t.name = "meter-pg-listener"
        thread = t
        t.start()
    }

    public func stop() {
        lock.withLock { stopped = true }
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    private func run() {
        var backoffMs: UInt32 = 100
        while !isStopped {
            do {
                let conn = try PGConnection(conninfo: conninfo, applicationName: "meter-listen")
                for ch in channels {
                    try conn.execute("listen \"\(ch.replacingOccurrences(of: "\"", with: "\"\""))\"")
                }
                backoffMs = 100
                continuation.yield(.reconnected)
                while !isStopped {
                    for n in try conn.waitForNotifications(timeoutMilliseconds: 200) {
                        if case .dropped = continuation.yield(.notification(n)) {
                            // The consumer is 1,024 behind: it must poll anyway (NOTIFY is only
                            // a hint); count it so that it shows.
                            lock.withLock { droppedCount += 1 }
                        }
                    }
                }
                conn.close()
            } catch {
                logger.warning("pg.listen.disconnected", metadata: ["error": "\(error)", "retry_ms": "\(backoffMs)"])
                usleep(backoffMs * 1000)
                backoffMs = min(backoffMs * 2, 5000)
            }
        }
        continuation.finish()
    }
}
