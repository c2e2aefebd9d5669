import Foundation
import PGClient

/// The per-customer reconciliation of a closed period (the view meter.reconciliation), with totals,
/// every discrepancy explained and a sign-off block, as Markdown, CSV or HTML (with a chart of daily
/// usage: raw vs rolled up vs invoiced events). Deterministic: a report depends on the database's
/// content only (no clock, stable order). Read by `meterctl reconcile` and by the replay.
package struct ReconciliationReport: Sendable {
    package let period: String
    /// How the data was produced, for the report's header (set by the replay).
    package let source: String?
    package let rows: [Row]
    /// Events per day of the period, for the HTML chart (empty unless loaded `withChart`).
    package let daily: [Day]

    package init(period: String, source: String?, rows: [Row], daily: [Day]) {
        self.period = period
        self.source = source
        self.rows = rows
        self.daily = daily
    }

    package struct Day: Sendable {
        package let day: String, raw: String, rolled: String, invoiced: String
    }

    /// No invoice of the period is closed.
    package struct NotClosed: Error, CustomStringConvertible {
        package let period: String
        package var description: String { "period \(period) has no closed invoice: run meterctl close --period \(period) first" }
    }

    package enum Format: String, CaseIterable, Sendable { case md, csv, html }

    package struct Row: Sendable {
        package var values: [String: String]
        package init(values: [String: String]) { self.values = values }
        package subscript(_ k: String) -> String { values[k] ?? "" }
    }

    package static let columns: [(key: String, title: String)] = [
        ("customer", "customer"), ("meter", "meter"), ("currency", "currency"), ("raw_events", "raw events"),
        ("raw_quantity", "raw quantity"), ("duplicates_rejected", "duplicates rejected"),
        ("late_after_close", "late after close"), ("rollup_quantity", "rollup quantity"),
        ("synced_quantity", "synced to engine"), ("engine_invoice_quantity", "engine invoice quantity"),
        ("engine_invoice_amount", "engine invoice amount"), ("invoiced_quantity", "invoiced quantity"),
        ("invoiced_amount", "invoiced amount"), ("expected_amount", "expected amount"), ("difference", "difference"),
        ("status", "status"),
    ]


    /// What "synced to engine" is, for the reports' header.
    package static let syncedNote = "\"synced to engine\" is the engine's own figure (its meter event summaries, or usage record summaries on the legacy API), fetched before the close."

    /// Reads the period's figures once (the chart's daily query only when asked: html).
    package static func load(_ c: PGConnection, period: String, source: String? = nil, withChart: Bool) throws -> ReconciliationReport {
        let (rows, daily) = try { () throws -> ([Row], [Day]) in
            let money = { (col: String) in
                "coalesce(pg_catalog.round((\(col))::numeric / pg_catalog.power(10::numeric, cu.minor_unit), cu.minor_unit)::text, '')"
            }
            let r = try c.execute("""
                select r.customer, r.meter, r.currency, r.raw_events::text, r.raw_quantity::text, r.duplicates_rejected::text,
                       r.late_after_close::text, r.rollup_quantity::text, coalesce(r.synced_quantity::text, '') as synced_quantity,
                       coalesce(r.acknowledged_quantity::text, '') as acknowledged_quantity,
                       coalesce(r.engine_invoice_quantity::text, '') as engine_invoice_quantity,
                       \(money("r.engine_invoice_amount")) as engine_invoice_amount, r.invoiced_quantity::text,
                       \(money("r.invoiced_amount")) as invoiced_amount, \(money("r.expected_amount")) as expected_amount,
                       \(money("r.difference")) as difference, r.status, cu.minor_unit::text as minor_unit,
                       r.invoiced_amount::text as invoiced_minor, r.expected_amount::text as expected_minor
                from meter.reconciliation r join meter.currencies cu on cu.code = r.currency
                where r.period = $1
                order by r.customer collate "C", r.meter collate "C"
                """, [period])
            let keys = r.columns
            let rows = try r.rows.map { row in
                Row(values: Dictionary(uniqueKeysWithValues: try keys.map { ($0, try row.optionalString($0) ?? "") }))
            }
            guard withChart else { return (rows, []) }
            // Daily events: raw (net of cancellations), rolled up, and on closed invoices.
            let d = try c.execute("""
                with p as (select i.customer_id, i.period_start, i.period_end from meter.invoices i where i.period = $1),
                days as (select distinct (pg_catalog.date_trunc('day', h, 'UTC'))::date as day
                         from p, pg_catalog.generate_series(p.period_start, p.period_end - interval '1 hour', interval '1 hour') h)
                select days.day::text as day,
                       (select pg_catalog.count(*) from meter.events e join p on p.customer_id = e.customer_id
                         where e.occurred_at >= p.period_start and e.occurred_at < p.period_end
                           and e.occurred_at >= days.day and e.occurred_at < days.day + 1
                           and not exists (select 1 from meter.event_cancellations x where x.event_id = e.id))::text as raw,
                       (select coalesce(pg_catalog.sum(r.event_count), 0) from meter.rollup_hourly r join p on p.customer_id = r.customer_id
                         where r.hour >= p.period_start and r.hour < p.period_end
                           and r.hour >= days.day and r.hour < days.day + 1)::text as rolled,
                       (select coalesce(pg_catalog.sum(r.event_count), 0) from meter.rollup_hourly r join p on p.customer_id = r.customer_id
                         where r.hour >= p.period_start and r.hour < p.period_end and r.hour >= days.day and r.hour < days.day + 1
                           and exists (select 1 from meter.invoices i join meter.invoice_lines l on l.invoice_id = i.id
                                       where i.customer_id = r.customer_id and i.period = $1 and l.meter_id = r.meter_id))::text as invoiced
                from days order by days.day
                """, [period]).rows.map { Day(day: try $0.string("day"), raw: try $0.string("raw"), rolled: try $0.string("rolled"), invoiced: try $0.string("invoiced")) }
            return (rows, d)
        }()
        guard !rows.isEmpty else { throw NotClosed(period: period) }
        return ReconciliationReport(period: period, source: source, rows: rows, daily: daily)
    }

    /// Whether any row is not a MATCH.
    package var hasMismatch: Bool { rows.contains { $0["status"] != "MATCH" } }

    package func render(_ format: Format) -> String {
        switch format {
        case .csv: csv()
        case .html: html()
        case .md: markdown()
        }
    }

    /// Writes the report in `format` to `path`; returns the line saying so.
    package func write(_ format: Format, to path: String) throws -> String {
        try render(format).write(toFile: path, atomically: true, encoding: .utf8)
        return "wrote \(path) (\(rows.count) rows, \(rows.filter { $0["status"] == "MATCH" }.count) MATCH)"
    }

    // MARK: formats

    package func totals() -> [(currency: String, invoiced: String, expected: String, match: Int, mismatch: Int, customers: Int)] {
        var out: [(String, String, String, Int, Int, Int)] = []
        for cur in Set(rows.map { $0["currency"] }).sorted() {
            let rs = rows.filter { $0["currency"] == cur }
            let minor = Int(rs.first?["minor_unit"] ?? "2") ?? 2
            func sum(_ k: String) -> String {
                // integer minor units, printed with the currency's decimals (no floating point)
                let total = rs.reduce(Int64(0)) { $0 + (Int64($1[k]) ?? 0) }
                var unit: Int64 = 1
                for _ in 0..<minor { unit *= 10 }
                let whole = "\(total / unit)", frac = String(abs(total % unit))
                let sign = total < 0 && total / unit == 0 ? "-" : ""
                return minor == 0 ? whole : sign + whole + "." + String(repeating: "0", count: minor - frac.count) + frac
            }
            out.append((cur, sum("invoiced_minor"), sum("expected_minor"), rs.filter { $0["status"] == "MATCH" }.count,
                        rs.filter { $0["status"] != "MATCH" }.count, Set(rs.map { $0["customer"] }).count))
        }
        return out
    }

    package func discrepancies() -> [String] {
        rows.filter { $0["status"] != "MATCH" }.map { r in
            let cause = r["status"].replacingOccurrences(of: "MISMATCH: ", with: "")
            var why: String
            switch cause {
            case "late-after-close not adjusted yet":
                why = "events or cancellations arrived after the close (meter.late_after_close); the next close adds the adjustment line"
            case "rollup differs from raw events":
                why = "raw events \(r["raw_events"]) / quantity \(r["raw_quantity"]) vs rollup \(r["rollup_quantity"]): events not rolled up yet, or a rollup fault (meterctl rollup verify)"
            case "unsynced hours": why = "hours of the period not yet acknowledged by the billing engine (meterctl sync status)"
            case "dead-letter": why = "hours parked as dead in the outbox (meterctl sync status; fix, then meterctl sync retry)"
            case "engine usage not fetched":
                why = "hours went to the billing engine but its own figure was never asked (meterctl reconcile --period \(period) --billing-api-base ...)"
            case "engine quantity differs":
                why = "the engine holds \(r["synced_quantity"]) (its usage summaries) against \(r["invoiced_quantity"]) invoiced at close"
            case "acknowledged quantity differs":
                why = "the engine's figure agrees, but the outbox recorded \(r["acknowledged_quantity"]) acknowledged: a sync defect (meterctl sync status)"
            case "dead-letter, older than the engine takes":
                why = "hours parked as dead because the engine no longer takes them (35 days): bill them from our invoice (docs/runbook.md)"
            case "engine amount differs": why = "the engine invoiced \(r["engine_invoice_amount"]) against \(r["expected_amount"]) expected"
            default: why = "invoiced \(r["invoiced_amount"]) (quantity \(r["invoiced_quantity"])) against \(r["expected_amount"]) expected from the rollups"
            }
            return "\(r["customer"]) / \(r["meter"]): \(cause): \(why)"
        }
    }

    package func markdown() -> String {
        var s = "# Reconciliation, period \(period)\n\n"
        if let source { s += "Data: `\(source)`. " }
        s += "Command: `meterctl reconcile --period \(period) --format md`. Source: the view `meter.reconciliation`. "
        s += "Quantities in the meter's unit; amounts in the currency's major unit. "
        s += "\(Self.syncedNote)\n\n"
        s += "| " + Self.columns.map(\.title).joined(separator: " | ") + " |\n"
        s += "|" + Self.columns.map { _ in "---" }.joined(separator: "|") + "|\n"
        // A cell's "|" would end it early, and a line break would end the row: both escaped.
        func cell(_ v: String) -> String {
            v.isEmpty ? "–" : v.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\r\n", with: " ")
                .replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ")
        }
        for r in rows { s += "| " + Self.columns.map { cell(r[$0.key]) }.joined(separator: " | ") + " |\n" }
        s += "\n## Totals\n\n| currency | customers | invoiced | expected | MATCH | MISMATCH |\n|---|---|---|---|---|---|\n"
        for t in totals() { s += "| \(t.currency) | \(t.customers) | \(t.invoiced) | \(t.expected) | \(t.match) | \(t.mismatch) |\n" }
        let d = discrepancies()
        s += "\n## Discrepancies\n\n" + (d.isEmpty ? "None: every customer and meter MATCHes.\n" : d.map { "- " + $0 }.joined(separator: "\n") + "\n")
        s += "\n## Sign-off\n\n| role | name | signature | date |\n|---|---|---|---|\n| Prepared by (billing operations) | | | |\n| Reviewed by (finance) | | | |\n| Approved by (CFO) | | | |\n"
        return s
    }

    package func csv() -> String {
        // Quoted when it holds a comma, a quote or a line break (by scalar: Swift sees "\r\n" as one
        // Character, equal to neither "\r" nor "\n").
        func field(_ v: String) -> String {
            v.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" })
                ? "\"" + v.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : v
        }
        var s = (["period"] + Self.columns.map(\.key)).joined(separator: ",") + "\n"
        for r in rows { s += ([period] + Self.columns.map { field(r[$0.key]) }).joined(separator: ",") + "\n" }
        return s
    }

    package func html() -> String {
        func esc(_ v: String) -> String {
            v.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        var s = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Reconciliation \(period)</title>\n"
        s += "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        s += "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:nth-child(-n+3),th{text-align:left}"
        s += ".MATCH{color:#176b2c}.MISMATCH{color:#b00020;font-weight:bold}</style></head><body>\n"
        s += "<h1>Reconciliation, period \(period)</h1>\n<p>" + (source.map { "Data: <code>\(esc($0))</code>. " } ?? "")
        s += "Command: <code>meterctl reconcile --period \(period) --format html</code>. "
        s += "Source: <code>meter.reconciliation</code>. Amounts in the currency's major unit. \(esc(Self.syncedNote))</p>\n"
        // Chart: daily events, raw vs rolled up vs invoiced (inline SVG, no script).
        let values: [Double] = daily.flatMap { d -> [Double] in [Double(d.raw) ?? 0, Double(d.rolled) ?? 0, Double(d.invoiced) ?? 0] }
        let maxV: Double = max(values.max() ?? 1, 1)
        let w = 760.0, h = 220.0, left = 50.0, bottom = 30.0
        let step = daily.count > 1 ? (w - left - 10) / Double(daily.count - 1) : 0
        func path(_ k: Int, _ color: String, _ dash: String) -> String {
            let pts = daily.enumerated().map { i, d -> String in
                let v = Double([d.raw, d.rolled, d.invoiced][k]) ?? 0
                return String(format: "%.1f,%.1f", left + Double(i) * step, h - bottom - v / maxV * (h - bottom - 10))
            }.joined(separator: " ")
            return "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" stroke-dasharray=\"\(dash)\" points=\"\(pts)\"/>"
        }
        s += "<h2>Daily events</h2>\n<svg width=\"\(Int(w))\" height=\"\(Int(h))\" role=\"img\" aria-label=\"daily events\">"
        s += "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - 10)\" y2=\"\(h - bottom)\" stroke=\"#888\"/>"
        s += "<text x=\"4\" y=\"14\" font-size=\"11\">\(Int(maxV))</text><text x=\"4\" y=\"\(h - bottom)\" font-size=\"11\">0</text>"
        if let first = daily.first, let last = daily.last {
            s += "<text x=\"\(left)\" y=\"\(h - 8)\" font-size=\"11\">\(first.day)</text><text x=\"\(w - 80)\" y=\"\(h - 8)\" font-size=\"11\">\(last.day)</text>"
        }
        s += path(0, "#1f77b4", "") + path(1, "#ff7f0e", "6 3") + path(2, "#2ca02c", "2 4") + "</svg>\n"
        s += "<p><span style=\"color:#1f77b4\">━ raw events (net of cancellations)</span> · <span style=\"color:#ff7f0e\">╍ rolled up</span> · <span style=\"color:#2ca02c\">┈ invoiced</span></p>\n"
        s += "<h2>Per customer and meter</h2>\n<table><tr>" + Self.columns.map { "<th>\(esc($0.title))</th>" }.joined() + "</tr>\n"
        for r in rows {
            s += "<tr>" + Self.columns.map { c in
                let v = r[c.key].isEmpty ? "–" : r[c.key]
                return c.key == "status" ? "<td class=\"\(v.hasPrefix("MATCH") ? "MATCH" : "MISMATCH")\">\(esc(v))</td>" : "<td>\(esc(v))</td>"
            }.joined() + "</tr>\n"
        }
        s += "</table>\n<h2>Totals</h2>\n<table><tr><th>currency</th><th>customers</th><th>invoiced</th><th>expected</th><th>MATCH</th><th>MISMATCH</th></tr>\n"
        for t in totals() { s += "<tr><td>\(t.currency)</td><td>\(t.customers)</td><td>\(t.invoiced)</td><td>\(t.expected)</td><td>\(t.match)</td><td>\(t.mismatch)</td></tr>\n" }
        let d = discrepancies()
        s += "</table>\n<h2>Discrepancies</h2>\n" + (d.isEmpty ? "<p>None: every customer and meter MATCHes.</p>\n" : "<ul>" + d.map { "<li>\(esc($0))</li>" }.joined() + "</ul>\n")
        s += "<h2>Sign-off</h2>\n<table><tr><th>role</th><th>name</th><th>signature</th><th>date</th></tr>"
        for role in ["Prepared by (billing operations)", "Reviewed by (finance)", "Approved by (CFO)"] {
            s += "<tr><td>\(role)</td><td>&nbsp;</td><td>&nbsp;</td><td>&nbsp;</td></tr>"
        }
        return s + "</table>\n</body></html>\n"
    }
}
