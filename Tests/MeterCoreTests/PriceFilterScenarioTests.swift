import Foundation
import HummingbirdTesting
import XCTest
import PGClient
import MeterWire
import MeterCore

/// Issue 15's acceptance scenario, through the HTTP API: a tokens meter with the dimensions model
/// and region, a plan pricing it per model (gpt-4o graduated, mini per unit) with a default price
/// for the rest, and a disk gauge billed in GB-hours; events with a duplicate delivery, a
/// cancellation, an event arriving after its hour was rolled up, and one after its period's close.
/// Two months are closed; every invoice line is checked against amounts worked out by hand below;
/// the reconciliation is all MATCH and rollup_verify finds nothing.
final class PriceFilterScenarioTests: XCTestCase {
    typealias T = APIHarness

    func testPerModelPricesAndAGaugeInvoiceAsComputedByHand() async throws {
        try await T.withApp({ $0.limits.maxPastSeconds = 100 * 86_400 }) { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            defer { c.close() }
            let p = fx.prefix, customer = fx.customers[0]
            try c.execute("select meter.meter_upsert($1, 'sum', null, null, null, null, array['model', 'region'])", ["\(p).tokens"])
            try c.execute("select meter.meter_upsert($1, 'time_weighted_sum')", ["\(p).disk"])
            let plan = "\(p)-plan"
            try c.execute("select meter.plan_upsert($1, 'eur')", [plan])
            try c.execute("select meter.plan_price_set($1, $2, 'graduated', null, null, $3::jsonb, $4::jsonb)", [
                plan, "\(p).tokens", #"[{"up_to": 1000, "unit_amount": 2}, {"up_to": null, "unit_amount": 1}]"#, #"{"model": "gpt-4o"}"#,
            ])
            try c.execute("select meter.plan_price_set($1, $2, 'per_unit', 0.5, null, null, $3::jsonb)", [plan, "\(p).tokens", #"{"model": "mini"}"#])
            try c.execute("select meter.plan_price_set($1, $2, 'per_unit', 0.1)", [plan, "\(p).tokens"])
            try c.execute("select meter.plan_price_set($1, $2, 'per_unit', 0.5)", [plan, "\(p).disk"])
            // Two months ago (closed first) and last month (closed after the late event).
            let r = try c.execute("""
                select to_char(date_trunc('month', now(), 'UTC') - interval '2 months', 'YYYY-MM') as m2,
                       to_char(date_trunc('month', now(), 'UTC') - interval '1 month', 'YYYY-MM') as m1,
                       extract(epoch from date_trunc('month', now(), 'UTC') - interval '2 months')::bigint as s2,
                       extract(epoch from date_trunc('month', now(), 'UTC') - interval '1 month')::bigint as s1,
                       extract(epoch from date_trunc('month', now(), 'UTC'))::bigint as s0
                """).single()
            let (m2, m1) = (try r.string("m2"), try r.string("m1"))
            let (s2, s1, s0) = (try r.int("s2"), try r.int("s1"), try r.int("s0"))
            try c.execute("select meter.customer_subscribe($1, $2, $3)", [customer, plan, m2])

            func event(_ key: String, _ meter: String, _ at: Int64, _ value: String, _ props: String? = nil) -> String {
                let t = RFC3339Timestamp(epochMicroseconds: at * 1_000_000).iso8601
                return #"{"customer":\#(JSONWriter.quote(customer)),"meter":"\#(p).\#(meter)","idempotency_key":"\#(key)","occurred_at":"\#(t)","value":"\#(value)""#
                    + (props.map { #","properties":\#($0)"# } ?? "") + "}"
            }
            func send(_ events: [String], expect status: Int = 200) async throws -> T.Reply {
                let reply = try await T.post(client, "[" + events.joined(separator: ",") + "]", token: fx.token)
                XCTAssertEqual(reply.status, status, "\(reply.json)")
                return reply
            }
            let h: Int64 = 3600
            let batch = [
                event("t1", "tokens", s2 + 1 * h, "800", #"{"model": "gpt-4o", "region": "eu"}"#),
                event("t2", "tokens", s2 + 2 * h, "500", #"{"model": "gpt-4o", "region": "us"}"#),
                event("t3", "tokens", s2 + 3 * h, "300", #"{"model": "mini"}"#),
                event("t4", "tokens", s2 + 4 * h, "100", #"{"model": "mini", "region": "eu"}"#),
                event("t5", "tokens", s2 + 5 * h, "70", #"{"region": "eu"}"#),
                event("d1", "disk", s2, "10"),
                event("d2", "disk", s2 + 240 * h, "4"),
            ]
            let first = try await send(batch)
            XCTAssertEqual(first.summary("accepted"), 7)
            // The same batch again (a client retry): every event a duplicate, nothing counted twice.
            let again = try await send(batch)
            XCTAssertEqual(again.summary("duplicate"), 7, "\(again.json)")
            let cancel = try await RollupAPITests.cancel(client, RollupAPITests.cancelBody(fx, "t4"), token: fx.token)
            XCTAssertEqual(cancel.status, 200, "\(cancel.json)")
            _ = try Rollup.drain(c)
            // An event of an hour already rolled up (t6, model "other": the default price).
            _ = try await send([event("t6", "tokens", s2 + 1 * h + 600, "30", #"{"model": "other", "region": "us"}"#)])
            _ = try Rollup.drain(c)

            // Usage by model through the API, before any close.
            func iso(_ t: Int64) -> String { RFC3339Timestamp(epochMicroseconds: t * 1_000_000).iso8601 }
            let usage = try await RollupAPITests.usage(
                client, "customer=\(customer)&meter=\(p).tokens&from=\(iso(s2))&to=\(iso(s1))&granularity=month&group_by=model",
                token: fx.token)
            XCTAssertEqual(usage.status, 200, "\(usage.json)")
            let byModel = Dictionary(uniqueKeysWithValues: (usage.json["data"]?.arrayValue ?? []).map {
                ($0["dimensions"]?["model"]?.stringValue ?? "(none)", $0["quantity"]?.stringValue ?? "")
            })
            XCTAssertEqual(byModel, ["gpt-4o": "1300", "mini": "300", "other": "30", "(none)": "70"], "\(usage.json)")

            // Close two months ago.
            XCTAssertEqual(try c.execute("select outcome from meter.period_close($1, $2, interval '0')", [m2, customer]).single().string("outcome"),
                           "closed")
            // By hand. gpt-4o: 800 + 500 = 1300 tokens, 1000 x 2 + 300 x 1 = 2300 cents. mini: 300
            // (t4 cancelled) x 0.5 = 150. The rest: 70 (no model) + 30 ("other") = 100 x 0.1 = 10.
            // Disk: 10 GB for the first 240 hours, then 4 GB to the month's end: GB-hours
            // 2400 + 4 x (hours - 240), at 0.5 a GB-hour.
            let hours2 = (s1 - s2) / h, hours1 = (s0 - s1) / h
            let gbHours2 = 2400 + 4 * (hours2 - 240), gbHours1 = 4 * hours1
            func lines(_ period: String) throws -> [String] {
                try c.execute("""
                    select l.kind, l.description, l.event_count, trim_scale(l.quantity)::text as q, l.amount
                    from meter.invoice_lines l join meter.invoices i on i.id = l.invoice_id
                    join meter.customers x on x.id = i.customer_id
                    where x.external_id = $1 and i.period = $2 order by l.line_no
                    """, [customer, period]).rows.map {
                    "\(try $0.string("kind")) \(try $0.string("description")) | \(try $0.int("event_count")) events, \(try $0.string("q")), \(try $0.int("amount"))"
                }
            }
            XCTAssertEqual(try lines(m2), [
                "usage \(p).disk: \(gbHours2) (time_weighted_sum, per_unit) | 2 events, \(gbHours2), \(gbHours2 / 2)",
                "usage \(p).tokens [model=gpt-4o]: 1300 (sum, graduated) | 2 events, 1300, 2300",
                "usage \(p).tokens [model=mini]: 300 (sum, per_unit) | 1 events, 300, 150",
                "usage \(p).tokens [other]: 100 (sum, per_unit) | 2 events, 100, 10",
            ])

            // After the close: a gpt-4o event of two months ago (200 more: 1500 -> 2500, +200).
            _ = try await send([event("t7", "tokens", s2 + 6 * h, "200", #"{"model": "gpt-4o", "region": "eu"}"#)])
            _ = try Rollup.drain(c)
            XCTAssertEqual(try c.execute("select outcome from meter.period_close($1, $2, interval '0')", [m1, customer]).single().string("outcome"),
                           "closed")
            // Last month: no tokens; 4 GB held all month; the adjustment of gpt-4o's line only.
            XCTAssertEqual(try lines(m1), [
                "usage \(p).disk: \(gbHours1) (time_weighted_sum, per_unit) | 0 events, \(gbHours1), \(gbHours1 / 2)",
                "usage \(p).tokens [model=gpt-4o]: 0 (sum, graduated) | 0 events, 0, 0",
                "usage \(p).tokens [model=mini]: 0 (sum, per_unit) | 0 events, 0, 0",
                "usage \(p).tokens [other]: 0 (sum, per_unit) | 0 events, 0, 0",
                "adjustment \(p).tokens [model=gpt-4o]: adjustment for \(m2) (events or cancellations after its close): 1300 -> 1500 | 1 events, 200, 200",
            ])
            let totals = try c.execute("""
                select i.period, i.total from meter.invoices i join meter.customers x on x.id = i.customer_id
                where x.external_id = $1 order by i.period
                """, [customer]).rows.map { "\(try $0.string("period"))=\(try $0.int("total"))" }
            XCTAssertEqual(totals, ["\(m2)=\(2300 + 150 + 10 + gbHours2 / 2)", "\(m1)=\(gbHours1 / 2 + 200)"])

            let statuses = try c.execute("""
                select line, status from meter.reconciliation where customer = $1 order by period, line
                """, [customer]).rows.map { "\(try $0.string("line")): \(try $0.string("status"))" }
            XCTAssertEqual(statuses.count, 8)
            XCTAssertEqual(statuses.filter { !$0.hasSuffix(": MATCH") }, [], "\(statuses)")
            let dups = try c.execute("select sum(duplicates_rejected)::bigint as n from meter.reconciliation where customer = $1 and period = $2",
                                     [customer, m2]).single().int("n")
            XCTAssertEqual(dups, 7, "the seven redeliveries, each on its own line's row")
            let differing = try c.execute("select count(*) as n from meter.rollup_verify(to_timestamp($1::bigint), to_timestamp($2::bigint))",
                                          [s2, s0]).single().int("n")
            XCTAssertEqual(differing, 0, "rollup_verify finds nothing")
        }
    }
}
