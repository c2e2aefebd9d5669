import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import XCTest
import PGClient
import MeterWire
import MeterCore

/// GET /v1/customers/{customer}/invoice_preview (issue 16): the preview of an ended period equals,
/// line for line, the invoice its close then freezes; a closed period previews as that invoice;
/// the open period shows its usage so far; the refusals name field and reason.
final class InvoicePreviewTests: XCTestCase {
    typealias T = APIHarness

    static func preview(_ client: any TestClientProtocol, _ customer: String, _ query: String = "", token: String?) async throws -> T.Reply {
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        let path = "/v1/customers/" + (customer.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(.init(charactersIn: "/"))) ?? customer)
            + "/invoice_preview" + (query.isEmpty ? "" : "?" + query)
        let r = try await client.execute(uri: path, method: .get, headers: headers)
        let text = String(buffer: r.body)
        return T.Reply(status: Int(r.status.code), json: (try? JSONParser.parse(text)) ?? .string(text), headers: r.headers)
    }

    /// (line_no, line, events, quantity, amount) of each line, as the API gives them.
    static func lines(_ r: T.Reply) -> [String] {
        (r.json["lines"]?.arrayValue ?? []).map {
            "\($0["line_no"]?.numberLexeme ?? "?") \($0["kind"]?.stringValue ?? "?") \($0["line"]?.stringValue ?? "?"): "
                + "\($0["events"]?.numberLexeme ?? "?") events, \($0["quantity"]?.stringValue ?? "?"), \($0["amount"]?.numberLexeme ?? "?")"
        }
    }

    func testThePreviewOfAnEndedPeriodIsTheInvoiceItsCloseFreezes() async throws {
        try await T.withApp({ $0.limits.maxPastSeconds = 70 * 86_400 }) { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            defer { c.close() }
            let p = fx.prefix, customer = fx.customers[1]  // the one with non-ASCII letters in its id
            try c.execute("select meter.meter_upsert($1, 'sum', null, null, null, null, array['model'])", ["\(p).tokens"])
            let plan = "\(p)-plan"
            try c.execute("select meter.plan_upsert($1, 'usd')", [plan])
            try c.execute("select meter.plan_price_set($1, $2, 'graduated', null, null, $3::jsonb, $4::jsonb)",
                          [plan, "\(p).tokens", #"[{"up_to": 100, "unit_amount": 3}, {"up_to": null, "unit_amount": 1}]"#, #"{"model": "big"}"#])
            try c.execute("select meter.plan_price_set($1, $2, 'per_unit', 0.5)", [plan, "\(p).tokens"])
            try c.execute("select meter.plan_price_set($1, $2, 'per_unit', 2)", [plan, "\(p).calls"])
            let r = try c.execute("""
                select to_char(date_trunc('month', now(), 'UTC') - interval '1 month', 'YYYY-MM') as m,
                       extract(epoch from date_trunc('month', now(), 'UTC') - interval '1 month')::bigint as s
                """).single()
            let (month, start) = (try r.string("m"), try r.int("s"))
            try c.execute("select meter.customer_subscribe($1, $2, $3)", [customer, plan, month])
            func at(_ hours: Int64) -> String { RFC3339Timestamp(epochMicroseconds: (start + hours * 3600) * 1_000_000).iso8601 }
            let events = [
                T.event(fx, key: "b1", customer: 1, meter: "tokens", value: "150", occurredAt: at(2), properties: #"{"model":"big"}"#),
                T.event(fx, key: "s1", customer: 1, meter: "tokens", value: "9", occurredAt: at(3), properties: #"{"model":"small"}"#),
                T.event(fx, key: "c1", customer: 1, occurredAt: at(4)),
                T.event(fx, key: "c2", customer: 1, occurredAt: at(5)),
            ]
            let sent = try await T.post(client, "[" + events.joined(separator: ",") + "]", token: fx.token)
            XCTAssertEqual(sent.status, 200, "\(sent.json)")
            _ = try Rollup.drain(c)

            // By hand: big 150 tokens = 100 x 3 + 50 x 1 = 350; the rest 9 x 0.5 = 4.5 -> 5; calls 2 x 2 = 4.
            let before = try await Self.preview(client, customer, "period=\(month)", token: fx.token)
            XCTAssertEqual(before.status, 200, "\(before.json)")
            XCTAssertEqual(before.json["status"]?.stringValue, "ended")
            XCTAssertEqual(before.json["currency"]?.stringValue, "usd")
            XCTAssertEqual(before.json["subtotal"]?.numberLexeme, "359")
            XCTAssertNotNil(before.json["rollup_lag_seconds"]?.numberLexeme, "the preview says how fresh it is")
            XCTAssertEqual(Self.lines(before), [
                "1 usage \(p).calls: 2 events, 2, 4",
                "2 usage \(p).tokens [model=big]: 1 events, 150, 350",
                "3 usage \(p).tokens [other]: 1 events, 9, 5",
            ])
            XCTAssertEqual(try c.execute("select outcome from meter.period_close($1, $2, interval '0')", [month, customer]).single().string("outcome"),
                           "closed")
            let frozen = try c.execute("""
                select l.line_no, l.event_count, trim_scale(l.quantity)::text as q, l.amount, i.id from meter.invoice_lines l
                join meter.invoices i on i.id = l.invoice_id join meter.customers x on x.id = i.customer_id
                where x.external_id = $1 and i.period = $2 order by l.line_no
                """, [customer, month]).rows
            XCTAssertEqual(try frozen.map { "\(try $0.int("line_no")): \(try $0.int("event_count")) events, \(try $0.string("q")), \(try $0.int("amount"))" },
                           (before.json["lines"]?.arrayValue ?? []).map {
                               "\($0["line_no"]!.numberLexeme!): \($0["events"]!.numberLexeme!) events, \($0["quantity"]!.stringValue!), \($0["amount"]!.numberLexeme!)"
                           }, "the frozen invoice equals the preview, line for line")
            let after = try await Self.preview(client, customer, "period=\(month)", token: fx.token)
            XCTAssertEqual(after.json["status"]?.stringValue, "closed")
            XCTAssertEqual(after.json["invoice_id"]?.numberLexeme, String(try frozen[0].int("id")))
            XCTAssertEqual(Self.lines(after), Self.lines(before), "a closed period previews as its invoice")

            // The open period: nothing used yet this month; a call now shows once rolled up.
            let open = try await Self.preview(client, customer, token: fx.token)
            XCTAssertEqual(open.json["status"]?.stringValue, "open", "\(open.json)")
            XCTAssertEqual(open.json["subtotal"]?.numberLexeme, "0")
            let now = try await T.post(client, T.event(fx, key: "now1", customer: 1), token: fx.token)
            XCTAssertEqual(now.status, 201, "\(now.json)")
            _ = try Rollup.drain(c)
            let later = try await Self.preview(client, customer, token: fx.token)
            XCTAssertEqual(Self.lines(later).first, "1 usage \(p).calls: 1 events, 1, 2")

            // Refusals.
            let unknown = try await Self.preview(client, customer + "-nobody", token: fx.token)
            XCTAssertEqual(unknown.status, 404)
            XCTAssertEqual(unknown.code, "customer_not_found")
            let badPeriod = try await Self.preview(client, customer, "period=2026-13", token: fx.token)
            XCTAssertEqual(badPeriod.status, 422)
            XCTAssertEqual(badPeriod.field, "period")
            let noPlan = try await Self.preview(client, customer, "period=2001-01", token: fx.token)
            XCTAssertEqual(noPlan.status, 404)
            XCTAssertEqual(noPlan.code, "no_plan")
            let stray = try await Self.preview(client, customer, "month=2026-01", token: fx.token)
            XCTAssertEqual(stray.status, 422)
            XCTAssertEqual(stray.code, "unknown_parameter")
            let anonymous = try await Self.preview(client, customer, token: nil)
            XCTAssertEqual(anonymous.status, 401)
        }
    }
}
