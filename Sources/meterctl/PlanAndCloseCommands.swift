import ArgumentParser
import Foundation
import Logging
import PGClient
import MeterCore

/// `meterctl plans add|price|list`: plans and their prices (meter.plans, meter.plan_prices).
struct Plans: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage plans: a currency and a price per meter (per_unit, package, graduated, volume).",
        subcommands: [Add.self, Price.self, Limit.self, List.self, Mirror.self])

    struct Mirror: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the billing engine's price objects mirroring the plans' prices (those not mirrored yet).",
            discussion: """
                per_unit → unit_amount_decimal; package → transform_quantity (divide_by, round up); graduated and \
                volume → tiers. Billing Meters (the default): each meter gets an engine meter of its code (sum of \
                hourly totals; last of running maxima for a max meter) and the price is on it, per 10^-N of the \
                meter's unit with --value-scale METER=N. --engine-api usage-records: legacy prices \
                (aggregate_usage max for max meters, last_during_period for latest meters, else sum). unique_count meters are not mirrored: the \
                period-wide distinct count is billed by meter's close. Customers linked afterwards get their \
                plan's engine price; bill the meters with `meterctl billing price --price-id`.
                """)
        @OptionGroup var global: GlobalOptions
        @OptionGroup var billing: BillingAPIOptions
        @Option(name: .customLong("engine-api"), help: "meter-events (Billing Meters) or usage-records (legacy). Default: meter-events")
        var engineAPI = "meter-events"
        @Option(name: .customLong("value-scale"), help: "METER=N: send that meter's hourly totals times 10^N (0-12), its prices per that unit. Repeatable. Default: 0")
        var valueScales: [String] = []

        func scales() throws -> [String: Int] {
            var out: [String: Int] = [:]
            for v in valueScales {
                let parts = v.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, let n = Int(parts[1]), (0...12).contains(n), !parts[0].isEmpty else {
                    throw ValidationError("--value-scale takes METER=N with N from 0 to 12; got \(v)")
                }
                out[parts[0]] = n
            }
            return out
        }

        func validate() throws {
            guard PlanMirror.EngineAPI(rawValue: engineAPI) != nil else {
                throw ValidationError("--engine-api must be meter-events or usage-records; got \(engineAPI)")
            }
            if engineAPI == "usage-records" && !valueScales.isEmpty {
                throw ValidationError("--value-scale is for --engine-api meter-events")
            }
            _ = try scales()
        }

        func run() async throws {
            _ = global.bootstrapLogging(defaultLevel: .warning)
            let sync = try billing.sync()
            let conninfo = try global.conninfo(migrate: global.target.isEmbedded)
            let c = try PGConnection(conninfo: conninfo)
            defer { c.close() }
            let meters = try c.execute("""
                select m.code from meter.meters m
                where (select v.aggregation from meter.meter_version_ranges v where v.meter_id = m.id
                       order by v.version desc limit 1) <> 'unique_count'
                """).rows.map { try $0.string("code") }
            let before = try c.execute("select count(*) as n from meter.plan_prices where engine_price_id is not null").single().int("n")
            try await PlanMirror.mirror(c, client: BillingClient(sync.api), engineMeters: meters,
                                        api: PlanMirror.EngineAPI(rawValue: engineAPI)!, scales: try scales())
            let after = try c.execute("select count(*) as n from meter.plan_prices where engine_price_id is not null").single().int("n")
            print("mirrored \(after - before) plan price(s); \(after) in all have an engine price")
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a plan (or rename it; its currency is fixed).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Plan code.") var code: String
        @Option(help: "ISO 4217 currency, e.g. usd, eur, jpy.") var currency: String
        @Option(help: "Display name.") var name: String?
        func run() async throws {
            let id = try global.withConnection { c in
                try c.execute("select meter.plan_upsert($1, $2, $3) as id", [code, currency, name]).single().int("id")
            }
            print("plan \(code) (id \(id), \(currency.lowercased()))")
        }
    }

    struct Price: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Price a meter in a plan. Amounts are in minor units of the plan's currency and may be fractional.",
            discussion: """
                per_unit: --unit-amount per unit. package: --unit-amount per block of --package-size units \
                (rounded up). graduated / volume: --tiers '[{"up_to":1000,"unit_amount":1},{"up_to":null,"unit_amount":0.5,"flat_amount":100}]'. \
                The amount of a line is rounded once, half away from zero (meter.price_amount). \
                --filter prices only the usage whose dimension values fall under it, e.g. \
                --filter '{"model":"gpt-4o"}' or '{"model":["a","b"],"region":"eu"}' (null: events without the \
                property); the meter's price without --filter is then the default for the rest. Filters of a \
                plan and meter may not overlap; each is its own invoice line (and its own engine meter).
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Plan code.") var plan: String
        @Option(help: "Meter code.") var meter: String
        @Option(help: "per_unit | package | graduated | volume") var model: String
        @Option(name: .customLong("unit-amount"), help: "Minor units per unit (per_unit) or per block (package).") var unitAmount: String?
        @Option(name: .customLong("package-size"), help: "Units per block (package).") var packageSize: String?
        @Option(help: "Tiers as JSON (graduated, volume).") var tiers: String?
        @Option(help: "Price only the usage whose dimension values match this JSON object (dimension: value or [values]).")
        var filter: String?
        func run() async throws {
            let stored = try global.withConnection { c in
                _ = try c.execute("select meter.plan_price_set($1, $2, $3, $4::numeric, $5::numeric, $6::jsonb, coalesce($7::jsonb, '{}'))",
                                  [plan, meter, model, unitAmount, packageSize, tiers, filter])
                return try c.execute("select meter._filter_label(coalesce($1::jsonb, '{}'), $1 is not null) as label", [filter])
                    .single().string("label")
            }
            print("plan \(plan): \(meter)\(stored) priced \(model)")
        }
    }

    struct Limit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cap a meter's usage per billing period in a plan (GET /v1/customers/{customer}/limits/{meter} checks it).",
            discussion: """
                The limit counts the meter's usage as it aggregates (count, sum or max), for the whole meter, or \
                with --filter '{"model":"gpt-4o"}' the usage under a filter of its dimensions. Limits of one meter \
                may overlap. --remove drops the limit of that meter and filter.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Plan code.") var plan: String
        @Option(help: "Meter code.") var meter: String
        @Option(help: "The period's cap, in the meter's unit.") var quantity: String?
        @Option(help: "Count only the usage whose dimension values match this JSON object.") var filter: String?
        @Flag(help: "Remove the limit.") var remove = false
        func validate() throws {
            if remove == (quantity != nil) { throw ValidationError("give --quantity, or --remove") }
        }
        func run() async throws {
            let stored = try global.withConnection { c in
                try c.execute("select meter.plan_limit_set($1, $2, $3::numeric, coalesce($4::jsonb, '{}'))::text as f",
                              [plan, meter, remove ? nil : quantity, filter]).single().string("f")
            }
            print(remove ? "plan \(plan): limit on \(meter) \(stored) removed" : "plan \(plan): \(meter) \(stored) limited to \(quantity!) per period")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List plans and their prices.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let rows = try global.withConnection { c in
                try c.execute("""
                    select p.code, p.currency, coalesce(m.code, '-') as meter, coalesce(pp.filter::text, '') as filter,
                           coalesce(pp.model, '-') as model,
                           coalesce(trim_scale(pp.unit_amount)::text, '') as unit_amount,
                           coalesce(trim_scale(pp.package_size)::text, '') as package_size, coalesce(pp.tiers::text, '') as tiers
                    from meter.plans p left join meter.plan_prices pp on pp.plan_id = p.id
                    left join meter.meters m on m.id = pp.meter_id order by p.code, m.code, pp.filter = '{}', pp.filter::text
                    """).rows
            }
            printTable(["plan", "currency", "meter", "filter", "model", "unit_amount", "package_size", "tiers"],
                       try rows.map { r in try ["code", "currency", "meter", "filter", "model", "unit_amount", "package_size", "tiers"].map { try r.string($0) } })
        }
    }
}

/// `meterctl close --period 2026-10`: meter.period_close for every customer (or one).
struct Close: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Close a billing period (YYYY-MM) into frozen invoices (meter.period_close).",
        discussion: """
            Refuses until the period (in each customer's billing timezone) ended --grace-seconds ago and \
            every event of it is rolled up. Running it again changes nothing. Events or cancellations that \
            arrive for a closed period later become adjustment lines on the next invoice. Prints one line \
            per customer: closed, already_closed or no_plan.
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Billing period, YYYY-MM.") var period: String
    @Option(help: "One customer (external id). Default: all.") var customer: String?
    @Option(name: .customLong("grace-seconds"), help: "Wait this long after the period end. Default: 3600") var graceSeconds: Int = 3600
    @Option(name: .customLong("customers-per-transaction"),
            help: "Customers closed per transaction (each transaction holds the rollup's horizon while it runs; docs/scaling.md 1b). Default: 100")
    var customersPerTransaction: Int = 100
    @OptionGroup var billing: BillingAPIOptions
    @Option(name: .customLong("engine-timeout-seconds"), help: "How long to wait for the engine's invoices (with --billing-api-base). Default: 120")
    var engineTimeout: Double = 120
    func validate() throws {
        guard period.range(of: #"^[0-9]{4}-(0[1-9]|1[0-2])$"#, options: .regularExpression) != nil else {
            throw ValidationError("--period must be YYYY-MM; got \(period)")
        }
        guard graceSeconds >= 0 else { throw ValidationError("--grace-seconds must be at least 0") }
        guard customersPerTransaction >= 1 else { throw ValidationError("--customers-per-transaction must be at least 1") }
    }
    func run() async throws {
        let logger = global.bootstrapLogging(defaultLevel: .warning)
        let started = ContinuousClock.now
        if billing.configured { try await alignEngine(logger: logger) }
        // The batched close (MonthClose): a refusal stops it at its batch, the batches before it stay
        // closed, and running it again finishes it.
        let rows: [MonthClose.Outcome]
        do {
            rows = try global.withConnection(migrate: global.target.isEmbedded) { c in
                try MonthClose.run(c, period: period, customer: customer, graceSeconds: graceSeconds, customersPerTransaction: customersPerTransaction) {
                    FileHandle.standardError.write(Data(($0 + "\n").utf8))
                }
            }
        } catch let e as MonthClose.Stopped {
            if e.closedBefore > 0 {
                FileHandle.standardError.write(Data("close \(period): stopped after \(e.closedBefore) customer(s), whose invoices are committed; fix the cause below and run the close again\n".utf8))
            }
            throw e.cause
        }
        printTable(["customer", "outcome", "invoice", "lines", "total (minor units)", "currency"],
                   rows.map { [$0.customer, $0.outcome, $0.invoice, String($0.lines), $0.total, $0.currency] })
        let closed = rows.filter { $0.outcome == "closed" }.count
        let d = ContinuousClock.now - started
        if billing.configured {
            let side = try global.withConnection { c in
                try c.execute("""
                    select count(*) as n, coalesce(sum(b.total), 0)::text as total from meter.billing_invoices b
                    join meter.invoices i on i.customer_id = b.customer_id and b.period_start < i.period_end and b.period_end > i.period_start
                    where i.period = $1
                    """, [period]).single()
            }
            print("engine: \(try side.int("n")) invoice(s) stored beside ours (meter.billing_invoices); see meterctl reconcile --period \(period)")
        }
        print(String(format: "close %@: %d closed, %d already closed, %d without a plan in %.2f s", period, closed,
                     rows.filter { $0.outcome == "already_closed" }.count,
                     rows.filter { $0.outcome == "no_plan" }.count,
                     d.seconds))
    }

    /// Brings the billing engine to the period's end before our close (EngineAlignment).
    func alignEngine(logger: Logger) async throws {
        let sync = try billing.sync()
        let c = try PGConnection(conninfo: try global.conninfo(migrate: global.target.isEmbedded))
        defer { c.close() }
        do {
            try await EngineAlignment.align(c, client: BillingClient(sync.api), testClock: sync.testClock, period: period,
                                            timeout: engineTimeout, say: { print($0) })
        } catch let e as EngineAlignment.Failure {
            throw ValidationError(e.description)
        }
    }
}
