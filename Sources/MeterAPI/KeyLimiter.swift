import Foundation
import Hummingbird
import MeterCore
import Synchronization

/// Per-key limits on the /v1 endpoints, in this process: at most `maxConcurrent` requests of one
/// key in flight, and at most `perSecond` requests of it per second (a token bucket holding one
/// second's worth, so short bursts pass). Beyond either: 429 with `Retry-After`, before the body
/// is read or the database is asked. A key is told apart by the SHA-256 of its token (the token
/// itself is not kept); unknown tokens are limited the same way, so a flood of made-up keys costs
/// little. Idle entries are dropped, so the table stays small.
package final class KeyLimiter: Sendable {
    package struct Limits: Sendable {
        /// Requests of one key in flight at once; 0 = no cap.
        package var maxConcurrent: Int
        /// Requests of one key per second, sustained; 0 = no cap.
        package var perSecond: Double
        package init(maxConcurrent: Int, perSecond: Double) {
            self.maxConcurrent = maxConcurrent
            self.perSecond = perSecond
        }
    }

    package enum Decision: Equatable, Sendable {
        case admit
        case tooManyConcurrent
        case rateLimited(retryAfterSeconds: Int)
    }

    private struct Entry {
        var inFlight = 0
        var tokens: Double
        var refilled: ContinuousClock.Instant
    }
    private struct State {
        var entries: [String: Entry] = [:]
        var lastSweep = ContinuousClock.now
    }

    package let limits: Limits
    private let state = Mutex(State())
    /// Entries kept before idle ones are swept (at most once a second).
    private let sweepAbove = 10_000

    package init(_ limits: Limits) { self.limits = limits }

    /// Admits one request of `key` (then `leave` must follow), or says why not.
    package func enter(_ key: String, now: ContinuousClock.Instant = .now) -> Decision {
        let limits = self.limits
        return state.withLock { s in
            if s.entries.count > sweepAbove, now - s.lastSweep > .seconds(1) {
                s.lastSweep = now
                s.entries = s.entries.filter { $0.value.inFlight > 0 || now - $0.value.refilled < .seconds(60) }
            }
            var e = s.entries[key] ?? Entry(tokens: max(limits.perSecond, 1), refilled: now)
            if limits.perSecond > 0 {
                e.tokens = min(max(limits.perSecond, 1), e.tokens + (now - e.refilled).seconds * limits.perSecond)
                e.refilled = now
            }
            if limits.maxConcurrent > 0, e.inFlight >= limits.maxConcurrent {
                s.entries[key] = e
                return .tooManyConcurrent
            }
            if limits.perSecond > 0 {
                guard e.tokens >= 1 else {
                    s.entries[key] = e
                    return .rateLimited(retryAfterSeconds: max(1, Int(((1 - e.tokens) / limits.perSecond).rounded(.up))))
                }
                e.tokens -= 1
            }
            e.inFlight += 1
            s.entries[key] = e
            return .admit
        }
    }

    package func leave(_ key: String) {
        state.withLock { s in s.entries[key]?.inFlight -= 1 }
    }
}

/// Applies a KeyLimiter to every /v1 request that carries a bearer key.
package struct KeyLimitMiddleware: RouterMiddleware {
    package typealias Context = BasicRequestContext
    package let limiter: KeyLimiter
    package let metrics: MeterMetrics

    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/v1/"), let token = APIRequest.bearerToken(request) else {
            return try await next(request, context)
        }
        let key = APIKeys.hashParameter(token)
        switch limiter.enter(key) {
        case .admit:
            do {
                let response = try await next(request, context)
                limiter.leave(key)
                return response
            } catch {
                limiter.leave(key)
                throw error
            }
        case .tooManyConcurrent:
            metrics.throttled("concurrency").increment()
            return APIResponse.error(.tooManyRequests, code: "too_many_concurrent_requests",
                                     message: "this API key has \(limiter.limits.maxConcurrent) requests in flight already; retry when one has finished",
                                     headers: [.retryAfter: "1"])
        case .rateLimited(let after):
            metrics.throttled("rate").increment()
            return APIResponse.error(.tooManyRequests, code: "rate_limited",
                                     message: "this API key sends more than \(limiter.limits.perSecond) requests per second; retry after \(after) s",
                                     headers: [.retryAfter: String(after)])
        }
    }
}
