// MeterEventSession.swift: the v2 meter event stream's session (Stripe: POST
// /v2/billing/meter_event_session returns a token valid 15 minutes; POST
// /v2/billing/meter_event_stream on the meter events host takes up to 100 events per call with
// that token, answers at once, and reports refusals later as events).

import Foundation
import MeterWire

public actor MeterEventSession {
    public static let eventsPerCall = 100
    /// Renew this long before the engine's expiry (clock skew, a call in flight).
    public static let renewBefore: Duration = .seconds(60)

    private var token: String?
    private var renewAt: ContinuousClock.Instant?
    /// The engine has no v2 stream (404 on the session): meter events go one per call.
    public private(set) var unavailable = false

    public init() {}

    /// A live token, created when there is none or it is near its end.
    func current(_ client: BillingClient, renew: Bool = false) async throws(BillingAPIError) -> String? {
        if unavailable { return nil }
        if !renew, let token, let renewAt, ContinuousClock.now < renewAt { return token }
        let v: JSONValue
        do {
            v = try await client.postJSON("/v2/billing/meter_event_session", .object([]), idempotencyKey: UUID().uuidString)
        } catch {
            if error.status == 404 { unavailable = true; return nil }
            throw error
        }
        guard let t = v["authentication_token"]?.stringValue else {
            throw BillingAPIError(status: nil, type: nil, code: nil, message: "the engine returned a meter event session without a token")
        }
        // expires_at is the engine's clock; 15 minutes is Stripe's stated lifetime: trust the shorter.
        var lifetime: Duration = .seconds(15 * 60)
        if let e = v["expires_at"]?.stringValue, let c = v["created"]?.stringValue,
           let end = try? RFC3339Timestamp(parsing: e), let start = try? RFC3339Timestamp(parsing: c) {
            lifetime = min(lifetime, .microseconds(end.epochMicroseconds - start.epochMicroseconds))
        }
        token = t
        renewAt = ContinuousClock.now + lifetime - Self.renewBefore
        return t
    }

    /// Sends one batch through the stream; a session the engine calls expired is renewed and
    /// the call repeated once. Without a stream, a 404 error (the caller sends one by one).
    public func stream(_ events: [JSONValue], client: BillingClient, idempotencyKey: String) async throws(BillingAPIError) {
        var renew = false
        for _ in 0..<2 {
            guard let t = try await current(client, renew: renew) else {
                throw BillingAPIError(status: 404, type: nil, code: "no_meter_event_stream",
                                      message: "the engine has no v2 meter event stream")
            }
            do {
                _ = try await client.postJSON("/v2/billing/meter_event_stream", .obj(["events": .array(events)]), bearer: t,
                                              baseURL: client.configuration.meterEventsBaseURL, idempotencyKey: idempotencyKey)
                return
            } catch {
                guard error.status == 401, !renew else { throw error }
                renew = true
            }
        }
    }
}
