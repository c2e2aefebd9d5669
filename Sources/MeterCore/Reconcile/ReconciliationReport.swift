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

    /// One meter's day: events net of cancellations, as raw events and as rolled up (the chart
    /// marks the days where they differ), and the day's rolled-up quantity.
    package struct Day: Sendable {
        package let meter: String, day: String, raw: String, rolled: String, quantity: String
        package init(meter: String, day: String, raw: String, rolled: String, quantity: String) {
            self.meter = meter; self.day = day; self.raw = raw; self.rolled = rolled; self.quantity = quantity
        }
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
        ("cancelled_events", "cancelled events"),
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
            // (the view's estimated cost is high enough for Postgres to JIT-compile it, about a
            // second on every report of a large month, for nothing: this session does without)
            try c.execute("set jit = off")
            let r = try c.execute("""
                select r.customer, r.line as meter, r.currency, r.invoice_id::text, r.raw_events::text, r.raw_quantity::text,
                       r.duplicates_rejected::text, r.cancelled_events::text,
                       r.late_after_close::text, r.rollup_quantity::text, coalesce(r.synced_quantity::text, '') as synced_quantity,
                       coalesce(r.acknowledged_quantity::text, '') as acknowledged_quantity,
                       coalesce(r.engine_invoice_quantity::text, '') as engine_invoice_quantity,
                       \(money("r.engine_invoice_amount")) as engine_invoice_amount, r.invoiced_quantity::text,
                       \(money("r.invoiced_amount")) as invoiced_amount, \(money("r.expected_amount")) as expected_amount,
                       \(money("r.difference")) as difference, r.status, cu.minor_unit::text as minor_unit,
                       r.invoiced_amount::text as invoiced_minor, r.expected_amount::text as expected_minor,
                       r.difference::text as difference_minor, coalesce(r.engine_invoice_amount::text, '') as engine_minor
                from meter.reconciliation r join meter.currencies cu on cu.code = r.currency
                where r.period = $1
                order by r.customer collate "C", r.meter collate "C", r.price_filter = '{}', r.price_filter::text collate "C"
                """, [period])
            let keys = r.columns
            let rows = try r.rows.map { row in
                Row(values: Dictionary(uniqueKeysWithValues: try keys.map { ($0, try row.optionalString($0) ?? "") }))
            }
            guard withChart else { return (rows, []) }
            // Per meter and UTC day of the period's invoices: events net of cancellations as the
            // ledger counted them (meter.rollup_ledger: no raw event is read) and as rolled up, and
            // the rolled-up quantity (Σ for sum meters, events for
            // count and unique_count meters, the day's largest hourly figure for max and latest
            // meters: a daily view across customers, not a billed figure).
            let d = try c.execute("""
                with p as (select i.customer_id, i.period_start, i.period_end from meter.invoices i where i.period = $1),
                rolled as (
                    select m.code as meter, (pg_catalog.date_trunc('day', r.hour, 'UTC'))::date as day,
                           pg_catalog.sum(r.event_count) as events,
                           case when pg_catalog.bool_and(v.aggregation in ('count', 'sum', 'unique_count'))
                                then pg_catalog.sum(case v.aggregation when 'sum' then r.quantity else r.event_count::numeric end)
                                else pg_catalog.max(coalesce(r.max_value, r.latest_value, r.event_count::numeric)) end as quantity
                    from meter.rollup_hourly r join p on p.customer_id = r.customer_id
                    join meter.meters m on m.id = r.meter_id
                    join meter.meter_version_ranges v on v.meter_id = r.meter_id and r.hour >= v.effective_from and r.hour < v.effective_until
                    where r.hour >= p.period_start and r.hour < p.period_end
                    group by 1, 2),
                raw as (
                    select m.code as meter, (pg_catalog.date_trunc('day', l.hour, 'UTC'))::date as day,
                           pg_catalog.sum(l.events - l.cancelled) as events
                    from meter.rollup_ledger l join p on p.customer_id = l.customer_id
                    join meter.meters m on m.id = l.meter_id
                    where l.hour >= p.period_start and l.hour < p.period_end
                    group by 1, 2)
                select coalesce(r.meter, w.meter) as meter, coalesce(r.day, w.day)::text as day,
                       coalesce(w.events, 0)::text as raw, coalesce(r.events, 0)::text as rolled,
                       coalesce(pg_catalog.trim_scale(r.quantity), 0)::text as quantity
                from rolled r full join raw w on w.meter = r.meter and w.day = r.day
                order by coalesce(r.meter, w.meter) collate "C", coalesce(r.day, w.day)
                """, [period]).rows.map {
                Day(meter: try $0.string("meter"), day: try $0.string("day"), raw: try $0.string("raw"),
                    rolled: try $0.string("rolled"), quantity: try $0.string("quantity"))
            }
            return (rows, d)
        }()
        guard !rows.isEmpty else { throw NotClosed(period: period) }
        return ReconciliationReport(period: period, source: source, rows: rows, daily: daily)
    }

    /// The recomputation from raw events (meter.reconciliation_verify): what differs, and how long
    /// it took. Separate from the report, which reads the rollup's ledger (decision 123).
    package struct Verification: Sendable {
        package struct Difference: Sendable { package let customer, line, figure, ledger, raw: String }
        package let period: String
        package let lines: Int
        package let differences: [Difference]
        package let seconds: Double
        package var summary: String {
            "verify \(period): \(lines) lines recomputed from raw events in \(String(format: "%.1f", seconds)) s: "
                + (differences.isEmpty ? "no difference" : "\(differences.count) difference(s)")
        }
    }

    package static func verify(_ c: PGConnection, period: String) throws -> Verification {
        let started = ContinuousClock.now
        let diffs = try c.execute("""
            select customer, line, figure, coalesce(ledger::text, 'null') as ledger, coalesce(raw::text, 'null') as raw
            from meter.reconciliation_verify($1)
            """, [period]).rows.map {
            Verification.Difference(customer: try $0.string("customer"), line: try $0.string("line"), figure: try $0.string("figure"),
                                    ledger: try $0.string("ledger"), raw: try $0.string("raw"))
        }
        let lines = try c.execute("""
            select count(*) as n from meter.invoices i join meter.invoice_lines l on l.invoice_id = i.id and l.kind = 'usage'
            where i.period = $1
            """, [period]).single().int("n")
        return Verification(period: period, lines: Int(lines), differences: diffs, seconds: (ContinuousClock.now - started).seconds)
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

    /// Σ of a column of integer minor units over `rows` (one currency), printed with the
    /// currency's decimals: no floating point.
    package static func major(_ rows: [Row], _ key: String) -> String {
        let minor = Int(rows.first?["minor_unit"] ?? "2") ?? 2
        let total = rows.reduce(Int64(0)) { $0 + (Int64($1[key]) ?? 0) }
        var unit: Int64 = 1
        for _ in 0..<minor { unit *= 10 }
        let whole = "\(total / unit)", frac = String(abs(total % unit))
        let sign = total < 0 && total / unit == 0 ? "-" : ""
        return minor == 0 ? whole : sign + whole + "." + String(repeating: "0", count: minor - frac.count) + frac
    }

    package func totals() -> [(currency: String, invoiced: String, expected: String, match: Int, mismatch: Int, customers: Int)] {
        Set(rows.map { $0["currency"] }).sorted().map { cur in
            let rs = rows.filter { $0["currency"] == cur }
            return (cur, Self.major(rs, "invoiced_minor"), Self.major(rs, "expected_minor"), rs.filter { $0["status"] == "MATCH" }.count,
                    rs.filter { $0["status"] != "MATCH" }.count, Set(rs.map { $0["customer"] }).count)
        }
    }

    package func discrepancies() -> [String] {
        rows.filter { $0["status"] != "MATCH" }.map { r in
            "\(r["customer"]) / \(r["meter"]): \(r["status"].replacingOccurrences(of: "MISMATCH: ", with: "")): \(explanation(r))"
        }
    }

    /// Why a MISMATCH line is one, and what to do.
    package func explanation(_ r: Row) -> String {
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
            return why
    }

    /// A line with something to show: usage, money, an exception. The others (no event, nothing
    /// invoiced, MATCH) are counted, not listed, in md and html (csv lists every line).
    package static func isActive(_ r: Row) -> Bool {
        r["status"] != "MATCH" || (Int64(r["raw_events"]) ?? 0) != 0 || (Int64(r["invoiced_minor"]) ?? 0) != 0
            || (Int64(r["late_after_close"]) ?? 0) != 0 || (Int64(r["cancelled_events"]) ?? 0) != 0
    }

    /// The exceptions a reader signs off, MISMATCH lines first: (customer, meter, category, detail).
    /// Categories: the MISMATCH cause (dead letter, engine refused, late after close not adjusted
    /// yet, ...), then, for lines that MATCH, late after close (adjusted on a later invoice) and
    /// cancelled (events of the period cancelled).
    package func exceptions() -> [(customer: String, meter: String, category: String, detail: String, events: Int?)] {
        var out: [(String, String, String, String, Int?)] = []
        for r in rows where r["status"] != "MATCH" {
            let cause = r["status"].replacingOccurrences(of: "MISMATCH: ", with: "")
            let category = cause == "dead-letter, older than the engine takes" ? "engine refused (older than it takes)"
                : cause == "dead-letter" ? "dead letter" : cause
            out.append((r["customer"], r["meter"], "MISMATCH: " + category, explanation(r), nil))
        }
        for r in rows where r["status"] == "MATCH" {
            if let n = Int64(r["late_after_close"]), n > 0 {
                out.append((r["customer"], r["meter"], "late after close",
                            "\(n) event(s) or cancellation(s) after the close, carried by a later invoice's adjustment line", Int(n)))
            }
            if let n = Int64(r["cancelled_events"]), n > 0 {
                out.append((r["customer"], r["meter"], "cancelled", "\(n) event(s) of the period cancelled", Int(n)))
            }
        }
        return out
    }

    /// Exceptions counted per category, in the order of `exceptions()`: lines, and events where
    /// the category counts events (late after close, cancelled).
    package func exceptionCategories() -> [(category: String, lines: Int, events: Int?)] {
        var order: [String] = []
        var counts: [String: (Int, Int?)] = [:]
        for e in exceptions() {
            if counts[e.category] == nil { order.append(e.category) }
            let old = counts[e.category] ?? (0, e.events == nil ? nil : 0)
            counts[e.category] = (old.0 + 1, old.1.map { $0 + (e.events ?? 0) })
        }
        let rank = { (c: String) in c.hasPrefix("MISMATCH") ? 0 : 1 }
        return order.sorted { rank($0) < rank($1) }.map { ($0, counts[$0]!.0, counts[$0]!.1) }
    }

    /// The summary a reader starts with, per currency.
    package struct Summary {
        package var invoices = 0, lines = 0, match = 0, mismatch = 0, active = 0
        package var currencies: [(currency: String, customers: Int, invoiced: String, expected: String, difference: String, engine: String)] = []
    }

    package func summary() -> Summary {
        var s = Summary()
        s.invoices = Set(rows.map { $0["invoice_id"] }).count
        s.lines = rows.count
        s.match = rows.filter { $0["status"] == "MATCH" }.count
        s.mismatch = s.lines - s.match
        s.active = rows.filter(Self.isActive).count
        for t in totals() {
            let rs = rows.filter { $0["currency"] == t.currency }
            let engine = rs.contains { !$0["engine_minor"].isEmpty } ? Self.major(rs, "engine_minor") : "–"
            s.currencies.append((t.currency, t.customers, t.invoiced, t.expected, Self.major(rs, "difference_minor"), engine))
        }
        return s
    }

    package func markdown() -> String {
        var s = "# Reconciliation, period \(period)\n\n"
        if let source { s += "Data: `\(source)`. " }
        s += "Command: `meterctl reconcile --period \(period) --format md`. Source: the view `meter.reconciliation`. "
        s += "Quantities in the meter's unit; amounts in the currency's major unit. "
        s += "\(Self.syncedNote)\n\n"
        // A cell's "|" would end it early, and a line break would end the row: both escaped.
        func cell(_ v: String) -> String {
            v.isEmpty ? "–" : v.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\r\n", with: " ")
                .replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ")
        }
        let sum = summary()
        s += "## Summary\n\n"
        s += "\(sum.invoices) invoice(s), \(sum.lines) line(s): **\(sum.match) MATCH, \(sum.mismatch) MISMATCH**.\n\n"
        s += "| currency | customers | invoiced | expected from rollups | difference | engine invoiced (lines billed there) |\n|---|---|---|---|---|---|\n"
        for c in sum.currencies {
            s += "| \(c.currency) | \(c.customers) | \(c.invoiced) | \(c.expected) | \(c.difference) | \(c.engine) |\n"
        }
        let ex = exceptions()
        s += "\n## Exceptions\n\n"
        if ex.isEmpty {
            s += "None: every line MATCHes, nothing arrived after the close, nothing was cancelled.\n"
        } else {
            s += "| category | lines | events |\n|---|---|---|\n"
            for c in exceptionCategories() { s += "| \(cell(c.category)) | \(c.lines) | \(c.events.map(String.init) ?? "–") |\n" }
            s += "\n| customer | meter | category | detail |\n|---|---|---|---|\n"
            for e in ex { s += "| \(cell(e.customer)) | \(cell(e.meter)) | \(cell(e.category)) | \(cell(e.detail)) |\n" }
        }
        s += "\n## Lines\n\n"
        s += "\(sum.active) line(s) with usage, money or an exception; \(sum.lines - sum.active) without any (no event, nothing invoiced, MATCH) are left out here (the csv lists every line).\n\n"
        s += "| " + Self.columns.map(\.title).joined(separator: " | ") + " |\n"
        s += "|" + Self.columns.map { _ in "---" }.joined(separator: "|") + "|\n"
        for r in rows where Self.isActive(r) { s += "| " + Self.columns.map { cell(r[$0.key]) }.joined(separator: " | ") + " |\n" }
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
        s += "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:12px}"
        s += "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:nth-child(-n+3),th{text-align:left}"
        s += ".MATCH{color:#176b2c}.MISMATCH{color:#b00020;font-weight:bold}.big{font-size:20px}"
        s += ".charts{display:flex;flex-wrap:wrap;gap:16px}.chart{break-inside:avoid}"
        s += "@page{size:A4 landscape;margin:12mm}@media print{body{margin:0}h2{break-after:avoid}tr,.chart{break-inside:avoid}}"
        s += "</style></head><body>\n"
        s += "<h1>Reconciliation, period \(period)</h1>\n<p>" + (source.map { "Data: <code>\(esc($0))</code>. " } ?? "")
        s += "Command: <code>meterctl reconcile --period \(period) --format html</code>. "
        s += "Source: <code>meter.reconciliation</code>. Amounts in the currency's major unit. \(esc(Self.syncedNote))</p>\n"
        let sum = summary()
        s += "<h2>Summary</h2>\n<p class=\"big\">\(sum.invoices) invoice(s), \(sum.lines) line(s): "
        s += "<span class=\"MATCH\">\(sum.match) MATCH</span>, <span class=\"\(sum.mismatch == 0 ? "MATCH" : "MISMATCH")\">\(sum.mismatch) MISMATCH</span></p>\n"
        s += "<table><tr><th>currency</th><th>customers</th><th>invoiced</th><th>expected from rollups</th><th>difference</th><th>engine invoiced (lines billed there)</th></tr>\n"
        for c in sum.currencies {
            s += "<tr><td>\(c.currency)</td><td>\(c.customers)</td><td>\(c.invoiced)</td><td>\(c.expected)</td><td>\(c.difference)</td><td>\(c.engine)</td></tr>\n"
        }
        s += "</table>\n"
        let ex = exceptions()
        s += "<h2>Exceptions</h2>\n"
        if ex.isEmpty {
            s += "<p>None: every line MATCHes, nothing arrived after the close, nothing was cancelled.</p>\n"
        } else {
            s += "<table><tr><th>category</th><th>lines</th><th>events</th></tr>\n"
            for c in exceptionCategories() {
                s += "<tr><td class=\"\(c.category.hasPrefix("MISMATCH") ? "MISMATCH" : "")\">\(esc(c.category))</td><td>\(c.lines)</td><td>\(c.events.map(String.init) ?? "–")</td></tr>\n"
            }
            s += "</table>\n<p></p>\n"
            s += "<table><tr><th>customer</th><th>meter</th><th>category</th><th>detail</th></tr>\n"
            for e in ex {
                s += "<tr><td>\(esc(e.customer))</td><td>\(esc(e.meter))</td><td class=\"\(e.category.hasPrefix("MISMATCH") ? "MISMATCH" : "")\">\(esc(e.category))</td><td style=\"text-align:left\">\(esc(e.detail))</td></tr>\n"
            }
            s += "</table>\n"
        }
        // Per meter: the rolled-up quantity per UTC day (bars), and a red mark on any day where the
        // events the ledger counted and the rolled-up events differ (inline SVG, no script: prints as drawn).
        s += "<h2>Daily usage per meter</h2>\n<p>Bars: the day's rolled-up quantity over all customers (Σ for sum meters, events for count and unique_count meters, the largest hourly figure for max and latest meters). "
        s += "A red mark under a day: the events the rollup's ledger counted and its rolled-up events differ.</p>\n<div class=\"charts\">"
        for meter in Array(Set(daily.map(\.meter))).sorted() {
            let days = daily.filter { $0.meter == meter }
            let values = days.map { Double($0.quantity) ?? 0 }
            let maxV = max(values.max() ?? 1, 1e-9)
            let w = 360.0, h = 150.0, left = 8.0, bottom = 28.0, top = 18.0
            let bar = (w - left * 2) / Double(max(days.count, 1))
            var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" role=\"img\" aria-label=\"daily usage of \(esc(meter))\">"
            svg += "<text x=\"\(left)\" y=\"12\" font-size=\"12\" font-weight=\"bold\">\(esc(meter))</text>"
            svg += "<text x=\"\(w - 8)\" y=\"12\" font-size=\"10\" text-anchor=\"end\">max \(esc(days.max { (Double($0.quantity) ?? 0) < (Double($1.quantity) ?? 0) }?.quantity ?? "0"))</text>"
            for (i, d) in days.enumerated() {
                let v = Double(d.quantity) ?? 0
                let bh = v / maxV * (h - bottom - top)
                svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#4a78b5\"><title>%@: %@</title></rect>",
                              left + Double(i) * bar, h - bottom - bh, max(bar - 1, 0.5), bh, esc(d.day), esc(d.quantity))
                if d.raw != d.rolled {
                    svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"4\" fill=\"#b00020\"><title>%@: %@ raw vs %@ rolled up</title></rect>",
                                  left + Double(i) * bar, h - bottom + 3, max(bar - 1, 0.5), esc(d.day), d.raw, d.rolled)
                }
            }
            if let first = days.first, let last = days.last {
                svg += "<text x=\"\(left)\" y=\"\(h - 6)\" font-size=\"10\">\(esc(first.day))</text>"
                svg += "<text x=\"\(w - 8)\" y=\"\(h - 6)\" font-size=\"10\" text-anchor=\"end\">\(esc(last.day))</text>"
            }
            s += "<div class=\"chart\">" + svg + "</svg></div>"
        }
        s += "</div>\n"
        s += "<h2>Lines</h2>\n<p>\(sum.active) line(s) with usage, money or an exception; \(sum.lines - sum.active) without any are left out (the csv lists every line).</p>\n"
        s += "<table><tr>" + Self.columns.map { "<th>\(esc($0.title))</th>" }.joined() + "</tr>\n"
        for r in rows where Self.isActive(r) {
            s += "<tr>" + Self.columns.map { c in
                let v = r[c.key].isEmpty ? "–" : r[c.key]
                return c.key == "status" ? "<td class=\"\(v.hasPrefix("MATCH") ? "MATCH" : "MISMATCH")\">\(esc(v))</td>" : "<td>\(esc(v))</td>"
            }.joined() + "</tr>\n"
        }
        s += "</table>\n"
        s += "<h2>Sign-off</h2>\n<table><tr><th>role</th><th>name</th><th>signature</th><th>date</th></tr>"
        for role in ["Prepared by (billing operations)", "Reviewed by (finance)", "Approved by (CFO)"] {
            s += "<tr><td>\(role)</td><td>&nbsp;</td><td>&nbsp;</td><td>&nbsp;</td></tr>"
        }
        return s + "</table>\n</body></html>\n"
    }
}
