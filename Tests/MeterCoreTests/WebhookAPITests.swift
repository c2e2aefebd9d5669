import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import XCTest
import PGClient
import MeterWire

/// POST /webhooks/billing: signatures (bad, stale, replayed, rotated secrets, several v1),
/// storage once by id, nothing stored on refusal, and forward-only invoice state.
final class WebhookAPITests: XCTestCase {
    static let oldSecret = "whsec_old_secret_0123456789"
    static let newSecret = "whsec_new_secret_9876543210"

    static func event(_ id: String, type: String = "invoice.paid", status: String = "paid", invoice: String = "in_test1") -> String {
        #"{"id":"\#(id)","object":"event","type":"\#(type)","created":1764000000,"data":{"object":{"id":"\#(invoice)","object":"invoice","customer":"cus_x","subscription":"sub_x","status":"\#(status)","currency":"usd","period_start":1761955200,"period_end":1764547200,"subtotal":1250,"total":1250,"amount_due":1250,"amount_paid":1250,"created":1764547200,"status_transitions":{"finalized_at":1764547200,"paid_at":1764547200},"lines":{"object":"list","data":[{"id":"il_1","object":"line_item","amount":1250,"currency":"usd","quantity":2500,"quantity_decimal":"2500","subscription_item":"si_x","price":{"id":"price_x"},"period":{"start":1761955200,"end":1764547200}}]}}}}"#
    }

    static func send(_ client: any TestClientProtocol, _ body: String, signature: String?) async throws -> (Int, JSONValue) {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let signature { headers[.init("Stripe-Signature")!] = signature }
        let r = try await client.execute(uri: "/webhooks/billing", method: .post, headers: headers, body: ByteBuffer(string: body))
        return (Int(r.status.code), (try? JSONParser.parse(String(buffer: r.body))) ?? .null)
    }

    static func sign(_ body: String, _ secret: String, at t: Int64 = Int64(Date().timeIntervalSince1970)) -> String {
        WebhookSignature.sign(payload: Array(body.utf8), secret: secret, timestamp: t)
    }

    func testSignaturesAreVerifiedAndEventsStoredOnce() async throws {
        try await APIHarness.withApp { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            defer { c.close() }
            try c.execute("delete from meter.webhook_secrets")
            try c.execute("delete from meter.webhook_events")
            let body = Self.event("evt_\(UInt32.random(in: 0...UInt32.max))")

            // No secret configured yet: refused, nothing stored.
            var (status, json) = try await Self.send(client, body, signature: Self.sign(body, Self.oldSecret))
            XCTAssertEqual(status, 400)
            XCTAssertEqual(json["error"]?["code"]?.stringValue, "webhook_not_configured")

            try c.execute("insert into meter.webhook_secrets (secret) values ($1), ($2)", [Self.oldSecret, Self.newSecret])
            let refusals: [(String?, String, String)] = [
                (nil, "signature_missing", "no header"),
                ("v1=abc", "signature_malformed", "no timestamp"),
                ("t=\(Int64(Date().timeIntervalSince1970)),v1=" + String(repeating: "0", count: 64), "signature_mismatch", "wrong MAC"),
                (Self.sign(body, "whsec_not_ours_00000000"), "signature_mismatch", "unknown secret"),
                (Self.sign(body + " ", Self.newSecret), "signature_mismatch", "payload changed after signing"),
                (Self.sign(body, Self.newSecret, at: Int64(Date().timeIntervalSince1970) - 301), "signature_expired", "stale (replayed later)"),
                (Self.sign(body, Self.newSecret, at: Int64(Date().timeIntervalSince1970) + 400), "signature_expired", "from the future"),
            ]
            for (header, code, why) in refusals {
                (status, json) = try await Self.send(client, body, signature: header)
                XCTAssertEqual(status, 400, why)
                XCTAssertEqual(json["error"]?["code"]?.stringValue, code, why)
                XCTAssertEqual(json["error"]?["field"]?.stringValue, "Stripe-Signature", why)
            }
            XCTAssertEqual(try c.execute("select count(*) as n from meter.webhook_events").single().int("n"), 0,
                           "nothing stored for a refused delivery")

            // Valid with either active secret (rotation), and with several v1 entries of which one matches.
            let t = Int64(Date().timeIntervalSince1970)
            let several = "t=\(t),v1=" + String(repeating: "ab", count: 32) + ",v1="
                + String(Self.sign(body, Self.oldSecret, at: t).split(separator: "=").last!)
            (status, json) = try await Self.send(client, body, signature: several)
            XCTAssertEqual(status, 200)
            XCTAssertEqual(json["duplicate"]?.boolValue, false)
            // The same event again (a redelivery, or a replay of a captured request within 300 s).
            (status, json) = try await Self.send(client, body, signature: Self.sign(body, Self.newSecret))
            XCTAssertEqual(status, 200)
            XCTAssertEqual(json["duplicate"]?.boolValue, true)
            XCTAssertEqual(try c.execute("select count(*) as n from meter.webhook_events").single().int("n"), 1)

            // A retired secret no longer verifies.
            try c.execute("update meter.webhook_secrets set active = false where secret = $1", [Self.oldSecret])
            let other = Self.event("evt_other\(UInt32.random(in: 0...UInt32.max))")
            (status, json) = try await Self.send(client, other, signature: Self.sign(other, Self.oldSecret))
            XCTAssertEqual(status, 400)
            XCTAssertEqual(json["error"]?["code"]?.stringValue, "signature_mismatch")

            // An endpoint that is not ours: 404, nothing stored, whatever the signature.
            let stray = Self.event("evt_stray\(UInt32.random(in: 0...UInt32.max))")
            var strayHeaders: HTTPFields = [.contentType: "application/json"]
            strayHeaders[.init("Stripe-Signature")!] = Self.sign(stray, Self.newSecret)
            let r = try await client.execute(uri: "/webhooks/other", method: .post, headers: strayHeaders,
                                             body: ByteBuffer(string: stray))
            XCTAssertEqual(r.status.code, 404)
            XCTAssertEqual(try c.execute("select count(*) as n from meter.webhook_events").single().int("n"), 1)

            // Verified but malformed: named field, nothing stored.
            let bad = #"{"id":"nope","type":"invoice.paid","created":1}"#
            (status, json) = try await Self.send(client, bad, signature: Self.sign(bad, Self.newSecret))
            XCTAssertEqual(status, 400)
            XCTAssertEqual(json["error"]?["code"]?.stringValue, "invalid_payload")
            XCTAssertEqual(json["error"]?["field"]?.stringValue, "id")
            XCTAssertEqual(try c.execute("select count(*) as n from meter.webhook_events").single().int("n"), 1)
        }
    }

    /// A validly signed header whose timestamp is at the ends of Int64 is outside the tolerance,
    /// never an arithmetic trap (abs(now - Int64.min) overflowed and crashed the service).
    func testExtremeTimestampsAreRefusedNotATrap() {
        let body = Array(#"{"id":"evt_x"}"#.utf8)
        for t in [Int64.min, Int64.min + 1, Int64.max, -1] {
            let header = WebhookSignature.sign(payload: body, secret: Self.newSecret, timestamp: t)
            XCTAssertThrowsError(try WebhookSignature.verify(payload: body, header: header, secrets: [Self.newSecret])) { e in
                XCTAssertEqual("\(e)", "\(WebhookSignature.Failure.timestampOutsideTolerance)", "t = \(t)")
            }
        }
    }

    func testPaidBeforeFinalizedLeavesTheInvoicePaid() async throws {
        try await APIHarness.withApp { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            defer { c.close() }
            try c.execute("insert into meter.webhook_secrets (secret) values ($1) on conflict do nothing", [Self.newSecret])
            let invoice = "in_order\(UInt32.random(in: 0...UInt32.max))"
            let paid = Self.event("evt_p\(invoice)", type: "invoice.paid", status: "paid", invoice: invoice)
            let finalized = Self.event("evt_f\(invoice)", type: "invoice.finalized", status: "open", invoice: invoice)
            let created = Self.event("evt_c\(invoice)", type: "invoice.created", status: "draft", invoice: invoice)
            for body in [paid, finalized, paid, created] {
                let (status, _) = try await Self.send(client, body, signature: Self.sign(body, Self.newSecret))
                XCTAssertEqual(status, 200)
                _ = try c.execute("select meter.webhook_process(100)")
            }
            let r = try c.execute("select status, amount_paid from meter.billing_invoices where invoice_id = $1", [invoice]).single()
            XCTAssertEqual(try r.string("status"), "paid")
            XCTAssertEqual(try r.int("amount_paid"), 1250)
            let outcomes = try c.execute("""
                select outcome from meter.webhook_events where event_id like '%' || $1 order by received_at
                """, [invoice]).rows.map { try $0.string("outcome") }
            XCTAssertEqual(outcomes, ["applied", "stale", "stale"], "paid applied; finalized and created arrived late")
        }
    }
}
