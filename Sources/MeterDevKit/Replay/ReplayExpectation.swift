// ReplayExpectation.swift: what the replay's invoices must be, computed from its NDJSON alone.
//
// Independent of the service: it reads no table of meter's to compute anything. From the NDJSON
// (every row the replay generated, in the order of its days), the plan table of ReplayRunner and
// the workload's customer → plan rule, it recomputes
//   * the verdicts a correct service gives, from the content (first delivery of a key accepted,
//     later ones duplicates, invalid rows rejected with their expected_error; the first
//     cancellation of an event cancelled, later ones already_cancelled);
//   * every invoice line of every closed period: one per plan price, a meter priced per filter of
//     its dimensions having a line per filter and one for its default (PriceFilter: which price an
//     event's properties fall under); the aggregation (count, sum, max, unique count, the gauge's
//     time-weighted integral, GaugeIntegral) net of cancellations, the price (per_unit, package, graduated, volume; exact decimals,
//     rounded once per line, half away from zero: the rule written in sql/functions/
//     price_amount.sql, implemented again here), and the adjustment lines that rows arriving after
//     a close put on the next invoice.
// Only then does it read meter.invoices and meter.invoice_lines, and compares line by line.
//
// The arrival model it relies on is the replay's delivery order: rows of a period without
// `after_close` reach the service before that period's close (held-back events are flushed and
// refused cancellations re-sent before each close), rows with `after_close` between that close
// and the next one.

import Foundation
import PGClient
import MeterWire

public struct ReplayExpectation: Sendable {
    /// One invoice line's figures.
    public struct Line: Sendable, Equatable {
        public var events: Int64
        public var quantity: Decimal
        public var amount: Int64
    }

    /// Key of a line: customer, invoice period, kind ("usage" or "adjustment"), meter, the priced
    /// filter (PriceFilter.canonical, "" for the default or a meter priced whole) and the period an
    /// adjustment is for ("" for usage).
    public struct Key: Hashable, Comparable, Sendable, CustomStringConvertible {
        public let customer, period, kind, meter, filter, adjusts: String
        public static func < (a: Key, b: Key) -> Bool {
            (a.customer, a.period, a.kind, a.meter, a.filter, a.adjusts) < (b.customer, b.period, b.kind, b.meter, b.filter, b.adjusts)
        }
        /// The meter and, for a filter's line, the filter: "ai_tokens [model=gpt-4o]".
        public var line: String { meter + (filter.isEmpty ? "" : " [\(filter)]") }
        public var description: String {
            "\(customer) \(period) \(kind) \(line)" + (adjusts.isEmpty ? "" : " for \(adjusts)")
        }
    }

    /// The verdicts a correct service gives to what the NDJSON says was sent.
    public struct Verdicts: Sendable, Equatable {
        public var accepted = 0, duplicates = 0, conflicts = 0
        public var rejectedCodes: [String: Int] = [:]
        public var cancelled = 0, alreadyCancelled = 0
        public var rejected: Int { rejectedCodes.values.reduce(0, +) }
    }

    public let verdicts: Verdicts
    public let lines: [Key: Line]
    /// api_calls events per "customer|period": net of cancellations, and all accepted.
    package let apiCallsNet: [String: Int]
    package let apiCallsGross: [String: Int]
    package let customers: Int
    /// Currency of each (customer, period) invoice.
    public let currencies: [String: String]
    public let periods: [String]

    // MARK: computing

    package struct Event {
        package let customer, meter, period, key: String
        package let at: Int64
        package let value: Decimal
        package let user: String?
        package let properties: [String: String]
        package let lateAfterClose: Bool
    }

    /// Reads the NDJSON at `path`; `periods` are the closed periods in the order they were closed.
    public init(ndjsonPath path: String, customers: Int, periods: [String]) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var events: [String: Event] = [:]             // customer/key → the event (first row of the key)
        var cancelledLate: [String: Bool] = [:]       // customer/key → cancelled, and whether only after close
        var v = Verdicts()
        for line in text.split(separator: "\n") {
            let j = try JSONParser.parse(String(line))
            func str(_ k: String) throws -> String {
                guard let s = j[k]?.stringValue else { throw ReplayRunner.Failure(description: "NDJSON row without \(k): \(line.prefix(200))") }
                return s
            }
            let customer = try str("customer"), key = customer + "/" + (try str("idempotency_key"))
            let late = j["after_close"]?.boolValue ?? false
            switch try str("kind") {
            case "event":
                let deliveries = Int(j["deliveries"]?.numberLexeme ?? "1") ?? 1
                if events[key] == nil {
                    let at = try RFC3339Timestamp(parsing: try str("occurred_at"))
                    guard let value = Self.decimal(try str("value")) else {
                        throw ReplayRunner.Failure(description: "NDJSON value not a decimal: \(line.prefix(200))")
                    }
                    var properties: [String: String] = [:]
                    if case .object(let fields)? = j["properties"] {
                        for (k, x) in fields { properties[k] = x.stringValue }
                    }
                    events[key] = Event(customer: customer, meter: try str("meter"), period: String(at.iso8601.prefix(7)),
                                        key: try str("idempotency_key"), at: at.epochMicroseconds, value: value,
                                        user: j["user"]?.stringValue, properties: properties, lateAfterClose: late)
                    v.accepted += 1
                    v.duplicates += deliveries - 1
                } else {
                    v.duplicates += deliveries  // the same key sent again with the same content
                }
            case "cancel":
                if let was = cancelledLate[key] {
                    v.alreadyCancelled += 1
                    cancelledLate[key] = was && late
                } else {
                    v.cancelled += 1
                    cancelledLate[key] = late
                }
            default:
                v.rejectedCodes[try str("expected_error"), default: 0] += 1
            }
        }
        // A cancellation of a key never stored would be refused: none is generated.
        for k in cancelledLate.keys where events[k] == nil {
            throw ReplayRunner.Failure(description: "NDJSON cancels \(k), which no event row has")
        }
        verdicts = v
        self.periods = periods

        let plans = ReplayRunner.plans
        var lines: [Key: Line] = [:]
        var currencies: [String: String] = [:]
        var byCustomer: [String: [(key: String, e: Event)]] = [:]
        for (k, e) in events { byCustomer[e.customer, default: []].append((k, e)) }

        /// Each price line's (events, quantity) for one customer and period `q`, with what the
        /// service knew at the close of period `known` (nil: everything): rows sent after a
        /// close (events, cancellations) are known from the next close on.
        func figures(_ customer: String, _ prices: [ReplayRunner.Price], period q: String, known: String?)
            throws -> [String: (n: Int64, q: Decimal)] {
            func isKnown(_ e: Event) -> Bool { !(e.lateAfterClose && known != nil && e.period >= known!) }
            func isCancelled(_ k: String, _ e: Event) -> Bool {
                guard let late = cancelledLate[k] else { return false }
                return !(late && known != nil && e.period >= known!)
            }
            let live = (byCustomer[customer] ?? []).filter { isKnown($0.e) && !isCancelled($0.key, $0.e) }.map(\.e)
            var out: [String: (n: Int64, q: Decimal)] = [:]
            for meter in Set(prices.map(\.meter)) {
                let aggregation = ReplayWorkload.meters.first { $0.code == meter }!.aggregation
                let filters = try prices.filter { $0.meter == meter }.map { try PriceFilter(json: $0.filter) }
                let inPeriod = live.filter { $0.meter == meter && $0.period == q }
                if aggregation == "time_weighted_sum" {
                    // values held from earlier periods carry in: every reading up to the period's end
                    let (from, to) = try Self.monthBounds(q)
                    let readings = live.filter { $0.meter == meter && $0.at < to }
                        .map { GaugeIntegral.Reading(at: $0.at, key: $0.key, value: $0.value) }
                    out[meter + "|"] = (Int64(inPeriod.count), GaugeIntegral.timeWeighted(readings, from: from, to: to))
                    continue
                }
                var groups: [String: [Event]] = [:]
                for e in inPeriod {
                    guard let f = PriceFilter.pricing(e.properties, among: filters) else { continue }
                    groups[meter + "|" + f.canonical, default: []].append(e)
                }
                for (line, es) in groups {
                    let qty: Decimal = switch aggregation {
                    case "count": Decimal(es.count)
                    case "sum": es.reduce(Decimal(0)) { $0 + $1.value }
                    case "max": es.map(\.value).max() ?? 0
                    default: Decimal(Set(es.compactMap(\.user)).count)
                    }
                    out[line] = (Int64(es.count), qty)
                }
            }
            return out
        }
        func sortedPrices(_ ps: [ReplayRunner.Price]) throws -> [(price: ReplayRunner.Price, filter: String)] {
            try ps.map { ($0, try PriceFilter(json: $0.filter).canonical) }.sorted { ($0.price.meter, $0.filter) < ($1.price.meter, $1.filter) }
        }
        // What has been invoiced so far for (customer|period|meter|filter): usage plus adjustments.
        var invoiced: [String: Line] = [:]
        for (k, p) in periods.enumerated() {
            for i in 0..<customers {
                let customer = ReplayWorkload.customerID(i)
                let plan = plans[ReplayWorkload.planIndex(customer: i, plans: plans.count)]
                currencies[customer + "|" + p] = plan.currency
                let onTime = try figures(customer, plan.prices, period: p, known: p)
                for (price, filter) in try sortedPrices(plan.prices) {
                    let f = onTime[price.meter + "|" + filter] ?? (0, 0)
                    let line = Line(events: f.n, quantity: f.q, amount: try Self.amount(price, f.q))
                    lines[Key(customer: customer, period: p, kind: "usage", meter: price.meter, filter: filter, adjusts: "")] = line
                    invoiced[customer + "|" + p + "|" + price.meter + "|" + filter] = line
                }
                // Adjustments for the periods closed before this one (oldest first).
                for old in periods[..<k] {
                    let all = try figures(customer, plan.prices, period: old, known: nil)
                    for (price, filter) in try sortedPrices(plan.prices) {
                        let id = customer + "|" + old + "|" + price.meter + "|" + filter
                        let f = all[price.meter + "|" + filter] ?? (0, 0)
                        let amount = try Self.amount(price, f.q)
                        let was = invoiced[id]!
                        if f.n != was.events || f.q != was.quantity || amount != was.amount {
                            lines[Key(customer: customer, period: p, kind: "adjustment", meter: price.meter, filter: filter, adjusts: old)] =
                                Line(events: f.n - was.events, quantity: f.q - was.quantity, amount: amount - was.amount)
                            invoiced[id] = Line(events: f.n, quantity: f.q, amount: amount)
                        }
                    }
                }
            }
        }
        self.lines = lines
        self.currencies = currencies
        // api_calls per customer and period: net of every cancellation (the final figure, which a
        // firing must have reached) and with none (the most any rollup can have seen).
        var net: [String: Int] = [:], gross: [String: Int] = [:]
        for (k, e) in events where e.meter == "api_calls" {
            gross[e.customer + "|" + e.period, default: 0] += 1
            if cancelledLate[k] == nil { net[e.customer + "|" + e.period, default: 0] += 1 }
        }
        apiCallsNet = net
        apiCallsGross = gross
        self.customers = customers
    }

    /// A decimal's text (NDJSON, prices, numeric output) as an exact Decimal, whatever the locale.
    package static func decimal(_ text: String) -> Decimal? { Decimal(string: text, locale: Locale(identifier: "en_US_POSIX")) }

    /// A period's UTC bounds in Unix microseconds ("YYYY-MM": the replay's customers bill in UTC).
    package static func monthBounds(_ period: String) throws -> (Int64, Int64) {
        let parts = period.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2 else { throw ReplayRunner.Failure(description: "not a period: \(period)") }
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        guard let s = utc.date(from: DateComponents(year: parts[0], month: parts[1], day: 1)),
              let e = utc.date(byAdding: .month, value: 1, to: s) else {
            throw ReplayRunner.Failure(description: "not a period: \(period)")
        }
        return (Int64(s.timeIntervalSince1970) * 1_000_000, Int64(e.timeIntervalSince1970) * 1_000_000)
    }

    /// The amount of a line in minor units: exact decimals, rounded once, half away from zero.
    package static func amount(_ p: ReplayRunner.Price, _ q: Decimal) throws -> Int64 {
        func dec(_ s: String?) throws -> Decimal {
            guard let s, let d = Self.decimal(s) else {
                throw ReplayRunner.Failure(description: "price of \(p.meter): not a decimal: \(s ?? "null")")
            }
            return d
        }
        func rounded(_ x: Decimal, _ mode: NSDecimalNumber.RoundingMode) -> Decimal {
            var x = x, r = Decimal()
            NSDecimalRound(&r, &x, 0, mode)
            return r
        }
        if q == 0 { return 0 }
        var exact: Decimal
        switch p.model {
        case "per_unit":
            exact = q * (try dec(p.unit))
        case "package":
            exact = rounded(q / (try dec(p.package)), .up) * (try dec(p.unit))
        case "graduated", "volume":
            let tiers = try JSONParser.parse(p.tiers ?? "[]").arrayValue ?? []
            func field(_ t: JSONValue, _ k: String) throws -> Decimal? {
                guard let lexeme = t[k]?.numberLexeme else { return nil }
                return try dec(lexeme)
            }
            exact = 0
            var lower: Decimal = 0
            for t in tiers {
                let upper = try field(t, "up_to")
                let unit = try field(t, "unit_amount") ?? 0, flat = try field(t, "flat_amount") ?? 0
                if p.model == "graduated" {
                    if q <= lower { break }
                    exact += (min(q, upper ?? q) - lower) * unit + flat
                    guard let upper else { break }
                    lower = upper
                } else if upper == nil || q <= upper! {
                    exact = q * unit + flat
                    break
                }
            }
        default:
            throw ReplayRunner.Failure(description: "unknown price model \(p.model)")
        }
        let r = rounded(exact, .plain)  // .plain: half away from zero
        return NSDecimalNumber(decimal: r).int64Value
    }

    // MARK: comparing

    /// The comparison of the expectation with what the service answered and invoiced.
    public struct Comparison: Sendable {
        public var invoicesExpected = 0, invoicesFound = 0
        public var linesCompared = 0, linesEqual = 0
        // (each invoice's subtotal and total are compared too: a difference is listed)
        public var adjustmentLines = 0
        /// Adjustment lines taking events away (cancellations after the close), and those of them
        /// (or others) with a negative amount.
        public var negativeAdjustmentLines = 0, negativeAmountLines = 0
        /// Total of the expected invoices per currency (minor units).
        public var totals: [String: Int64] = [:]
        /// Every difference, described (empty = everything equal).
        public var differences: [String] = []
        /// The adjustment lines, as expected (all equal to ours when `differences` is empty).
        public var adjustments: [(key: Key, line: Line)] = []
        /// Alerts and limits fired (kind, customer, period, threshold, the period's final count), and how
        /// many (customer, period) pairs the NDJSON says must have fired and may have fired.
        public var alertsFired: [(what: String, customer: String, period: String, threshold: String, value: String)] = []
        public var alertsRequired = 0, alertsPossible = 0
        public var equal: Bool { differences.isEmpty }
    }

    /// Compares with the verdicts received and with meter.invoices / meter.invoice_lines.
    public func compare(received: Verdicts, _ c: PGConnection) throws -> Comparison {
        var out = Comparison()
        if received != verdicts {
            out.differences.append("verdicts: expected \(Self.describe(verdicts)), received \(Self.describe(received))")
        }
        out.invoicesExpected = currencies.count
        out.invoicesFound = Int(try c.execute("select count(*) as n from meter.invoices where period = any($1::text[])",
                                              [periods]).single().int("n"))
        if out.invoicesFound != out.invoicesExpected {
            out.differences.append("invoices: expected \(out.invoicesExpected), found \(out.invoicesFound)")
        }
        // Each invoice's subtotal and total: the sum of its expected lines.
        var expectedTotal: [String: Int64] = [:]
        for (k, l) in lines { expectedTotal[k.customer + "|" + k.period, default: 0] += l.amount }
        for r in try c.execute("""
            select x.external_id as customer, i.period, i.subtotal, i.total
            from meter.invoices i join meter.customers x on x.id = i.customer_id
            where i.period = any($1::text[])
            """, [periods]).rows {
            let id = (try r.string("customer")) + "|" + (try r.string("period"))
            let want = expectedTotal[id] ?? 0
            let (subtotal, total) = (try r.optionalInt("subtotal"), try r.optionalInt("total"))
            if subtotal != want || total != want {
                out.differences.append("invoice \(id.replacingOccurrences(of: "|", with: " ")): expected total \(want); meter has subtotal \(subtotal.map(String.init) ?? "null"), total \(total.map(String.init) ?? "null")")
            }
        }
        var actual: [Key: Line] = [:]
        for r in try c.execute("""
            select x.external_id as customer, i.period, l.kind, m.code as meter, l.price_filter::text as filter,
                   coalesce(l.adjusts_period, '') as adjusts,
                   l.event_count, l.quantity::text as quantity, l.amount, i.currency
            from meter.invoice_lines l
            join meter.invoices i on i.id = l.invoice_id
            join meter.customers x on x.id = i.customer_id
            join meter.meters m on m.id = l.meter_id
            where i.period = any($1::text[])
            """, [periods]).rows {
            let k = Key(customer: try r.string("customer"), period: try r.string("period"), kind: try r.string("kind"),
                        meter: try r.string("meter"), filter: try PriceFilter(json: try r.string("filter")).canonical,
                        adjusts: try r.string("adjusts"))
            actual[k] = Line(events: try r.int("event_count"), quantity: Self.decimal(try r.string("quantity")) ?? -1,
                             amount: try r.int("amount"))
            if currencies[k.customer + "|" + k.period] != (try r.string("currency")) {
                out.differences.append("\(k): currency \(try r.string("currency")), expected \(currencies[k.customer + "|" + k.period] ?? "none")")
            }
        }
        for k in Set(lines.keys).union(actual.keys).sorted() {
            out.linesCompared += 1
            switch (lines[k], actual[k]) {
            case let (e?, a?) where e == a: out.linesEqual += 1
            case let (e?, a?):
                out.differences.append("\(k): expected \(e.events) events, quantity \(e.quantity), amount \(e.amount); meter has \(a.events), \(a.quantity), \(a.amount)")
            case let (e?, nil):
                out.differences.append("\(k): expected (\(e.events) events, quantity \(e.quantity), amount \(e.amount)), meter has no such line")
            case let (nil, a?):
                out.differences.append("\(k): meter has (\(a.events) events, quantity \(a.quantity), amount \(a.amount)), not expected")
            default: break
            }
        }
        for (k, l) in lines {
            out.totals[currencies[k.customer + "|" + k.period]!, default: 0] += l.amount
            if k.kind == "adjustment" {
                out.adjustmentLines += 1
                if l.events < 0 { out.negativeAdjustmentLines += 1 }
                if l.amount < 0 { out.negativeAmountLines += 1 }
            }
        }
        out.adjustments = lines.filter { $0.key.kind == "adjustment" }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        return out
    }

    /// The replay's alerts and limit against the NDJSON: every firing's value reached its
    /// threshold and lies within what the customer's period could have shown (at most every
    /// accepted api_call, cancelled or not); every (customer, period) whose final count reaches a
    /// threshold fired, and none fired whose every accepted call stays below it. Differences are
    /// added to `check`.
    package func alertCheck(_ c: PGConnection, into check: inout Comparison) throws {
        let plans = ReplayRunner.plans
        let limit = Dictionary(uniqueKeysWithValues: ReplayRunner.limits.map { ($0.plan, Self.decimal($0.limit)!) })
        var fired: Set<String> = []
        for r in try c.execute("""
            select 'alert ' || a.kind as what, x.external_id as customer, f.period, trim_scale(a.threshold)::text as threshold,
                   trim_scale(f.value)::text as value, p.code as plan
            from meter.alert_firings f join meter.alerts a on a.id = f.alert_id join meter.customers x on x.id = f.customer_id
            join meter.plans p on p.id = a.plan_id
            union all
            select 'limit reached', x.external_id, f.period, trim_scale(l.quantity)::text, trim_scale(f.value)::text, p.code
            from meter.limit_firings f join meter.customers x on x.id = f.customer_id join meter.plans p on p.id = f.plan_id
            join meter.plan_limits l on l.plan_id = f.plan_id and l.meter_id = f.meter_id and l.filter = f.filter
            order by 2, 3, 1
            """).rows {
            let what = try r.string("what"), customer = try r.string("customer"), period = try r.string("period")
            let threshold = try r.string("threshold"), value = try r.string("value"), plan = try r.string("plan")
            // (the report shows the period's final count, not the value at firing, which depends on
            // when the rollup loop happened to run: the report stays the same for the same inputs)
            check.alertsFired.append((what, customer, period, threshold, String(apiCallsNet[customer + "|" + period] ?? 0)))
            fired.insert(what + "|" + plan + "|" + customer + "|" + period)
            let need = what == "alert limit_share" ? Self.decimal(threshold)! * (limit[plan] ?? 0) : Self.decimal(threshold)!
            let v = Self.decimal(value) ?? -1, gross = Decimal(apiCallsGross[customer + "|" + period] ?? 0)
            if v < need || v > gross {
                check.differences.append("\(what) \(customer) \(period): fired at \(value), threshold \(need), at most \(gross) calls accepted")
            }
        }
        for i in 0..<customers {
            let customer = ReplayWorkload.customerID(i)
            let plan = plans[ReplayWorkload.planIndex(customer: i, plans: plans.count)].code
            var rules: [(String, Decimal)] = ReplayRunner.alerts.filter { $0.plan == plan }.map {
                ("alert " + $0.kind, $0.kind == "limit_share" ? Self.decimal($0.threshold)! * (limit[plan] ?? 0) : Self.decimal($0.threshold)!)
            }
            if let l = limit[plan] { rules.append(("limit reached", l)) }
            for p in periods {
                for (what, need) in rules {
                    let net = Decimal(apiCallsNet[customer + "|" + p] ?? 0), gross = Decimal(apiCallsGross[customer + "|" + p] ?? 0)
                    let didFire = fired.contains(what + "|" + plan + "|" + customer + "|" + p)
                    if net >= need { check.alertsRequired += 1 }
                    if gross >= need { check.alertsPossible += 1 }
                    if net >= need && !didFire {
                        check.differences.append("\(what) \(customer) \(p): \(net) calls reach \(need), but it did not fire")
                    }
                    if gross < need && didFire {
                        check.differences.append("\(what) \(customer) \(p): fired, but only \(gross) calls were ever accepted (\(need) needed)")
                    }
                }
            }
        }
    }

    package static func describe(_ v: Verdicts) -> String {
        let codes = v.rejectedCodes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        return "\(v.accepted) accepted, \(v.duplicates) duplicates, \(v.conflicts) conflicts, \(v.rejected) rejected (\(codes)); "
            + "\(v.cancelled) cancelled, \(v.alreadyCancelled) already cancelled"
    }
}

extension ReplaySummary {
    /// The run's report in markdown (docs/reports/replay-summary.md): the verdicts received, the
    /// independent check and every adjustment line. Deterministic for the same inputs.
    public func markdown(command: String) -> String {
        func codes(_ d: [String: Int]) -> String {
            d.isEmpty ? "none" : d.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        }
        var s = "# Replay summary\n\n`\(command)`, periods closed: \(periods.joined(separator: ", ")).\n\n"
        s += "## What was sent and what the service answered\n\n"
        s += "| | count |\n|---|---|\n"
        s += "| NDJSON rows | \(generated): \(generatedEvents) events, \(generatedInvalid) invalid events, \(generatedCancellations) cancellations |\n"
        s += "| elements sent over HTTP | \(deliveries) (duplicate deliveries and re-sent cancellations included) |\n"
        s += "| events accepted | \(accepted) (\(lateEvents) of them after their period's close) |\n"
        s += "| duplicates | \(duplicates) |\n| conflicts | \(conflicts) |\n"
        s += "| events rejected | \(rejected): \(codes(rejectedCodes)) |\n"
        s += "| cancellations cancelled | \(cancelled) (\(lateCancelled) of them after their event's period was closed) |\n"
        s += "| cancellations already cancelled | \(alreadyCancelled) (\(lateAlreadyCancelled) after a close) |\n"
        s += "| cancellations re-sent after `event_not_found` (their event was still held back by the client) | \(cancellationsResent) |\n"
        s += "| cancellations never applied | \(cancellationsRefused.values.reduce(0, +)): \(codes(cancellationsRefused)) |\n\n"
        guard let check else { return s + "No independent check was run.\n" }
        s += "## Independent check\n\n"
        s += "Expected invoices recomputed from the NDJSON alone (content-based verdicts, aggregation, the plan prices, "
        s += "rounding half away from zero once per line, one line per priced filter, the gauge's time-weighted integral, "
        s += "adjustments for rows after a close; `ReplayExpectation`), "
        s += "compared with `meter.invoices` and `meter.invoice_lines`:\n\n"
        s += "- verdicts: " + (check.differences.contains { $0.hasPrefix("verdicts:") } ? "**DIFFER**" : "equal to the expectation") + "\n"
        s += "- invoices: \(check.invoicesFound) found, \(check.invoicesExpected) expected\n"
        s += "- invoice lines: **\(check.linesEqual) of \(check.linesCompared) equal** to the expectation"
        s += check.equal ? "; no difference.\n" : "; \(check.differences.count) difference(s):\n"
        for d in check.differences.prefix(50) { s += "  - \(d)\n" }
        if check.differences.count > 50 { s += "  - ... and \(check.differences.count - 50) more\n" }
        s += "- expected totals: " + check.totals.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key) (minor units)" }.joined(separator: ", ") + "\n\n"
        s += "## Alerts and limits fired\n\n"
        s += "Alerts on api_calls (starter: 700 in a period; tokyo: 80 % of its limit of 900) and tokyo's limit reached, "
        s += "each fired at most once per customer and period by the rollup. Checked against the NDJSON: each firing's "
        s += "value reached its threshold and is at most the calls ever accepted; every customer and period whose final "
        s += "count reaches a threshold fired (\(check.alertsRequired) required, \(check.alertsPossible) possible with "
        s += "cancelled calls counted, \(check.alertsFired.count) fired).\n\n"
        if !check.alertsFired.isEmpty {
            s += "| customer | period | what | threshold | api_calls in the period (final) |\n|---|---|---|---|---|\n"
            for a in check.alertsFired { s += "| \(a.customer) | \(a.period) | \(a.what) | \(a.threshold) | \(a.value) |\n" }
            s += "\n"
        }
        s += "## Adjustment lines (rows that arrived after their period's close)\n\n"
        s += "\(check.adjustmentLines) line(s) on the invoices of the months after: "
        s += "\(check.negativeAdjustmentLines) take events away (cancellations after the close), "
        s += "\(check.adjustments.filter { $0.line.events > 0 }.count) add events (late events), "
        s += "\(check.negativeAmountLines) have a negative amount (a credit). "
        s += "An amount of 0 is a change that does not move the price (e.g. a max or a unique count unchanged, "
        s += "a package not crossed, or a fraction of a minor unit).\n\n"
        if !check.adjustments.isEmpty {
            s += "| customer | on invoice | meter | for period | events | quantity | amount |\n|---|---|---|---|---|---|---|\n"
            for (k, l) in check.adjustments {
                s += "| \(k.customer) | \(k.period) | \(k.line) | \(k.adjusts) | \(l.events) | \(l.quantity) | \(l.amount) |\n"
            }
        }
        return s
    }
}
