import Foundation
import Hummingbird
import Logging
import NIOCore
import PGClient
import MeterWire
import MeterCore

/// POST /webhooks/billing: the billing engine's signed events.
///
/// Order of checks, each refusal storing nothing: size (413), the Stripe-Signature header against
/// every active secret of meter.webhook_secrets (400 signature_missing / signature_malformed /
/// signature_mismatch / signature_expired; 300 s tolerance; constant-time comparison), then the
/// payload's shape (400 invalid_payload naming the field). A verified event is stored once by its
/// id (meter.webhook_receive) and acknowledged at once (200, "duplicate": true for a redelivery);
/// it is applied later by WebhookProcessor (meter.webhook_process), so the engine never waits for
/// our processing and never retries because of it.
package struct WebhooksController: Sendable {
    package static let maxBytes = 1 << 20
    package static let tolerance: Int64 = 300
    package let pool: PGPool
    package let metrics: MeterMetrics
    package let processor: WebhookProcessor?

    package func addRoutes(to router: Router<BasicRequestContext>) {
        router.post("/webhooks/billing", use: post)
    }

    @Sendable package func post(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let logger = context.logger
        // Every refusal is counted by reason and logged (with the request id): a signature_expired
        // streak means a skewed clock on the engine's side, signature_mismatch a secret to rotate.
        let reject: (String) -> Void = { reason in
            metrics.sync.webhooks("rejected").increment()
            metrics.sync.webhooksRejected(reason).increment()
            logger.warning("webhook.rejected", metadata: ["reason": "\(reason)"])
        }
        // The header first: a request without a well-formed signature costs neither reading its
        // body nor a database round trip for the secrets.
        let header = request.headers[.init("Stripe-Signature")!]
        do {
            _ = try WebhookSignature.parseHeader(header)
        } catch {
            reject(error.code)
            return APIResponse.error(.badRequest, code: error.code, message: error.message, field: "Stripe-Signature")
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maxBytes)
        } catch {
            reject("size")
            return APIResponse.error(.contentTooLarge, code: "payload_too_large",
                                     message: "webhook payloads are limited to \(Self.maxBytes) bytes", field: "body")
        }
        let bytes = Array(body.readableBytesView)
        // The signature's timestamp is checked against the database's clock, like everything else
        // time-dependent in meter: a service host whose clock drifts or steps does not start
        // refusing (or accepting stale) deliveries (docs/decisions.md 70).
        let (secretList, now) = try await pool.withConnection { c in
            let rows = try c.execute("""
                select s.secret, extract(epoch from pg_catalog.statement_timestamp())::bigint as now
                from (select 1) as one left join meter.webhook_secrets s on s.active order by s.id
                """).rows
            return (try rows.compactMap { try $0.optionalString("secret") }, try rows[0].int("now"))
        }
        if secretList.isEmpty {
            reject("unconfigured")
            return APIResponse.error(.badRequest, code: "webhook_not_configured",
                                     message: "no active webhook secret: add one with meterctl billing webhook-secret add")
        }
        do {
            try WebhookSignature.verify(payload: bytes, header: header, secrets: secretList, tolerance: Self.tolerance, now: now)
        } catch {
            reject(error.code)
            return APIResponse.error(.badRequest, code: error.code, message: error.message, field: "Stripe-Signature")
        }
        guard let event = try? JSONParser.parse(bytes), event.objectValue != nil else {
            reject("payload")
            return APIResponse.error(.badRequest, code: "invalid_payload", message: "the payload is not a JSON object", field: "body")
        }
        guard let id = event["id"]?.stringValue,
              id.range(of: "^evt_[A-Za-z0-9_]{1,250}$", options: .regularExpression) != nil else {
            reject("payload")
            return APIResponse.error(.badRequest, code: "invalid_payload",
                                     message: "id must be evt_ followed by 1-250 letters, digits or underscores", field: "id")
        }
        guard let type = event["type"]?.stringValue, !type.isEmpty, type.count <= 255 else {
            reject("payload")
            return APIResponse.error(.badRequest, code: "invalid_payload", message: "type must be a non-empty string", field: "type")
        }
        // v1 snapshot events carry unix seconds; v2 thin events (object v2.core.event, e.g. the
        // meter error reports) an RFC 3339 date-time.
        let created: Int64
        if let seconds = event["created"]?.int64Value {
            created = seconds
        } else if event["object"]?.stringValue == "v2.core.event", let text = event["created"]?.stringValue,
                  let t = try? RFC3339Timestamp(parsing: text) {
            created = t.epochMicroseconds / 1_000_000
        } else {
            reject("payload")
            return APIResponse.error(.badRequest, code: "invalid_payload",
                                     message: "created must be a unix timestamp (an RFC 3339 date-time for a v2 event)", field: "created")
        }
        let text = String(decoding: bytes, as: UTF8.self)
        let inserted = try await pool.withConnection { c in
            try c.execute("select meter.webhook_receive($1, $2, to_timestamp($3::bigint), $4::jsonb) as inserted",
                          [id, type, created, text]).single().bool("inserted")
        }
        metrics.sync.webhooks(inserted ? "stored" : "duplicate").increment()
        if inserted { processor?.signal() }
        return APIResponse.json(.ok, "{\"received\":true,\"duplicate\":\(!inserted)}")
    }
}
