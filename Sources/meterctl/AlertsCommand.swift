import ArgumentParser
import Foundation
import PGClient
import MeterCore

/// `meterctl alerts add|list`: threshold alerts (meter.alerts), fired once per customer and period
/// by the rollup as alert.triggered webhooks (`meterctl webhooks add --event-type alert.triggered`).
struct AlertsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alerts",
        abstract: "Threshold alerts on a meter's quantity, the period's amount or a share of a limit (alert.triggered webhooks).",
        subcommands: [Add.self, List.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add an alert for a customer or for every customer of a plan.",
            discussion: """
                One of --quantity N (the meter's period quantity reaches N), --amount N (the period's usage lines \
                reach N minor units; no --meter) or --share-of-limit F (the meter's quantity reaches F times the \
                plan's limit on it, e.g. 0.8). It fires at most once per customer and period, when the rollup first \
                reaches it, even if a cancellation later drops below and usage crosses again.
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "Customer (external id).") var customer: String?
        @Option(help: "Plan code (every customer on it).") var plan: String?
        @Option(help: "Meter code.") var meter: String?
        @Option(help: "Threshold on the meter's period quantity.") var quantity: String?
        @Option(help: "Threshold on the period's amount, in minor units.") var amount: String?
        @Option(name: .customLong("share-of-limit"), help: "Threshold as a share of the plan's limit on the meter (0-1 or more).")
        var share: String?
        func validate() throws {
            if (customer == nil) == (plan == nil) { throw ValidationError("give --customer or --plan") }
            if [quantity, amount, share].compactMap({ $0 }).count != 1 { throw ValidationError("give one of --quantity, --amount, --share-of-limit") }
        }
        func run() async throws {
            let (kind, threshold) = quantity.map { ("quantity", $0) } ?? amount.map { ("amount", $0) } ?? ("limit_share", share!)
            let id = try global.withConnection { c in
                try c.execute("select meter.alert_set($1, $2, $3, $4, $5::numeric) as id", [customer, plan, meter, kind, threshold])
                    .single().int("id")
            }
            print("alert \(id): \(kind) \(threshold) for \(customer.map { "customer \($0)" } ?? "plan \(plan!)")\(meter.map { " on \($0)" } ?? "")")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List alerts and how often they fired.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let rows = try global.withConnection { c in
                try c.execute("""
                    select a.id::text as id, coalesce('customer ' || c.external_id, 'plan ' || p.code) as scope,
                           coalesce(m.code, '-') as meter, a.kind, trim_scale(a.threshold)::text as threshold,
                           (select count(*) from meter.alert_firings f where f.alert_id = a.id)::text as fired
                    from meter.alerts a left join meter.customers c on c.id = a.customer_id
                    left join meter.plans p on p.id = a.plan_id left join meter.meters m on m.id = a.meter_id
                    order by a.id
                    """).rows
            }
            printTable(["id", "for", "meter", "kind", "threshold", "fired"],
                       try rows.map { r in try ["id", "scope", "meter", "kind", "threshold", "fired"].map { try r.string($0) } })
        }
    }
}
