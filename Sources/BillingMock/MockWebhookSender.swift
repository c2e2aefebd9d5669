// MockWebhookSender.swift: delivers the mock engine's events to its webhook endpoints, signed
// like Stripe, retried with exponential backoff until a 2xx. Like Stripe, a delivery may repeat
// (a lost 2xx, or the duplicate fault) and deliveries may arrive out of order (the shuffle fault,
// and retries of an earlier event overtaken by a later one).

import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import PGClient
import MeterWire

package final class MockWebhookSender: Service, @unchecked Sendable {
    package let pool: PGPool
    package let faults: MockFaultState
    package let metrics: BillingMockMetrics
    package let config: BillingMockConfiguration
    package let logger: Logger

    package init(pool: PGPool, faults: MockFaultState, metrics: BillingMockMetrics, config: BillingMockConfiguration, logger: Logger) {
        self.pool = pool; self.faults = faults; self.metrics = metrics; self.config = config; self.logger = logger
    }

    package struct Delivery: Sendable {
        let id: Int64; let eventID: String; let endpoint: String; let url: String; let secret: String; let payload: String
        let attempts: Int64
    }

    /// Endpoints with a delivery under way: each endpoint gets its deliveries one at a time, in
    /// due order, and endpoints are served side by side, so one that hangs until the timeout
    /// delays only its own.
    private let busy = Mutex<Set<String>>([])

    package func run() async throws {
        let client = HTTPClient.shared
        await cancelWhenGracefulShutdown { [self] in
            await withDiscardingTaskGroup { workers in
                while !Task.isCancelled {
                    let batch: [Delivery]
                    let skip = Array(busy.withLock { $0 })
                    do {
                        // Claimed with a 60 s lease: a crash mid-send delivers again later (at least once).
                        batch = try await pool.withConnection { c in
                            try c.execute("""
                                with due as (
                                    select id from billing_mock.deliveries
                                    where delivered_at is null and next_attempt_at <= pg_catalog.now()
                                      and endpoint_id <> all($1::text[])
                                    order by next_attempt_at, id limit 50
                                    for update skip locked
                                )
                                update billing_mock.deliveries d
                                set attempts = d.attempts + 1, next_attempt_at = pg_catalog.now() + interval '60 seconds'
                                from due, billing_mock.objects e, billing_mock.objects w
                                where d.id = due.id and e.id = d.event_id and w.id = d.endpoint_id
                                returning d.id, d.event_id, d.endpoint_id, d.attempts, d.next_attempt_at, w.data ->> 'url' as url,
                                          w.data ->> 'secret' as secret,
                                          -- a v2 event is delivered thin: without data (fetched by id)
                                          case e.object when 'v2.core.event' then (e.data - 'data' - 'changes' - 'snapshot_event')::text
                                                        else e.data::text end as payload
                                """, [skip]).rows.map { r in
                                Delivery(id: try r.int("id"), eventID: try r.string("event_id"), endpoint: try r.string("endpoint_id"),
                                         url: try r.string("url"), secret: try r.string("secret"), payload: try r.string("payload"),
                                         attempts: try r.int("attempts"))
                            }
                        }
                    } catch {
                        // A shutdown cancels the claim under way: that ends the loop, it is no failure
                        // (the replay's log had a warning for it when the mock stopped mid-claim).
                        if Task.isCancelled || error is CancellationError { break }
                        logger.warning("billing_mock.webhook_claim_failed", metadata: ["error": "\(error)"])
                        try? await Task.sleep(for: .seconds(1))
                        continue
                    }
                    if batch.isEmpty {
                        try? await Task.sleep(for: config.webhookPoll)
                        continue
                    }
                    var byEndpoint: [String: [Delivery]] = [:]
                    for d in batch { byEndpoint[d.endpoint, default: []].append(d) }
                    let f = faults.current
                    for (endpoint, deliveries) in byEndpoint {
                        busy.withLock { _ = $0.insert(endpoint) }
                        workers.addTask { [self] in
                            defer { busy.withLock { _ = $0.remove(endpoint) } }
                            let ordered = f.webhookShuffle ? deliveries.shuffled() : deliveries
                            await withTaskGroup(of: Void.self) { group in
                                for d in ordered {
                                    group.addTask { [self] in
                                        if f.webhookShuffle { try? await Task.sleep(for: .milliseconds(Int.random(in: 0...500))) }
                                        await deliver(d, client: client)
                                        if f.webhookDuplicateRate > 0, Double.random(in: 0..<1) < f.webhookDuplicateRate {
                                            metrics.faults("webhook_duplicate").increment()
                                            await deliver(d, client: client)
                                        }
                                    }
                                    if !f.webhookShuffle { await group.next() }  // in order, one at a time
                                }
                            }
                        }
                    }
                }
                workers.cancelAll()
            }
        }
    }

    private func deliver(_ d: Delivery, client: HTTPClient) async {
        let payload = Array(d.payload.utf8)
        var request = HTTPClientRequest(url: d.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
        request.headers.add(name: "User-Agent", value: "Stripe/1.0 (+https://stripe.com/docs/webhooks) meter-billing-mock")
        request.headers.add(name: "Stripe-Signature",
                            value: WebhookSignature.sign(payload: payload, secret: d.secret, timestamp: Int64(Date().timeIntervalSince1970)))
        request.body = .bytes(ByteBuffer(bytes: payload))
        var status: Int?
        var failure: String?
        do {
            let response = try await client.execute(request, timeout: .seconds(10))
            status = Int(response.status.code)
            _ = try? await response.body.collect(upTo: 1 << 20)
        } catch {
            failure = "\(error)"
        }
        let ok = status.map { (200..<300).contains($0) } ?? false
        metrics.deliveries(ok ? "delivered" : "failed").increment()
        // Exponential backoff: base * 2^(attempts-1), capped.
        let base = config.webhookRetryBase.seconds
        let cap = config.webhookRetryCap.seconds
        let delay = min(cap, base * pow(2, Double(max(d.attempts - 1, 0))))
        let (finalStatus, finalFailure) = (status, failure)
        do {
            try await pool.withConnection { c in
                _ = try c.execute("""
                    update billing_mock.deliveries
                    set delivered_at = case when $2 then coalesce(delivered_at, pg_catalog.now()) end,
                        last_status = $3::int, last_error = $4,
                        next_attempt_at = case when $2 then next_attempt_at
                                               else pg_catalog.now() + make_interval(secs => $5::float8) end
                    where id = $1
                    """, [d.id, ok, finalStatus, finalFailure, delay])
            }
        } catch {
            logger.warning("billing_mock.webhook_record_failed", metadata: ["error": "\(error)"])
        }
        if !ok {
            logger.info("billing_mock.webhook_failed", metadata: [
                "event": "\(d.eventID)", "url": "\(d.url)", "status": "\(status.map(String.init) ?? "none")",
                "attempt": "\(d.attempts)", "retry_in_s": "\(delay)",
            ])
        }
    }
}
