// WebhookDelivery.swift: meter's outgoing webhooks, delivered from the Postgres outbox
// (meter.webhook_claim / webhook_report, decision 114) to the endpoints operators registered
// (`meterctl webhooks add`), signed per the Standard Webhooks specification (MeterWire
// StandardWebhooks). At least once: a delivery is reported only after the endpoint answered; a
// worker that dies mid-send loses its claim after the lease and the message goes again with the
// same webhook-id. In `meterctl serve`: woken by NOTIFY meter_webhooks_out, polled every interval.

import AsyncHTTPClient
import Foundation
import Logging
import Prometheus
import NIOCore
import NIOHTTP1
import PGClient
import ServiceLifecycle
import MeterWire

public struct WebhookDeliveryConfiguration: Sendable {
    public var batch = 50
    public var concurrency = 8
    public var interval: Duration = .seconds(1)
    public var timeout: Duration = .seconds(10)
    public var lease: Duration = .seconds(60)
    /// A delivery failing for longer than this is dead (re-driven by `meterctl webhooks redrive`).
    public var giveUpAfter: Duration = .seconds(3 * 86_400)
    public var backoffBase: Duration = .seconds(5)
    public var backoffCap: Duration = .seconds(3_600)
    public var worker = "webhooks-\(ProcessInfo.processInfo.processIdentifier)"
    public init() {}
}

public enum WebhookDelivery {
    public struct PassResult: Sendable { public var claimed = 0, delivered = 0, failed = 0, dead = 0 }

    struct Claimed: Sendable {
        let messageID: String, endpointID: Int64, url: String, secrets: [String], type: String, payload: String
        let created: String, token: Int64
    }

    static func seconds(_ d: Duration) -> String { String(d.components.seconds) + " seconds" }

    /// One pass: claim up to `batch` due deliveries, send them (up to `concurrency` at once), report each.
    public static func pass(pool: PGPool, config: WebhookDeliveryConfiguration, logger: Logger) async throws -> PassResult {
        let claimed = try await pool.withConnection { c in
            try c.execute("""
                select message_id, endpoint_id, url, secret, previous_secret, type, payload,
                       to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as created, claim_token
                from meter.webhook_claim($1, $2, $3::interval)
                """, [config.worker, config.batch, seconds(config.lease)]).rows.map { r in
                Claimed(messageID: try r.string("message_id"), endpointID: try r.int("endpoint_id"), url: try r.string("url"),
                        secrets: [try r.string("secret")] + (try r.optionalString("previous_secret").map { [$0] } ?? []),
                        type: try r.string("type"), payload: try r.string("payload"), created: try r.string("created"),
                        token: try r.int("claim_token"))
            }
        }
        var result = PassResult(claimed: claimed.count)
        if claimed.isEmpty { return result }
        let outcomes = await withTaskGroup(of: String.self, returning: [String].self) { group in
            var out: [String] = []
            var next = 0
            func start() {
                let d = claimed[next]
                next += 1
                group.addTask { await deliver(d, pool: pool, config: config, logger: logger) }
            }
            while next < min(config.concurrency, claimed.count) { start() }
            for await o in group {
                out.append(o)
                if next < claimed.count { start() }
            }
            return out
        }
        for o in outcomes {
            switch o {
            case "delivered": result.delivered += 1
            case "dead": result.dead += 1; result.failed += 1
            default: result.failed += 1
            }
        }
        return result
    }

    /// Sends one delivery and reports it; returns the delivery's new state.
    static func deliver(_ d: Claimed, pool: PGPool, config: WebhookDeliveryConfiguration, logger: Logger) async -> String {
        let body = Array(#"{"type":\#(JSONWriter.quote(d.type)),"timestamp":"\#(d.created)","data":\#(d.payload)}"#.utf8)
        let now = Int64(Date().timeIntervalSince1970)
        var request = HTTPClientRequest(url: d.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "meter-webhooks/1")
        request.headers.add(name: "webhook-id", value: d.messageID)
        request.headers.add(name: "webhook-timestamp", value: String(now))
        request.headers.add(name: "webhook-signature", value: StandardWebhooks.signature(id: d.messageID, timestamp: now, body: body,
                                                                                         secrets: d.secrets))
        request.body = .bytes(ByteBuffer(bytes: body))
        var status: Int?
        var error: String?
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(config.timeout.components.seconds))
            status = Int(response.status.code)
            _ = try? await response.body.collect(upTo: 1 << 16)
            if !(200...299).contains(status!) { error = "HTTP \(status!)" }
        } catch let e {
            error = "\(e)".prefix(300).description
        }
        let (sentStatus, sentError) = (status, error)
        do {
            let state = try await pool.withConnection { c in
                try c.execute("""
                    select meter.webhook_report($1, $2, $3, $4::int, $5, $6::interval, $7::interval, $8::interval) as s
                    """, [d.messageID, d.endpointID, d.token, sentStatus, sentError, seconds(config.giveUpAfter),
                          seconds(config.backoffBase), seconds(config.backoffCap)]).single().string("s")
            }
            // (never the secret or the signature in a log line)
            if let error {
                logger.info("webhooks.delivery_failed", metadata: ["message": "\(d.messageID)", "endpoint": "\(d.endpointID)",
                                                                   "type": "\(d.type)", "error": "\(error)", "state": "\(state)"])
                if state == "dead" {
                    logger.warning("webhooks.dead_letter", metadata: ["message": "\(d.messageID)", "endpoint": "\(d.endpointID)"])
                }
            }
            return state
        } catch {
            logger.warning("webhooks.report_failed", metadata: ["message": "\(d.messageID)", "error": "\(error)"])
            return "unreported"
        }
    }
}

/// The delivery loop of `meterctl serve`: a pass whenever NOTIFY meter_webhooks_out arrives, and
/// every `interval` (retries come due by time).
public final class WebhookDeliveryWorker: Service, @unchecked Sendable {
    let conninfo: String, config: WebhookDeliveryConfiguration, logger: Logger
    let pool: PGPool
    let delivered: Counter
    let failed: Counter

    public init(conninfo: String, config: WebhookDeliveryConfiguration, metrics: MeterMetrics, logger: Logger) {
        self.conninfo = conninfo; self.config = config; self.logger = logger
        let help = "Outgoing webhook delivery attempts by result: delivered (2xx) or failed (retried, or dead past the give-up time)"
        delivered = metrics.registry.meterCounter(name: "meter_webhooks_out_deliveries_total", labels: [("result", "delivered")], help: help)
        failed = metrics.registry.meterCounter(name: "meter_webhooks_out_deliveries_total", labels: [("result", "failed")], help: help)
        pool = PGPool(conninfo: conninfo, maxConnections: 2, acquireTimeout: .seconds(30), statementTimeout: "60s",
                      applicationName: "meter-webhooks-out", logger: logger)
    }

    public func run() async throws {
        let listener = PGListener(conninfo: conninfo, channels: ["meter_webhooks_out"], logger: logger)
        listener.start()
        let wake = WakeSignal()
        let relay = Task { for await _ in listener.events { wake.signal() } }
        logger.info("webhooks.delivery.started", metadata: ["batch": "\(config.batch)", "concurrency": "\(config.concurrency)"])
        await cancelWhenGracefulShutdown { [self] in
            var failures = 0
            while !Task.isCancelled {
                var busy = false
                do {
                    let r = try await WebhookDelivery.pass(pool: pool, config: config, logger: logger)
                    delivered.increment(by: Int64(r.delivered))
                    failed.increment(by: Int64(r.failed))
                    busy = r.claimed >= config.batch
                    failures = 0
                } catch {
                    failures += 1
                    logger.warning("webhooks.pass_failed", metadata: ["error": "\(error)", "consecutive": "\(failures)"])
                }
                if busy { continue }
                await wake.wait(timeout: failures > 0 ? min(config.interval * min(failures, 30), .seconds(30)) : config.interval)
            }
        }
        listener.stop()
        relay.cancel()
        await pool.shutdown()
        logger.info("webhooks.delivery.stopped")
    }
}
