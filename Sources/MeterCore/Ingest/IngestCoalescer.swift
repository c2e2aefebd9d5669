import Foundation
import PGClient

/// Group commit for ingest requests: requests that arrive while every database connection is busy
/// are stored together, in one `meter.event_ingest_arrays()` call and one COMMIT, by the next
/// connection that comes free.
///
/// Why: a single-event request costs a statement, a commit and several thread hand-offs, almost
/// all of it fixed cost. Under load, requests queue for a connection anyway; storing the queue in
/// one statement turns that fixed cost into a per-batch cost. When the service is idle a request
/// finds a free connection at once and goes alone (no added latency, no timer).
///
/// Guarantees are those of `meter.event_ingest_arrays()` for the combined batch: every event gets its
/// own verdict; each caller is answered only after the COMMIT that holds its events; identical
/// events from two requests in one group are one `accepted` and one `duplicate`, exactly as if
/// they had raced. Only requests with the same API key are grouped (the key is checked inside the
/// call), and a group never exceeds `maxEvents`. If the call fails for a transient reason (the
/// connection, the server), every request of the group gets the error (503; clients retry with
/// the same keys); for any other reason each request is stored again alone, so a request that
/// cannot be stored fails by itself and never takes the others of its group down.
///
/// Liveness: every request starts one driver; a driver takes at most one group (or none, when the
/// queue is empty because its request was taken by another), so every queued request is taken
/// by some driver. A driver that cannot get a connection fails one group with that error.
package final class IngestCoalescer: @unchecked Sendable {
    package typealias Rows = [(ord: Int, row: PGRow)]

    package struct Pending: Sendable {
        /// The caller's key as sent to Postgres: the SHA-256 of its token (APIKeys.hashParameter).
        package let token: String
        package let items: [NormalizedEvent]
        package let continuation: CheckedContinuation<Rows, any Error>
    }

    private let pool: PGPool
    private let sql: String
    /// The statement's parameters after $1-$6 (the events' columns) and $7 (token); the same for
    /// every request.
    private let params: [any PGParameter]
    private let maxEvents: Int
    private let metrics: MeterMetrics?
    private let lock = NSLock()
    private var queue: [Pending] = []

    /// `sql` takes $1-$6 = the events as parallel arrays (`IngestArrays`), $7 = the key's hash,
    /// then `params`.
    package init(pool: PGPool, sql: String, params: [any PGParameter], maxEvents: Int, metrics: MeterMetrics? = nil) {
        self.pool = pool
        self.params = params
        self.metrics = metrics
        self.sql = sql
        self.maxEvents = maxEvents
    }

    /// Stores `items` for the key whose hash is `token`; returns the rows of
    /// `meter.event_ingest_arrays()` for them, with `ord` relative to `items`.
    package func submit(token: String, items: [NormalizedEvent]) async throws -> Rows {
        try await withCheckedThrowingContinuation { cont in
            lock.withLock { queue.append(Pending(token: token, items: items, continuation: cont)) }
            Task { await self.drive() }
        }
    }

    /// The oldest request and every queued request with the same key that fits beside it.
    private func takeGroup() -> [Pending] {
        lock.withLock {
            guard let head = queue.first else { return [] }
            var group = [head], rest: [Pending] = []
            var total = head.items.count
            for p in queue.dropFirst() {
                if p.token == head.token && total + p.items.count <= maxEvents {
                    group.append(p)
                    total += p.items.count
                } else {
                    rest.append(p)
                }
            }
            queue = rest
            return group
        }
    }

    private func drive() async {
        let sql = self.sql, params = self.params
        do {
            let done: [(Pending, Result<Rows, any Error>)] = try await pool.withConnection { conn in
                let group = self.takeGroup()
                if group.isEmpty { return [] }
                self.metrics?.requestsPerCommit.record(Double(group.count))
                func store(_ part: [Pending]) throws -> [(Pending, Result<Rows, any Error>)] {
                    var columns = IngestArrays(capacity: part.reduce(0) { $0 + $1.items.count })
                    for p in part { for e in p.items { columns.append(e) } }
                    let rows = try conn.executePrepared(sql, columns.parameters + [part[0].token] + params).rows
                    // Split the verdicts back by each request's range of positions.
                    var byOrd: [Int: PGRow] = [:]
                    for r in rows { if let o = try? r.int("ord") { byOrd[Int(o)] = r } }
                    var out: [(Pending, Result<Rows, any Error>)] = []
                    var start = 0
                    for p in part {
                        var mine: Rows = []
                        for i in 0..<p.items.count { if let r = byOrd[start + i] { mine.append((i, r)) } }
                        out.append((p, .success(mine)))
                        start += p.items.count
                    }
                    return out
                }
                do {
                    return try store(group)
                } catch {
                    // A statement that failed for a reason of its own (not the connection, not the
                    // server going away) may be one request's fault: each request is then stored
                    // alone, so only the one at fault gets the error and the others their verdicts.
                    let transient = (error as? PGError).map { $0.isTransient || $0.kind == .poolClosed } ?? false
                    guard group.count > 1, !transient else { return group.map { ($0, .failure(error)) } }
                    self.metrics?.groupsRetriedAlone.increment()
                    return group.map { p in
                        do { return try store([p])[0] } catch { return (p, .failure(error)) }
                    }
                }
            }
            for (p, result) in done { p.continuation.resume(with: result) }
        } catch {
            for p in takeGroup() { p.continuation.resume(throwing: error) }
        }
    }
}
