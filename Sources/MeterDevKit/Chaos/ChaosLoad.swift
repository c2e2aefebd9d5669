// ChaosLoad.swift: the chaos scenarios' at-least-once client. Every event is delivered at least
// once (a share twice on purpose), all deliveries shuffled (out of order), in batches of 1 to 100;
// a batch is re-sent with the same idempotency keys until the service answers 2xx, whatever
// happens meanwhile (connection refused or reset, timeouts, 5xx). An event is acknowledged when a
// 2xx answer says accepted or duplicate for it. Paced at `rate` events/s over `lanes` connections.

import Foundation
#if canImport(Glibc)
import Glibc
import PGClient
import MeterWire
#endif

public final class ChaosLoad: @unchecked Sendable {
    public struct Result: Sendable {
        public var acked: [Bool]
        /// The error code of each event rejected (nil: not rejected).
        public var rejected: [String?]
        public var deliveries = 0
        public var requests = 0
        /// Requests sent again after no answer or a non-2xx answer.
        public var retries = 0
        public var duplicates = 0
    }

    package let events: [ChaosEvent]
    package let port: Int
    package let token: String
    package let seed: UInt64
    package let duplicateRate: Double
    package let rate: Int
    package let lanes: Int
    package let progress: @Sendable (String) -> Void
    private let lock = NSLock()
    private var sentDeliveries = 0
    private var finished = false
    /// A batch still unanswered after this many seconds of retries fails the load (the service
    /// is gone for good: a FAIL, not a hang).
    package static let giveUpSeconds = 300.0

    /// True once the load has ended, by success or by error.
    public var done: Bool { lock.withLock { finished } }

    package init(events: [ChaosEvent], port: Int, token: String, seed: UInt64, duplicateRate: Double, rate: Int, lanes: Int,
         progress: @escaping @Sendable (String) -> Void) {
        (self.events, self.port, self.token, self.seed, self.duplicateRate, self.rate, self.lanes, self.progress) =
            (events, port, token, seed, duplicateRate, rate, lanes, progress)
    }

    /// Share of the deliveries sent so far (0...1), for scenarios that inject faults at a point of the load.
    public var fractionSent: Double { lock.withLock { Double(sentDeliveries) / Double(max(plannedDeliveries, 1)) } }
    private var plannedDeliveries = 0

    /// Returns once `fraction` of the deliveries is sent, or the load has ended.
    public func waitUntil(_ fraction: Double) async throws {
        while fractionSent < fraction && !done { try await Task.sleep(for: .milliseconds(50)) }
    }

    public func run() async throws -> Result {
        defer { lock.withLock { finished = true } }
        var r = SeededRandom(seed: seed ^ 0x5EED)
        var order = Array(events.indices)
        for i in events.indices where r.chance(duplicateRate) { order.append(i) }
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, r.below(i + 1)) }
        var batches: [[Int]] = []
        var at = 0
        while at < order.count {
            let size = r.chance(0.2) ? 1 : 1 + r.below(100)
            batches.append(Array(order[at..<min(at + size, order.count)]))
            at += size
        }
        lock.withLock { plannedDeliveries = order.count }
        let started = ContinuousClock.now
        let reporter = Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(3))
                if Task.isCancelled { break }
                let n = lock.withLock { sentDeliveries }
                progress("load: \(n)/\(order.count) deliveries acknowledged")
            }
        }
        defer { reporter.cancel() }
        let perLane = rate > 0 ? Double(rate) / Double(lanes) : 0
        let partials = try await withThrowingTaskGroup(of: Result.self) { group in
            for lane in 0..<lanes {
                let mine = stride(from: lane, to: batches.count, by: lanes).map { batches[$0] }
                group.addTask { [self] in
                    try await onDedicatedThread("chaos-load-\(lane)") { [self] in
                        try sendLane(mine, perLane: perLane, started: started)
                    }
                }
            }
            var all: [Result] = []
            for try await p in group { all.append(p) }
            return all
        }
        var total = Result(acked: Array(repeating: false, count: events.count), rejected: Array(repeating: nil, count: events.count))
        for p in partials {
            for i in events.indices {
                if p.acked[i] { total.acked[i] = true }
                if let e = p.rejected[i], !total.acked[i] { total.rejected[i] = e }
            }
            total.deliveries += p.deliveries; total.requests += p.requests; total.retries += p.retries
            total.duplicates += p.duplicates
        }
        return total
    }

    private func sendLane(_ batches: [[Int]], perLane: Double, started: ContinuousClock.Instant) throws -> Result {
        var result = Result(acked: Array(repeating: false, count: events.count), rejected: Array(repeating: nil, count: events.count))
        var client = LoadClient(port: port, timeoutSeconds: 30)
        var sent = 0
        for batch in batches {
            let body = "[" + batch.map { events[$0].json }.joined(separator: ",") + "]"
            var attempt = 0
            let firstTry = ContinuousClock.now
            while true {
                result.requests += 1
                if attempt > 0 { result.retries += 1 }
                var answer: LoadClient.Response?
                do {
                    answer = try client.request("POST", "/v1/events", headers: [
                        ("Authorization", "Bearer \(token)"), ("Content-Type", "application/json"),
                    ], body: body)
                } catch {
                    client = LoadClient(port: port, timeoutSeconds: 30)  // a fresh connection next time
                }
                if let a = answer, a.status == 200 || a.status == 207 {
                    guard let json = try? JSONParser.parse(a.body), let results = json["results"]?.arrayValue else {
                        throw ChaosHarness.Failure(description: "a 2xx answer without results: \(a.body.prefix(300))")
                    }
                    for item in results {
                        guard let idx = item["index"]?.numberLexeme.flatMap(Int.init), idx < batch.count else { continue }
                        let e = batch[idx]
                        switch item["status"]?.stringValue {
                        case "accepted": result.acked[e] = true
                        case "duplicate": result.acked[e] = true; result.duplicates += 1
                        default: result.rejected[e] = item["error"]?["code"]?.stringValue ?? "unknown"
                        }
                    }
                    break
                }
                if let a = answer, a.status >= 400 && a.status < 500 && a.status != 429 && a.status != 408 {
                    throw ChaosHarness.Failure(description: "the service refused a valid batch: HTTP \(a.status) \(a.body.prefix(300))")
                }
                if (ContinuousClock.now - firstTry).seconds > Self.giveUpSeconds {
                    throw ChaosHarness.Failure(description: "a batch stayed unacknowledged for \(Int(Self.giveUpSeconds)) s of retries (last answer: \(answer.map { "HTTP \($0.status)" } ?? "none"))")
                }
                attempt += 1
                usleep(UInt32(min(20_000 << min(attempt, 6), 1_000_000)))
            }
            result.deliveries += batch.count
            sent += batch.count
            lock.withLock { sentDeliveries += batch.count }
            if perLane > 0 {
                let due = Double(sent) / perLane
                let elapsed = (ContinuousClock.now - started).seconds
                if due > elapsed { usleep(UInt32(min(due - elapsed, 5) * 1_000_000)) }
            }
        }
        return result
    }
}
