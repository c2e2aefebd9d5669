import Foundation
import Synchronization
import MeterCore

/// The keys this process has seen authenticated in the last `ttl` (by the SHA-256 of the token;
/// the token itself is not kept). It decides only whether a small body may be parsed before its
/// key is checked again: a key not in it is checked first (one round trip), so no body of an
/// unknown key is ever parsed. Authorization itself is never taken from here: every request's
/// key is checked in Postgres (inside the ingest or cancel call), so a revoked key is refused on
/// its very next request; at most it gets a body of 4 KiB parsed for `ttl` after revocation.
package final class LiveKeys: Sendable {
    package let ttl: Duration
    package let capacity: Int
    private let seen = Mutex<[String: ContinuousClock.Instant]>([:])

    package init(ttl: Duration = .seconds(30), capacity: Int = 10_000) {
        self.ttl = ttl; self.capacity = capacity
    }

    private static func digest(_ token: String) -> String { APIKeys.hashParameter(token) }

    /// True when `token` was authenticated within `ttl`.
    package func contains(_ token: String) -> Bool {
        let d = Self.digest(token), now = ContinuousClock.now
        return seen.withLock { table in table[d].map { now - $0 < ttl } ?? false }
    }

    /// `token` was just authenticated (by Postgres).
    package func record(_ token: String) {
        let d = Self.digest(token), now = ContinuousClock.now
        seen.withLock { table in
            if table.count >= capacity && table[d] == nil {
                table = table.filter { now - $0.value < ttl }
                if table.count >= capacity { table.removeAll(keepingCapacity: true) }
            }
            table[d] = now
        }
    }
}
