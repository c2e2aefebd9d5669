import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import XCTest
import PGClient
import MeterWire
import MeterCore
@testable import MeterAPI

/// Per-key limits: the token bucket and the in-flight cap, on their own with a clock we hold, then
/// over HTTP (429 with Retry-After and a stable code; other keys unaffected).
final class KeyLimitTests: XCTestCase {
    func testTheBucketAndTheCap() {
        let limiter = KeyLimiter(.init(maxConcurrent: 2, perSecond: 4))
        let t0 = ContinuousClock.now
        // Four at once pass (one second's worth), the fifth waits for a token (a quarter second).
        for _ in 0..<2 { XCTAssertEqual(limiter.enter("a", now: t0), .admit) }
        XCTAssertEqual(limiter.enter("a", now: t0), .tooManyConcurrent, "two in flight already")
        limiter.leave("a"); limiter.leave("a")
        for _ in 0..<2 { XCTAssertEqual(limiter.enter("a", now: t0), .admit); limiter.leave("a") }
        XCTAssertEqual(limiter.enter("a", now: t0), .rateLimited(retryAfterSeconds: 1))
        XCTAssertEqual(limiter.enter("b", now: t0), .admit, "another key has its own bucket")
        XCTAssertEqual(limiter.enter("a", now: t0 + .milliseconds(260)), .admit, "a token came back after 1/4 s")
    }

    func testHTTPAnswers429WithRetryAfter() async throws {
        // One request per two seconds: a bucket of one token, back after 2 s (so a slow machine
        // cannot earn the second request a token).
        try await APIHarness.withApp({ $0.keyRequestsPerSecond = 0.5; $0.keyMaxConcurrentRequests = 0 }) { client, fx in
            var statuses: [Int] = []
            var last: HTTPFields = [:]
            var lastBody = ""
            for i in 0..<2 {
                let r = try await client.execute(uri: "/v1/events", method: .post,
                                                 headers: [.authorization: "Bearer \(fx.token)", .contentType: "application/json"],
                                                 body: ByteBuffer(string: APIHarness.event(fx, key: "rl-\(i)")))
                statuses.append(Int(r.status.code))
                last = r.headers
                lastBody = String(buffer: r.body)
            }
            XCTAssertEqual(statuses, [201, 429])
            XCTAssertTrue(["1", "2"].contains(last[.retryAfter] ?? ""), "Retry-After \(last[.retryAfter] ?? "none")")
            XCTAssertTrue(lastBody.contains(#""code":"rate_limited""#), lastBody)
            XCTAssertEqual(try APIHarness.count(fx), 1, "the refused request stored nothing")
            // Another key is not slowed by this one.
            let other = APIKeys.generate()
            let c = try PGConnection(conninfo: fx.conninfo)
            try APIKeys.register(c, name: "other", token: other)
            c.close()
            let r = try await client.execute(uri: "/v1/events", method: .post,
                                             headers: [.authorization: "Bearer \(other)", .contentType: "application/json"],
                                             body: ByteBuffer(string: APIHarness.event(fx, key: "rl-other")))
            XCTAssertEqual(r.status, .created)
        }
    }

    func testHTTPCapsRequestsInFlight() async throws {
        try await APIHarness.withApp({ $0.keyMaxConcurrentRequests = 1; $0.keyRequestsPerSecond = 0 }) { client, fx in
            // The first request waits on a lock held here; meanwhile the same key's second is refused.
            let blocker = try PGConnection(conninfo: fx.conninfo)
            try blocker.execute("begin")
            try blocker.execute("lock table meter.events in share row exclusive mode")
            let token = fx.token
            let first = Task {
                try await client.execute(uri: "/v1/events", method: .post,
                                         headers: [.authorization: "Bearer \(token)", .contentType: "application/json"],
                                         body: ByteBuffer(string: APIHarness.event(fx, key: "cc-1")))
            }
            var waiting = false
            for _ in 0..<200 where !waiting {
                try await Task.sleep(for: .milliseconds(25))
                waiting = try blocker.execute("""
                    select count(*) as n from pg_stat_activity where wait_event_type = 'Lock' and query like '%event_ingest%'
                    """).single().int("n") > 0
            }
            XCTAssertTrue(waiting, "the first request never reached the database")
            let second = try await client.execute(uri: "/v1/events", method: .post,
                                                  headers: [.authorization: "Bearer \(token)", .contentType: "application/json"],
                                                  body: ByteBuffer(string: APIHarness.event(fx, key: "cc-2")))
            XCTAssertEqual(second.status, .tooManyRequests)
            XCTAssertTrue(String(buffer: second.body).contains(#""code":"too_many_concurrent_requests""#))
            try blocker.execute("rollback")
            blocker.close()
            let r = try await first.value
            XCTAssertEqual(r.status, .created)
        }
    }
}
