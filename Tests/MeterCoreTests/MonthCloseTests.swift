import Foundation
import HummingbirdTesting
import XCTest
import PGClient
import MeterWire
import MeterCore
import MeterDevKit

/// Last month, closed: events sent through the HTTP API (with redeliveries, cancellations and
/// events on both sides of each customer's month edge), rolled up, closed; every invoice line is
/// compared with figures recomputed here, in Swift, from the events this test generated, with its
/// own implementation of the four price models and of the rounding rule (not the SQL under test),
/// and of the two gauges: latest (the last event by time, then key) and time_weighted_sum (each
/// value held until the next event, integrated per UTC hour to 6 decimals).
final class MonthCloseTests: XCTestCase {
    struct Sent { let customer: String; let meter: String; let key: String; let at: Int64; let value: Decimal; let user: String? }

    func testCloseMatchesAnIndependentComputationFromTheSentEvents() async throws {
        try await APIHarness.withApp({ $0.limits.maxPastSeconds = 70 * 86_400 }) { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            defer { c.close() }
            let p = fx.prefix
            let customers = ["\(p)-utc", "\(p)-paris", "\(p)-ny"]
            for (cu, tz) in zip(customers, ["UTC", "Europe/Paris", "America/New_York"]) {
                try c.execute("select meter.customer_upsert($1, null, $2)", [cu, tz])
            }
            let meters = ["calls": "count", "gb": "sum", "seats": "max", "users": "unique_count",
                          "seatsnow": "latest", "storage": "time_weighted_sum"]
            for (m, agg) in meters.sorted(by: { $0.key < $1.key }) {
                try c.execute("select meter.meter_upsert($1, $2, $3)", ["\(p).\(m)", agg, agg == "unique_count" ? "user" : nil])
            }
            let period = try c.execute("select to_char(date_trunc('month', now(), 'UTC') - interval '1 month', 'YYYY-MM') as p").single().string("p")
            let plan = "\(p)-plan"
            try c.execute("select meter.plan_upsert($1, 'eur')", [plan])
            let tiers = #"[{"up_to": 50, "unit_amount": 3, "flat_amount": 10}, {"up_to": 200, "unit_amount": 1.25}, {"up_to": null, "unit_amount": 0.5}]"#
            try c.execute("select meter.plan_price_set($1, $2, 'graduated', null, null, $3::jsonb)", [plan, "\(p).calls", tiers])
            try c.execute("select meter.plan_price_set($1, $2, 'per_unit', 0.35)", [plan, "\(p).gb"])
            try c.execute("select meter.plan_price_set($1, $2, 'volume', null, null, $3::jsonb)", [plan, "\(p).seats", tiers])
            try c.execute("select meter.plan_price_set($1, $2, 'package', 125, 7)", [plan, "\(p).users"])
            try c.execute("select meter.plan_price_set($1, $2, 'per_unit', 40)", [plan, "\(p).seatsnow"])
            try c.execute("select meter.plan_price_set($1, $2, 'per_unit', 0.0125)", [plan, "\(p).storage"])
            for cu in customers { try c.execute("select meter.customer_subscribe($1, $2, $3)", [cu, plan, period]) }

            // Each customer's period bounds, in its timezone.
            var bounds: [String: (Int64, Int64)] = [:]
            for cu in customers {
                let r = try c.execute("""
                    select extract(epoch from b.period_start)::bigint as s, extract(epoch from b.period_end)::bigint as e
                    from meter.customers x, meter.billing_period(x.id, $2) b where x.external_id = $1
                    """, [cu, period]).single()
                bounds[cu] = (try r.int("s"), try r.int("e"))
            }
            // Generate: a random spread over the period, plus both sides of both edges.
            var rng = SeededRandom(seed: 4242)
            var sent: [Sent] = []
            for cu in customers {
                let (s, e) = bounds[cu]!
                for i in 0..<120 {
                    let m = ["calls", "gb", "seats", "users", "seatsnow", "storage"][i % 6]
                    var at = s + Int64(rng.next() % UInt64(e - s))
                    if i == 0 { at = s } else if i == 1 { at = e - 1 } else if i == 2 { at = e } else if i == 3 { at = s - 1 }
                    // a gauge's value held into the period from before it, and a last value near its end
                    else if i == 11 { at = s - 1800 } else if i == 10 { at = e - 1 } else if i == 17 { at = e + 600 }
                    let cents = Int(rng.next() % 10_000)
                    let value = m == "calls" || m == "users" ? Decimal(1) : Decimal(cents) / 100
                    sent.append(Sent(customer: cu, meter: m, key: "\(cu)-\(i)", at: at, value: value,
                                     user: m == "users" ? "u\(rng.next() % 9)" : nil))
                }
            }
            func json(_ x: Sent) -> String {
                let t = RFC3339Timestamp(epochMicroseconds: x.at * 1_000_000).iso8601
                let props = x.user.map { #","properties":{"user":"\#($0)"}"# } ?? ""
                return #"{"customer":"\#(x.customer)","meter":"\#(p).\#(x.meter)","idempotency_key":"\#(x.key)","occurred_at":"\#(t)","value":"\#(x.value)"\#(props)}"#
            }
            // Out of order, in batches, each batch delivered twice.
            var order = Array(sent.indices)
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            for chunk in stride(from: 0, to: order.count, by: 50) {
                let body = "[" + order[chunk..<min(chunk + 50, order.count)].map { json(sent[$0]) }.joined(separator: ",") + "]"
                for _ in 0..<2 {
                    let r = try await APIHarness.post(client, body, token: fx.token)
                    XCTAssertEqual(r.status, 200, "\(r.json)")
                }
            }
            // Cancel every 10th event.
            let cancelled = Set(sent.indices.filter { $0 % 10 == 5 }.map { sent[$0].key })
            for cu in customers {
                let items = sent.filter { $0.customer == cu && cancelled.contains($0.key) }
                    .map { #"{"customer":"\#(cu)","idempotency_key":"\#($0.key)"}"# }
                try c.execute("select count(*) from meter.event_cancel($1::jsonb)", ["[" + items.joined(separator: ",") + "]"])
            }
            _ = try Rollup.drain(c)

            for cu in customers {
                let r = try c.execute("select outcome from meter.period_close($1, $2, interval '0')", [period, cu]).single()
                XCTAssertEqual(try r.string("outcome"), "closed")
            }

            // The independent computation.
            func price(_ m: String, _ q: Decimal) -> Decimal {
                let tierList: [(Decimal?, Decimal, Decimal)] = [(50, 3, 10), (200, 1.25, 0), (nil, 0.5, 0)]
                if q == 0 { return 0 }
                switch m {
                case "gb": return q * Decimal(string: "0.35")!
                case "seatsnow": return q * 40
                case "storage": return q * Decimal(string: "0.0125")!
                case "users":
                    var blocks = q / 7
                    var r = Decimal(); NSDecimalRound(&r, &blocks, 0, .up)
                    return r * 125
                case "calls":
                    var total = Decimal(0), lower = Decimal(0)
                    for (up, unit, flat) in tierList {
                        if q <= lower { break }
                        total += (min(q, up ?? q) - lower) * unit + flat
                        guard let up else { break }
                        lower = up
                    }
                    return total
                default:  // seats: volume
                    for (up, unit, flat) in tierList where up == nil || q <= up! { return q * unit + flat }
                    return 0
                }
            }
            func rounded(_ x: Decimal) -> Int64 {
                var v = x, r = Decimal()
                NSDecimalRound(&r, &v, 0, .plain)  // half away from zero for these non-negative amounts
                return Int64(truncating: r as NSDecimalNumber)
            }
            // The time-weighted gauge: each value (events by time, then key) held until the next
            // one, integrated over each UTC hour of [s, e), rounded per hour to 6 decimals.
            func integral(_ events: [Sent], _ s: Int64, _ e: Int64) -> Decimal {
                let ordered = events.sorted { ($0.at, $0.key) < ($1.at, $1.key) }
                var total = Decimal(0)
                for h in stride(from: s, to: e, by: 3600) {
                    var hour = Decimal(0)
                    for (k, x) in ordered.enumerated() {
                        let from = max(x.at, h), to = min(k + 1 < ordered.count ? ordered[k + 1].at : e, h + 3600, e)
                        if to > from { hour += x.value * Decimal(to - from) / 3600 }
                    }
                    var r = Decimal()
                    NSDecimalRound(&r, &hour, 6, .plain)
                    total += r
                }
                return total
            }
            var checked = 0
            for cu in customers {
                let (s, e) = bounds[cu]!
                for m in ["calls", "gb", "seats", "users", "seatsnow", "storage"] {
                    let mine = sent.filter { $0.customer == cu && $0.meter == m && $0.at >= s && $0.at < e && !cancelled.contains($0.key) }
                    let quantity: Decimal = switch m {
                    case "calls": Decimal(mine.count)
                    case "gb": mine.reduce(0) { $0 + $1.value }
                    case "seats": mine.map(\.value).max() ?? 0
                    case "seatsnow": mine.max { ($0.at, $0.key) < ($1.at, $1.key) }?.value ?? 0
                    case "storage": integral(sent.filter { $0.customer == cu && $0.meter == m && !cancelled.contains($0.key) }, s, e)
                    default: Decimal(Set(mine.compactMap(\.user)).count)
                    }
                    let line = try c.execute("""
                        select l.event_count, l.quantity::text as q, l.amount from meter.invoice_lines l
                        join meter.invoices i on i.id = l.invoice_id join meter.customers x on x.id = i.customer_id
                        join meter.meters mm on mm.id = l.meter_id
                        where x.external_id = $1 and mm.code = $2 and i.period = $3 and l.kind = 'usage'
                        """, [cu, "\(p).\(m)", period]).single()
                    XCTAssertEqual(try line.int("event_count"), Int64(mine.count), "\(cu) \(m) events")
                    XCTAssertEqual(Decimal(string: try line.string("q")), quantity, "\(cu) \(m) quantity")
                    XCTAssertEqual(try line.int("amount"), rounded(price(m, quantity)), "\(cu) \(m) amount for \(quantity)")
                    checked += 1
                }
            }
            XCTAssertEqual(checked, 18)
            let statuses = try c.execute("""
                select status, count(*) as n from meter.reconciliation where period = $1 and customer like $2 group by 1
                """, [period, "\(p)-%"]).rows.map { "\(try $0.string("status"))=\(try $0.int("n"))" }
            XCTAssertEqual(statuses, ["MATCH=18"])
            let dups = try c.execute("select sum(duplicates_rejected) as n from meter.reconciliation where period = $1 and customer like $2",
                                     [period, "\(p)-%"]).single().int("n")
            XCTAssertGreaterThan(dups, 0, "the redeliveries are counted")
            // Closing again creates nothing.
            for cu in customers {
                XCTAssertEqual(try c.execute("select outcome from meter.period_close($1, $2, interval '0')", [period, cu]).single().string("outcome"),
                               "already_closed")
            }
        }
    }
}

/// The report's formats keep a row a row whatever a customer id holds: CSV quotes a field with a
/// comma, a quote or any line break ("\r\n" included, one Character in Swift); Markdown escapes
/// "|" and flattens line breaks.
final class ReconciliationFormatTests: XCTestCase {
    func testHostileCellsStayInTheirCell() {
        var values: [String: String] = [:]
        for c in ReconciliationReport.columns { values[c.key] = "0" }
        values["customer"] = "acme|evil\r\nnext"
        values["meter"] = "calls,\"x\""
        values["status"] = "MATCH"
        values["raw_events"] = "1"  // a line with usage: listed in md (lines without any are counted, not listed)
        let report = ReconciliationReport(period: "2026-11", source: nil, rows: [.init(values: values)], daily: [])
        // Byte-wise (Swift compares Characters, and "\r\n" is one): the customer field is quoted
        // with its line break inside, and so is the meter with its comma and doubled quotes.
        func has(_ text: String, _ part: String) -> Bool { Data(text.utf8).range(of: Data(part.utf8)) != nil }
        XCTAssertTrue(has(report.csv(), "\n2026-11,\"acme|evil\r\nnext\",\"calls,\"\"x\"\"\",0,"), report.csv())
        let mdRow = report.markdown().components(separatedBy: "\n").first { $0.contains("acme") } ?? ""
        // Unescaped pipes delimit the cells: one more than the columns.
        var pipes = 0, escaped = false
        for ch in mdRow.unicodeScalars { if ch == "|" && !escaped { pipes += 1 }; escaped = ch == "\\" }
        XCTAssertEqual(pipes, ReconciliationReport.columns.count + 1, mdRow)
        XCTAssertTrue(mdRow.contains("acme\\|evil next"), mdRow)
    }
}

