import Foundation

/// Runs blocking work (sockets, libpq outside the pool) on a thread of its own, so it never
/// occupies a Swift concurrency or SwiftNIO thread.
public func onDedicatedThread<T: Sendable>(_ name: String = "meter-blocking",
                                           _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { cont in
        let t = Thread {
            do { cont.resume(returning: try body()) } catch { cont.resume(throwing: error) }
        }
        t.name = name
        t.start()
    }
}
